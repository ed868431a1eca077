-- http_1xx_spec.lua -- informational (1xx) and protocol-switching (101)
-- responses of sockhost.http, with curl and raw sockets: res:inform sends
-- 100/102/103 before the final response (never to an HTTP/1.0 client), a
-- 1xx as the final response is refused with a logged 500 instead of a
-- silent empty reply, a handler that ends after only a 1xx gets a logged
-- 500, and res:upgrade hands the connection to the handler.
local H = require "helpers"

local function curl(args)
  -- (under the one-byte shim a 512 KiB upload is half a million reads)
  return H.sh_cmd(("curl -sS --max-time %d "):format(H.ONEBYTE and 60 or 10) .. args .. " 2>&1")
end

describe("sockhost.http 1xx and 101", function()
  local proc, base, host, port, streaming

  setup(function()
    proc = H.start("spec/fixtures/http_1xx.lua")
    local addr = proc:wait_output("listening on (tcp://%S+),")
    base = addr:gsub("^tcp", "http")
    host, port = H.hostport(addr)
    streaming = proc:wait_output("streaming on (tcp://%S+)"):gsub("^tcp", "http")
  end)

  teardown(function() assert.equals(0, proc:stop()) end)

  -- Wait (at most 5 s) for a line of the server's stderr holding 'text'.
  local function logged(text)
    local deadline = H.socket.gettime() + 5
    repeat
      for line in proc:stderr():gmatch("[^\n]+") do
        if line:find(text, 1, true) then return line end
      end
      H.socket.sleep(0.02)
    until H.socket.gettime() > deadline
    error("not logged: " .. text .. "\n" .. proc:stderr())
  end

  -- One raw request on a connection of its own; everything that came back
  -- until the server closed or 'want' (a pattern) arrived.
  local function raw(req, want)
    local c = H.tcp(host, port, 5)
    assert(c:send(req))
    local got = ""
    local deadline = H.socket.gettime() + 5
    while H.socket.gettime() < deadline and not (want and got:find(want)) do
      local data, err, partial = c:receive(1)
      data = data or partial
      if data and #data > 0 then got = got .. data end
      if err == "closed" then break end
    end
    c:close()
    return got
  end

  it("sends 103 Early Hints before the final response (curl)", function()
    local out, rc = curl("-v " .. base .. "/hints")
    assert.equals(0, rc, out)
    assert.matches("< HTTP/1.1 103 Early Hints", out, 1, true)
    assert.matches("< Link: </style.css>; rel=preload", out, 1, true)
    assert.matches("< HTTP/1.1 200 OK", out, 1, true)
    assert.matches("final after hints\n", out, 1, true)
    assert.is_true(out:find("103 Early Hints", 1, true) < out:find("200 OK", 1, true))
  end)

  for _, which in ipairs({ "buffered", "streaming" }) do
    it("relays a 100 Continue once: curl's Expect upload gets its answer (" .. which .. ")", function()
      local file = H.writefile(H.tmpname(".bin"), string.rep("u", 512 * 1024))
      local out, rc = curl(("-v -H 'Expect: 100-continue' --data-binary @%s %s/relay100")
        :format(H.q(file), which == "buffered" and base or streaming))
      assert.equals(0, rc, out)
      assert.matches("got 524288 bytes\n", out, 1, true)
      local _, n = out:gsub("< HTTP/1.1 100 Continue", "")
      assert.equals(1, n, out)
    end)
  end

  it("sends no 1xx to an HTTP/1.0 client, only the final response", function()
    local got = raw("GET /hints HTTP/1.0\r\n\r\n")
    assert.matches("^HTTP/1.1 200 OK\r\n", got)
    assert.not_matches("103", got:match("^[^\r]*"))
    assert.matches("final after hints\n$", got)
  end)

  for _, path in ipairs({ "/return100", "/status102", "/return101" }) do
    it("refuses a 1xx as the final response with a logged 500 (" .. path .. ")", function()
      local got = raw("GET " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\n")
      assert.matches("^HTTP/1.1 500 Internal Server Error\r\n", got)
      local line = logged(path)
      assert.is_truthy(line:find("use res:upgrade", 1, true) or line:find("res:inform", 1, true), line)
    end)
  end

  it("answers 500 and logs when a handler ends after only a 1xx", function()
    local got = raw("GET /onlyhints HTTP/1.1\r\nHost: x\r\n\r\n", "\r\n\r\n.-\r\n\r\n")
    assert.equals("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 500 ", got:sub(1, 53))
    logged("after only an informational response")
  end)

  it("hands the connection to the handler after 101 (res:upgrade)", function()
    local got = raw("GET /upgrade HTTP/1.1\r\nHost: x\r\nUpgrade: lineecho\r\nConnection: upgrade\r\n\r\n"
      .. "GET /hints HTTP/1.1\r\n", "echo: GET /hints HTTP/1.1\n")
    assert.matches("^HTTP/1.1 101 Switching Protocols\r\n", got)
    assert.matches("Upgrade: lineecho\r\n", got, 1, true)
    -- what followed the head was the new protocol's, not a second request
    assert.matches("\r\n\r\necho: GET /hints HTTP/1.1\n$", got)
  end)
end)
