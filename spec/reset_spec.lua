-- A peer that first ends its output (FIN) and later resets: a writer parked
-- on that connection must be woken with "closed" when the reset comes. (It
-- was not: once the input had ended, a failed write told nobody, and the
-- task waited until the idle limit. scripts/proxy.lua met it with a client
-- that half-closed, stopped reading, then went away.)
local H = require "helpers"

describe("a peer that half-closes, then resets", function()
  local flood
  after_each(function() flood:stop() end)

  it("wakes the writer parked on it with 'closed', and the connection is closed", function()
    flood = H.start("spec/fixtures/flood.lua tcp://127.0.0.1:0 100")
    local port = select(2, H.hostport(flood:wait_output("listening (%S+)")))
    local sockets = function()
      local n = 0
      for _, fd in ipairs(flood:fds()) do
        local l = H.sh_cmd(("readlink /proc/%d/fd/%d"):format(flood.pid, fd))
        if l:match("^socket:") then n = n + 1 end
      end
      return n
    end
    -- the listener, and any socket it inherited from busted's process (a
    -- LuaSocket socket an earlier spec left for the collector is not
    -- close-on-exec): what must be left once the client is gone
    local before = sockets()
    local out, rc = H.sh_cmd(("timeout 20 python3 -c %s %d"):format(H.q([[
import socket, struct, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
n = 0
while n < 200000:
    n += len(s.recv(65536))
s.shutdown(socket.SHUT_WR)      # FIN: the server's input ends
time.sleep(1)                   # not reading: the server's writer parks
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()                       # then a reset
print("ok")
]]), port))
    assert.equals("ok\n", out, out)
    assert.equals(0, rc)
    local deadline = H.socket.gettime() + 5
    while not flood:stderr():match("failed") and H.socket.gettime() < deadline do
      H.socket.sleep(0.02)
    end
    -- (the peer is named: its address is remembered past the reset)
    assert.truthy(flood:stderr():match("ERROR conn #1 tcp://127%.0%.0%.1:%d+ failed: spec/fixtures/flood%.lua:%d+: closed"),
      flood:stderr())
    assert.equals(before, sockets())             -- the client's connection closed
    assert.equals(0, flood:stop())
  end)
end)
