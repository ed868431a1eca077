-- Channels, events, select and every without overlap, under sockhost.test:
-- virtual time, and the order of ready tasks drawn from the seed
-- (spec/fixtures/vt/coord.lua).
require "sockhost"
local T = require "sockhost.test"

local FIX = "spec/fixtures/vt/coord.lua"

describe("coordination (virtual time)", function()
  local t
  after_each(function() if t then t:close() end t = nil end)

  -- The pool's output for six jobs with seed 'seed'.
  local function pool(seed)
    t = T.new { seed = seed }
    t:script(FIX)
    local p = t:connect("tcp://127.0.0.1:7120")
    for j = 1, 6 do p:send_line("job " .. j) end
    p:send_line("end")
    local got = {}
    for i = 1, 6 do got[i] = p:expect_match("^(w%d %d)$", 10) end
    p:expect_line("done")
    p:expect_close()
    t:close()
    t = nil
    return table.concat(got, ",")
  end

  it("a worker pool fed by a channel does every job once; the seed fixes who does which", function()
    local first = pool(42)
    for _ = 1, 3 do assert.equal(first, pool(42)) end
    local jobs = {}
    for j in first:gmatch("w%d (%d)") do jobs[#jobs + 1] = tonumber(j) end
    table.sort(jobs)
    assert.same({ 1, 2, 3, 4, 5, 6 }, jobs)
    local seen = { [first] = true }
    local n = 1
    for seed = 1, 12 do
      local o = pool(seed)
      if not seen[o] then seen[o], n = true, n + 1 end
    end
    assert.is_true(n > 1, "12 seeds gave one assignment only")
  end)

  it("every without overlap skips the firings of a check that takes 2.5 s", function()
    for _, seed in ipairs { 1, 99 } do
      t = T.new { seed = seed }
      t:script(FIX)
      local p = t:connect("tcp://127.0.0.1:7121")
      p:send_line("no overlap")
      p:expect_line("runs 4 skipped 6", 11)
      assert.is_true(t:now() >= 10.5 and t:now() < 10.6)
      local q = t:connect("tcp://127.0.0.1:7121")
      q:send_line("overlap")
      q:expect_line("runs 10 skipped 0", 11)
      t:close()
      t = nil
    end
  end)

  it("select takes ticks, lines and timeouts in the order they come", function()
    for _, seed in ipairs { 7, 8 } do
      t = T.new { seed = seed }
      t:script(FIX)
      local p = t:connect("tcp://127.0.0.1:7122")
      p:expect_line("tick tick 1")
      p:send_line("hello")
      p:expect_line("line hello")
      p:expect_line("tick tick 2")
      assert.is_true(math.abs(t:now() - 0.8) < 0.01, tostring(t:now()))
      p:expect_line("tick tick 3")
      p:expect_line("ticker done")       -- the ticker task ended
      p:expect_line("timeout", 2)        -- a second after the last
      assert.is_true(math.abs(t:now() - 2.2) < 0.01)
      p:send_line("quit")
      p:expect_close()
      t:close()
      t = nil
    end
  end)
end)
