-- host_logs_spec.lua -- session.logs keeps the host's own log lines too
-- (a limit that closes a connection, a task that fails), in order with the
-- script's sockhost.log lines, whatever the log level.
require "sockhost"
local T = require "sockhost.test"

describe("sockhost.test session.logs", function()
  it("holds the host's 'idle too long, closing' line after the idle limit", function()
    local t = T.new { idle_timeout = 10 }
    t:listen("tcp://127.0.0.1:7200", function(conn)
      require("sockhost").log("info", "handler up")
      conn:read("l")
    end)
    local p = t:connect("tcp://127.0.0.1:7200")
    p:expect_silence(5)
    t:advance(10)
    p:expect_close()
    local line = t:log_match("idle too long, closing")
    assert.is_string(line)
    assert.matches("^conn #%d+ ", line)
    -- the script's line came first
    local first, second
    for i, l in ipairs(t.logs) do
      if l == "handler up" then first = i end
      if l:find("idle too long", 1, true) then second = i end
    end
    assert.is_true(first < second)
    t:close()
  end)

  it("holds a failed task's line, without writing info lines to stderr", function()
    local t = T.new()
    t:listen("tcp://127.0.0.1:7201", function(conn)
      conn:read("l")
      error("boom in the handler")
    end)
    local p = t:connect("tcp://127.0.0.1:7201")
    p:send("x\n")
    p:expect_close()
    assert.is_string(t:log_match("boom in the handler"))
    t:close(true)
  end)
end)
