-- conn:peer() names the peer until the connection is closed here, also
-- once the system has forgotten it (a TCP socket whose halves are both shut
-- down, or that the peer reset: getpeername says "not connected" then), and
-- the log line of a connection cut after its peer reset names the peer.
-- In-process (sockhost.so) for peer(); through ./sockhost for the log.
local H = require "helpers"
local sh = H.sh
local socket = H.socket

-- Certificates for the TLS case (spec/fixtures/tls_certs.sh), made once.
local D
local function path(name) return D .. "/" .. name end

describe("conn:peer()", function()
  setup(function()
    D = H.sh_cmd("mktemp -d " .. H.q(H.TMP .. "/peer.XXXXXX")):gsub("%s+$", "")
    local out, rc = H.sh_cmd("sh spec/fixtures/tls_certs.sh " .. H.q(D) .. " 2>&1")
    assert(rc == 0 and out:match("ok"), "cannot make certificates: " .. out)
  end)
  teardown(function()
    if D and D:match("/peer%.") then os.execute("rm -rf " .. H.q(D)) end
  end)

  it("names the peer once both halves are shut down, on both ends", function()
    local got = {}
    H.run(function()
      local srv = assert(sh.listen("tcp://127.0.0.1:0", function(c)
        assert(c:write("bye\n"))
        assert(c:shutdown())
        got.srv_read = { c:read("a") }        -- until the client's end
        sh.sleep(0.05)                         -- its close has reached us
        got.srv_peer = { c:peer() }
        got.srv_str = tostring(c)
      end))
      local c = assert(sh.connect(srv:address()))
      got.cli_addr = c:address()
      got.srv_addr = srv:address()
      got.cli_read = c:read("a")               -- until the server's end
      assert(c:shutdown())
      sh.sleep(0.2)                            -- the server's handler is done
      got.cli_peer = { c:peer() }
      c:close()
      srv:close()
    end)
    assert.same({ "" }, got.srv_read)
    assert.equals("bye\n", got.cli_read)
    assert.same({ got.cli_addr }, got.srv_peer)
    assert.same({ got.srv_addr }, got.cli_peer)
    assert.equals(got.cli_addr, got.srv_str:match("^conn #%d+ (.*)$"))
  end)

  it("names the peer after it reset the connection, until the close here", function()
    local got = {}
    H.run(function()
      local srv = assert(sh.listen("tcp://127.0.0.1:0", function(c)
        got.read = { c:read("l") }             -- the reset ends the stream
        got.peer = { c:peer() }
        got.str = tostring(c)
        c:close()
        got.closed = { c:peer() }
      end))
      local c = assert(sh.connect(srv:address()))
      got.cli_addr = c:address()
      sh.sleep(0.05)
      c:abort()                                -- a TCP reset
      sh.sleep(0.2)
      srv:close()
    end)
    assert.same({ nil, "closed" }, got.read)
    assert.same({ got.cli_addr }, got.peer)
    assert.equals("conn #", got.str:sub(1, 6))
    assert.equals(got.cli_addr, got.str:match("^conn #%d+ (.*)$"))
    assert.same({ nil, "closed" }, got.closed)
  end)

  it("names a TLS peer after it reset the connection", function()
    local got = {}
    H.run(function()
      local srv = assert(sh.listen("tls://127.0.0.1:0", function(c)
        got.read = { c:read("l") }
        got.peer = { c:peer() }
      end, { cert = path("srv.pem"), key = path("srv.key") }))
      local c = assert(sh.connect(srv:address(), { ca = path("ca.pem") }))
      got.cli_addr = c:address()
      got.cli_peer = c:peer()
      got.srv_addr = srv:address()
      sh.sleep(0.05)
      c:abort()
      sh.sleep(0.2)
      srv:close()
    end)
    assert.same({ nil, "closed" }, got.read)
    assert.matches("^tls://127%.0%.0%.1:%d+$", got.cli_addr)
    assert.same({ got.cli_addr }, got.peer)
    assert.equals(got.srv_addr, got.cli_peer)
  end)

  it("names an IPv6 peer after both halves are shut down", function()
    local got = {}
    H.run(function()
      local srv, err = sh.listen("tcp://[::1]:0", function(c)
        c:shutdown()
        c:read("a")
        sh.sleep(0.05)
        got.peer = { c:peer() }
      end)
      if not srv then got.skip = err return end
      local c = assert(sh.connect(srv:address()))
      got.cli_addr = c:address()
      c:read("a")
      c:close()
      sh.sleep(0.2)
      srv:close()
    end)
    if got.skip then pending("no IPv6 loopback: " .. got.skip) return end
    assert.matches("^tcp://%[::1%]:%d+$", got.cli_addr)
    assert.same({ got.cli_addr }, got.peer)
  end)

  it("a Unix connection keeps naming its peer too", function()
    local got = {}
    local file = H.tmpname(".sock")
    H.run(function()
      local srv = assert(sh.listen("unix:" .. file, function(c)
        c:shutdown()
        c:read("a")
        got.srv_peer = { c:peer() }
      end))
      local c = assert(sh.connect("unix:" .. file))
      c:read("a")
      c:shutdown()
      sh.sleep(0.1)
      got.cli_peer = { c:peer() }
      c:close()
      srv:close()
    end)
    assert.same({ "unix:" }, got.srv_peer)       -- the client's end has no name
    assert.same({ "unix:" .. file }, got.cli_peer)
  end)
end)

describe("the log line of a connection cut after its peer reset", function()
  it("names the peer, not '?'", function()
    local script = H.writefile(H.tmpname(".lua"), [[
      local sh = require "sockhost"
      local srv = assert(sh.listen("tcp://127.0.0.1:0", function(c)
        sh.sleep(30)                 -- never reads: only the idle limit ends it
      end))
      print("listening on " .. srv:address())
    ]])
    local proc = H.start("--idle-timeout 0.5 " .. H.q(script))
    finally(function() proc:stop() end)
    local host, port = H.hostport(proc:wait_output("listening on (%S+)"))
    local c = H.tcp(host, port)
    local _, cport = c:getsockname()
    socket.sleep(0.1)                          -- accepted
    assert(c:setoption("linger", { on = true, timeout = 0 }))
    c:close()                                  -- a reset
    local deadline = socket.gettime() + (H.VALGRIND and 30 or 10)
    local log
    repeat
      socket.sleep(0.05)
      log = proc:stderr()
    until log:find("idle too long", 1, true) or socket.gettime() > deadline
    assert.matches("INFO  conn #1 tcp://127%.0%.0%.1:" .. cport .. ": idle too long, closing\n", log)
  end)
end)
