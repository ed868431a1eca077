-- check.lua DIR -- after `make valgrind`: read every valgrind log in DIR
-- (one per process) and fail if any shows
--   * a memcheck error (invalid read or write, use of uninitialised memory,
--     bad free, ...): "ERROR SUMMARY: N errors" with N > 0 (definite leaks
--     count as errors too, see --errors-for-leak-kinds in the Makefile);
--   * memory definitely lost ("definitely lost: N bytes" with N > 0);
--   * a descriptor leak: one that the process itself opened and that is still
--     open at exit. Descriptors it was given (0, 1, 2 and whatever the shell
--     passed on) are listed by valgrind as "<inherited from parent>" and do not
--     count; valgrind's own log file is among them.
--     For a log of busted's own lua5.4 (the in-process specs) only descriptors
--     opened from ./sockhost.so count: LuaSocket clients and busted's files are
--     left to the garbage collector, and the interpreter exits without it.
--   * no summary at all: the process never finished (killed by a signal, or
--     still running), so nothing was checked.
-- A spec that ends a process on purpose renames its log (H.valgrind_expect):
-- vg.PID.killed.log (SIGKILL: no summary expected) or vg.PID.abrupt.log (it
-- exits at once by design: descriptors not checked, the rest is).
local dir = assert(arg[1], "usage: check.lua DIR")

local function readfile(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local logs = {}
local p = io.popen("ls " .. dir .. "/*.log 2>/dev/null")
for path in p:lines() do logs[#logs + 1] = path end
p:close()
if #logs == 0 then
  io.stderr:write("valgrind: no logs in " .. dir .. ": nothing ran under valgrind\n")
  os.exit(1)
end

local totals = { procs = 0, errors = 0, lost = 0, fds = 0, unfinished = 0, killed = 0, abrupt = 0 }
local bad = {}

for _, path in ipairs(logs) do
  local text = readfile(path)
  local lines = {}
  for line in text:gmatch("[^\n]*") do lines[#lines + 1] = line:gsub("^==%d+== ?", "") end
  local command = text:match("Command: ([^\n]*)") or "?"
  local in_process = not command:find("/sockhost ", 1, true) and not command:match("/sockhost$")
  local killed, abrupt = path:match("%.killed%.log$") ~= nil, path:match("%.abrupt%.log$") ~= nil
  local problems = {}
  totals.procs = totals.procs + 1
  if killed then totals.killed = totals.killed + 1 end
  if abrupt then totals.abrupt = totals.abrupt + 1 end

  local errors = tonumber(text:match("ERROR SUMMARY: (%d+) errors"))
  if not errors then
    if not killed then
      totals.unfinished = totals.unfinished + 1
      problems[#problems + 1] = "no summary: the process did not finish (killed?)"
    end
  elseif errors > 0 then
    totals.errors = totals.errors + errors
    problems[#problems + 1] = errors .. " errors"
  end

  local lost = tonumber((text:match("definitely lost: ([%d,]+) bytes") or "0"):gsub(",", ""), 10)
  if lost > 0 then
    totals.lost = totals.lost + lost
    problems[#problems + 1] = lost .. " bytes definitely lost"
  end

  -- "Open file descriptor N: what" / "Open AF_INET socket N: ..." and below
  -- it either "<inherited from parent>" or the stack where it was made.
  local i = 1
  while i <= #lines do
    local head = lines[i]
    if head:match("^Open .*%d+:") or head:match("^Open file descriptor %d+") then
      local j, inherited, stack = i + 1, false, {}
      while j <= #lines and lines[j] ~= "" and not lines[j]:match("^Open ") do
        if lines[j]:find("<inherited from parent>", 1, true) then inherited = true end
        stack[#stack + 1] = lines[j]
        j = j + 1
      end
      local ours = not inherited and not abrupt
      if ours and in_process then ours = table.concat(stack, "\n"):find("sockhost.so", 1, true) ~= nil end
      if ours then
        totals.fds = totals.fds + 1
        problems[#problems + 1] = "descriptor left open: " .. head .. "\n      " ..
          table.concat(stack, "\n      ", 1, math.min(#stack, 6))
      end
      i = j
    else
      i = i + 1
    end
  end

  if #problems > 0 then
    bad[#bad + 1] = ("%s (%s):\n    %s"):format(path, command, table.concat(problems, "\n    "))
  end
end

print(("valgrind: %d processes checked: %d errors, %d bytes definitely lost, "
  .. "%d descriptors left open, %d unfinished; %d killed and %d exited at once on purpose")
  :format(totals.procs, totals.errors, totals.lost, totals.fds, totals.unfinished, totals.killed,
    totals.abrupt))
if #bad > 0 then
  print("valgrind: FAILED")
  for _, b in ipairs(bad) do print("  " .. b) end
  os.exit(1)
end
print("valgrind: ok")
