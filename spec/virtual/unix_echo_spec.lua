-- scripts/unix_echo.lua, tested with sockhost.test: in-process, scripted
-- peers, virtual time. The script's Unix address is always replaced by an
-- abstract Unix socket (with either transport), so peercred works the same.
require "sockhost"
local T = require "sockhost.test"

local ADDR = "unix:/tmp/sockhost-echo.sock"     -- the script's default address

-- Who the spec is: the peers are sockets of this very process.
local function sh_out(cmd)
  local f = assert(io.popen(cmd))
  local s = f:read("l")
  f:close()
  return s
end
local MY_UID = tonumber(sh_out("id -u"))
local MY_PID = tonumber(sh_out("echo $PPID"))    -- the shell's parent: this process

describe("unix_echo.lua (virtual time)", function()
  local t
  before_each(function()
    -- as `sockhost --idle-timeout 20 --line-timeout 5 scripts/unix_echo.lua`
    t = T.new { idle_timeout = 20, line_timeout = 5 }
    t:script("scripts/unix_echo.lua")
  end)
  after_each(function() t:close() end)

  -- A peer that has read its hello line.
  local function hello(name)
    local p = t:connect(ADDR, name)
    p:expect_match("^hello pid %d+ uid %d+$")
    return p
  end

  it("prints where it listens", function()
    assert.equal(1, #t.output)
    assert.truthy(t.output[1]:match("^unix echo: listening on unix:@sockhost%-test%-"), t.output[1])
  end)

  it("greets each client with its own pid and uid", function()
    local p = t:connect(ADDR, "me")
    local pid, uid = p:expect_match("^hello pid (%d+) uid (%d+)$")
    assert.equal(MY_PID, tonumber(pid))
    assert.equal(MY_UID, tonumber(uid))
    local q = t:connect(ADDR, "me again")
    q:expect_line(("hello pid %d uid %d"):format(MY_PID, MY_UID))
  end)

  it("echoes lines, CRLF ones without their CR, and empty ones", function()
    local p = hello("p")
    p:send_line("one")
    p:expect_line("one")
    p:send("two\r\nthree\n\nfour\n")
    p:expect("two\nthree\n\nfour\n")
  end)

  it("assembles a line sent one byte at a time", function()
    local p = hello("p")
    p:send("one byte at a time\nand another\n", { split = 1 })
    p:expect_line("one byte at a time")
    p:expect_line("and another")
    p:send("slow, 0.5 s apart\n", { split = 2, pause = 0.5 })   -- 9 pieces: 4 s < line_timeout
    p:expect_line("slow, 0.5 s apart")
  end)

  it("echoes a partial last line at half-close, then closes", function()
    local p = hello("p")
    p:send("whole\npartial")
    p:expect_line("whole")
    p:expect_silence(1)                 -- the partial line waits for its end
    p:shutdown()
    p:expect("partial\n")
    p:expect_close()
  end)

  it("keeps echoing the others while one peer never reads", function()
    local mute = hello("mute")
    mute:pause()
    local b = hello("b")
    -- mute sends lines and never reads the echoes: the kernel's buffers
    -- towards it fill, then the output queue, then the handler waits in
    -- its write and stops reading, and mute's sends are no longer taken
    local chunk = (("z"):rep(1023) .. "\n"):rep(64)   -- 64 KiB
    local sent, stuck = 0, false
    for _ = 1, 400 do
      local ok = pcall(mute.send, mute, chunk, { within = 1 })
      if not ok then stuck = true; break end
      sent = sent + #chunk
    end
    assert.is_true(stuck, "the server never stopped taking mute's lines")
    assert.is_true(sent >= 64 * 1024)
    -- meanwhile b is served as usual
    b:send_line("still echoed?")
    b:expect_line("still echoed?")
    -- b keeps talking; mute, on which nothing moves, is cut at 20 s
    t:advance(10)
    b:send_line("10 s on")
    b:expect_line("10 s on")
    t:advance(8)
    assert.is_nil(select(2, mute:received()))   -- paused: its end is not read yet
    t:advance(3)
    b:send_line("mute is gone")
    b:expect_line("mute is gone")
    mute:resume()
    local held, ended = mute:received()
    assert.truthy(ended == "closed" or ended == "reset", tostring(ended))
    assert.is_true(#held > 0 and #held < sent)
    assert.truthy(held:match("^[z\n]*$"))
  end)

  it("cuts a peer that leaves a line unfinished past the line timeout (5 s)", function()
    local p = hello("p")
    local q = hello("q")
    p:send("no end in sight")
    p:expect_silence(4.5)
    q:send_line("q is fine")
    q:expect_line("q is fine")
    local ended = p:expect_close(1)
    assert.truthy(ended == "closed" or ended == "reset", ended)
    q:send_line("still fine")
    q:expect_line("still fine")
  end)

  it("cuts a silent peer after the idle timeout (20 s), not before", function()
    local p = hello("p")
    p:expect_silence(19.5)
    local ended = p:expect_close(1)
    assert.truthy(ended == "closed" or ended == "reset", ended)
  end)

  it("survives a peer that resets in the middle of a line", function()
    local p = hello("p")
    p:send("half a li")
    p:reset()
    local q = hello("q")
    q:send_line("after the reset")
    q:expect_line("after the reset")
  end)
end)
