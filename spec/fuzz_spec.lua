-- The read path under random input in random pieces (the same property as the
-- libFuzzer target `make fuzz` runs for longer): every byte comes back, in
-- order, whatever the read format and however the bytes were split.
local H = require "helpers"
package.path = "./fuzz/?.lua;" .. package.path
local readcheck = require "readcheck"

local function random_input(len, alphabet)
  local t = {}
  for i = 1, len do t[i] = alphabet:sub(math.random(#alphabet), math.random(#alphabet)):sub(1, 1) end
  return table.concat(t)
end

describe("the read path, fuzzed", function()
  it("puts 300 random inputs back together exactly, for every read format", function()
    math.randomseed(20261130)
    local alphabets = { "ab\n", "x\r\n", "\0\1\255\n\r", "abcdefgh", "\n" }
    for i = 1, 300 do
      local fmt = string.char(i % 5, math.random(0, 255))
      local input = fmt .. random_input(math.random(0, 3000), alphabets[1 + i % #alphabets])
      readcheck.check(input)
    end
  end)

  it("handles one large input split into 1-byte pieces", function()
    for fmt = 0, 4 do
      readcheck.check(string.char(fmt, 7) .. string.rep("line\r\n", 300))
    end
  end)
end)
