-- sockhost.websocket (RFC 6455) against independent peers: our server
-- (spec/fixtures/ws_server.lua in ./sockhost) with python's `websockets`
-- and Node's `ws` clients and raw frames written here with LuaSocket; our
-- client (in-process, ./sockhost.so) against a python `websockets` and a
-- Node `ws` echo server.
local H = require "helpers"
local cjson = require "cjson"

-- The peers run without the one-byte shim of make test-onebyte (it is
-- there to cut sockhost's reads and writes; a python peer cut so misses
-- its own 1 s ping timeout while it sends a large message).
local PYTHON = "env -u LD_PRELOAD /usr/bin/python3"   -- Debian's, with websockets
local NODE = "env -u LD_PRELOAD /usr/bin/node"
local NODE_PATH = H.ROOT .. "/spec/.node/node_modules"   -- `ws`, from make deps

local function now() return H.socket.gettime() end

-- A throwaway PKI (spec/fixtures/tls_certs.sh), made once for this file.
local CERTS = H.tmpname("_certs")
do
  os.execute("mkdir -p " .. H.q(CERTS))
  local out, rc = H.sh_cmd("sh spec/fixtures/tls_certs.sh " .. H.q(CERTS) .. " 2>&1")
  assert(rc == 0, out)
end

-- What the clients send and expect back byte for byte.
local VECTORS = {
  protocols = { "x", "superchat", "chat" },
  texts = { "hello", "", "h\u{e9}llo \u{1F600} \u{4e16}", string.rep("abc", 30000) },
  binaries = { "00", "00ff10fe", ("0102ff"):rep(50000) },
  fragmented = { { "ab", "cd", "\u{e9}f" }, { "x", "", "y" } },
  big = H.big(16 * 1024 * 1024, 256 * 1024),   -- one message each way
}

-- A client in another process: its JSON answer.
local function run_client(cmd, vectors)
  local file = H.writefile(H.tmpname(".json"), cjson.encode(vectors))
  local out, rc = H.sh_cmd(("timeout -s KILL 90 %s %s 2>&1"):format(cmd, H.q(file)))
  assert.equals(0, rc, out)
  local last
  for l in out:gmatch("[^\n]+") do last = l end
  return cjson.decode(last)
end

local function check_echo(r, vectors)
  assert.same(vectors.texts, r.texts)
  assert.same(vectors.binaries, r.binaries)
  local joined = {}
  for i, parts in ipairs(vectors.fragmented) do joined[i] = table.concat(parts) end
  assert.same(joined, r.fragmented)
  assert.same({ vectors.big, true }, r.big)
  assert.is_true(r.pong)
end

-- ------------------------------------------------------------ raw frames

local function xor(data, key)
  local out = {}
  for i = 1, #data do
    out[i] = string.char(data:byte(i) ~ key:byte((i - 1) % 4 + 1))
  end
  return table.concat(out)
end

-- A frame as a client writes it (masked unless told not to).
local function raw_frame(op, payload, opts)
  opts = opts or {}
  local b1 = (opts.fin == false and 0 or 0x80) | (opts.rsv or 0) | op
  local n, mbit = #payload, opts.unmasked and 0 or 0x80
  local head
  if n < 126 then head = string.pack(">BB", b1, mbit | n)
  elseif n < 65536 then head = string.pack(">BBI2", b1, mbit | 126, n)
  else head = string.pack(">BBI8", b1, mbit | 127, n) end
  if opts.unmasked then return head .. payload end
  local key = string.pack(">I4", math.random(0, 0xffffffff))
  return head .. key .. xor(payload, key)
end

-- The next frame from the server: op, payload, masked | nil, err.
local function read_frame(s)
  local h, err = s:receive(2)
  if not h then return nil, err end
  local b1, b2 = h:byte(1, 2)
  local n = b2 & 0x7f
  if n == 126 then n = string.unpack(">I2", s:receive(2))
  elseif n == 127 then n = string.unpack(">I8", s:receive(8)) end
  local payload = n > 0 and s:receive(n) or ""
  return b1 & 0x0f, payload, b2 & 0x80 ~= 0
end

