-- TLS on first use (issue 19: idle RSS). The executable does not link
-- OpenSSL: TLS is the module sockhost-tls.so, opened with dlopen when a TLS
-- context is first made (core/sh_tls_load.c), and sockhost.crypto (SHA-1,
-- base64, random bytes: what plain WebSocket needs) is our own code. So a
-- process that serves plain TCP and hashes for WebSocket maps no libssl or
-- libcrypto; its first tls:// listener loads them and works; and a binary
-- without its module says so in the error of each TLS use, and serves plain
-- TCP as before.
--
-- Through the real binary; the certificates are made at test time
-- (spec/fixtures/tls_certs.sh), the TLS client is this process's
-- sockhost.so (TLS linked in).
local H = require "helpers"
local sh = H.sh

local D                -- the certificates' directory

-- A plain control listener; a client that sends "tls" gets the address of a
-- tls:// echo listener started then (or "error ..."). Before it prints its
-- address it uses sockhost.crypto as WebSocket does.
local SCRIPT = [[
local sh = require "sockhost"
local crypto = require "sockhost.crypto"
local cert, key = arg[1], arg[2]
assert(#crypto.sha1("dGhlIHNhbXBsZSBub25jZQ==") == 20)
assert(#crypto.base64_encode(crypto.random(16)) == 24)
local ctl = assert(sh.listen("tcp://127.0.0.1:0", function(c)
  if c:read("l") ~= "tls" then return end
  local srv, err = sh.listen("tls://127.0.0.1:0", function(tc)
    for line in tc:lines() do tc:write(line, "\n") end
  end, { cert = cert, key = key })
  c:write(srv and srv:address() or ("error " .. tostring(err)), "\n")
end))
print("ready " .. ctl:address())
]]

-- Which of OpenSSL's libraries and our module process 'pid' maps.
local function mapped(pid)
  local maps = assert(H.readfile("/proc/" .. pid .. "/maps"), "no maps for " .. pid)
  return {
    ssl = maps:find("libssl%.so") ~= nil,
    crypto = maps:find("libcrypto%.so") ~= nil,
    module = maps:find("sockhost%-tls%.so") ~= nil,
  }
end

describe("TLS on first use", function()
  setup(function()
    D = H.sh_cmd("mktemp -d " .. H.q(H.TMP .. "/tlsmod.XXXXXX")):gsub("%s+$", "")
    local out, rc = H.sh_cmd("sh spec/fixtures/tls_certs.sh " .. H.q(D) .. " 2>&1")
    assert(rc == 0 and out:match("ok"), "cannot make certificates: " .. out)
  end)
  teardown(function()
    if D and D:match("/tlsmod%.") then os.execute("rm -rf " .. H.q(D)) end
  end)

  it("an idle plain server maps no libssl or libcrypto; its first tls:// listener loads them and works", function()
    local script = H.writefile(H.tmpname(".lua"), SCRIPT)
    local proc = H.start(("%s %s %s"):format(H.q(script), H.q(D .. "/srv.pem"), H.q(D .. "/srv.key")))
    local ctl
    finally(function()
      if ctl then ctl:close() end
      proc:stop()
    end)
    local addr = proc:wait_output("ready (%S+)")
    H.socket.sleep(0.2)                       -- idle a little: nothing loads later by itself
    assert.same({ ssl = false, crypto = false, module = false }, mapped(proc.pid))

    ctl = H.tcp(H.hostport(addr))
    assert(ctl:send("tls\n"))
    local tls_addr = assert(ctl:receive("*l"))
    assert.matches("^tls://127%.0%.0%.1:%d+$", tls_addr)
    assert.same({ ssl = true, crypto = true, module = true }, mapped(proc.pid))

    local got
    H.run(function()
      local c = assert(sh.connect(tls_addr, { ca = D .. "/ca.pem", servername = "localhost" }))
      assert(c:write("over tls\n"))
      got = c:read("l")
      c:close()
    end)
    assert.equals("over tls", got)
  end)

  it("a binary without its module: each TLS use fails with 'TLS unavailable: ...', plain TCP serves", function()
    local dir = H.sh_cmd("mktemp -d " .. H.q(H.TMP .. "/nomod.XXXXXX")):gsub("%s+$", "")
    finally(function()
      if dir:match("/nomod%.") then os.execute("rm -rf " .. H.q(dir)) end
    end)
    assert(os.execute(("cp %s %s/sockhost"):format(H.q(H.BIN), H.q(dir))))
    local script = H.writefile(H.tmpname(".lua"), ([[
      local sh = require "sockhost"
      local srv, err = sh.listen("tls://127.0.0.1:0", function() end,
                                 { cert = %q, key = %q })
      print("listen", srv, err)
      if srv then srv:close() end
      local c, err2 = sh.connect("tls://127.0.0.1:1", { ca = %q, servername = "localhost" })
      print("connect", c, err2)
      local p = assert(sh.listen("tcp://127.0.0.1:0", function(x) x:write("plain\n") end))
      local pc = assert(sh.connect(p:address()))
      print("tcp", pc:read("l"))
      pc:close()
      p:close()
    ]]):format(D .. "/srv.pem", D .. "/srv.key", D .. "/ca.pem"))
    local out, rc = H.sh_cmd(("timeout -s KILL 20 %s/sockhost %s 2>&1"):format(H.q(dir), H.q(script)))
    assert.equals(0, rc, out)
    local why = ("TLS unavailable: sockhost-tls.so not found in '%s' or '%s/../lib/sockhost'")
      :format(dir, dir)
    assert.truthy(out:find("listen\tnil\t" .. why, 1, true), out)
    assert.truthy(out:find("connect\tnil\t" .. why, 1, true), out)
    assert.truthy(out:find("tcp\tplain", 1, true), out)
  end)

  it("make install puts the module where the installed binary finds it", function()
    local dest = H.sh_cmd("mktemp -d " .. H.q(H.TMP .. "/inst.XXXXXX")):gsub("%s+$", "")
    local proc, ctl
    finally(function()
      if ctl then ctl:close() end
      if proc then proc:stop() end
      if dest:match("/inst%.") then os.execute("rm -rf " .. H.q(dest)) end
    end)
    local _, rc = H.sh_cmd(("make -s install DESTDIR=%s PREFIX=/opt/sh > /dev/null 2>&1"):format(H.q(dest)))
    assert.equals(0, rc)
    assert.truthy(H.readfile(dest .. "/opt/sh/lib/sockhost/sockhost-tls.so"))
    local script = H.writefile(H.tmpname(".lua"), SCRIPT)
    proc = H.launch(("%s/opt/sh/bin/sockhost %s %s %s"):format(H.q(dest), H.q(script),
      H.q(D .. "/srv.pem"), H.q(D .. "/srv.key")), "installed sockhost")
    local addr = proc:wait_output("ready (%S+)")
    ctl = H.tcp(H.hostport(addr))
    assert(ctl:send("tls\n"))
    local tls_addr = assert(ctl:receive("*l"))
    assert.matches("^tls://127%.0%.0%.1:%d+$", tls_addr)
    local got
    H.run(function()
      local c = assert(sh.connect(tls_addr, { ca = D .. "/ca.pem", servername = "localhost" }))
      assert(c:write("installed\n"))
      got = c:read("l")
      c:close()
    end)
    assert.equals("installed", got)
  end)
end)
