-- onebyte_report.lua REPORT -- after `make test-onebyte`: sum the lines the
-- shim (spec/shim/onebyte.c) wrote at each shimmed process's exit and fail
-- unless it really cut I/O, in ./sockhost processes and in busted's lua5.4
-- alike: one-byte reads and writes done, and EAGAINs made up between them.
local path = assert(arg[1], "usage: onebyte_report.lua REPORT")
local f = io.open(path)
if not f then
  io.stderr:write("onebyte: no report at " .. path .. ": the shim never ran\n")
  os.exit(1)
end

local keys = { "rd", "rd_eagain", "wr", "wr_eagain" }
local sums = {}
for line in f:lines() do
  local exe = line:match("^onebyte .*exe=(%S+)")
  if exe then
    local s = sums[exe] or { procs = 0, rd = 0, rd_eagain = 0, wr = 0, wr_eagain = 0 }
    sums[exe] = s
    s.procs = s.procs + 1
    for _, k in ipairs(keys) do
      s[k] = s[k] + tonumber(line:match(" " .. k .. "=(%d+)"))
    end
  end
end
f:close()

local ok = true
print(("onebyte: %-10s %6s %12s %12s %12s %12s"):format("process", "count", "1-byte rd",
  "EAGAIN rd", "1-byte wr", "EAGAIN wr"))
for _, exe in ipairs({ "sockhost", "lua5.4" }) do
  local s = sums[exe]
  if not s then
    print(("onebyte: %-10s no process reported"):format(exe))
    ok = false
  else
    print(("onebyte: %-10s %6d %12d %12d %12d %12d"):format(exe, s.procs, s.rd, s.rd_eagain,
      s.wr, s.wr_eagain))
    for _, k in ipairs(keys) do
      if s[k] == 0 then
        print(("onebyte: %s: no %s at all: the shim did not cut its I/O"):format(exe, k))
        ok = false
      end
    end
  end
end
if not ok then os.exit(1) end
print("onebyte: ok, stream socket reads and writes were cut to one byte in both")
