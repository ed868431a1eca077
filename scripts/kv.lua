-- kv.lua -- a Redis-protocol key-value server (strings only, in memory):
-- PING ECHO SET (EX PX NX XX KEEPTTL GET) GET DEL EXISTS INCR DECR INCRBY
-- DECRBY MGET MSET EXPIRE PEXPIRE (NX XX GT LT) TTL PTTL PERSIST KEYS SCAN
-- (MATCH COUNT TYPE) DBSIZE FLUSHALL QUIT, and the CONFIG GET and COMMAND
-- that redis-benchmark and redis-cli ask for. Pipelining works; errors read
-- as Redis's own.
-- A long command yields every 10,000 steps or so (a key looked at, an
-- argument, a glob step, a reply element), so a KEYS over millions of keys
-- or an MGET of a million is answered while the other clients are served;
-- unlike Redis's, such a command is not atomic (a KEYS returns every key
-- there throughout; those set or deleted meanwhile may or may not be).
-- DBSIZE and FLUSHALL take the same short time whatever the size.
--
--   sockhost scripts/kv.lua [address]      (default tcp://127.0.0.1:6380)
--   then: redis-cli -p 6380 set greeting hello EX 60
--         redis-cli -p 6380               (interactive)
--         nc 127.0.0.1 6380               (type inline commands: PING, GET greeting)
local sh = require "sockhost"
local resp = require "sockhost.resp"

local OK, PONG = resp.status("OK"), resp.status("PONG")
local NULL, EMPTY = resp.null, {}
local E_INT = resp.error("ERR value is not an integer or out of range")
local E_SYNTAX = resp.error("ERR syntax error")
local function err(msg) return resp.error("ERR " .. msg) end

---------------------------------------------------------------- the store

-- The keys are in an array, `keys`, without holes (a deleted key's place
-- goes to the last key), their values at the same places in `values`; at[key]
-- is the place, and expires[key] the deadline (ms, monotonic) if it has one.
-- KEYS and SCAN walk `keys` from the end down: keys added meanwhile go after
-- the walk, and a delete moves down only the last key, so a walk that pauses
-- misses no key that stays (it may see one twice, as Redis's SCAN may:
-- `moves` counts what could cause that). Only `at` and `expires` are keyed
-- by the keys: a Lua table that grows past 2^k entries is rebuilt at once,
-- which no yield can split (here 0.14 s at 2^19 keys, 0.6 s at 2^21, 1.2 s
-- at 2^22: past four million keys, the SET that grows it may run into the
-- host's default budget of 1 s).
local at, keys, values, expires, nkeys = {}, {}, {}, {}, 0
local moves = 0

local function now_ms() return math.floor(sh.now() * 1000) end

local function store(key, value)
  local i = at[key]
  if i == nil then
    nkeys = nkeys + 1
    i, keys[nkeys] = nkeys, key
    at[key] = i
  end
  values[i] = value
end

local function delete(key)
  local i = at[key]
  if i == nil then return end
  local last = keys[nkeys]
  if last ~= key then moves = moves + 1 end
  keys[i], values[i], at[last] = last, values[nkeys], i
  keys[nkeys], values[nkeys], at[key], expires[key] = nil, nil, nil, nil
  nkeys = nkeys - 1
end

-- Work that grows with the store or with the arguments (KEYS, SCAN, MGET,
-- MSET, DEL, EXISTS, a glob on a long key, encoding a long reply) counts its
-- steps here and yields every QUANTUM of them: other clients are served
-- meanwhile, and a large request is answered instead of running into the
-- host's budget (which is left to stop runaway code). Unlike Redis's, such a
-- command is not atomic past QUANTUM steps.
local QUANTUM = 10000
local steps = 0
local function spend(n)
  steps = steps + n
  if steps >= QUANTUM then
    steps = 0
    sh.sleep(0)
  end
end

-- The value of key, or nil when there is none or it has expired.
local function get(key)
  local i = at[key]
  if i == nil then return nil end
  local t = expires[key]
  if t ~= nil and t <= now_ms() then delete(key); return nil end
  return values[i]
end

-- Expired keys nobody asks for: every 0.1 s look at up to 1000 keys with a
-- deadline, going on where the previous sweep stopped.
local sweep_at                   -- next key to look at (nil: from the start)
local sweeper = sh.every(0.1, function()
  local now = now_ms()
  if sweep_at ~= nil and expires[sweep_at] == nil then sweep_at = nil end
  local k = sweep_at
  if k == nil then k = next(expires) end
  for _ = 1, 1000 do
    if k == nil then break end
    local after = next(expires, k)
    if expires[k] <= now then delete(k) end
    k = after
  end
  sweep_at = k
end)
sh.on_shutdown(function() sweeper:cancel() end)   -- else it holds the process

-- A canonical decimal integer (as Redis's string2ll: no spaces, no '+', no
-- leading zeros), or nil.
local function int(s)
  local n = math.tointeger(tonumber(s))
  if n ~= nil and tostring(n) == s then return n end
  return nil
end

-- Redis's glob (KEYS, CONFIG GET): * ? [abc] [a-z] [^a] and \x, compiled
-- to tokens (a byte, ANY, STAR, or a class { set, negated }) and matched
-- byte by byte with backtracking to the last star only: O(#pattern * #key),
-- and nothing of the pattern ever reaches a Lua pattern.
local ANY, STAR = {}, {}

local function compile_class(p, i)   -- i: just after '['; returns class, next i
  local set, n = {}, #p
  local negated = p:sub(i, i) == "^"
  if negated then i = i + 1 end
  while i <= n and p:sub(i, i) ~= "]" do
    local c = p:byte(i)
    if c == 92 and i < n then                         -- \x
      i = i + 1
      set[p:byte(i)] = true
    elseif i + 2 <= n and p:sub(i + 1, i + 1) == "-" then   -- a-z (or z-a)
      local lo, hi = c, p:byte(i + 2)
      if lo > hi then lo, hi = hi, lo end
      for b = lo, hi do set[b] = true end
      i = i + 2
    else
      set[c] = true
    end
    i = i + 1
  end
  return { set = set, negated = negated }, i + 1
end

local function compile_glob(p)
  local toks, i, n = {}, 1, #p
  while i <= n do
    spend(1)
    local c = p:byte(i)
    if c == 42 then                                   -- *
      if toks[#toks] ~= STAR then toks[#toks + 1] = STAR end
      i = i + 1
    elseif c == 63 then toks[#toks + 1] = ANY; i = i + 1
    elseif c == 91 then toks[#toks + 1], i = compile_class(p, i + 1)
    else
      if c == 92 and i < n then i = i + 1; c = p:byte(i) end
      toks[#toks + 1] = c
      i = i + 1
    end
  end
  return toks
end

local function one(tok, b)
  if tok == ANY then return true end
  if type(tok) == "number" then return tok == b end
  return (tok.set[b] == true) ~= tok.negated
end

local function glob_match(toks, s)
  local ti, si, n = 1, 1, #s
  local star, retry                 -- the last star's token index, where to retry
  local redone = 0                  -- steps taken again after a retry (for spend)
  local ok = true
  while si <= n do
    local tok = toks[ti]
    if tok == STAR then
      star, retry, ti = ti, si, ti + 1
    elseif tok ~= nil and tok ~= STAR and one(tok, s:byte(si)) then
      ti, si = ti + 1, si + 1
    elseif star then
      redone = redone + ti - star
      if redone >= QUANTUM then spend(redone); redone = 0 end
      retry = retry + 1
      ti, si = star + 1, retry
    else
      ok = false
      break
    end
  end
  spend(redone + n)
  if not ok then return false end
  while toks[ti] == STAR do ti = ti + 1 end
  return toks[ti] == nil
end

---------------------------------------------------------------- commands

-- name -> { arity, fn }: arity counts the name, as Redis's does (-n: at
-- least n). fn(args, nargs) returns the reply, and true to close after it.
local commands = {}
local function command(name, arity, fn) commands[name] = { name = name, arity = arity, fn = fn } end

local function arity_error(name) return err(("wrong number of arguments for '%s' command"):format(name)) end

command("ping", -1, function(a, n)
  if n > 2 then return arity_error("ping") end
  return a[2] or PONG
end)
command("echo", 2, function(a) return a[2] end)
command("quit", -1, function() return OK, true end)

command("get", 2, function(a) return get(a[2]) end)

-- SET key value [NX|XX] [GET] [EX s|PX ms|KEEPTTL]
command("set", -3, function(a, n)
  local nx, xx, keepttl, ttl, want_old
  local i = 4
  while i <= n do
    spend(1)
    local opt = a[i]:upper()
    if opt == "NX" and not xx then nx = true
    elseif opt == "XX" and not nx then xx = true
    elseif opt == "KEEPTTL" and not ttl then keepttl = true
    elseif opt == "GET" then want_old = true
    elseif (opt == "EX" or opt == "PX") and not ttl and not keepttl and i < n then
      i = i + 1
      ttl = int(a[i])
      if not ttl then return E_INT end
      if ttl <= 0 or (opt == "EX" and ttl > math.maxinteger // 1000) then
        return err("invalid expire time in 'set' command")
      end
      if opt == "EX" then ttl = ttl * 1000 end
      if ttl > math.maxinteger - now_ms() then return err("invalid expire time in 'set' command") end
    else
      return E_SYNTAX
    end
    i = i + 1
  end
  local old = (nx or xx or want_old) and get(a[2])
  local reply = want_old and (old or NULL) or OK
  if (nx and old) or (xx and not old) then return want_old and reply or NULL end
  store(a[2], a[3])
  if ttl then expires[a[2]] = now_ms() + ttl elseif not keepttl then expires[a[2]] = nil end
  return reply
end)

command("mget", -2, function(a, n)
  local out = {}
  for i = 2, n do
    out[i - 1] = get(a[i]) or NULL
    spend(1)
  end
  return out
end)

command("mset", -3, function(a, n)
  if n % 2 == 0 then return arity_error("mset") end
  for i = 2, n, 2 do
    store(a[i], a[i + 1])
    expires[a[i]] = nil
    spend(1)
  end
  return OK
end)

command("del", -2, function(a, n)
  local count = 0
  for i = 2, n do
    if get(a[i]) ~= nil then delete(a[i]); count = count + 1 end
    spend(1)
  end
  return count
end)

command("exists", -2, function(a, n)
  local count = 0
  for i = 2, n do
    if get(a[i]) ~= nil then count = count + 1 end
    spend(1)
  end
  return count
end)

local function incr(key, by)
  local v, n = get(key), 0
  if v ~= nil then
    n = int(v)
    if not n then return E_INT end
  end
  if (by > 0 and n > math.maxinteger - by) or (by < 0 and n < math.mininteger - by) then
    return err("increment or decrement would overflow")
  end
  store(key, tostring(n + by))                 -- the deadline stays, as in Redis
  return n + by
end

command("incr", 2, function(a) return incr(a[2], 1) end)
command("decr", 2, function(a) return incr(a[2], -1) end)
command("incrby", 3, function(a)
  local by = int(a[3])
  if not by then return E_INT end
  return incr(a[2], by)
end)
command("decrby", 3, function(a)
  local by = int(a[3])
  if not by then return E_INT end
  if by == math.mininteger then return err("decrement would overflow") end
  return incr(a[2], -by)
end)

-- EXPIRE / PEXPIRE key time [NX|XX|GT|LT ...]
local function expire_options(a, n)
  local f = {}
  for i = 4, n do
    spend(1)
    local opt = a[i]:upper()
    if opt ~= "NX" and opt ~= "XX" and opt ~= "GT" and opt ~= "LT" then
      return nil, err("Unsupported option " .. a[i])
    end
    f[opt] = true
  end
  if f.NX and (f.XX or f.GT or f.LT) then
    return nil, err("NX and XX, GT or LT options at the same time are not compatible")
  end
  if f.GT and f.LT then return nil, err("GT and LT options at the same time are not compatible") end
  return f
end

local function expire(a, n, name, unit)
  local f, ferr = expire_options(a, n)
  if not f then return ferr end
  local t = int(a[3])
  if not t then return E_INT end
  local now = now_ms()
  if t > (math.maxinteger - now) // unit or t < (math.mininteger + now) // unit then
    return err(("invalid expire time in '%s' command"):format(name))
  end
  if get(a[2]) == nil then return 0 end
  local old, new = expires[a[2]], now + t * unit
  if (f.NX and old) or (f.XX and not old)             -- no deadline counts as infinite
     or (f.GT and (not old or new <= old)) or (f.LT and old and new >= old) then
    return 0
  end
  if new <= now then delete(a[2]) else expires[a[2]] = new end
  return 1
end

command("expire", -3, function(a, n) return expire(a, n, "expire", 1000) end)
command("pexpire", -3, function(a, n) return expire(a, n, "pexpire", 1) end)

local function ttl(key, unit)
  if get(key) == nil then return -2 end
  local t = expires[key]
  if t == nil then return -1 end
  return (t - now_ms() + unit // 2) // unit     -- TTL rounds to the nearest second
end

command("ttl", 2, function(a) return ttl(a[2], 1000) end)
command("pttl", 2, function(a) return ttl(a[2], 1) end)
command("persist", 2, function(a)
  if get(a[2]) == nil or expires[a[2]] == nil then return 0 end
  expires[a[2]] = nil
  return 1
end)

-- Look at the keys at places i, i - 1, ... (at most `count` of them, and
-- none past the end if the store shrank while it yielded); fn(key) for each
-- live one that matches toks (nil: all). Returns the place to go on from: 0
-- when done.
local function walk(i, count, toks, fn)
  while count > 0 do
    if i > nkeys then i = nkeys end
    if i <= 0 then return 0 end
    local k = keys[i]
    if get(k) ~= nil and (toks == nil or glob_match(toks, k)) then fn(k) end
    i, count = i - 1, count - 1
    spend(1)
  end
  return i
end

-- A glob for walk: nil for "*" (all).
local function compile_match(p)
  local toks = compile_glob(p)
  if #toks == 1 and toks[1] == STAR then return nil end
  return toks
end

command("keys", 2, function(a)
  local toks, out, n, moves_then = compile_match(a[2]), {}, 0, moves
  walk(nkeys, math.huge, toks, function(k) n = n + 1; out[n] = k end)
  if moves == moves_then then return out end
  local seen, once, m = {}, {}, 0            -- keys moved meanwhile: drop the second sightings
  for i = 1, n do
    local k = out[i]
    if not seen[k] then seen[k], m = true, m + 1; once[m] = k end
    spend(1)
  end
  return once
end)

-- A SCAN cursor as Redis reads it (strtoul): an optional sign, then digits
-- up to 2^64 - 1; "-n" wraps around to a large number. nil if invalid.
local function scan_cursor(s)
  local sign, digits = s:match("^([+-]?)0*(%d+)$")
  if not digits then return nil end
  if #digits > 20 or (#digits == 20 and digits > "18446744073709551615") then return nil end
  local c = tonumber(digits)
  if sign == "-" and c ~= 0 then return math.huge end
  return c
end

-- SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]. The cursor is the
-- number of places left to look at (0 to start; 0 back: done); COUNT places
-- are looked at per call (10 by default). Every key there from the first
-- call to the last is returned at least once. All values are strings.
command("scan", -2, function(a, n)
  local cursor = scan_cursor(a[2])
  if not cursor then return err("invalid cursor") end
  local toks, count, wanted = nil, 10, true
  for i = 3, n, 2 do
    spend(1)
    local opt = a[i]:upper()
    if i == n then return E_SYNTAX
    elseif opt == "MATCH" then toks = compile_match(a[i + 1])
    elseif opt == "COUNT" then
      count = int(a[i + 1])
      if not count then return E_INT end
      if count < 1 then return E_SYNTAX end
    elseif opt == "TYPE" then wanted = a[i + 1]:lower() == "string"
    else return E_SYNTAX end
  end
  local found = {}
  if cursor == 0 then cursor = nkeys end
  cursor = walk(cursor, count, toks, function(k)
    if wanted then found[#found + 1] = k end
  end)
  return { ("%d"):format(cursor), found }
end)

command("dbsize", 1, function() return nkeys end)   -- counts expired keys not yet swept, as Redis does

command("flushall", -1, function()
  at, keys, values, expires, nkeys, sweep_at = {}, {}, {}, {}, 0, nil
  moves = moves + 1                          -- a KEYS under way may meet new keys it saw as old
  return OK
end)

-- What clients ask for at start: redis-benchmark reads CONFIG GET save and
-- appendonly; redis-cli's interactive mode asks for COMMAND DOCS.
local CONFIG = { save = "", appendonly = "no", databases = "1" }

command("config", -2, function(a, n)
  local sub = a[2]:lower()
  if sub ~= "get" then return err(("unknown subcommand '%s'. Try CONFIG HELP."):format(a[2])) end
  if n < 3 then return arity_error("config|get") end
  local globs, out = {}, {}
  for i = 3, n do globs[#globs + 1] = compile_glob(a[i]:lower()) end     -- (globs spend their steps)
  for name, value in pairs(CONFIG) do
    for _, g in ipairs(globs) do
      if glob_match(g, name) then
        out[#out + 1], out[#out + 2] = name, value
        break
      end
    end
  end
  return out
end)

command("command", -1, function(a)
  if a[2] and a[2]:lower() == "count" then
    local count = 0
    for name in pairs(commands) do if name == name:lower() then count = count + 1 end end
    return count
  end
  return EMPTY
end)

local names = {}
for name in pairs(commands) do names[#names + 1] = name end
for _, name in ipairs(names) do commands[name:upper()] = commands[name] end  -- saves a :lower()

---------------------------------------------------------------- serving

local function unknown(a, n)
  local shown = {}
  for i = 2, n do
    local s = table.concat(shown)
    if #s >= 128 then break end
    shown[#shown + 1] = "'" .. a[i]:sub(1, 128 - #s) .. "' "
  end
  return err(("unknown command '%s', with args beginning with: %s"):format(a[1]:sub(1, 128),
    table.concat(shown)))
end

local function execute(a)
  local n = #a
  local c = commands[a[1]] or commands[a[1]:lower()]
  if not c then return unknown(a, n) end
  if (c.arity > 0 and n ~= c.arity) or n < -c.arity then return arity_error(c.name) end
  return c.fn(a, n)
end

-- Replies go out together: the connection is corked, so each reply is held
-- until the handler has to wait for input (the pipelined batch it answers is
-- over), or 64 KiB are held; then they go out in one write. Past 64 KiB a
-- peer that does not read holds the handler up.

-- An array (KEYS, MGET, SCAN's keys, ...) is encoded SLICE elements at a
-- time, with a yield between slices when it is long.
local SLICE = 1000

local function put_array(conn, arr)
  local len = #arr
  local part, m = { "*" .. len .. "\r\n" }, 1
  for i = 1, len do
    local v = arr[i]
    if type(v) == "table" and getmetatable(v) == nil then     -- an array in the array
      if not conn:write(table.concat(part, "", 1, m)) or not put_array(conn, v) then return false end
      m = 0
    else
      m = m + 1
      part[m] = resp.encode(v)
      if m == SLICE then
        if not conn:write(table.concat(part, "", 1, m)) then return false end
        m = 0
        spend(SLICE)
      end
    end
  end
  return m == 0 or conn:write(table.concat(part, "", 1, m))
end

local function put(conn, reply)
  if type(reply) == "table" and getmetatable(reply) == nil then return put_array(conn, reply) end
  return resp.write(conn, reply)
end

-- A pipelined batch (the commands already buffered whole: resp.read_commands)
-- is answered with one write: its replies gather in `out` (until FLUSH bytes
-- or so), a bulk string as its header, itself and CRLF, the rest as their
-- encodings, the common ones ready-made. An array reply goes out on its
-- own, after what was gathered (put_array writes it in slices).
local FLUSH = 64 * 1024
local OK_TEXT, NULL_TEXT, CRLF = resp.encode(OK), resp.encode(NULL), "\r\n"
local concat = table.concat
local BULK = {}                   -- #value -> "$<#value>\r\n", made once (not per reply)
for len = 0, 4096 do BULK[len] = "$" .. len .. CRLF end

local function serve(conn)
  conn:cork()
  local out, k, size = {}, 0, 0
  while true do
    local cmds, n = resp.read_commands(conn)
    if not cmds then
      if n:find("^protocol error: ") then        -- say why, as Redis does, and hang up
        put(conn, err("Protocol error: " .. n:sub(17)))
      end
      return                                      -- the close sends what is held
    end
    for i = 1, n do
      local args = cmds[i]
      local reply, close = execute(args)
      local t = type(reply)
      if reply == OK then
        k = k + 1; out[k] = OK_TEXT
      elseif t == "string" then
        local len = #reply
        out[k + 1], out[k + 2], out[k + 3] = BULK[len] or "$" .. len .. CRLF, reply, CRLF
        k, size = k + 3, size + len
      elseif math.type(reply) == "integer" then
        k = k + 1; out[k] = ":" .. reply .. CRLF
      elseif reply == nil or reply == NULL then
        k = k + 1; out[k] = NULL_TEXT
      elseif t == "table" and getmetatable(reply) == nil then   -- an array: after the rest
        if k > 0 and not conn:write(concat(out, "", 1, k)) then return end
        out, k, size = {}, 0, 0
        if not put_array(conn, reply) then return end
      else
        k = k + 1; out[k] = resp.encode(reply)
      end
      size = size + 16
      if close or size >= FLUSH then
        if k > 0 and not conn:write(concat(out, "", 1, k)) then return end
        if close then return end
        out, k, size = {}, 0, 0
      end
      spend(#args)          -- reading them: a pipelined flood yields too
    end
    if k > 0 and not conn:write(concat(out, "", 1, k)) then return end
    if size >= 4096 then out = {} end     -- holds no large value past its batch
    k, size = 0, 0
  end
end

local srv = assert(sh.listen(arg[1] or "tcp://127.0.0.1:6380", serve))
print("kv: listening on " .. srv:address())
