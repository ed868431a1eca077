-- cli_spec.lua -- the sockhost executable behaves like the lua interpreter
-- (arg, ..., -e, -l, -, --check, --version, --help, errors, exit codes), and
-- like a host: exits when idle, on sockhost.stop() or SIGTERM, survives
-- handler errors, loads Debian Lua modules and LUA_PATH modules.
local H = require "helpers"

-- A script file in spec/tmp.
local function script(src)
  return H.writefile(H.tmpname(".lua"), src)
end

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

-- Run ./sockhost with an environment prefix (e.g. "LUA_PATH=..."), bounded.
local function exec_env(env, args)
  local out, err = H.tmpname(".out"), H.tmpname(".err")
  local _, rc = H.sh_cmd(string.format("env %s timeout -s KILL 20 %s %s > %s 2> %s < /dev/null",
    env, H.q(H.BIN), args, out, err))
  return H.readfile(out), H.readfile(err), rc
end

describe("sockhost command line", function()
  describe("arg and ...", function()
    it("arg holds the script at 0, its args at 1.., interpreter and options below 0", function()
      local s = script[[
        for i = -3, #arg do io.write(i, "=", tostring(arg[i]), "\n") end
        io.write("n=", #arg, "\n")
      ]]
      local out, err, rc = H.exec("-e 'x=1' " .. H.q(s) .. " alpha 'b c'")
      assert.equal(0, rc, err)
      assert.equal(table.concat({
        "-3=" .. H.BIN, "-2=-e", "-1=x=1", "0=" .. s, "1=alpha", "2=b c", "n=2", "",
      }, "\n"), out)
    end)

    it("... in the main chunk holds the script's arguments", function()
      local s = script[[print(select("#", ...), ...)]]
      local out, err, rc = H.exec(H.q(s) .. " one two three")
      assert.equal(0, rc, err)
      assert.equal("3\tone\ttwo\tthree\n", out)
      out = H.exec(H.q(s))
      assert.equal("0\n", out)
    end)

    it("-- ends the options: what follows is the script and its args", function()
      local s = script[[print(arg[-1], arg[0] ~= nil, ...)]]
      local out, err, rc = H.exec("-- " .. H.q(s) .. " -e x")
      assert.equal(0, rc, err)
      assert.equal("--\ttrue\t-e\tx\n", out)
    end)
  end)

  describe("-e, -l and -", function()
    it("-e runs a statement", function()
      local out, err, rc = H.exec([[-e 'print("from -e", 6 * 7)']])
      assert.equal(0, rc, err)
      assert.equal("from -e\t42\n", out)
    end)

    it("several -e run in order", function()
      local out, err, rc = H.exec([[-e 'x = 1' -e 'x = x * 10 + 2' -e 'print(x)']])
      assert.equal(0, rc, err)
      assert.equal("12\n", out)
    end)

    it("-e runs before the script, in the same state", function()
      local s = script[[print(greeting .. ", " .. ...)]]
      local out, err, rc = H.exec([[-e 'greeting = "olá"' ]] .. H.q(s) .. " mundo")
      assert.equal(0, rc, err)
      assert.equal("olá, mundo\n", out)
    end)

    it("-e with a syntax error is reported and nothing runs", function()
      local out, err, rc = H.exec([[-e 'print("ran")' -e 'x = = 1']])
      assert.equal(1, rc)
      assert.equal("", out)
      assert.matches("sockhost: %(command line%):1:", err)
    end)

    it("-l mod requires the module as a global", function()
      local out, err, rc = H.exec([[-l cjson -e 'print(cjson.encode({1}))']])
      assert.equal(0, rc, err)
      assert.equal("[1]\n", out)
    end)

    it("-e runs before a script read from standard input", function()
      local out, err, rc = H.exec([[-e 'x = 5' - p]], { stdin = "print(x, arg[0], ...)\n" })
      assert.equal(0, rc, err)
      assert.equal("5\t-\tp\n", out)
    end)

    it("a syntax error in the script from standard input exits 1", function()
      local out, err, rc = H.exec("-", { stdin = "print('ran')\nx = = 1\n" })
      assert.equal(1, rc)
      assert.equal("", out)
      assert.matches("stdin:2:", err)
    end)

    it("- reads the script from standard input, with arg and ...", function()
      local out, err, rc = H.exec("- a b", { stdin = 'print(arg[0], arg[1], ...)\nsockhost.sleep(0.01)\nprint("done")\n' })
      assert.equal(0, rc, err)
      assert.equal("-\ta\ta\tb\ndone\n", out)
    end)
  end)

  describe("--check", function()
    it("compiles a good file without running it (exit 0)", function()
      local marker = H.tmpname(".marker")
      local s = script(("io.open(%q, 'w'):close()\nprint('ran')\n"):format(marker))
      local out, err, rc = H.exec("--check " .. H.q(s))
      assert.equal(0, rc, err)
      assert.equal("", out)
      assert.equal("", err)
      assert.is_false(exists(marker))
      -- the same file, run normally, does leave the marker: the check is real
      out, err, rc = H.exec(H.q(s))
      assert.equal(0, rc, err)
      assert.equal("ran\n", out)
      assert.is_true(exists(marker))
    end)

    it("exits 1 naming the file and line of a syntax error, and runs nothing", function()
      local marker = H.tmpname(".marker")
      local good = script(("io.open(%q, 'w'):close()\n"):format(marker))
      local bad = script("print('ran')\n\nlocal x = = 1\n")
      local out, err, rc = H.exec("--check " .. H.q(bad))
      assert.equal(1, rc)
      assert.equal("", out)
      assert.truthy(err:find(bad .. ":3:", 1, true), err)
      -- a script after --check is not run either
      out, err, rc = H.exec("--check " .. H.q(bad) .. " " .. H.q(good))
      assert.equal(1, rc)
      assert.equal("", out)
      assert.truthy(err:find(bad .. ":3:", 1, true), err)
      assert.is_false(exists(marker))
    end)

    it("exits 1 for a file that does not exist", function()
      local missing = H.TMP .. "/no_such_file_" .. H.getpid() .. ".lua"
      local _, err, rc = H.exec("--check " .. H.q(missing))
      assert.equal(1, rc)
      assert.truthy(err:find(missing, 1, true), err)
    end)

    local scripts = {}
    local p = io.popen("ls scripts/*.lua 2>/dev/null")
    for f in p:lines() do scripts[#scripts + 1] = f end
    p:close()
    it("finds the example scripts", function()
      assert.is_true(#scripts >= 3)
    end)
    for _, f in ipairs(scripts) do
      it("accepts " .. f, function()
        local out, err, rc = H.exec("--check " .. H.q(f))
        assert.equal(0, rc, err)
        assert.equal("", out)
      end)
    end
  end)

  describe("information and bad usage", function()
    it("--version and -v print a line with 'sockhost'", function()
      for _, o in ipairs { "--version", "-v" } do
        local out, err, rc = H.exec(o)
        assert.equal(0, rc, err)
        assert.matches("^[^\n]*sockhost[^\n]*\n$", out)
      end
    end)

    it("--help and -h print the usage on stdout", function()
      for _, o in ipairs { "--help", "-h" } do
        local out, err, rc = H.exec(o)
        assert.equal(0, rc, err)
        assert.matches("^usage: %S*sockhost %[options%] %[script", out)
        assert.matches("%-%-check", out)
      end
    end)

    it("an unknown option exits non-zero and names it", function()
      local marker = H.tmpname(".marker")
      local s = script(("io.open(%q, 'w'):close()\n"):format(marker))
      local out, err, rc = H.exec("--frobnicate " .. H.q(s))
      assert.is_not.equal(0, rc)
      assert.equal("", out)
      assert.matches("%-%-frobnicate", err)
      assert.is_false(exists(marker))
    end)

    it("an option that needs an argument and has none exits non-zero", function()
      local _, err, rc = H.exec("-e")
      assert.is_not.equal(0, rc)
      assert.matches("'%-e' needs an argument", err)
    end)

    it("no script and nothing to run prints the usage and exits non-zero", function()
      local out, err, rc = H.exec("")
      assert.is_not.equal(0, rc)
      assert.equal("", out)
      assert.matches("usage:", err)
    end)
  end)

  describe("one table of options", function()
    -- The options --help lists: { names = { "-w", "--workers" }, metavar = "n" }.
    local function listed()
      local out = H.exec("--help")
      local list = {}
      for line in out:gmatch("[^\n]+") do
        if line:match("^  %-") then
          local o = { names = {} }
          for tok in line:sub(3, 18):gmatch("[^%s,]+") do
            if tok:sub(1, 1) == "-" then table.insert(o.names, tok) else o.metavar = tok end
          end
          list[#list + 1] = o
        end
      end
      return list, out
    end
    -- A good value for each kind of argument the usage names.
    local good = { stat = "'x = 1'", mod = "string", lvl = "warn", n = "1", s = "1", m = "64",
                   addr = "unix:" .. H.tmpname(".sock") }
    local numeric = { "--grace", "--budget", "--max-memory", "--max-buffers", "--max-conns", "--idle-timeout",
                      "--line-timeout", "--max-line" }
    local function find(list, name)
      for _, o in ipairs(list) do
        for _, n in ipairs(o.names) do if n == name then return o end end
      end
    end

    it("--help lists `sockhost test` and every option; each name listed is accepted", function()
      local list, out = listed()
      assert.matches("\n  %S*sockhost test %[busted options%] %[specs%]\n", out)
      assert.is_true(#list >= 16, out)
      for _, name in ipairs { "-e", "-l", "-", "--", "--check", "--log-level", "-w", "--workers",
                              "-v", "--version", "-h", "--help", table.unpack(numeric) } do
        assert.truthy(find(list, name), name .. " is not in the usage")
      end
      local s = script[[io.write("ran")]]
      good.file = H.q(s)
      for _, o in ipairs(list) do
        for _, name in ipairs(o.names) do
          local value = o.metavar and assert(good[o.metavar], "a new kind of argument: " .. o.metavar)
          local out2, err, rc = H.exec(name .. " " .. (value or "") .. " " .. H.q(s),
                                       { stdin = 'io.write("ran")' })
          assert.equal(0, rc, name .. ": " .. err)
          assert.equal("", err, name)
        end
      end
      -- and a name not listed is refused, with the usage
      local out2, err, rc = H.exec("--budgets 1 " .. H.q(s))
      assert.equal(1, rc)
      assert.equal("", out2)
      assert.matches("unrecognized option '%-%-budgets'", err)
      assert.matches("usage:", err)
    end)

    it("each option the usage gives an argument needs one: message, usage, exit 1", function()
      for _, o in ipairs(listed()) do
        if o.metavar then
          for _, name in ipairs(o.names) do
            local out, err, rc = H.exec([[-e 'print("ran")' ]] .. name)
            assert.equal(1, rc, name)
            assert.equal("", out, name)
            assert.truthy(err:find("'" .. name .. "' needs an argument", 1, true), err)
            assert.matches("usage:", err)
          end
        end
      end
    end)

    it("each numeric option refuses a bad value, exit 1, and nothing runs", function()
      local s = script[[print("ran")]]
      for _, name in ipairs(numeric) do
        for _, bad in ipairs { "", "x", "-1", "1x", "nan", "--" } do
          local out, err, rc = H.exec(name .. " " .. H.q(bad) .. " " .. H.q(s))
          assert.equal(1, rc, name .. " " .. bad)
          assert.equal("", out, name .. " " .. bad)
          assert.truthy(err:find("'" .. name .. "' needs a non-negative number", 1, true),
                        name .. " " .. bad .. ": " .. err)
        end
        local out, err, rc = H.exec(name .. " 2.5 " .. H.q(s))
        assert.equal(0, rc, err)
        assert.equal("ran\n", out)
      end
    end)

    it("-w refuses a bad count, --log-level a bad level, exit 1, and nothing runs", function()
      local s = script[[print("ran")]]
      for _, name in ipairs { "-w", "--workers" } do
        for _, bad in ipairs { "", "0", "257", "2x", "many" } do
          local out, err, rc = H.exec(name .. " " .. H.q(bad) .. " " .. H.q(s))
          assert.equal(1, rc, name .. " " .. bad)
          assert.equal("", out)
          assert.truthy(err:find("'" .. name .. "' needs a number from 1 to 256, or 'auto'", 1, true), err)
        end
      end
      -- a bad level is refused before anything starts: with workers (which
      -- used to fail and be restarted for ever) and with --check too
      for _, pre in ipairs { "", "-w 2 ", "--check " .. H.q(s) .. " " } do
        local out, err, rc = H.exec(pre .. "--log-level loud " .. H.q(s), { timeout = 5 })
        assert.equal(1, rc, pre .. ": " .. err)
        assert.equal("", out)
        assert.matches("%-%-log%-level: expected debug, info, warn, error or off", err)
        assert.is_nil(err:find("worker %d"), err)   -- no worker started (the path may say "worker")
      end
    end)

    it("--log-level also quiets the master of -w", function()
      local _, err, rc = H.exec("-w 2 -e ''")
      assert.equal(0, rc, err)
      assert.matches("INFO  master %d+: 2 workers", err)
      _, err, rc = H.exec("-w 2 --log-level warn -e ''")
      assert.equal(0, rc, err)
      assert.not_matches("INFO", err)
      assert.matches("^[^\n]* WARN  %-w 2: each worker runs its own copy[^\n]*\n$", err)
      _, err, rc = H.exec("-w 2 --log-level error -e ''")
      assert.equal(0, rc, err)
      assert.equal("", err)
    end)

    it("-e and -l run in command-line order, interleaved", function()
      local s = script[[print(seq, ...)]]
      local out, err, rc = H.exec([[-e 'seq = "e1"' ]] ..
        [[-e 'package.preload.m = function() seq = seq .. " l" return "M" end' ]] ..
        [[-l g=m -e 'seq = seq .. " e2 " .. g' -l string ]] .. H.q(s) .. " a")
      assert.equal(0, rc, err)
      assert.equal("e1 l e2 M\ta\n", out)
    end)

    it("an option's value, or the script's arguments, are never taken for options", function()
      -- "--check" here is -e's chunk (a Lua comment), not the option
      local out, err, rc = H.exec([[-e --check -e 'print("ran")']])
      assert.equal(0, rc, err)
      assert.equal("ran\n", out)
      -- a --check after the script is the script's argument: only good.lua is checked
      local good_s = script[[print("ran")]]
      local bad = script("x = = 1\n")
      out, err, rc = H.exec("--check " .. H.q(good_s) .. " " .. H.q(good_s) .. " --check " .. H.q(bad))
      assert.equal(0, rc, err)
      assert.equal("", out)
      assert.equal("", err)
    end)
  end)

  describe("script errors", function()
    it("a first line starting with # (shebang) is skipped, like lua", function()
      local s = script("#!/usr/bin/env sockhost\nprint('shebang ok', ...)\n")
      local out, err, rc = H.exec(H.q(s) .. " 1")
      assert.equal(0, rc, err)
      assert.equal("shebang ok\t1\n", out)
    end)

    it("a missing script: message naming the file, non-zero exit", function()
      local missing = H.TMP .. "/missing_" .. H.getpid() .. ".lua"
      local out, err, rc = H.exec(H.q(missing) .. " arg1")
      assert.is_not.equal(0, rc)
      assert.equal("", out)
      assert.matches("sockhost: ", err)
      assert.truthy(err:find(missing, 1, true), err)
    end)

    it("a syntax error names the file and line, non-zero exit, nothing runs", function()
      local s = script("print('ran')\nlocal ok = 1\nif ok then\n  x = = 2\nend\n")
      local out, err, rc = H.exec(H.q(s))
      assert.is_not.equal(0, rc)
      assert.equal("", out)
      assert.truthy(err:find(s .. ":4:", 1, true), err)
    end)

    it("a runtime error in the main script: exit 1, message and traceback on stderr", function()
      local s = script[[
print("before")
local function deep() error("kaput here") end
deep()
print("after")
]]
      local out, err, rc = H.exec(H.q(s))
      assert.equal(1, rc)
      assert.equal("before\n", out)
      assert.truthy(err:find(s .. ":2: kaput here", 1, true), err)
      assert.matches("stack traceback:", err)
      assert.truthy(err:find(s .. ":3:", 1, true), err)
    end)

    it("a runtime error after a yield still exits 1, even with a listener open", function()
      local s = script[[
assert(sockhost.listen("tcp://127.0.0.1:0", function() end))
sockhost.sleep(0.02)
error("late failure")
]]
      local _, err, rc = H.exec(H.q(s), { timeout = 10 })
      assert.equal(1, rc)
      assert.matches("late failure", err)
      assert.matches("stack traceback:", err)
    end)

    it("an error object whose __tostring raises is logged, exit 1", function()
      local out, err, rc = H.exec([[-e 'error(setmetatable({}, {__tostring = function() error("inner") end}))']])
      assert.equal(1, rc)
      assert.equal("", out)
      assert.matches("stack traceback", err)
    end)
  end)

  describe("ending", function()
    it("exits 0 when the loop runs out of work", function()
      local s = script[[
local t0 = sockhost.now()
sockhost.sleep(0.05)
print(string.format("slept %.3f", sockhost.now() - t0))
]]
      local t0 = H.socket.gettime()
      local out, err, rc = H.exec(H.q(s), { timeout = 10 })
      local elapsed = H.socket.gettime() - t0
      assert.equal(0, rc, err)
      local slept = tonumber(out:match("^slept ([%d.]+)\n$"))
      assert.truthy(slept, out)
      assert.is_true(slept >= 0.045, out)
      assert.is_true(elapsed < 5)
    end)

    it("exits 0 on sockhost.stop() even with a listener open", function()
      local s = script[[
local srv = assert(sockhost.listen("tcp://127.0.0.1:0", function() end))
print("listening")
sockhost.after(0.05, function() print("stopping") sockhost.stop() end)
]]
      local t0 = H.socket.gettime()
      local out, err, rc = H.exec(H.q(s), { timeout = 10 })
      assert.equal(0, rc, err)
      assert.equal("listening\nstopping\n", out)
      assert.is_true(H.socket.gettime() - t0 < 5)
    end)

    it("a listener alone keeps the process running", function()
      local s = script[[
assert(sockhost.listen("tcp://127.0.0.1:0", function() end))
print("listening")
]]
      local p = H.start(H.q(s))
      finally(function() p:stop() end)
      p:wait_output("listening\n")
      assert.is_nil(p:wait(0.3))
    end)

    for _, sig in ipairs { "TERM", "INT" } do
      it("exits 0 on SIG" .. sig .. " while serving, with a connection open", function()
        local p = H.start("scripts/echo.lua tcp://127.0.0.1:0")
        local c
        finally(function() if c then c:close() end p:stop() end)   -- (one finally per test)
        local addr = p:wait_output("listening on (tcp://%S+)")
        c = H.tcp(H.hostport(addr))
        assert(c:send("ping\n"))
        assert.equal("ping", c:receive("*l"))
        assert.is_nil(p:exited())
        p:signal(sig)
        assert.equal(0, p:wait(5))
        local data, err = c:receive("*l")      -- the host closed our connection
        assert.is_nil(data)
        assert.equal("closed", err)
      end)
    end
  end)

  describe("modules", function()
    it("require of a Debian Lua 5.4 module (lua-cjson) works", function()
      local s = script[[
local cjson = require "cjson"
local t = cjson.decode('{"n": 42, "list": [1, 2, 3]}')
print(t.n == 42, #t.list, cjson.encode({ ok = true }))
]]
      local out, err, rc = H.exec(H.q(s))
      assert.equal(0, rc, err)
      assert.equal("true\t3\t{\"ok\":true}\n", out)
    end)

    it("LUA_PATH finds a module of one's own", function()
      local dir = H.tmpname("_mods")
      os.execute("mkdir -p " .. H.q(dir))
      local name = "shmod_" .. H.getpid()
      H.writefile(dir .. "/" .. name .. ".lua", 'return { greet = function(w) return "oi, " .. w end }\n')
      local s = script(("local m = require %q\nprint(m.greet(...))\n"):format(name))
      local out, err, rc = exec_env("LUA_PATH=" .. H.q(dir .. "/?.lua;;"), H.q(s) .. " mundo")
      assert.equal(0, rc, err)
      assert.equal("oi, mundo\n", out)
      -- without LUA_PATH the module is not found: the variable did the work
      out, err, rc = exec_env("-u LUA_PATH -u LUA_PATH_5_4", H.q(s) .. " mundo")
      assert.equal(1, rc)
      assert.matches("module '" .. name .. "' not found", err)
    end)
  end)

  describe("handler errors", function()
    it("do not end the process: that connection closes, others carry on", function()
      local s = script[[
local srv = assert(sockhost.listen("tcp://127.0.0.1:0", function(conn)
  for line in conn:lines() do
    if line == "boom" then error("boom requested by the client") end
    conn:write(line, "\n")
  end
end))
print("listening on " .. srv:address())
]]
      local p = H.start(H.q(s))
      finally(function() p:stop() end)
      local host, port = H.hostport(p:wait_output("listening on (tcp://%S+)"))

      local c1 = H.tcp(host, port, 5)
      assert(c1:send("first\n"))
      assert.equal("first", c1:receive("*l"))
      assert(c1:send("boom\n"))
      local line, err = c1:receive("*l")
      assert.is_nil(line)
      assert.equal("closed", err)
      c1:close()

      local deadline = H.socket.gettime() + 5
      while not p:stderr():find("stack traceback", 1, true) and H.socket.gettime() < deadline do
        H.socket.sleep(0.01)
      end
      local stderr = p:stderr()
      assert.matches("boom requested by the client", stderr)
      assert.matches("stack traceback", stderr)

      local c2 = H.tcp(host, port, 5)
      assert(c2:send("still there?\n"))
      assert.equal("still there?", c2:receive("*l"))
      c2:close()
      assert.is_nil(p:exited())
      assert.equal(0, p:stop())
    end)
  end)
  describe("logging", function()
    it("sockhost.log writes one line per call, escaped, at or above the level", function()
      local out, err, rc = H.exec([[-e 'local sh = require "sockhost"
        sh.log("debug", "not at info")
        sh.log("info", "two\nlines", "and\0nul")
        sh.log("warn", ("x"):rep(10000))']])
      assert.equals(0, rc)
      assert.equals("", out)
      local lines = {}
      for l in err:gmatch("[^\n]+") do lines[#lines + 1] = l end
      assert.equals(2, #lines)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ INFO  two\\nlines and\\x00nul$", lines[1])
      assert.matches("^%S+ WARN  x+%.%.%.$", lines[2])
      assert.is_true(#lines[2] < 5000, "cut at about 4 KiB: " .. #lines[2])
    end)

    it("escapes bytes that are not UTF-8, C1 and bidi controls and line separators; keeps the rest of UTF-8", function()
      -- from sockhost.log, and from the host's own message when a handler
      -- fails on a peer's line (the C side)
      local script = H.writefile(H.tmpname(".lua"), [==[
local sh = require "sockhost"
sh.log("info", "A", "caf\195\169 \226\130\172 \240\159\152\128 \215\144\215\145 z\226\128\141w")
sh.log("info", "B", "\255\254 \192\175 \237\160\128 \244\144\128\128 \248\136\128\128\128 \128 \226\130")
sh.log("info", "C", "\194\155" .. "2J \194\133 \226\128\174" .. "gpj.exe \226\129\166\226\129\167\226\129\168\226\129\169",
  "\226\128\170\226\128\171\226\128\172\226\128\173 \226\128\142\226\128\143\216\156 \226\128\168\226\128\169")
sh.log("info", "D", ("\195\169"):rep(3000))
sh.log("info", "E", ("\255"):rep(4000))
local srv = assert(sh.listen("tcp://127.0.0.1:0", function(conn)
  error("bad line: " .. conn:read("l"), 0)
end))
local c = assert(sh.connect(srv:address()))
c:write("evil \226\128\174txt \255 \27[2J\n")
c:read("a")
sh.sleep(0.1)
os.exit(0)
]==])
      local _, err, rc = H.exec(H.q(script))
      assert.equals(0, rc, err)
      local lines = {}
      for l in err:gmatch("[^\n]+") do
        local tag, rest = l:match("^%S+Z INFO  ([A-E]) (.*)$")
        if tag then lines[tag] = rest end
        if l:find("bad line", 1, true) then lines.peer = l end
      end
      assert.equals("caf\195\169 \226\130\172 \240\159\152\128 \215\144\215\145 z\226\128\141w", lines.A)
      assert.equals([[\xff\xfe \xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80 \xf8\x88\x80\x80\x80 \x80 \xe2\x82]], lines.B)
      assert.equals([[\u{9b}2J \u{85} \u{202e}gpj.exe \u{2066}\u{2067}\u{2068}\u{2069} ]]
        .. [[\u{202a}\u{202b}\u{202c}\u{202d} \u{200e}\u{200f}\u{61c} \u{2028}\u{2029}]], lines.C)
      -- cut at about 4 KiB, or 8 KiB once escaped, never inside a character or an escape
      assert.equals("...", (lines.D:gsub("\195\169", "")))
      assert.is_true(#lines.D > 4000 and #lines.D < 4100, #lines.D)
      assert.equals("...", (lines.E:gsub("\\xff", "")))
      assert.is_true(#lines.E > 8000 and #lines.E < 8192, #lines.E)
      assert.equals([[failed: bad line: evil \u{202e}txt \xff \x1b[2J]], lines.peer:match("failed: .*$"))
    end)

    it("--log-level and sockhost.log_level set the least level written", function()
      local _, err, rc = H.exec([[--log-level warn -e 'local sh = require "sockhost"
        sh.log("info", "hidden 1")
        print(sh.log_level("debug"))
        sh.log("debug", "shown 2")
        print(sh.log_level("off"))
        sh.log("error", "hidden 3")
        print(sh.log_level())
        print(pcall(sh.log_level, "loud"))']])
      assert.equals(0, rc)
      assert.is_nil(err:find("hidden", 1, true))
      assert.matches("DEBUG shown 2", err)
      local out = H.exec([[--log-level warn -e 'local sh = require "sockhost"
        print(sh.log_level("debug")) print(sh.log_level("off")) print(sh.log_level())
        print(pcall(sh.log_level, "loud"))']])
      assert.equals("warn\ndebug\noff\nfalse\tbad argument #1 to 'sockhost.log_level' (invalid option 'loud')\n", out)
    end)
  end)
end)

-- The usage text has one source, the table of options in main.c; the copies
-- in the README and doc/API.md are checked against what --help prints.
describe("the usage text", function()
  -- The option lines of a usage text: from the first "  -" line to the
  -- "sockhost test" entry's help line, with the program name made plain.
  local function option_lines(text)
    local lines, on = {}, false
    for line in text:gmatch("[^\n]*") do
      line = line:gsub("^  %S*sockhost test", "  sockhost test")
      if line:match("^  %-") then on = true end
      if on then lines[#lines + 1] = line end
      if on and line:match("run busted specs") then break end
    end
    return table.concat(lines, "\n")
  end

  local out, _, rc = H.exec("--help")
  local help = option_lines(out)

  it("--help lists the options and sockhost test", function()
    assert.equal(0, rc)
    assert.matches("  --max-line n ", help, 1, true)
    assert.matches("\n  sockhost test [busted options] [specs]\n", help, 1, true)
  end)

  it("states the defaults the host really has", function()
    local got = H.exec([[-e 'local d = require("sockhost.test.core").defaults({})
      print(d.max_conns, d.idle_timeout, d.line_timeout, d.max_line, d.budget)']])
    local want = {}
    for _, opt in ipairs({ "max%-conns", "idle%-timeout", "line%-timeout", "max%-line", "budget" }) do
      want[#want + 1] = assert(help:match("%-%-" .. opt .. " .-%(default (%d+)"), opt)
    end
    local have = {}
    for v in got:gmatch("%S+") do have[#have + 1] = ("%d"):format(tonumber(v)) end
    assert.same(want, have)
  end)

  for _, doc in ipairs({ "README.md", "doc/API.md" }) do
    it(doc .. "'s command line block is --help's", function()
      local text = H.readfile(doc)
      local block = text:match("```\nsockhost %[options%] %[script %[args%.%.%.%]%]\n(.-)```")
      assert.is_not_nil(block, doc .. ": no command line block")
      assert.equal(help, option_lines(block))
    end)
  end
end)
