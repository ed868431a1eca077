-- spec/chat_spec.lua -- run with: sockhost test spec/chat_spec.lua
local T = require "sockhost.test"

describe("chat.lua", function()
  local t
  before_each(function()
    t = T.new { idle_timeout = 60 }        -- as `sockhost --idle-timeout 60 ...`
    t:script("scripts/chat.lua")           -- in-process: no port is opened
  end)
  after_each(function() t:close() end)     -- also fails if the script raised

  it("relays a line, and a quiet room is cut after 60 s", function()
    local alice = t:connect("tcp://127.0.0.1:7010", "alice")
    alice:expect_line("* welcome, you are guest1 (/nick NAME, /who, /quit)")
    local bob = t:connect("tcp://127.0.0.1:7010", "bob")
    bob:expect_match("^%* welcome, you are (guest%d+)")
    alice:expect_line("* guest2 joined")

    bob:send_line("hello", { split = 1 })  -- one byte at a time
    alice:expect_line("<guest2> hello")

    alice:expect_silence(59)               -- a minute passes in no time
    t:advance(2)
    local _, ended = alice:received()
    assert.is_not_nil(ended)               -- "closed" (or "reset" over TCP)
  end)
end)
