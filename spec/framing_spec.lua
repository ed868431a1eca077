-- sockhost.framing: length-prefixed messages, in strings and over real
-- loopback connections, with the independent encoding checked by hand
-- (string.pack) and by python3's struct module.
local H = require "helpers"
local sh = H.sh
local framing = require "sockhost.framing"

local KINDS = { "u8", "u16", "u32", "varint" }

describe("sockhost.framing", function()
  it("is require 'sockhost.framing' and the field sockhost.framing, the same table", function()
    assert.equals(framing, sh.framing)
    assert.is_nil(sh.no_such_module)
  end)

  it("encodes big-endian lengths and varints as the formats define them", function()
    assert.equals("\5hello", framing.encode("u8", "hello"))
    assert.equals("\0\5hello", framing.encode("u16", "hello"))
    assert.equals("\0\0\1\0" .. ("x"):rep(256), framing.encode("u32", ("x"):rep(256)))
    assert.equals("\0", framing.encode("varint", ""))
    assert.equals("\127" .. ("y"):rep(127), framing.encode("varint", ("y"):rep(127)))
    assert.equals("\172\2" .. ("z"):rep(300), framing.encode("varint", ("z"):rep(300)))  -- 300 = 0xac 0x02
    assert.has_error(function() framing.encode("u8", ("x"):rep(256)) end,
      "payload of 256 bytes too long for a u8 length")
    assert.has_error(function() framing.encode("u12", "x") end,
      "bad framing kind 'u12' (expected u8, u16, u32 or varint)")
  end)

  it("decodes what it encodes, several messages in one string, and says when more is needed", function()
    for _, kind in ipairs(KINDS) do
      local msgs = { "", "a", ("b"):rep(200), "\0\r\n\255" }
      local s = {}
      for i, m in ipairs(msgs) do s[i] = framing.encode(kind, m) end
      s = table.concat(s)
      local pos = 1
      for _, m in ipairs(msgs) do
        local got
        got, pos = framing.decode(kind, s, pos)
        assert.equals(m, got)
      end
      assert.equals(#s + 1, pos)
      local one = framing.encode(kind, "abc")
      for cut = 0, #one - 1 do
        local got, err = framing.decode(kind, one:sub(1, cut))
        assert.is_nil(got)
        assert.equals("short", err)
      end
    end
    assert.same({ nil, "too large" }, { framing.decode("u16", "\1\0" .. ("x"):rep(256), 1, 255) })
    assert.same({ nil, "bad length" }, { framing.decode("varint", ("\255"):rep(11) .. "\0") })
  end)

  it("reads and writes messages over a connection, also arriving a byte at a time", function()
    local got = H.run(function()
      local srv = assert(sh.listen("tcp://127.0.0.1:0", function(conn)
        for _, kind in ipairs(KINDS) do
          local m = assert(framing.read(conn, kind))
          assert(framing.write(conn, kind, m:upper()))
        end
        conn:close()
      end))
      local c = assert(sh.connect(srv:address()))
      local out = {}
      for _, kind in ipairs(KINDS) do
        local wire = framing.encode(kind, kind .. ("!"):rep(300 % (kind == "u8" and 200 or 301)))
        for i = 1, #wire do assert(c:write(wire:sub(i, i))) if i % 7 == 0 then sh.sleep(0.001) end end
        out[#out + 1] = assert(framing.read(c, kind))
      end
      c:close()
      srv:close()
      return out
    end)
    assert.equals("U8" .. ("!"):rep(100), got[1])
    assert.equals("U16" .. ("!"):rep(300), got[2])
    assert.equals("U32" .. ("!"):rep(300), got[3])
    assert.equals("VARINT" .. ("!"):rep(300), got[4])
  end)

  it("refuses a message over the maximum before reading its body; reports the peer's close", function()
    local r = H.run(function()
      local srv = assert(sh.listen("tcp://127.0.0.1:0", function(conn)
        conn:write(string.pack(">I4", 2000000000))     -- announces 2 GB, sends nothing
        conn:write(framing.encode("u16", "tail"):sub(1, 4))  -- and half a message
        conn:close()
      end))
      local c = assert(sh.connect(srv:address()))
      local a, aerr = framing.read(c, "u32", 1024)
      local b, berr, partial = framing.read(c, "u16")
      c:close()
      srv:close()
      return { a, aerr, b, berr, partial }
    end)
    assert.same({ nil, "too large", nil, "closed", "ta" }, { r[1], r[2], r[3], r[4], r[5] })
  end)

  it("talks with python3's struct framing (u32) both ways", function()
    H.run(function()
      local srv = assert(sh.listen("tcp://127.0.0.1:0", function(conn)
        while true do
          local m = framing.read(conn, "u32")
          if not m then break end
          framing.write(conn, "u32", ("%d:%s"):format(#m, m))
        end
        conn:close()
      end))
      local port = srv:address():match(":(%d+)$")
      local py = H.launch_python([[
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
def recv_exact(n):
    b = b""
    while len(b) < n:
        d = s.recv(n - len(b))
        if not d: raise SystemExit("closed")
        b += d
    return b
for m in (b"", b"hello", bytes(range(256)) * 40):
    s.sendall(struct.pack(">I", len(m)) + m)
    n = struct.unpack(">I", recv_exact(4))[0]
    print(recv_exact(n)[:12])
s.close()
]], port)
      local function rc() return tonumber(H.readfile(py.rcf) or "") end
      local deadline = sh.now() + 10
      while rc() == nil and sh.now() < deadline do sh.sleep(0.02) end
      srv:close()
      assert.equals(0, rc(), H.readfile(py.err))
      assert.equals("b'0:'\nb'5:hello'\nb'10240:\\x00\\x01\\x02\\x03\\x04\\x05'\n",
        H.readfile(py.out))
    end, 15)
  end)
end)
