-- --slow-turn: a task that keeps the loop from turning (a blocking call
-- that sleeps in the kernel, using no CPU, or long CPU work) is logged once
-- per place, with its traceback, pointing at the call. Before it, such a
-- task froze a 0.05 s ticker unnoticed (nothing was logged: the budget only
-- looks at tasks that use CPU).
local H = require "helpers"

-- A script: a ticker noting its worst gap, and a task running 'body'
-- (marked lines: "-- @name" at their end). Returns the script's path and
-- the line number of each mark.
local function script(body)
  local src = ([[
local sh = require "sockhost"
local last, worst = sh.now(), 0
local tick = sh.every(0.05, function()
  local now = sh.now()
  if now - last > worst then worst = now - last end
  last = now
end)
sh.spawn(function()
%s
  sh.sleep(0.1)
  tick:cancel()
  print(("worst gap %%.2f"):format(worst))
end)
]]):format(body)
  local marks, n = {}, 0
  for line in (src .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    local m = line:match("%-%- @(%w+)%s*$")
    if m then marks[m] = n end
  end
  return H.writefile(H.tmpname(".lua"), src), marks
end

local function warnings(err)
  local found = {}
  for line in err:gmatch("[^\n]+") do
    if line:find(" WARN  ", 1, true) and line:find("kept the loop from turning", 1, true) then
      found[#found + 1] = line
    end
  end
  return found
end

local function gap(out)
  return tonumber(out:match("worst gap ([%d.]+)"))
end

describe("--slow-turn", function()
  it("logs a blocking call once per place, at the call, with its traceback", function()
    local path, at = script([[
  for _ = 1, 2 do
    os.execute("sleep 0.4")          -- @exec
  end
  local socket = require "socket"
  socket.sleep(0.3)                   -- @luasocket
]])
    local out, err, rc = H.exec("--budget 5 " .. H.q(path))
    assert.equal(0, rc, err)
    assert.is_true(gap(out) >= 0.3, out)          -- the loop really was frozen
    local w = warnings(err)
    assert.equal(2, #w, err)                       -- two places; the first one twice
    local exec = ("%s:%d"):format(path, at.exec)
    local ls = ("%s:%d"):format(path, at.luasocket)
    assert.truthy(w[1]:find("task kept the loop from turning for 0.4", 1, true), w[1])
    assert.truthy(w[1]:find(" at " .. exec .. " (over the 0.1 s of --slow-turn", 1, true), w[1])
    assert.truthy(w[2]:find(" at " .. ls .. " ", 1, true), w[2])
    -- the traceback follows its line: the C function, then the script's line
    assert.truthy(err:find("[C]: in field 'execute'\n\t" .. exec .. ":", 1, true), err)
    assert.truthy(err:find("[C]: in field 'sleep'\n\t" .. ls .. ":", 1, true), err)
  end)

  it("logs long CPU work too, at the line that runs", function()
    local path, at = script([[
  local t0 = os.clock()
  while os.clock() - t0 < 0.3 do end  -- @spin
]])
    local out, err, rc = H.exec("--budget 5 " .. H.q(path))
    assert.equal(0, rc, err)
    assert.is_true(gap(out) >= 0.25, out)
    local w = warnings(err)
    assert.equal(1, #w, err)
    assert.truthy(w[1]:find((" at %s:%d "):format(path, at.spin), 1, true), w[1])
  end)

  it("says nothing below its threshold, when off, or while the loop waits", function()
    local path = script([[
  os.execute("sleep 0.3")
  sh.sleep(0.5)                       -- the loop idle: not a stall
]])
    local _, err, rc = H.exec("--slow-turn 1 " .. H.q(path))
    assert.equal(0, rc, err)
    assert.same({}, warnings(err))
    _, err, rc = H.exec("--slow-turn 0 " .. H.q(path))
    assert.equal(0, rc, err)
    assert.same({}, warnings(err))
    local idle = script("  sh.sleep(0.5)")
    _, err, rc = H.exec(H.q(idle))
    assert.equal(0, rc, err)
    assert.same({}, warnings(err))
  end)

  it("only logs: a call that returns past the budget does not stop its task", function()
    local path, at = script([[
  os.execute("sleep 1.3")             -- @exec
]])
    local out, err, rc = H.exec("--budget 1 " .. H.q(path))
    assert.equal(0, rc, err)
    assert.is_true(gap(out) >= 1.2, out)
    local w = warnings(err)
    assert.equal(1, #w, err)
    assert.truthy(w[1]:find((" at %s:%d "):format(path, at.exec), 1, true), w[1])
    assert.falsy(err:find("stopped", 1, true), err)
  end)
end)
