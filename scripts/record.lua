-- record.lua -- record real sessions for sockhost.test: a forwarder (like
-- proxy.lua) that also writes, for each connection, the bytes each way with
-- their times, as a transcript a spec replays with session:replay().
--
--   sockhost scripts/record.lua LISTEN UPSTREAM PREFIX
--     e.g. sockhost scripts/record.lua tcp://127.0.0.1:7999 tcp://127.0.0.1:7010 /tmp/chat
--     then point a real client at 127.0.0.1:7999; connection N is written to
--     PREFIX-N.txt when it ends.
-- Times are seconds from the connection's start. A transcript line is
-- "<time> <direction> <bytes>": ">" went to the server, "<" came from it,
-- "end" when the server ended the stream, "shutdown" when the client did.
local sh = require "sockhost"
local T = require "sockhost.test"

local listen_at, upstream, prefix = arg[1], arg[2], arg[3]
if not (listen_at and upstream and prefix) then
  io.stderr:write("usage: sockhost scripts/record.lua LISTEN UPSTREAM PREFIX\n")
  os.exit(2)
end

local count = 0

-- Copy one way, noting each piece as it passes.
local function pipe(from, to, dir, events, t0)
  while true do
    local data = from:read_some()
    if not data then
      events[#events + 1] = { sh.now() - t0, dir == ">" and "shutdown" or "end" }
      to:shutdown()
      return
    end
    events[#events + 1] = { sh.now() - t0, dir, data }
    if not to:write(data) then
      from:close()
      to:close()
      return
    end
  end
end

local srv = assert(sh.listen(listen_at, function(client)
  count = count + 1
  local n, t0, events = count, sh.now(), {}
  local server, err = sh.connect(upstream, { timeout = 10 })
  if not server then
    sh.log("warn", ("record: %s: %s"):format(upstream, err))
    return
  end
  local up = sh.spawn(pipe, client, server, ">", events, t0)
  local down = sh.spawn(pipe, server, client, "<", events, t0)
  up:join(); down:join()
  server:close()
  local path = ("%s-%d.txt"):format(prefix, n)
  T.write_transcript(path, events)
  sh.log("info", ("record: connection %d: %d events in %s"):format(n, #events, path))
end))
print(("record: listening on %s, forwarding to %s, writing %s-N.txt"):format(srv:address(), upstream, prefix))
