-- sockhost.test -- test protocol scripts from busted specs: the script runs
-- in-process, scripted peers talk to it, and time is a virtual clock the
-- spec moves. See doc/API.md, "Testing scripts".
--
--   local T = require "sockhost.test"
--   local t = T.new()                        -- one session at a time
--   t:script("scripts/chat.lua")
--   local a = t:connect("tcp://127.0.0.1:7010", "alice")
--   a:expect_line("* welcome, you are guest1 (/nick NAME, /who, /quit)")
--   t:advance(60)
--   t:close()
--
-- How it works. While a session is open, the clock of the host is virtual
-- (sockhost.now, sleep, timers, read timeouts and the idle and line limits
-- follow it) and the loop runs only when the spec waits: an expectation
-- steps the loop until nothing moves, then looks at what arrived; only when
-- nothing moves and the expectation is still open does the clock jump, to the
-- next timer. So a 60-second timeout costs what its callbacks cost.
-- The addresses the script listens on are replaced: by Linux abstract Unix
-- sockets (transport "mem": no port, no file, nothing the network can
-- reach) or by 127.0.0.1 on an ephemeral port (transport "loopback").
-- Peers name the address the script asked for.
local sh = require "sockhost"
local core = require "sockhost.test.core"

local T = {}
local Session, Peer, Dgram = {}, {}, {}
Session.__index, Peer.__index, Dgram.__index = Session, Peer, Dgram

-- The virtual clock starts at 1000 s (doc/API.md says so): sockhost.now()
-- reads 1000 when a session opens, session:now() and messages count from it.
local START = 1000.0
local MAX_STEPS = 200000    -- loop steps one settle may take
local MAX_SETTLE = 60       -- real seconds one settle may take
local BUDGET = 1            -- seconds a task may run without yielding, by default
local active                -- the open session

---------------------------------------------------------------- helpers

