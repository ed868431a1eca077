-- scripts/chat.lua, tested with sockhost.test: in-process, scripted peers,
-- virtual time. Runs over the in-memory transport by default, and over real
-- loopback sockets with SOCKHOST_TEST_TRANSPORT=loopback.
require "sockhost"
local T = require "sockhost.test"

-- Both transports, always: the in-memory one and real loopback TCP (the
-- switch a user sets with SOCKHOST_TEST_TRANSPORT or T.new's transport).
for _, transport in ipairs { "mem", "loopback" } do
describe("chat.lua (virtual time, " .. transport .. ")", function()
  local t
  before_each(function()
    -- as `sockhost --idle-timeout 60 scripts/chat.lua`
    t = T.new { idle_timeout = 60, transport = transport }
    t:script("scripts/chat.lua")
  end)
  after_each(function() t:close() end)

  -- Connect a peer and read its welcome and the others' notices.
  local function join(name, others)
    local p = t:connect("tcp://127.0.0.1:7010", name)
    local nick = p:expect_match("^%* welcome, you are (guest%d+)")
    for _, o in ipairs(others or {}) do o:expect_line("* " .. nick .. " joined") end
    return p, nick
  end

  it("relays lines among three peers, cuts the one that never reads, and the idle one after 60 s", function()
    local a, na = join("alice")
    local b, nb = join("bob", { a })
    local c, nc = join("carol", { a, b })
    a:send_line("/nick alice")
    for _, p in ipairs { a, b, c } do p:expect_line("* " .. na .. " is now alice") end

    -- the peer that never reads
    local mute, nm = join("mute", { a, b, c })
    mute:pause()

    -- bob floods the room with 4000-byte lines, 16 at a time: the kernel's
    -- buffers towards mute fill (a few MiB over TCP), then chat.lua's 64 KiB
    -- queue, and mute is dropped
    local line = ("x"):rep(4000)
    local said = "<" .. nb .. "> " .. line
    local batch = {}
    for i = 1, 16 do batch[i] = said end
    local dropped
    local left = "* " .. nm .. " left (not reading)"
    for i = 1, 400 do
      b:send((line .. "\n"):rep(16))
      if t:log_match("dropping " .. nm) then
        -- the room hears of it among these lines, where chat.lua's table of
        -- clients puts it
        dropped = i * 16
        local with_left = { left, table.unpack(batch) }
        a:expect_lines(with_left)
        c:expect_lines(with_left)
        b:expect_line(left)
        break
      end
      a:expect_lines(batch)
      c:expect_lines(batch)
    end
    assert.is_truthy(dropped, "mute was never dropped")
    -- mute gets what the kernel held, then the end: chat.lua aborted it
    mute:resume()
    local held, ended = mute:received()
    assert.is_truthy(ended)
    local lines = 0
    for l in held:gmatch("([^\n]*)\n") do
      assert.equal("<" .. nb .. "> " .. line, l)
      lines = lines + 1
    end
    assert.is_true(lines > 10 and lines < dropped)

    -- carol talks; alice and bob see it in order
    c:send_line("one")
    c:send_line("two")
    a:expect_line("<" .. nc .. "> one"); a:expect_line("<" .. nc .. "> two")
    b:expect_line("<" .. nc .. "> one"); b:expect_line("<" .. nc .. "> two")

    -- 59 s on, alice and bob speak; carol only listens and is cut at 60 s
    t:advance(59)
    a:send_line("still here")
    b:expect_line("<alice> still here")
    c:expect_line("<alice> still here")     -- carol's conn moved: bytes went to her
    t:advance(30)
    b:send_line("me too")
    a:expect_line("<" .. nb .. "> me too")
    c:expect_line("<" .. nb .. "> me too")
    -- then the room is quiet: at 60 s without a byte either way the host
    -- cuts all three, not before (each may hear of the others leaving)
    a:expect_silence(59.5)
    for _, p in ipairs { a, b, c } do assert.is_nil(select(2, p:received())) end
    t:advance(1)
    for _, p in ipairs { a, b, c } do
      local held, ended = p:received()
      assert.is_truthy(ended == "closed" or ended == "reset", ended)   -- reset over TCP: the cut is an abort
      assert.is_truthy(held:match("^[^\n]* left\n") or held == "", "held: " .. T.show(held))
    end
  end)

  it("names who is here, refuses a taken nick, and says bye on /quit", function()
    local a = join("a")
    local b, nb = join("b", { a })
    a:send_line("/nick ann")
    a:expect_line("* guest1 is now ann"); b:expect_line("* guest1 is now ann")
    b:send_line("/nick ann")
    b:expect_line("* ann is taken")
    b:send_line("/who")
    b:expect_line("* here: " .. table.concat({ "ann", nb }, " "))
    b:send_line("/quit")
    b:expect_line("* bye")
    b:expect_close()
    a:expect_line("* " .. nb .. " left")
  end)

  it("assembles lines sent one byte at a time", function()
    local a = join("a")
    local b, nb = join("b", { a })
    b:send("hello\r\nworld\n", { split = 1 })
    a:expect_line("<" .. nb .. "> hello")
    a:expect_line("<" .. nb .. "> world")
  end)

  it("survives a peer that resets in the middle of a line", function()
    local a = join("a")
    local b, nb = join("b", { a })
    b:send("half a li")
    b:reset()
    -- a reset may lose the partial line (TCP) or deliver it (a Unix socket
    -- closed with nothing unread ends like a close)
    local l = a:expect_line()
    if l ~= "* " .. nb .. " left" then
      assert.equal("<" .. nb .. "> half a li", l)
      a:expect_line("* " .. nb .. " left")
    end
    local c = join("c", { a })
    c:send_line("hi")
    a:expect_match("^<guest%d+> hi$")
  end)

  it("escapes control bytes, bytes that are not UTF-8 and bidi controls in what it relays", function()
    local a = join("a")
    local b, nb = join("b", { a })
    b:send("\27]2;owned\7\27[1A\27[2K\r<a> fake\0\194\133x\226\128\168y\226\128\174z\240\159\146\169\n")
    a:expect_line("<" .. nb .. "> \\x1b]2;owned\\x07\\x1b[1A\\x1b[2K\\x0d<a> fake\\x00\\u{85}x\\u{2028}y\\u{202e}z\240\159\146\169")
    b:send("\128\191 \248\136\128\128\128 \226\128\n")      -- lone continuations, a 5-byte form, cut short
    a:expect_line("<" .. nb .. "> \\x80\\xbf \\xf8\\x88\\x80\\x80\\x80 \\xe2\\x80")
  end)

  it("ends a session whose line passes 4 KiB", function()
    local a = join("a")
    local b, nb = join("b", { a })
    b:send(("y"):rep(5000))
    a:expect_line("* " .. nb .. " left (line too long)")
    b:expect_close()
  end)
end)
end
