-- scripts/http.lua (on sockhost.http), tested with sockhost.test:
-- in-process, scripted peers, virtual time (sockhost.http's 15 s keep-alive
-- and 30 s request timeouts cost nothing). Runs over the in-memory
-- transport by default, and over real loopback sockets with
-- SOCKHOST_TEST_TRANSPORT=loopback.
require "sockhost"
local T = require "sockhost.test"

local ADDR = "tcp://127.0.0.1:8080"              -- the script's default address
local ROOT = "spec/fixtures"                     -- files served under /

local function file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function get(path, extra)
  return "GET " .. path .. " HTTP/1.1\r\nHost: test\r\n" .. (extra or "") .. "\r\n"
end

describe("http.lua (virtual time)", function()
  local t
  before_each(function()
    t = T.new()                 -- the host's defaults: idle 300 s, line 60 s
    t:script("scripts/http.lua", "--root", ROOT)
  end)
  after_each(function() t:close() end)

  local function client(name) return t:connect(ADDR, name) end

  -- The next response: status, headers (lower-case names), body (by
  -- Content-Length).
  local function response(p, within)
    local status = p:expect_match("^HTTP/1%.1 (%d%d%d) ", within)
    local h = {}
    while true do
      local l = p:expect_line()
      if l == "" then break end
      local k, v = l:match("^([^:]+):%s*(.-)%s*$")
      assert.truthy(k, "bad header line " .. T.show(l))
      h[k:lower()] = v
    end
    local body = ""
    local n = tonumber(h["content-length"])
    if n and n > 0 then body = p:expect_bytes(n) end
    return tonumber(status), h, body
  end

  local function closed(p, within)
    local ended = p:expect_close(within)
    assert.truthy(ended == "closed" or ended == "reset", ended)
  end

  describe("routes", function()
    it("prints where it listens and the root", function()
      assert.equal(1, #t.output)
      assert.truthy(t.output[1]:match("^http: listening on .*, files from spec/fixtures$"), t.output[1])
    end)

    it("answers GET / and GET /hello with a query", function()
      local p = client("p")
      p:send(get("/"))
      local status, h, body = response(p)
      assert.equal(200, status)
      assert.equal("hello\n", body)
      assert.equal("text/plain; charset=utf-8", h["content-type"])
      assert.is_nil(h.connection)                  -- HTTP/1.1: kept alive
      p:send(get("/hello?name=you+there"))
      status, _, body = response(p)
      assert.equal(200, status)
      assert.equal("hello, you there\n", body)
    end)

    it("stores with PUT and reads back with GET (JSON), 404 for others", function()
      local p = client("p")
      p:send("PUT /users/7 HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\nAda")
      local status, _, body = response(p)
      assert.equal(201, status); assert.equal("stored\n", body)
      p:send(get("/users/7"))
      local h
      status, h, body = response(p)
      assert.equal(200, status)
      assert.equal("application/json", h["content-type"])
      assert.equal('{"id":"7","name":"Ada"}\n', body)
      p:send(get("/users/8"))
      status, _, body = response(p)
      assert.equal(404, status); assert.equal("404 Not Found\n", body)
    end)

    it("serves a file under --root, and nothing hidden or outside it", function()
      local p = client("p")
      p:send(get("/whoami.lua"))
      local status, h, body = response(p)
      assert.equal(200, status)
      assert.equal("text/plain; charset=utf-8", h["content-type"])
      assert.equal(file(ROOT .. "/whoami.lua"), body)
      for _, path in ipairs { "/../README.md", "/%2e%2e/README.md", "/nope.txt" } do
        p:send(get(path))
        status = response(p)
        assert.equal(404, status, path)
      end
    end)
  end)

  describe("keep-alive and pipelining", function()
    it("serves two requests one after the other on one connection", function()
      local p = client("p")
      p:send(get("/"))
      assert.equal("hello\n", select(3, response(p)))
      t:advance(10)                         -- within the 15 s keep-alive
      p:send(get("/hello"))
      assert.equal("hello, world\n", select(3, response(p)))
    end)

    it("answers a pipelined pair in order", function()
      local p = client("p")
      p:send(get("/hello?name=first") .. get("/hello?name=second"))
      assert.equal("hello, first\n", select(3, response(p)))
      assert.equal("hello, second\n", select(3, response(p)))
    end)

    it("closes after the response when asked to (Connection: close)", function()
      local p = client("p")
      p:send(get("/", "Connection: close\r\n"))
      local status, h = response(p)
      assert.equal(200, status)
      assert.equal("close", h.connection)
      closed(p)
    end)

    it("closes an idle keep-alive connection after 15 s, not before, quietly", function()
      local p = client("p")
      p:send(get("/"))
      response(p)
      p:expect_silence(14)
      closed(p, 2)
      assert.is_true(t:now() >= 15 and t:now() < 15.5, tostring(t:now()))
    end)

    it("closes a connection that never sends a byte after 15 s", function()
      local p = client("p")
      p:expect_silence(14.5)
      closed(p, 1)
    end)
  end)

  describe("slow and broken peers", function()
    it("answers a request sent one byte at a time", function()
      local p = client("p")
      p:send(get("/hello?name=slow"), { split = 1 })
      assert.equal("hello, slow\n", select(3, response(p)))
    end)

    it("answers 408 to a head that stalls half-way, 30 s after its last line", function()
      local p = client("p")
      p:send("GET / HTTP/1.1\r\nHost: test\r\nUser-Ag")
      p:expect_silence(29.5)
      local status, h, body = response(p, 1)
      assert.equal(408, status)
      assert.equal("close", h.connection)
      assert.equal("408 Request Timeout\n", body)
      closed(p)
    end)

    it("answers 408 to a request line that stalls, at the 15 s keep-alive limit", function()
      -- the first line is read under keepalive_timeout: a partial one
      -- stalls for 15 s, not 30, before its 408
      local p = client("p")
      p:send("GET /hel")
      p:expect_silence(14.5)
      local status = response(p, 1)
      assert.equal(408, status)
      closed(p)
    end)

    it("answers 408 to a body that stalls, 30 s on", function()
      local p = client("p")
      p:send("POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n" .. ("b"):rep(40))
      p:expect_silence(29.5)
      local status = response(p, 1)
      assert.equal(408, status)
      closed(p)
    end)

    it("echoes a POST body delivered in random pieces, slowly", function()
      local p = client("p")
      local body = {}
      for i = 1, 700 do body[i] = string.char(32 + (i * 31) % 95) end
      body = table.concat(body)
      p:send("POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: text/x-test\r\nContent-Length: "
             .. #body .. "\r\n\r\n" .. body, { split = "random", pause = 0.1 })
      local status, h, got = response(p)
      assert.equal(200, status)
      assert.equal("text/x-test", h["content-type"])
      assert.equal(body, got)
    end)

    it("serves another peer while one resets in the middle of its body", function()
      local a, b = client("a"), client("b")
      a:send("POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n" .. ("a"):rep(300))
      b:send(get("/"))
      assert.equal("hello\n", select(3, response(b)))
      a:reset()
      b:send(get("/hello?name=b"))
      assert.equal("hello, b\n", select(3, response(b)))
      local c = client("c")
      c:send("POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nhello")
      assert.equal("hello", select(3, response(c)))
      assert.same({}, t.errors)
    end)

    it("answers 400 to garbage and closes, the others unaffected", function()
      local a, b = client("a"), client("b")
      a:send("NONSENSE\r\n\r\n")
      local status = response(a)
      assert.equal(400, status)
      closed(a)
      b:send(get("/"))
      assert.equal(200, (response(b)))
    end)
  end)
end)