-- Bytes as a spec reader wants them: printable ASCII, escapes for the rest,
-- cut after 'max' bytes.
local function show(s, max)
  max = math.min(max or 200, #s)
  local cut = #s - max
  local out = s:sub(1, max):gsub('[%c"\\\128-\255]', function(c)
    if c == "\n" then return "\\n" elseif c == "\r" then return "\\r"
    elseif c == "\t" then return "\\t" elseif c == '"' then return '\\"'
    elseif c == "\\" then return "\\\\" end
    return ("\\x%02x"):format(c:byte())
  end)
  return '"' .. out .. '"' .. (cut > 0 and ("... (%d more bytes)"):format(cut) or "")
end
T.show = show

local function unshow(s)
  return (s:gsub("\\(x?)(%x?%x?)", function(x, hex) return x == "x" and string.char(tonumber(hex, 16)) end)
           :gsub("\\(.)", { n = "\n", r = "\r", t = "\t", ['"'] = '"', ["\\"] = "\\" }))
end

-- A generator of its own, so that a script's math.random is left alone.
local function generator(seed)
  local x = seed ~ 0x2545F4914F6CDD1D
  if x == 0 then x = 1 end
  return function(n)             -- 1..n
    x = x ~ (x << 13); x = x ~ (x >> 7); x = x ~ (x << 17)
    return (x >> 1) % n + 1
  end
end

local function random_seed()
  local f = io.open("/dev/urandom", "rb")
  local s = f and f:read(4)
  if f then f:close() end
  if s and #s == 4 then return (string.unpack("<I4", s)) % 1000000000 + 1 end
  return os.time() % 1000000000 + 1
end

-- The first stack level outside this file, for error positions.
local function caller_level()
  for level = 2, 30 do
    local info = debug.getinfo(level, "S")
    if not info then break end
    if info.source ~= "@sockhost/test.lua" and info.what ~= "C" then return level - 1 end
  end
  return 1
end

---------------------------------------------------------------- sessions

local OPTIONS = { transport = 1, seed = 1, within = 1, split = 1, idle_timeout = 1,
                  line_timeout = 1, max_line = 1, max_conns = 1, budget = 1, log = 1 }

-- T.new([opts]) -> session. opts: transport ("mem" or "loopback"; default
-- $SOCKHOST_TEST_TRANSPORT or "mem"), seed (default $SOCKHOST_TEST_SEED or
-- drawn), within (an expectation's default deadline, 5 s), split (how
-- peers cut what they send by default: nil, a size, or "random"),
-- idle_timeout, line_timeout, max_line, max_conns, budget (the host's
-- defaults, as on the command line; budget 1 s by default), log (true: the
-- script's sockhost.log lines and the host's own info lines go to stderr too;
-- by default only errors do). The script's log lines are kept in
-- session.logs either way.
function T.new(opts)
  opts = opts or {}
  for k in pairs(opts) do
    if not OPTIONS[k] then error("sockhost.test: unknown option '" .. tostring(k) .. "'", 2) end
  end
  if active then active:close() end
  local transport = opts.transport or os.getenv("SOCKHOST_TEST_TRANSPORT") or "mem"
  if transport ~= "mem" and transport ~= "loopback" then
    error("sockhost.test: transport must be \"mem\" or \"loopback\"", 2)
  end
  local seed = tonumber(opts.seed or os.getenv("SOCKHOST_TEST_SEED")) or random_seed()
  seed = math.tointeger(seed) or error("sockhost.test: the seed must be an integer", 2)
  local t = setmetatable({
    transport = transport, seed = seed, within = opts.within or 5, split = opts.split,
    random = generator(seed), peers = {}, addrs = {}, owned = {}, errors = {},
    logs = {}, output = {}, echo_log = opts.log, stepno = 0, names = 0,
    nonce = ("%x%x"):format(random_seed(), os.time()),
  }, Session)
  t.saved = { listen = sh.listen, udp = sh.udp, connect = sh.connect, spawn = sh.spawn,
              after = sh.after, every = sh.every, log = sh.log }
  t.log_level = sh.log_level(opts.log and "info" or "error")
  t.defaults = core.defaults({ idle_timeout = opts.idle_timeout, line_timeout = opts.line_timeout,
                               max_line = opts.max_line, max_conns = opts.max_conns,
                               budget = opts.budget or BUDGET })
  core.failures(true)
  core.virtual(true, START)
  core.set(START)
  t.start = sh.now()
  core.shuffle(seed)
  core.capture(true)                       -- the host's own lines join session.logs
  t:_wrap()
  active = t
  return t
end

-- Move the host's own log lines kept since the last look into session.logs
-- (their message, without the level: "conn #3 mem:1: idle too long, closing").
function Session:_drain_logs()
  local lines = core.captured()
  if not lines then return end
  for _, l in ipairs(lines) do self.logs[#self.logs + 1] = l:match("^%a+ (.*)$") or l end
end

-- Virtual seconds since the session began.
function Session:now() return sh.now() - self.start end

-- The failures of the script's tasks meanwhile (errors they raised, and
-- stops by the budget), each as the host logs it, with the traceback of
-- the task's own code, become the session's errors.
function Session:_note_failures()
  if active ~= self then return end
  for _, line in ipairs(core.failures(true) or {}) do self.errors[#self.errors + 1] = line end
end

function Session:_fail(msg, level)
  self:_note_failures()
  local lines = { "sockhost.test: " .. msg }
  for _, e in ipairs(self.errors) do lines[#lines + 1] = "  the script failed: " .. e end
  lines[#lines + 1] = ("  seed %d (%s transport): SOCKHOST_TEST_SEED=%d replays this run")
                      :format(self.seed, self.transport, self.seed)
  local msg = table.concat(lines, "\n")
  level = level or caller_level()
  -- Under busted, a failure rather than an error: luassert's assert raises
  -- through busted's fail there.
  local la = package.loaded["busted.core"] and package.loaded["luassert"]
  if la then la(false, msg, la:level(level)) end
  error(msg, level)
end

-- The address a script's listen or udp gets instead of 'addr'.
function Session:_replace(addr, datagram)
  self.names = self.names + 1
  if self.transport == "mem" or addr:match("^unix") then
    return (datagram and "unixgram:@" or "unix:@") .. ("sockhost-test-%s-%d"):format(self.nonce, self.names)
  end
  local v6 = addr:match("^%a+://%[") ~= nil
  return (datagram and "udp://" or "tcp://") .. (v6 and "[::1]" or "127.0.0.1") .. ":0"
end

-- The options for the replacement of 'addr': a valid mode for the script's
-- Unix socket file is dropped, since the replacement has no file (the host
-- refuses a mode there); an invalid or misplaced one goes through, to be
-- refused as it would be without the harness.
local function replaced_opts(addr, opts)
  local m = type(opts) == "table" and tonumber(opts.mode)
  if not m or not addr:match("^unix%a*:[^@]") or m < 0 or m > 4095 or m ~= math.floor(m) then
    return opts
  end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.mode = nil
  return o
end

-- The key a script's address is known by: "tcp:7010" for any host, the
-- whole string for Unix addresses.
local function key(addr)
  local scheme, port = addr:match("^(%a+)://.*:(%d+)$")
  if not scheme then port = addr:match("^[^/]*:(%d+)$"); scheme = port and "tcp" end
  if scheme then return scheme .. ":" .. port end
  return addr
end

function Session:_wrap()
  local saved, t = self.saved, self
  local function own(obj) if obj then t.owned[#t.owned + 1] = obj end return obj end
  sh.listen = function(addr, handler, opts)
    local real = t:_replace(addr, false)
    local srv, err = saved.listen(real, function(conn)
      own(conn)
      return handler(conn)
    end, replaced_opts(addr, opts))
    if srv then t.addrs[key(addr)] = srv:address() end
    return own(srv), err
  end
  sh.udp = function(addr, handler, opts)
    local real = t:_replace(addr, true)
    local s, err = saved.udp(real, handler, replaced_opts(addr, opts))
    if s then t.addrs[key(addr)] = s:address() end
    return own(s), err
  end
  sh.connect = function(addr, opts)
    local c, err = saved.connect(t.addrs[key(addr)] or addr, opts)
    return own(c), err
  end
  sh.after = function(s, fn) return own(saved.after(s, fn)) end
  sh.every = function(s, fn, opts) return own(saved.every(s, fn, opts)) end
  sh.log = function(level, ...)
    local msg = select("#", ...) > 0 and table.concat({ ... }, " ") or level
    t:_drain_logs()                        -- the host's lines before it, in order
    t.logs[#t.logs + 1] = msg
    if t.echo_log then
      saved.log(level, ...)
      core.captured()                      -- that line again, from the host's log: kept already
    end
  end
end

-- session:script(path, ...) -- run the script at 'path' as `sockhost path
-- ...` would, with arg = { [0] = path, ... }, until it waits. Its print()s
-- go to session.output. Raises if the script fails.
-- The script's file: 'path' from the working directory, or, when it is
-- not found there and is relative, from the folder of the spec that asks.
-- Returns the path found, and what was tried (for the error).
local function find_script(path)
  local tried = { ("'%s' from the working directory"):format(path) }
  local f = io.open(path)
  if f then f:close(); return path end
  if path:sub(1, 1) ~= "/" then
    local dir
    for level = 2, 30 do                     -- the first caller outside this module
      local info = debug.getinfo(level, "S")
      if not info then break end
      if info.source ~= "@sockhost/test.lua" and info.what ~= "C" then
        dir = info.source:match("^@(.*/)[^/]*$")
        break
      end
    end
    if dir then
      local beside = dir .. path
      tried[2] = ("'%s' beside the spec"):format(beside)
      f = io.open(beside)
      if f then f:close(); return beside end
    end
  end
  return nil, table.concat(tried, " and ")
end

function Session:script(path, ...)
  local env = setmetatable({}, { __index = _G })
  env.arg = table.pack(...)
  env.arg[0], env.arg.n = path, nil
  env.print = function(...)
    local parts = table.pack(...)
    for i = 1, parts.n do parts[i] = tostring(parts[i]) end
    self.output[#self.output + 1] = table.concat(parts, "\t")
  end
  local found, tried = find_script(path)
  if not found then
    error(("sockhost.test: cannot find the script '%s' (tried %s)"):format(path, tried), 2)
  end
  local chunk, err = loadfile(found, "t", env)
  if not chunk then error("sockhost.test: " .. err, 2) end
  local nerr = #self.errors
  sh.spawn(chunk, ...)
  self:settle()
  if #self.errors > nerr then self:_fail("the script " .. path .. " failed", caller_level()) end
  return self
end

-- session:listen(addr, handler [, opts]) -- serve 'handler' as the script
-- would with sockhost.listen (the address is replaced the same way).
function Session:listen(addr, handler, opts)
  return assert(sh.listen(addr, handler, opts))
end

-- Run the loop until nothing moves: no callback due and nothing ready, and
-- the peers have read what there was. Bounded in steps and in real time (a
-- task that runs too long without yielding is stopped by the budget).
function Session:settle()
  local quiet, need = 0, self.transport == "loopback" and 3 or 1
  local deadline = core.real() + MAX_SETTLE
  for step = 1, MAX_STEPS do
    core.fire_due()
    local moved = core.step()
    self.stepno = self.stepno + 1
    self:_drain_logs()
    if self:_poll() then moved = true end
    if moved then quiet = 0 else quiet = quiet + 1 end
    if quiet >= need then
      self:_note_failures()
      return
    end
    if quiet > 0 then core.pause(0.0005) end    -- loopback only: let the kernel deliver
    if step % 64 == 0 and core.real() > deadline then
      self:_fail(("the loop did not settle in %d s (real time)"):format(MAX_SETTLE))
    end
  end
  self:_fail(("the loop did not settle in %d steps (a task that never waits, or wakes "
              .. "itself at once for ever, as with sleep(0) in a loop?)"):format(MAX_STEPS))
end

-- Let 'seconds' of virtual time pass: timers fire in their order, each
-- with the loop settled before the next.
function Session:advance(seconds)
  local target = sh.now() + seconds
  self:settle()
  while true do
    local due = core.next_due()
    if not due or due > target then break end
    core.set(due)
    self:settle()
  end
  core.set(target)
  self:settle()
  return self
end

-- Wait until check() returns non-nil, moving the clock to the next timer
-- only when nothing else moves, for 'within' seconds at most. Returns what
-- check returned, or nil at the deadline.
-- A check may return PROGRESS: it moved (a peer's send took some bytes,
-- but not all), so the loop is settled and it is asked again before the
-- clock moves. A short write is not a full kernel buffer: under the
-- one-byte shim (make test-onebyte) every send takes one byte.
local PROGRESS = {}

function Session:_wait(check, within)
  local deadline = sh.now() + (within or self.within)
  self:settle()
  local rounds = 0
  while true do
    local r = check()
    if r == PROGRESS and rounds < MAX_STEPS then
      rounds = rounds + 1
      self:settle()
    elseif r ~= nil and r ~= PROGRESS then
      return r
    else
      rounds = 0
      local due = core.next_due()
      if not due or due > deadline then
        core.set(deadline)
        self:settle()
        r = check()
        if r ~= PROGRESS then return r end
        return nil
      end
      core.set(due)
      self:settle()
    end
  end
end

-- Read what the peers have got. True if anything came.
function Session:_poll()
  local got = false
  for _, p in ipairs(self.peers) do
    if p:_pull() then got = true end
  end
  return got
end

-- session:expect_order({peer, line}, {peer, line}, ...) -- each peer gets
-- its line, and each line arrived in a step of the loop strictly before the
-- next one's. Returns the lines.
function Session:expect_order(...)
  local prev
  for _, e in ipairs({ ... }) do
    local peer, line = e[1], e[2]
    peer:expect_line(line, e[3])
    if prev and peer.last_step <= prev.step then
      self:_fail(("expected %s's line %s to arrive after %s's line %s, but it came %s")
        :format(peer.name, show(line), prev.name, show(prev.line),
                peer.last_step == prev.step and "in the same step" or "first"))
    end
    prev = { name = peer.name, line = line, step = peer.last_step }
  end
end

-- session:log_match(pattern) -> the first log line of the script that
-- matches, or nil.
function Session:log_match(pattern)
  self:_drain_logs()
  for _, l in ipairs(self.logs) do
    if l:match(pattern) then return l end
  end
end

-- Close the peers and what the script opened; tasks left waiting on a
-- timer are let run for up to an hour of virtual time. Then the host is as
-- before the session (real clock, its defaults). Raises if the script
-- failed meanwhile, unless 'ignore_errors'.
function Session:close(ignore_errors)
  if active ~= self then return end
  for _, p in ipairs(self.peers) do p:close() end
  for _, obj in ipairs(self.owned) do
    local close = obj.close or obj.cancel
    pcall(close, obj)
  end
  pcall(self.advance, self, 3600)
  self:_note_failures()
  active = nil
  core.failures(false)
  for k, v in pairs(self.saved) do sh[k] = v end
  core.defaults(self.defaults)
  sh.log_level(self.log_level)
  core.shuffle(0)
  self:_drain_logs()
  core.capture(false)
  core.virtual(false)
  if #self.errors > 0 and not ignore_errors then
    self:_fail(#self.errors .. " error(s) in the script during the session")
  end
end

---------------------------------------------------------------- stream peers

-- session:connect(addr [, name | opts]) -> peer. opts: name (for
-- messages), split (as in T.new), within.
function Session:connect(addr, opts)
  if type(opts) == "string" then opts = { name = opts } end
  opts = opts or {}
  local real = self.addrs[key(addr)]
  if not real then
    local known = {}
    for k in pairs(self.addrs) do known[#known + 1] = k end
    table.sort(known)
    self:_fail(("nothing listens on %s (the script listened on: %s)")
      :format(addr, #known > 0 and table.concat(known, ", ") or "nothing"))
  end
  local sock, err = core.connect(real)
  if not sock then self:_fail(("cannot connect to %s: %s"):format(addr, err)) end
  local p = setmetatable({
    t = self, sock = sock, name = opts.name or ("peer" .. (#self.peers + 1)),
    split = opts.split, within = opts.within, buf = "", taken = 0, got = 0,
    arrivals = {}, transcript = {}, ended = nil,
  }, Peer)
  self.peers[#self.peers + 1] = p
  self:settle()                      -- the script accepts it
  return p
end

-- Read what arrived. True if anything did.
function Peer:_pull()
  if self.ended or self.sock:closed() or self.paused then return false end
  local any = false
  for _ = 1, 64 do
    local data, err = self.sock:recv()
    if not data then
      self.ended = err
      self.transcript[#self.transcript + 1] = { self.t:now(), "end", err }
      return true
    end
    if data == "" then break end
    self.buf = self.buf .. data
    self.got = self.got + #data
    self.arrivals[#self.arrivals + 1] = { upto = self.got, step = self.t.stepno, at = self.t:now() }
    self.transcript[#self.transcript + 1] = { self.t:now(), "<", data }
    any = true
  end
  return any
end

-- The step in which byte number 'n' (counted from the first) arrived.
function Peer:_step_of(n)
  for _, a in ipairs(self.arrivals) do
    if a.upto >= n then return a.step end
  end
end

-- Take n bytes from the front of what arrived.
function Peer:_take(n)
  local s = self.buf:sub(1, n)
  self.buf = self.buf:sub(n + 1)
  self.taken = self.taken + n
  self.last_step = self:_step_of(self.taken)
  return s
end

-- Wait for 'check'; fail with 'what' at the deadline.
function Peer:_expect(what, check, within)
  local began = self.t:now()
  local r = self.t:_wait(function()
    local v = check()
    if v ~= nil then return v end
    if self.ended then return false end      -- nothing more will come
  end, within or self.within)
  if r == nil or r == false then
    local arrived
    if self.buf ~= "" then arrived = show(self.buf) .. (self.ended and ", then the connection was " .. self.ended or "")
    elseif self.ended then arrived = "nothing more: the connection was " .. self.ended
    else arrived = "nothing" end
    self.t:_fail(("peer %s expected %s within %g s\n  arrived: %s\n  at t = %.3f s (virtual; waiting since %.3f s)")
      :format(self.name, what, within or self.within or self.t.within, arrived, self.t:now(), began))
  end
  return r
end

-- peer:expect(bytes [, within]) -- exactly these bytes come next.
function Peer:expect(s, within)
  return self:_expect("the bytes " .. show(s), function()
    if #self.buf >= #s then
      if self.buf:sub(1, #s) == s then return self:_take(#s) end
      return false
    end
    if s:sub(1, #self.buf) ~= self.buf then return false end
  end, within)
end

-- The next line (without its end, \n or \r\n) and its length with the
-- end, or nil while incomplete. Nothing is taken.
function Peer:_peek_line()
  local i = self.buf:find("\n", 1, true)
  if not i then return nil end
  return (self.buf:sub(1, i):gsub("\r?\n$", "")), i
end

-- peer:expect_line([line [, within]]) -- the next line is 'line' (any
-- line if nil); returns it.
function Peer:expect_line(line, within)
  return self:_expect(line and "the line " .. show(line) or "a line", function()
    local got, n = self:_peek_line()
    if not got then return nil end
    if line ~= nil and got ~= line then return false end
    self:_take(n)
    return got
  end, within)
end

-- peer:expect_lines(lines [, within]) -- the next #lines lines are these,
-- in any order (what a protocol does not order, a spec should not either).
function Peer:expect_lines(lines, within)
  local want = {}
  for _, l in ipairs(lines) do want[l] = (want[l] or 0) + 1 end
  local shown = {}
  for i, l in ipairs(lines) do shown[i] = show(l, 60) end
  local left = #lines
  self:_expect(("these %d lines in any order: %s"):format(#lines, table.concat(shown, ", ")), function()
    while left > 0 do
      local got, n = self:_peek_line()
      if not got then return nil end
      if not want[got] or want[got] == 0 then return false end
      want[got] = want[got] - 1
      left = left - 1
      self:_take(n)
    end
    return true
  end, within)
  return self
end

-- peer:expect_match(pattern [, within]) -- the next line matches the Lua
-- pattern; returns its captures (or the line).
function Peer:expect_match(pattern, within)
  local caps
  self:_expect("a line matching " .. show(pattern), function()
    local line, n = self:_peek_line()
    if not line then return nil end
    caps = table.pack(line:match(pattern))
    if caps[1] == nil then return false end
    self:_take(n)
    return true
  end, within)
  return table.unpack(caps, 1, caps.n)
end

-- peer:expect_bytes(n [, within]) -> the next n bytes, whatever they are.
function Peer:expect_bytes(n, within)
  return self:_expect(n .. " bytes", function()
    if #self.buf >= n then return self:_take(n) end
  end, within)
end

-- peer:expect_close([within]) -- nothing more arrives, and the server ends
-- the connection; returns "closed" or "reset".
function Peer:expect_close(within)
  return self:_expect("the connection to end", function()
    if self.buf ~= "" then return false end
    return self.ended
  end, within)
end

-- peer:expect_silence(seconds) -- nothing arrives for that long (the clock
-- moves on by 'seconds').
function Peer:expect_silence(seconds)
  local began = self.t:now()
  self.t:advance(seconds)
  if self.buf ~= "" or self.ended then
    self.t:_fail(("peer %s expected nothing for %g s from t = %.3f s\n  arrived: %s")
      :format(self.name, seconds, began,
              self.buf ~= "" and show(self.buf) or "the connection was " .. self.ended))
  end
end

-- peer:received() -> what arrived and no expectation took yet (kept).
function Peer:received()
  self.t:settle()
  return self.buf, self.ended
end

-- Cut 'data' as 'split' says: a number (pieces of that size) or "random".
function Peer:_pieces(data, split)
  split = split or self.split or self.t.split
  if not split or #data <= 1 then return { data } end
  local pieces, i = {}, 1
  while i <= #data do
    local n = split == "random" and self.t.random(math.min(#data - i + 1, 64)) or split
    pieces[#pieces + 1] = data:sub(i, i + n - 1)
    i = i + n
  end
  return pieces
end

-- peer:send(data [, opts]) -- send all of 'data', settling the loop after
-- each piece. opts: split (a size or "random"), pause (virtual seconds
-- between pieces), within (for the kernel to take it; 5 s). Fails if the
-- server does not take it in time.
function Peer:send(data, opts)
  opts = opts or {}
  self.transcript[#self.transcript + 1] = { self.t:now(), ">", data }
  for k, piece in ipairs(self:_pieces(data, opts.split)) do
    if k > 1 and opts.pause then self.t:advance(opts.pause) end
    local off = 1
    local ok = self.t:_wait(function()
      local moved = false
      while off <= #piece do
        local n, err = self.sock:send(off == 1 and piece or piece:sub(off))
        if not n then
          self.t:_fail(("peer %s could not send: %s"):format(self.name, err), caller_level() + 3)
        end
        if n == 0 then return moved and PROGRESS or nil end
        off, moved = off + n, true
      end
      return true
    end, opts.within)
    if not ok then
      self.t:_fail(("peer %s: the server took %d of %d bytes within %g s (not reading?)")
        :format(self.name, off - 1, #piece, opts.within or self.t.within))
    end
    self.t:settle()
  end
  return self
end

-- peer:send_line(line [, opts]) -- send line .. "\n".
function Peer:send_line(line, opts) return self:send(line .. "\n", opts) end

-- peer:pause(): stop reading (what the server sends stays in the kernel,
-- which fills up, and the server's writes meet backpressure) until resume().
function Peer:pause() self.paused = true; return self end
function Peer:resume() self.paused = false; self.t:settle(); return self end

function Peer:shutdown()
  self.transcript[#self.transcript + 1] = { self.t:now(), "shutdown" }
  self.sock:shutdown()
  self.t:settle()
  return self
end

function Peer:reset()
  self.transcript[#self.transcript + 1] = { self.t:now(), "reset" }
  self.sock:reset()
  self.t:settle()
  return self
end

function Peer:close()
  if not self.sock:closed() then self.sock:close() end
end

---------------------------------------------------------------- record, replay

-- The transcript format: one event a line, "<time> <dir> <bytes>", time in
-- seconds from the start, dir ">" (to the server), "<" (from it), "end",
-- "shutdown" or "reset"; bytes quoted as in failure messages.
local function write_transcript(path, events)
  local f = assert(io.open(path, "wb"))
  f:write("# sockhost transcript: time, direction (> to the server, < from it), bytes\n")
  for _, e in ipairs(events) do
    f:write(("%.6f %s%s\n"):format(e[1], e[2], e[3] and " " .. show(e[3], math.huge) or ""))
  end
  f:close()
end
T.write_transcript = write_transcript

function T.read_transcript(path)
  local f = assert(io.open(path, "rb"))
  local events = {}
  for line in f:lines() do
    if not line:match("^#") and line:match("%S") then
      local at, dir, rest = line:match("^(%S+) (%S+) ?(.*)$")
      local data = rest:match('^"(.*)"$')
      events[#events + 1] = { tonumber(at), dir, data and unshow(data) or (rest ~= "" and rest or nil) }
    end
  end
  f:close()
  return events
end

-- peer:save(path) -- write what this peer sent and got, with the times.
function Peer:save(path)
  write_transcript(path, self.transcript)
end

-- session:replay(path, addr [, opts]) -> peer: play a transcript (recorded
-- by peer:save or by scripts/record.lua) as a peer: what went to the server
-- is sent at its time, what came from it is expected, byte for byte, by its
-- time plus opts.slack (1 s); "end" expects the close.
function Session:replay(path, addr, opts)
  opts = opts or {}
  local p = self:connect(addr, { name = opts.name or path })
  local t0 = self:now()
  local want = ""
  for _, e in ipairs(T.read_transcript(path)) do
    local at, dir, data = e[1], e[2], e[3]
    if dir == ">" then
      if #want > 0 then p:expect(want, opts.slack or 1); want = "" end
      local wait = t0 + at - self:now()
      if wait > 0 then self:advance(wait) end
      p:send(data)
    elseif dir == "<" then
      want = want .. data
    elseif dir == "end" then
      if #want > 0 then p:expect(want, opts.slack or 1); want = "" end
      p:expect_close(math.max(t0 + at - self:now(), 0) + (opts.slack or 1))
    elseif dir == "shutdown" then
      p:shutdown()
    elseif dir == "reset" then
      p:reset()
    end
  end
  if #want > 0 then p:expect(want, opts.slack or 1) end
  return p
end

---------------------------------------------------------------- datagrams

-- session:udp(addr [, name]) -> a datagram peer that sends to the script's
-- socket at 'addr'.
function Session:udp(addr, name)
  local real = self.addrs[key(addr)]
  if not real then self:_fail("no datagram socket on " .. addr) end
  local bind
  if real:match("^unixgram:") then
    self.names = self.names + 1
    bind = ("unixgram:@sockhost-test-%s-peer%d"):format(self.nonce, self.names)
  end
  local sock, err = core.datagram(real, bind)
  if not sock then self:_fail(("cannot reach %s: %s"):format(addr, err)) end
  local p = setmetatable({ t = self, sock = sock, name = name or ("dgram" .. (#self.peers + 1)),
                           queue = {}, transcript = {} }, Dgram)
  self.peers[#self.peers + 1] = p
  return p
end

function Dgram:_pull()
  if self.sock:closed() then return false end
  local any = false
  for _ = 1, 64 do
    local data = self.sock:recv()
    if not data then break end                -- false: nothing waiting
    self.queue[#self.queue + 1] = data        -- "" is an empty datagram
    self.transcript[#self.transcript + 1] = { self.t:now(), "<", data }
    any = true
  end
  return any
end

function Dgram:send(data)
  local n, err = self.sock:send(data)
  if not n then self.t:_fail(("%s could not send: %s"):format(self.name, err or "kernel full")) end
  self.transcript[#self.transcript + 1] = { self.t:now(), ">", data }
  self.t:settle()
  return self
end

-- dgram:expect(data [, within]) -- the next datagram is exactly 'data'.
-- dgram:expect_match(pattern [, within]) -- ... matches; returns captures.
function Dgram:_next(what, within, test)
  local r = self.t:_wait(function()
    if #self.queue > 0 then return table.remove(self.queue, 1) end
  end, within)
  if r == nil or not test(r) then
    self.t:_fail(("%s expected %s within %g s\n  arrived: %s\n  at t = %.3f s (virtual)")
      :format(self.name, what, within or self.t.within, r and show(r) or "nothing", self.t:now()))
  end
  return r
end

function Dgram:expect(data, within)
  return self:_next("the datagram " .. show(data), within, function(r) return r == data end)
end

function Dgram:expect_match(pattern, within)
  local r = self:_next("a datagram matching " .. show(pattern), within,
                       function(r) return r:match(pattern) ~= nil end)
  return r:match(pattern)
end

function Dgram:expect_silence(seconds)
  self.t:advance(seconds)
  if #self.queue > 0 then
    self.t:_fail(("%s expected nothing for %g s\n  arrived: %s"):format(self.name, seconds, show(self.queue[1])))
  end
end

function Dgram:close() self.sock:close() end
Dgram.save = Peer.save

return T
