-- sockhost.socket.pool -- the keep-alive pool behind sockhost.socket's
-- setkeepalive (OpenResty-style): idle connections kept by key ("host:port"),
-- handed out again by the next connect to the same key.
--
-- PRIVATE AND PROVISIONAL: a minimal pool of sockhost.socket's own, until the
-- shared sockhost.pool (issue 16, another branch) is merged; then this file
-- goes and socket.tcp.lua calls sockhost.pool instead. Keep the interface
-- this narrow so that the move is a one-line change:
--   pool.get(key) -> conn | nil        (a live idle conn, taken out)
--   pool.put(key, conn [, opts]) -> true
--     opts.idle: seconds a conn may stay idle (default 60)
--     opts.size: most idle conns kept for the key (default 30); the oldest
--                is closed to make room
--
-- No timer and no task: an idle conn holds nothing on the loop (a script
-- ends as usual with conns in the pool). Expiry is checked at get and put,
-- and a conn is checked alive when taken: its peer must not have closed it
-- nor sent anything while it was idle (either way it is closed and skipped).
local sh = require "sockhost"

local M = {}

local idle = {}   -- key -> list of { conn =, deadline = }, oldest first

local function drop_expired(list, now)
  local i = 1
  while i <= #list do
    if list[i].deadline <= now then
      list[i].conn:close()
      table.remove(list, i)
    else
      i = i + 1
    end
  end
end

-- Alive and quiet: nothing arrived, and the stream has not ended. A read of
-- one byte with a timeout of 0 returns at once with what is buffered.
local function quiet(conn)
  conn:settimeout(0)
  local data, err = conn:read_some(1)
  conn:settimeout(nil)
  return data == nil and err == "timeout"
end

function M.get(key)
  local list = idle[key]
  if not list then return nil end
  drop_expired(list, sh.now())
  while #list > 0 do
    local conn = table.remove(list).conn   -- the most recently used first
    if quiet(conn) then return conn end
    conn:close()
  end
  idle[key] = nil
  return nil
end

function M.put(key, conn, opts)
  opts = opts or {}
  local now = sh.now()
  local list = idle[key] or {}
  idle[key] = list
  drop_expired(list, now)
  local size = opts.size or 30
  while #list >= size and #list > 0 do
    table.remove(list, 1).conn:close()
  end
  if size < 1 then conn:close() return true end
  list[#list + 1] = { conn = conn, deadline = now + (opts.idle or 60) }
  return true
end

-- How many idle conns the key holds (for specs and debugging).
function M.count(key)
  local list = idle[key]
  return list and #list or 0
end

return M