-- An HTTP request on a new socket: the socket, status, headers (lower-case).
local function handshake(port, path, headers)
  local s = H.tcp("127.0.0.1", port, 5)
  local t = { "GET " .. path .. " HTTP/1.1", "Host: 127.0.0.1:" .. port }
  for k, v in pairs(headers) do t[#t + 1] = k .. ": " .. v end
  assert(s:send(table.concat(t, "\r\n") .. "\r\n\r\n"))
  local status = tonumber(assert(s:receive("*l")):match("^HTTP/1%.1 (%d+)"))
  local h = {}
  while true do
    local l = assert(s:receive("*l"))
    if l == "" then break end
    local k, v = l:match("^([^:]+):%s*(.*)$")
    h[k:lower()] = v
  end
  return s, status, h
end

local KEY = "dGhlIHNhbXBsZSBub25jZQ=="          -- RFC 6455's example key
local GOOD = { Upgrade = "websocket", Connection = "Upgrade", ["Sec-WebSocket-Key"] = KEY,
               ["Sec-WebSocket-Version"] = "13" }
local function with(extra)
  local t = {}
  for k, v in pairs(GOOD) do t[k] = v end
  for k, v in pairs(extra) do t[k] = v ~= false and v or nil end
  return t
end

-- The close frame the server ends with: code, reason (after any other frames).
local function close_code(s)
  for _ = 1, 100 do
    local op, payload = read_frame(s)
    if not op then return nil, payload end
    if op == 8 then return string.unpack(">I2", payload), payload:sub(3) end
  end
end

describe("sockhost.websocket server", function()
  local proc, port, tls_port

  setup(function()
    -- the flood's send_timeout: one wait of a send, which the one-byte shim
    -- makes long (a 64 KiB queue drains a byte a turn)
    proc = H.start(("spec/fixtures/ws_server.lua tcp://127.0.0.1:0 %d %s %s"):format(H.big(1, 10),
      H.q(CERTS .. "/srv.pem"), H.q(CERTS .. "/srv.key")))
    port = select(2, H.hostport(proc:wait_output("listening on (tcp://%S+)")))
    tls_port = select(2, H.hostport(proc:wait_output("tls on (tls://%S+)")))
  end)

  teardown(function()
    assert.equals(0, proc:stop())
  end)

  local function wait_output(pattern, timeout)
    local deadline = now() + (timeout or 10)
    repeat
      local m = proc:stdout():match(pattern)
      if m then return m end
      H.socket.sleep(0.02)
    until now() > deadline
    error(("no %q in the server's output:\n%s\n%s"):format(pattern, proc:stdout(), proc:stderr()))
  end

  it("answers the RFC's handshake example with its accept key", function()
    local s, status, h = handshake(port, "/echo", GOOD)
    assert.equals(101, status)
    assert.equals("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", h["sec-websocket-accept"])
    assert.equals("websocket", h.upgrade:lower())
    s:close()
  end)

  it("echoes python websockets byte for byte: text, binary, fragments, 16 MiB, ping, close codes", function()
    local r = run_client(("%s spec/fixtures/ws_client.py ws://127.0.0.1:%d/echo"):format(PYTHON, port), VECTORS)
    check_echo(r, VECTORS)
    assert.equals("superchat", r.protocol)    -- the client's first that the server has
    assert.same({ 4001, "" }, r.closed)        -- our answer echoes the code
    wait_output("/echo ended: closed 4001 client bye")
  end)

  it("echoes Node ws byte for byte: text, binary, fragments (fin: false), 16 MiB, ping, close codes", function()
    local r = run_client(("env NODE_PATH=%s %s spec/fixtures/ws_client.js ws://127.0.0.1:%d/echo")
      :format(H.q(NODE_PATH), NODE, port), VECTORS)
    check_echo(r, VECTORS)
    assert.equals("superchat", r.protocol)
    assert.same({ 4001, "" }, r.closed)
  end)

  it("speaks wss:// (over a tls:// listener) to python websockets checking its certificate", function()
    local v = { texts = { "\u{fc}ber TLS" }, binaries = { "00ff" }, fragmented = { { "a", "b" } },
                big = H.big(1024 * 1024, 65536), ca = CERTS .. "/ca.pem", protocols = { "chat" } }
    local r = run_client(("%s spec/fixtures/ws_client.py wss://127.0.0.1:%d/echo"):format(PYTHON, tls_port), v)
    check_echo(r, v)
    assert.equals("chat", r.protocol)
  end)

  it("closes with its own code and reason, seen by python and Node", function()
    local v = { texts = {}, binaries = {}, fragmented = {}, server_closes = true }
    local r = run_client(("%s spec/fixtures/ws_client.py ws://127.0.0.1:%d/echo"):format(PYTHON, port), v)
    assert.same({ 4321, "server bye" }, r.closed)
    r = run_client(("env NODE_PATH=%s %s spec/fixtures/ws_client.js ws://127.0.0.1:%d/upgrade")
      :format(H.q(NODE_PATH), NODE, port), v)
    assert.same({ 4321, "server bye" }, r.closed)
  end)

  it("refuses bad handshakes: 426 (not websocket, version), 400 (key, Connection), 403 (Origin)", function()
    local cases = {
      { with { Upgrade = false }, 426 },
      { with { Upgrade = "h2c" }, 426 },
      { with { ["Sec-WebSocket-Version"] = "8" }, 426, "13" },
      { with { ["Sec-WebSocket-Key"] = false }, 400 },
      { with { ["Sec-WebSocket-Key"] = "AAAAAAAAAAAAAAAAAAAA" }, 400 },   -- 15 bytes
      { with { ["Sec-WebSocket-Key"] = "not base64 at all!!!!!==" }, 400 },
      { with { Connection = "keep-alive" }, 400 },
    }
    for i, c in ipairs(cases) do
      local s, status, h = handshake(port, "/upgrade", c[1])
      assert.equals(c[2], status, "case " .. i)
      if c[3] then assert.equals(c[3], h["sec-websocket-version"]) end
      s:close()
    end
    local s, status = handshake(port, "/origin", with { Origin = "http://evil.example" })
    assert.equals(403, status)
    s:close()
    s, status = handshake(port, "/origin", GOOD)            -- no Origin at all
    assert.equals(403, status)
    s:close()
    s, status = handshake(port, "/origin", with { Origin = "http://good.example" })
    assert.equals(101, status)
    s:close()
    wait_output("/upgrade refused: unsupported version")
  end)

  it("picks the client's first offered subprotocol that it supports, or none", function()
    local s, status, h = handshake(port, "/echo", with { ["Sec-WebSocket-Protocol"] = "chat, superchat" })
    assert.equals(101, status)
    assert.equals("chat", h["sec-websocket-protocol"])
    s:close()
    s, status, h = handshake(port, "/echo", with { ["Sec-WebSocket-Protocol"] = "other" })
    assert.equals(101, status)
    assert.is_nil(h["sec-websocket-protocol"])
    s:close()
  end)

  -- A raw connection after the handshake.
  local function open(path)
    local s, status = handshake(port, path, GOOD)
    assert.equals(101, status)
    return s
  end

  it("refuses an unmasked client frame with 1002", function()
    local s = open("/echo")
    s:send(raw_frame(1, "hi", { unmasked = true }))
    assert.equals(1002, close_code(s))
    s:close()
  end)

  it("refuses reserved bits and opcodes, and a stray continuation, with 1002", function()
    for _, f in ipairs { raw_frame(1, "hi", { rsv = 0x40 }), raw_frame(3, "hi"),
                         raw_frame(0, "hi"), raw_frame(9, "p", { fin = false }) } do
      local s = open("/echo")
      s:send(f)
      assert.equals(1002, close_code(s))
      s:close()
    end
  end)

  it("checks UTF-8 over the whole fragmented message (1007 when invalid)", function()
    local s = open("/echo")
    -- "é" split between two fragments is valid: echoed whole
    s:send(raw_frame(1, "a\xc3", { fin = false }) .. raw_frame(9, "between") .. raw_frame(0, "\xa9b"))
    local op, payload = read_frame(s)
    assert.equals(10, op)                   -- the pong for the ping between the fragments
    assert.equals("between", payload)
    op, payload = read_frame(s)
    assert.equals(1, op)
    assert.equals("a\xc3\xa9b", payload)
    s:send(raw_frame(1, "ok\xed\xa0\x80"))   -- a surrogate
    assert.equals(1007, close_code(s))
    s:close()
    s = open("/echo")
    s:send(raw_frame(1, "ab", { fin = false }) .. raw_frame(0, "\xff"))
    assert.equals(1007, close_code(s))
    s:close()
  end)

  it("closes with 1009 a message over max_message, whole or in fragments", function()
    local s = open("/small")
    s:send(raw_frame(2, string.rep("z", 1000)))
    local op, payload = read_frame(s)
    assert.equals(2, op)
    assert.equals(1000, #payload)
    s:send(raw_frame(2, string.rep("z", 1001)))
    assert.equals(1009, close_code(s))
    s:close()
    s = open("/small")
    s:send(raw_frame(1, string.rep("y", 600), { fin = false }) .. raw_frame(0, string.rep("y", 600)))
    assert.equals(1009, close_code(s))
    s:close()
  end)

  it("keeps a frame that a receive timeout cut in two", function()
    local s = open("/patient")
    local f = raw_frame(2, string.rep("\1\2\3", 100))
    s:send(f:sub(1, 3))                 -- the head, one byte of the length's... then a pause
    H.socket.sleep(0.5)
    s:send(f:sub(4, 100))
    H.socket.sleep(0.5)
    s:send(f:sub(101))
    local op, payload = read_frame(s)
    assert.equals(2, op)
    assert.equals(string.rep("\1\2\3", 100), payload)
    local n = tonumber(wait_output("/patient: (%d+) timeouts before 300 bytes"))
    assert.is_true(n >= 2, "timeouts " .. n)  -- the receives timed out mid-frame, nothing lost
    s:close()
  end)

  it("drops a ws whose waiting senders would hold more than max_queued", function()
    local s = open("/queue")                  -- never read after the handshake
    s:send(raw_frame(1, "go"))                -- (the flood waits for it: the server's abort
                                              -- must not cut the 101 short, under the shim)
    local n = wait_output("queue: (%d+) sends refused %(send queue full%)", 30)
    assert.is_true(tonumber(n) >= 1)
    s:close()
  end)

  it("answers pings, and drops a peer that does not answer its own", function()
    local s = open("/ping")
    local pings, t0 = 0, now()
    s:settimeout(5)
    while true do
      local op = read_frame(s)
      if not op then break end
      if op == 9 then pings = pings + 1 end
    end
    assert.is_true(pings >= 1)
    assert.is_true(now() - t0 < 3)
    s:close()
    wait_output("/ping ended: closed 1006")
    -- python's client answers pings: still there after 1.5 s
    local v = { texts = { "a" }, binaries = {}, fragmented = {}, wait = 1.5 }
    local r = run_client(("%s spec/fixtures/ws_client.py ws://127.0.0.1:%d/ping"):format(PYTHON, port), v)
    assert.equals("still here", r.after_wait)
  end)

  it("drops a client that stops reading, its memory bounded", function()
    local rss0 = proc:rss_kib()
    local s = open("/flood")
    local sent = tonumber(wait_output("flood ended: timeout after (%d+) bytes", H.big(20, 120)))
    assert.is_true(sent > 0)
    assert.is_true(sent < 64 * 1024 * 1024, "sent " .. sent)
    if not H.VALGRIND then
      assert.is_true(proc:rss_kib() - rss0 < 64 * 1024, "rss grew " .. (proc:rss_kib() - rss0) .. " KiB")
    end
    -- the server closed: after what the kernel held, the stream ends
    s:settimeout(5)
    local got, err
    repeat got, err = s:receive(65536) until not got
    assert.equals("closed", err)
    s:close()
  end)
end)

describe("sockhost.websocket client", function()
  local ws = require "sockhost.websocket"

  -- Start the server, run fn(port) in a task, wait for the server's line
  -- 'expect' (how our client's last connection ended).
  local function with_server(cmd, fn, expect)
    local port = H.free_port()
    local p = H.launch(cmd:format(port), "ws server")
    p:wait_output("ready", 10)
    local ok, err = pcall(H.run, function() fn(port) end, 60)
    for _, e in ipairs(type(expect) == "table" and expect or { expect }) do
      if ok then ok, err = pcall(p.wait_output, p, e, 5) end
    end
    p:stop()
    assert(ok, err)
  end

  local function exchange(port, closer_code, closer_reason)
    local c = assert(ws.connect(("ws://127.0.0.1:%d/any?x=1"):format(port), { protocols = { "a", "b" } }))
    assert.equals("a", c.protocol)
    for _, t in ipairs(VECTORS.texts) do
      assert(c:send(t))
      local d, kind = c:receive(10)
      assert.equals("text", kind)
      assert.equals(t, d)
    end
    local bin = string.rep("\0\1\255", 1000)
    assert(c:send(bin, "binary"))
    local d, kind = c:receive(10)
    assert.equals("binary", kind)
    assert.equals(bin, d)
    assert(c:send("frag"))
    assert.equals("fragm\u{e9}", (c:receive(10)))
    local big = {}
    for i = 1, VECTORS.big // 4096 do big[i] = string.pack(">I4", i * 2654435761 & 0xffffffff):rep(1024) end
    big = table.concat(big)                          -- 16 MiB, not periodic
    assert(c:send(big, "binary"))
    d = c:receive(60)
    assert.equals(#big, #d)
    assert.is_true(d == big)
    assert(c:ping("x"))
    assert.same({ nil, "timeout" }, { c:receive(0.2) })   -- the pong is no message
    -- the server pings every 0.2 s: answered while we wait in receive
    assert.same({ nil, "timeout" }, { c:receive(1.2) })
    assert(c:send("still"))
    assert.equals("still", (c:receive(10)))
    assert(c:send("close-me"))
    local a, err, code, reason = c:receive(10)
    assert.is_nil(a)
    assert.same({ "closed", closer_code, closer_reason }, { err, code, reason })
    assert.same({ closer_code, closer_reason }, { c:close_status() })
    assert.same({ nil, "closed" }, { c:send("more") })
    -- our own close, with a code the server sees
    c = assert(ws.connect(("ws://127.0.0.1:%d/"):format(port)))
    assert.is_nil(c.protocol)
    assert.is_true(c:close(4005, "lua bye"))
    assert.same({ 4005, "lua bye" }, { c:close_status() })
  end

  it("talks to a python websockets server", function()
    with_server(("timeout -s KILL 120 %s -u spec/fixtures/ws_echo_server.py %%d"):format(PYTHON),
      function(port) exchange(port, 4002, "py bye") end, "closed 4005 lua bye")
  end)

  it("talks to a Node ws server", function()
    with_server(("timeout -s KILL 120 env NODE_PATH=%s %s spec/fixtures/ws_echo_server.js %%d")
      :format(H.q(NODE_PATH), NODE), function(port) exchange(port, 4003, "node bye") end,
      { "closed 4003 .-pongs=[1-9]", "closed 4005 lua bye" })
  end)

  it("connects with wss:// and TLS options to a python websockets server over TLS", function()
    with_server(("timeout -s KILL 120 %s -u spec/fixtures/ws_echo_server.py %%d %s %s"):format(PYTHON,
      H.q(CERTS .. "/srv.pem"), H.q(CERTS .. "/srv.key")), function(port)
      local url = ("wss://127.0.0.1:%d/tls"):format(port)
      local c = assert(ws.connect(url, { ca = CERTS .. "/ca.pem", protocols = { "a" } }))
      assert.equals("a", c.protocol)
      assert(c:send("\u{fc}ber TLS"))
      assert.same({ "\u{fc}ber TLS", "text" }, { c:receive(10) })
      assert.is_true(c:close(4005, "lua bye"))
      -- the server's certificate is checked: a CA that did not sign it fails
      local none, err = ws.connect(url, { ca = CERTS .. "/ca2.pem" })
      assert.is_nil(none)
      assert.matches("^unknown CA", err)
      local ok, e = pcall(ws.connect, "ws://127.0.0.1:1/", { ca = CERTS .. "/ca.pem" })
      assert.is_false(ok)
      assert.matches("TLS options need a wss:// url", e, 1, true)
    end, "closed 4005 lua bye")
  end)

  it("reports a refused handshake and a bad url", function()
    local port = H.free_port()
    local p = H.start(("spec/fixtures/ws_server.lua tcp://127.0.0.1:%d"):format(port))
    p:wait_output("listening on")
    local r = table.pack(H.run(function()
      local a = table.pack(ws.connect(("ws://127.0.0.1:%d/origin"):format(port)))
      local b = table.pack(ws.connect(("ws://127.0.0.1:%d/origin"):format(port),
        { headers = { Origin = "http://good.example" } }))
      local ok = b[1] and b[1]:close()
      return a[1], a[2], a[3], ok, ws.connect("http://x/")
    end))
    p:stop()
    assert.same({ nil, "handshake refused", 403, true, nil, "bad url 'http://x/'" },
      { r[1], r[2], r[3], r[4], r[5], r[6] })
  end)
end)

describe("sockhost.crypto against python's hashlib, base64 and UTF-8 decoder", function()
  local crypto = require "sockhost.crypto"

  local function tohex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end

  it("agrees on SHA-1, base64 and UTF-8 validity for random and tricky inputs", function()
    math.randomseed(os.time())
    local inputs = { "", "a", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xc0\xaf", "\xe0\x80\xaf",
                     "\xf0\x9f\x98\x80", "\xef\xbf\xbf", "\xc2", "\xe2\x82", "h\u{e9}llo \u{10ffff}" }
    for i = 1, 150 do
      local t, n = {}, math.random(0, i < 100 and 40 or 3000)
      local ascii = math.random() < 0.5
      for j = 1, n do t[j] = string.char(ascii and math.random(32, 126) or math.random(0, 255)) end
      if ascii and n > 2 then t[n // 2] = "\u{e9}" end     -- a long run of ASCII, then UTF-8
      inputs[#inputs + 1] = table.concat(t)
    end
    local hex = {}
    for i, s in ipairs(inputs) do hex[i] = tohex(s) end
    local file = H.writefile(H.tmpname(".json"), cjson.encode(hex))
    local out, rc = H.sh_cmd(("%s -c %s %s"):format(PYTHON, H.q([[
import base64, hashlib, json, sys
out = []
for h in json.load(open(sys.argv[1])):
    b = bytes.fromhex(h)
    try:
        b.decode("utf-8"); ok = True
    except UnicodeDecodeError:
        ok = False
    out.append([hashlib.sha1(b).hexdigest(), base64.b64encode(b).decode(), ok])
print(json.dumps(out))
]]), H.q(file)))
    assert.equals(0, rc, out)
    local want = cjson.decode(out)
    for i, s in ipairs(inputs) do
      local w = want[i]
      assert.equals(w[1], tohex(crypto.sha1(s)), "sha1 of #" .. i)
      assert.equals(w[2], crypto.base64_encode(s), "base64 of #" .. i)
      assert.equals(s, crypto.base64_decode(w[2]), "base64 back of #" .. i)
      assert.equals(w[3], crypto.utf8_valid(s), "utf-8 of #" .. i .. ": " .. tohex(s))
    end
    for _, bad in ipairs { "a", "ab=c", "abc", "AB==", "AQJ=", "A Q==", "////=" } do
      assert.same({ nil, "bad base64" }, { crypto.base64_decode(bad) }, bad)
    end
  end)

  it("masks like a byte-by-byte XOR at every length and offset", function()
    local key = "\x12\xab\x7f\x80"
    local data = crypto.random(300)
    for n = 0, 70 do
      for off = 0, 3 do
        local s = data:sub(1 + off, n + off)           -- different alignments too
        local t = {}
        for i = 1, #s do t[i] = string.char(s:byte(i) ~ key:byte((off + i - 1) % 4 + 1)) end
        assert.equals(table.concat(t), crypto.mask(s, key, off), ("n %d offset %d"):format(n, off))
      end
    end
    assert.has_error(function() crypto.mask("x", "abc") end)
  end)
end)
