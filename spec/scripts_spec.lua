-- The example scripts as a newcomer meets them: each says in its header what
-- it is, where it listens by default and how to talk to it; scripts/echo.lua
-- driven by the clients its header names (nc, python3 sockets). chat.lua and
-- proxy.lua have specs of their own (chat_spec.lua, proxy_spec.lua).
local H = require "helpers"

describe("example scripts", function()
  for _, name in ipairs { "echo", "chat", "proxy" } do
    it(name .. ".lua: its header names it, its default address and a client to try", function()
      local src = assert(H.readfile("scripts/" .. name .. ".lua"))
      local header = src:match("^(.-)\n[^%-]")          -- the leading comment lines
      assert.truthy(header:match("^%-%- " .. name .. "%.lua %-%- %S"), header)
      local documented = header:match("%(default (tcp://127%.0%.0%.1:%d+)%)")
      assert.truthy(documented, "no '(default tcp://127.0.0.1:PORT)' in the header")
      local code = src:sub(#header + 1)
      assert.truthy(code:find('"' .. documented .. '"', 1, true),
        "the default in the code is not the documented " .. documented)
      local port = documented:match(":(%d+)$")
      assert.truthy(header:match("nc 127%.0%.0%.1 " .. port), "no 'nc 127.0.0.1 " .. port .. "' in the header")
    end)
  end
end)

describe("scripts/echo.lua with real clients", function()
  local proc, port
  setup(function()
    proc = H.start("scripts/echo.lua tcp://127.0.0.1:0")
    port = select(2, H.hostport(proc:wait_output("listening on (%S+)")))
  end)
  teardown(function()
    assert.equals(0, proc:stop())
  end)

  it("nc: printf 'hello\\nworld\\n' | nc -N 127.0.0.1 PORT prints both lines back", function()
    local out, rc = H.sh_cmd(("printf 'hello\\nworld\\n' | timeout 10 nc -N 127.0.0.1 %d"):format(port))
    assert.equals(0, rc)
    assert.equals("hello\nworld\n", out)
  end)

  it("nc: a 1 MiB binary file comes back byte for byte (nc -N half-closes, the echo then ends)", function()
    local size = H.big and H.big(1048576, 131072) or 1048576   -- less under the one-byte shim
    local src, dst = H.tmpname(".bin"), H.tmpname(".bin")
    local out, rc = H.sh_cmd(("head -c %d /dev/urandom > %s && timeout 60 nc -N 127.0.0.1 %d < %s > %s && cmp %s %s && wc -c < %s")
      :format(size, src, port, src, dst, src, dst, dst))
    assert.equals(0, rc, out)
    assert.equals(size, tonumber(out))
    os.remove(src); os.remove(dst)
  end)

  it("python3 socket: one line at a time, each answered before the next; EOF after shutdown(SHUT_WR)", function()
    local out, rc = H.sh_cmd(("timeout 20 python3 -c %s %d"):format(H.q([[
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
for i in range(100):
    line = b"line %d \x00\xff\r\n" % i
    s.sendall(line)
    got = b""
    while len(got) < len(line):
        got += s.recv(len(line) - len(got))
    assert got == line, (got, line)
s.sendall(b"last, unanswered until the half-close")
s.shutdown(socket.SHUT_WR)
rest = b""
while True:
    data = s.recv(4096)
    if not data:
        break
    rest += data
print("ok", rest.decode())
]]), port))
    assert.equals(0, rc, out)
    assert.equals("ok last, unanswered until the half-close\n", out)
  end)
end)
