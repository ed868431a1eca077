-- sockhost.admin -- the admin console (--admin unix:PATH): a Unix socket,
-- mode 0600, that only the server's own user may use (SO_PEERCRED); each
-- session runs as a task of the service like any connection, under the same
-- budget. Commands, one a line; each reply is lines ended by "." (a line
-- that begins with "." gets one more put before it). The client:
-- `sockhost admin unix:PATH [command]` (core/sh_admin_client.c).
--
-- Listings stream in chunks of CHUNK entries, the loop turning between two:
-- a listing of 100,000 connections never holds the service up.
local core = require "sockhost.admin.core"
local sockhost = require "sockhost"

local M = {}
local CHUNK = 200
local format, concat = string.format, table.concat

local HELP = {
  "commands:",
  "  conns              the open accepted connections: id, peer, age (s),",
  "                     bytes in/out, buffered in/out, task state, where",
  "  conn ID            one connection, field by field",
  "  close ID           close connection ID (dropping what it buffers)",
  "  tasks              the live tasks: id, state, waiting for, age, where",
  "  timers             how many after/every timers are armed",
  "  stats              sockhost.stats(), one value a line",
  "  log LEVEL          set the log level (debug, info, warn, error, off)",
  "  eval CODE | = CODE run Lua in the service (its globals are the script's);",
  "                     an expression's values are printed",
  "  help, quit",
}

-- Write lines as one reply: dot-stuffed, then ".".
local function reply(c, lines)
  local out = {}
  for i, l in ipairs(lines) do
    for part in (tostring(l) .. "\n"):gmatch("([^\n]*)\n") do
      out[#out + 1] = (part:sub(1, 1) == "." and "." or "") .. part
    end
  end
  out[#out + 1] = "."
  return c:write(concat(out, "\n"), "\n")
end

-- Write some lines of a reply that goes on.
local function part(c, lines)
  for i, l in ipairs(lines) do
    if l:sub(1, 1) == "." then lines[i] = "." .. l end
  end
  if #lines == 0 then return true end
  return c:write(concat(lines, "\n"), "\n")
end

local function conn_line(d)
  local t = d.task or {}
  return format("%d %s %.1f %d/%d %d/%d %s%s %s", d.id, d.peer, d.age, d.bytes_in, d.bytes_out,
    d.buffered_in, d.buffered_out, t.state or "-", t.waiting and (":" .. t.waiting) or "",
    t.where or "-")
end

local function task_line(t)
  return format("%d %s %s %.1f %s", t.id, t.state, t.waiting or "-", t.age, t.where or "-")
end

-- A listing in chunks: fetch(below, n) -> list of descriptions, newest first.
local function stream(c, header, fetch, line)
  if not part(c, { header }) then return false end
  local below, total = 0, 0
  repeat
    local list = fetch(below, CHUNK)
    local lines = {}
    for i, d in ipairs(list) do lines[i] = line(d) end
    if not part(c, lines) then return false end
    total = total + #list
    if #list > 0 then below = list[#list].id end
    sockhost.sleep(0)                 -- let the loop turn
  until #list < CHUNK
  return reply(c, { format("(%d)", total) })
end

local function flatten(t, prefix, out)
  for k, v in pairs(t) do
    local key = prefix and (prefix .. "." .. k) or k
    if type(v) == "table" then flatten(v, key, out) else out[#out + 1] = key .. " " .. tostring(v) end
  end
  return out
end

local function eval(code)
  local f, err = load("return " .. code, "=(admin)", "t")
  if not f then f, err = load(code, "=(admin)", "t") end
  if not f then return { "error: " .. err } end
  local r = table.pack(pcall(f))
  if not r[1] then return { "error: " .. tostring(r[2]) } end
  local vals = {}
  for i = 2, r.n do vals[#vals + 1] = tostring(r[i]) end
  return { #vals > 0 and concat(vals, "\t") or "(no value)" }
end

local commands = {}

function commands.help(c) return reply(c, HELP) end

function commands.conns(c)
  return stream(c, "id peer age in/out buffered task where", core.conns, conn_line)
end

function commands.tasks(c)
  return stream(c, "id state waiting age where", core.tasks, task_line)
end

function commands.conn(c, arg)
  local d = core.conn(tonumber(arg))
  if not d then return reply(c, { "error: no open connection #" .. tostring(arg) }) end
  return reply(c, flatten(d, nil, {}))
end

function commands.close(c, arg)
  if not core.close(tonumber(arg)) then return reply(c, { "error: no open connection #" .. tostring(arg) }) end
  return reply(c, { "closed #" .. arg })
end

function commands.timers(c)
  return reply(c, { "timers " .. sockhost.stats().timers })
end

function commands.stats(c)
  local lines = flatten(sockhost.stats(), nil, {})
  table.sort(lines)
  return reply(c, lines)
end

function commands.log(c, arg)
  local ok, err = pcall(sockhost.log_level, arg)
  if not ok then return reply(c, { "error: " .. tostring(err) }) end
  return reply(c, { "log level " .. arg })
end

function commands.eval(c, arg)
  return reply(c, eval(arg or ""))
end
commands["="] = commands.eval

local function session(c)
  local cred = c:peercred()
  if not cred or cred.uid ~= core.uid() then
    sockhost.log("warn", format("admin: refused a peer of uid %s (not the server's)", cred and cred.uid or "?"))
    c:write("error: refused: not the server's user\n")
    return
  end
  for line in function() return c:read() end do
    local cmd, arg = line:match("^%s*(=)%s*(.-)%s*$")
    if not cmd then cmd, arg = line:match("^%s*(%S+)%s*(.-)%s*$") end
    if cmd == "quit" then return end
    local fn = commands[cmd or ""]
    local ok
    if fn then ok = fn(c, arg ~= "" and arg or nil)
    else ok = reply(c, { "error: unknown command " .. tostring(cmd) .. " (try help)" }) end
    if not ok then return end
  end
end

-- start(addr, worker): the console on addr (unix:PATH), or addr.N in
-- worker N of -w.
function M.start(addr, worker)
  if type(addr) ~= "string" or not addr:match("^unix:.") then
    error("unix:PATH expected, not '" .. tostring(addr) .. "'", 2)
  end
  if worker and worker > 0 then addr = addr .. "." .. worker end
  local l, err = sockhost.listen(addr, session, { mode = tonumber("600", 8), idle_timeout = 0,
    line_timeout = 0, max_conns = 16, reuseport = false })
  if not l then error(addr .. ": " .. tostring(err), 2) end
  core.weak(l)                        -- the console alone keeps nothing running
  return l
end

return M
