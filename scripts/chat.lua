-- chat.lua -- a line-based chat room: each line a client sends goes to all
-- the others as "<nick> text".
--
--   sockhost scripts/chat.lua [address]      (default tcp://127.0.0.1:7010)
--   then: nc 127.0.0.1 7010                  (in two or more terminals)
--
--   sockhost [-w N] scripts/chat.lua [address] --redis redis://127.0.0.1:6379
--   one room across every worker and every process naming the same Redis
--   (see "The room across processes" below).
--
-- A newcomer is named guestN; everyone sees who joins and leaves. Commands:
-- /nick NAME (1 to 16 ASCII letters, digits, _ or -), /who, /quit. A line
-- longer than 4 KiB ends the session.
-- What a client says is shown to the others, never obeyed by their terminals:
-- control characters (C0, DEL and C1: ESC, CR, NUL, ...), bytes that are not
-- UTF-8, and the characters that reorder or break a line (Unicode's bidi
-- controls, U+2028, U+2029) are escaped as the host's log escapes them
-- ("\t", "\x1b", "\u{202e}"); the rest of UTF-8 goes through as it is. So
-- no line can retitle a terminal, clear it, or overwrite its "<nick>".
-- Each client has its own channel of outgoing lines, written out by a task
-- of its own, so a client that stops reading never holds up the room: once
-- 64 KiB wait for it, it is dropped (and logged). Clients on which nothing
-- moves for 300 s are cut by the host (sockhost --idle-timeout S
-- scripts/chat.lua).
local sh = require "sockhost"

local MAX_QUEUED = 64 * 1024      -- bytes waiting for one client before it is dropped
local clients = {}                -- client -> true
local by_nick = {}                -- nick -> client, the clients of this process
local guests = 0
local room                        -- the Redis room, with --redis (below)

local addr, redis_url = "tcp://127.0.0.1:7010", nil
do
  local i = 1
  while arg[i] do
    if arg[i] == "--redis" then redis_url, i = arg[i + 1], i + 2
    else addr, i = arg[i], i + 1 end
  end
end

-- A task per client: write out the lines sent to it, until its channel is
-- closed and empty or the connection fails.
local function writer(c)
  for line in function() return c.out:receive() end do
    c.queued = c.queued - #line
    if not c.conn:write(line) then break end
  end
end

local leave

-- The escaped form of a line (see the header). Printable ASCII, the usual
-- case, is returned as it is.
local function hex_byte(b)
  if b == "\t" then return "\\t" end
  return ("\\x%02x"):format(b:byte())
end
local function hex_char(ch) return ("\\u{%x}"):format(utf8.codepoint(ch)) end

local function escape_utf8(s)                            -- s: valid UTF-8
  s = s:gsub("[\0-\31\127]", hex_byte)                  -- C0 controls, DEL
  if s:find("[\194\216\226]") then
    s = s:gsub("\194[\128-\159]", hex_char)             -- C1 controls, U+0080..U+009F
      :gsub("\216\156", hex_char)                       -- U+061C
      :gsub("\226\128[\142\143\168-\174]", hex_char)    -- U+200E, U+200F, U+2028..U+202E
      :gsub("\226\129[\166-\169]", hex_char)            -- U+2066..U+2069
  end
  return s
end

local function shown(line)
  if not line:find("[^\32-\126]") then return line end
  local out, i, n = {}, 1, #line
  while i <= n do
    local ok, bad = utf8.len(line, i)     -- not ok: bad is the first byte that is not UTF-8
    out[#out + 1] = escape_utf8(line:sub(i, ok and n or bad - 1))
    if ok then break end
    out[#out + 1] = hex_byte(line:sub(bad, bad))
    i = bad + 1
  end
  return table.concat(out)
end

-- Queue a line for one client. Never blocks (a send with no time to wait);
-- the channel has room for a line per byte allowed, so the bytes run out
-- first.
local function send(c, line)
  if c.gone then return end
  if c.queued + #line > MAX_QUEUED or not c.out:send(line .. "\n", 0) then
    sh.log("warn", ("chat: dropping %s (%s): not reading, %d bytes waiting"):format(c.nick, c.peer, c.queued))
    c.conn:abort()
    return leave(c, "not reading")
  end
  c.queued = c.queued + #line + 1
end

-- To the clients of this process.
local function broadcast_here(line, except)
  for c in pairs(clients) do
    if c ~= except then send(c, line) end
  end
end

-- To the whole room: here, and to the other processes through Redis.
local function broadcast(line, except)
  broadcast_here(line, except)
  if room then room.publish(line) end
end

function leave(c, why)
  if c.gone then return end
  c.gone = true
  clients[c], by_nick[c.nick] = nil, nil
  if room then room.release(c.nick) end
  sh.log("info", ("chat: %s (%s) left%s"):format(c.nick, c.peer, why and ": " .. why or ""))
  broadcast("* " .. c.nick .. " left" .. (why and " (" .. why .. ")" or ""))
end

---------------------------------------------------------------- the room across processes
-- With --redis, every process (each worker of -w N, on any host) is an
-- instance of one room. In Redis:
--   chat:members      a hash nick -> the instance that has it: /nick is
--                     unique across the room (HSETNX), /who lists it
--   chat:alive:<id>   each instance's heartbeat: set every second with a
--                     3 s expiry, with its nicks written again (they come
--                     back by themselves after Redis restarts empty)
--   chat:room         the channel: "<instance id>\n<line>" for every line,
--                     join, leave and nick change; each instance shows the
--                     others' to its clients, in the order they came
-- An instance that dies without goodbye stops its heartbeat: within a
-- second of its key expiring, a reaper (every instance runs one; the HDEL
-- that wins announces) tells the room its users left.
local function redis_room(url)
  local redis = require "sockhost.redis"
  local HEARTBEAT, TTL = 1, 3
  local id = ("%d.%d.%x"):format(sh.worker or 0, math.floor(sh.now() * 1e6) % 1e9, math.random(1 << 30))
  local MEMBERS, ALIVE = "chat:members", "chat:alive:"
  -- Delete a member only if it still belongs to the instance given.
  local HDEL_IF = "if redis.call('hget', KEYS[1], ARGV[1]) == ARGV[2] then "
    .. "return redis.call('hdel', KEYS[1], ARGV[1]) end return 0"
  -- Short bounds: a Redis that hangs must not hold up a client's line for long.
  local db = assert(redis.pool(url, { size = 4, wait_timeout = 2, timeout = 2, connect_timeout = 2 }))
  local sub = assert(redis.subscriber(url, { max_queued = 10000 }))
  assert(sub:subscribe("chat:room"))
  local r = {}

  function r.claim(nick) return db:hsetnx(MEMBERS, nick, id) == 1 end
  function r.release(nick) db:eval(HDEL_IF, 1, MEMBERS, nick, id) end
  function r.publish(line) db:publish("chat:room", id .. "\n" .. line) end
  function r.names()
    local v = db:hkeys(MEMBERS)
    return type(v) == "table" and v or nil
  end
  function r.next_guest() return tonumber(db:incr("chat:guests")) end

  local function heartbeat()
    db:multi(function(tx)
      tx:set(ALIVE .. id, 1, "EX", TTL)
      for nick in pairs(by_nick) do tx:hsetnx(MEMBERS, nick, id) end
    end)
  end
  local function reap()
    local members = db:hgetall(MEMBERS)
    if type(members) ~= "table" then return end
    local alive = { [id] = true }
    for nick, inst in pairs(members) do
      if alive[inst] == nil then alive[inst] = db:exists(ALIVE .. inst) ~= 0 end
      if not alive[inst] and db:eval(HDEL_IF, 1, MEMBERS, nick, inst) == 1 then
        sh.log("info", ("chat: %s left with its instance %s"):format(nick, inst))
        broadcast("* " .. nick .. " left (gone)")
      end
    end
  end
  heartbeat()
  local timer = sh.every(HEARTBEAT, function() heartbeat() reap() end)

  sh.spawn(function()
    while true do
      local kind, _, msg = sub:next()
      if kind == nil then break end
      if kind == "message" then
        local from, line = msg:match("^([^\n]*)\n(.*)$")
        if from and from ~= id then broadcast_here(line) end
      elseif kind == "gap" then
        sh.log("warn", "chat: the room was cut off from Redis; lines may be missing")
        broadcast_here("* the room was cut off for a moment: lines may be missing")
      end
    end
  end)

  function r.close()
    timer:cancel()
    sub:close()
    db:del(ALIVE .. id)
    db:close()
  end
  return r
end

local commands = {}

function commands.nick(c, name)
  if #name > 16 or not name:match("^[A-Za-z0-9_%-]+$") then   -- not %w: it follows the C locale
    send(c, "* a nick is 1 to 16 letters, digits, _ or -")
  elseif by_nick[name] or (room and not room.claim(name)) then
    send(c, "* " .. name .. " is taken")
  else
    if room then room.release(c.nick) end
    broadcast("* " .. c.nick .. " is now " .. name)
    by_nick[c.nick], by_nick[name], c.nick = nil, c, name
  end
end

function commands.who(c)
  local nicks = room and room.names()
  if not nicks then
    nicks = {}
    for nick in pairs(by_nick) do nicks[#nicks + 1] = nick end
  end
  table.sort(nicks)
  send(c, "* here: " .. table.concat(nicks, " "))
end

function commands.quit(c)
  send(c, "* bye")
  return "quit"
end

-- A guest name no one in the room has.
local function guest_name()
  if room then
    for _ = 1, 100 do
      local n = room.next_guest()
      if not n then break end                          -- Redis unreachable: a local name
      if not by_nick["guest" .. n] and room.claim("guest" .. n) then return "guest" .. n end
    end
  end
  repeat guests = guests + 1 until not by_nick["guest" .. guests]
  return "guest" .. guests
end

if redis_url then
  room = redis_room(redis_url)
  sh.on_shutdown(function()
    for c in pairs(clients) do leave(c, nil) end
    room.close()
  end)
end

local srv = assert(sh.listen(addr, function(conn)
  local c = { conn = conn, peer = conn:peer(), out = sh.channel(MAX_QUEUED), queued = 0 }
  local out <close> = c.out         -- however the handler ends, so does the writer
  local writing = sh.spawn(writer, c)
  c.nick = guest_name()
  clients[c], by_nick[c.nick] = true, c
  sh.log("info", ("chat: %s (%s) joined"):format(c.nick, c.peer))
  send(c, "* welcome, you are " .. c.nick .. " (/nick NAME, /who, /quit)")
  broadcast("* " .. c.nick .. " joined", c)

  local why
  while not c.gone do
    local line, err = conn:read("l")
    if not line then
      if err ~= "closed" then why = err end       -- "line too long"
      break
    end
    local cmd, rest = line:match("^/(%a+)%s*(.-)%s*$")
    if cmd and commands[cmd] then
      if commands[cmd](c, rest) == "quit" then break end
    elseif cmd then
      send(c, "* unknown command /" .. cmd)
    elseif line ~= "" then
      broadcast("<" .. c.nick .. "> " .. shown(line), c)
    end
    sh.sleep(0)              -- one line a turn: a flood of input cannot starve the writers
  end
  leave(c, why)
  out:close()                       -- the writer delivers what is queued, then ends
  writing:join()
end, { max_line = 4096 }))
print("chat: listening on " .. srv:address())
