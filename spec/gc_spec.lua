-- The collector's pace (bindings/l_gc.c): a small heap gets at least 1 MiB
-- of growth per cycle, so that short-lived strings (a 16 KiB read, echoed)
-- do not start a cycle every few hundred KB; a script that chooses its own
-- collector takes over; collectgarbage answers as Lua's own does.
local H = require "helpers"

local CHURN = [[
local sh = require "sockhost"
if arg[1] == "own" then collectgarbage("incremental", 200, 100) end
local cycles, maxkb, done = 0, 0, false
local function sentinel()
  setmetatable({}, {__gc = function() cycles = cycles + 1; if not done then sentinel() end end})
end
sh.spawn(function()
  collectgarbage("collect")
  sentinel()
  local keep = {}
  for i = 1, 2000 do                     -- 32 MB of 16 KiB strings, 8 kept at a time
    keep[i % 8] = string.rep(string.char(i % 256), 16384)
    if i % 10 == 0 then sh.sleep(0) end  -- back to the loop, as a server is
    local kb = collectgarbage("count")
    if kb > maxkb then maxkb = kb end
  end
  done = true
  print(("cycles %d maxkb %d"):format(cycles, math.floor(maxkb)))
end)
]]

local function churn(mode)
  local script = H.writefile(H.tmpname(".lua"), CHURN)
  local out, err, rc = H.exec(H.q(script) .. " " .. mode, { timeout = 60 })
  assert.equals(0, rc, err)
  local cycles, maxkb = out:match("cycles (%d+) maxkb (%d+)")
  assert.is_truthy(cycles, out .. err)
  return tonumber(cycles), tonumber(maxkb)
end

describe("the collector's pace", function()
  it("a small heap is collected every few MiB of garbage, not every few hundred KB, and stays small", function()
    local paced, pkb = churn("paced")
    local own, okb = churn("own")
    -- 32 MB of garbage: with Lua's pause of 200% over a heap of about
    -- 0.2 MB a cycle comes every 0.2 MB (about 170 of them); paced, about
    -- every 1 MB (about 40).
    assert.is_true(paced <= 60, ("paced: %d cycles for 32 MB (max heap %d KiB)"):format(paced, pkb))
    assert.is_true(pkb < 8 * 1024, ("paced: the heap reached %d KiB"):format(pkb))
    assert.is_true(own >= 3 * paced and own >= 40,
      ("a script's own collectgarbage('incremental', 200) takes over: %d cycles against %d paced"):format(own, paced))
    assert.is_true(okb < pkb, ("own pause: max heap %d KiB, paced %d"):format(okb, pkb))
  end)

  it("collectgarbage answers as Lua's own does", function()
    -- lua5.4, the interpreter, starts in generational mode: both start
    -- from incremental (which also takes the pace over in sockhost)
    local probe = H.writefile(H.tmpname(".lua"), [[
collectgarbage("incremental")
local r = {}
local function add(...) local t = table.pack(...) for i = 1, t.n do r[#r + 1] = type(t[i]) .. ":" .. tostring(t[i]) end r[#r + 1] = "|" end
add(math.type(collectgarbage("count")))
add(collectgarbage("isrunning"))
add(collectgarbage("stop")); add(collectgarbage("isrunning")); add(collectgarbage("restart"))
add(collectgarbage())
add(collectgarbage("collect"))
add(type(collectgarbage("step")))
add(collectgarbage("generational")); add(collectgarbage("incremental")); add(collectgarbage("incremental", 200, 100, 13))
add(collectgarbage("setpause", 150)); add(collectgarbage("setpause", 200))
add(collectgarbage("setstepmul", 100))
add(pcall(collectgarbage, "nope"))
local inside
setmetatable({}, {__gc = function() inside = table.pack(collectgarbage("count"), collectgarbage("step")) end})
collectgarbage()
add(inside and inside.n, inside and inside[1], inside and inside[2])
print(table.concat(r, " "))
]])
    local ref = io.popen("lua5.4 " .. H.q(probe)):read("a")
    assert.is_truthy(ref:match("string:incremental"), ref)
    local out, err, rc = H.exec(H.q(probe))
    assert.equals(0, rc, err)
    assert.equals(ref, out)
  end)
end)
