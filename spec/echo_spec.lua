-- End-to-end specs: ./sockhost running scripts, driven by independent
-- clients (python3, LuaSocket) in other processes.
local H = require "helpers"

describe("scripts/echo.lua, end to end", function()
  local proc, host, port
  setup(function()
    proc = H.start("scripts/echo.lua tcp://127.0.0.1:0")
    host, port = H.hostport(proc:wait_output("listening on (%S+)"))
  end)
  teardown(function()
    assert.equals(0, proc:stop())
  end)

  it("echoes 16 MiB of binary data (every byte value, NULs) intact by SHA-256", function()
    local mib = H.big(16, 0.25)                -- one byte at a time: 256 KiB
    local out, rc = H.sh_cmd(("timeout 60 python3 spec/fixtures/echo_client.py %s %d %s"):format(host, port, mib))
    assert.equals(0, rc, out)
    local total, got, h1, h2 = out:match("(%d+) (%d+) (%x+) (%x+)")
    assert.equals(mib * 1024 * 1024, tonumber(total))
    assert.equals(tonumber(total), tonumber(got))
    assert.equals(h1, h2)
  end)

  it("serves many clients at once (LuaSocket)", function()
    local clients = {}
    for i = 1, 50 do clients[i] = H.tcp(host, port) end
    for i, c in ipairs(clients) do assert(c:send("client " .. i .. "\n")) end
    for i, c in ipairs(clients) do
      assert.equals("client " .. i, c:receive("*l"))
      c:close()
    end
  end)
end)

describe("backpressure, end to end", function()
  it("a peer that does not read while the script writes 100 MiB: memory stays bounded", function()
    -- one byte at a time: 1 MiB, still far more than the kernel takes in the
    -- second the peer waits plus the 64 KiB output queue
    local mib = H.big(100, 1)
    local proc = H.start("spec/fixtures/flood.lua tcp://127.0.0.1:0 " .. mib)
    finally(function() proc:stop() end)
    local host, port = H.hostport(proc:wait_output("listening (%S+)"))
    H.socket.sleep(0.1)
    local before = proc:rss_kib()
    local c = H.tcp(host, port, 10)
    H.socket.sleep(1.0)                        -- the writer fills the kernel and parks
    local during = proc:rss_kib()
    assert.is_nil(proc:stdout():match("sent"))  -- it could not finish: it waits
    local got = 0
    while true do
      local data, err, partial = c:receive(65536)
      data = data or partial
      got = got + #data
      if err then break end
    end
    c:close()
    proc:wait_output("sent (%d+)")
    local after = proc:rss_kib()
    assert.equals(0, proc:stop())
    assert.equals(mib * 1024 * 1024, got)
    -- growth while parked: the output queue is capped at 64 KiB
    assert.is_true(during - before < 8 * 1024,
      ("RSS grew %d KiB while the peer did not read"):format(during - before))
    assert.is_true(after - before < 16 * 1024, ("RSS grew %d KiB"):format(after - before))
  end)
end)
