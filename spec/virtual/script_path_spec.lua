-- script_path_spec.lua -- t:script finds a script by a path relative to the
-- spec's own folder when the working directory does not have it, and says
-- what it tried when neither does.
require "sockhost"
local T = require "sockhost.test"

describe("sockhost.test t:script's path", function()
  it("is tried beside the spec when the working directory lacks it", function()
    local t = T.new()
    -- from the repository root this is nothing; beside this spec it is
    -- spec/fixtures/vt/order.lua
    t:script("../fixtures/vt/order.lua", "tcp://127.0.0.1:7100")
    local p = t:connect("tcp://127.0.0.1:7100")
    p:expect_lines({ "1", "2", "3", "4", "5" })
    t:close()
  end)

  it("says what it tried when neither has it", function()
    local t = T.new()
    local ok, err = pcall(t.script, t, "no_such_script.lua")
    t:close()
    assert.is_false(ok)
    assert.matches("cannot find the script 'no_such_script.lua' (tried 'no_such_script.lua' from the "
      .. "working directory and 'spec/virtual/no_such_script.lua' beside the spec)", err, 1, true)
  end)
end)
