-- scripts/http.lua end to end: ./sockhost serving HTTP/1.1, driven by real
-- clients in other processes (curl, python3's http.client, raw sockets):
-- keep-alive, pipelining, bodies, HEAD, static files and the ways out of
-- their folder, and the request-smuggling shapes, which must be answered
-- without reaching the routes (the script's --log prints each request that
-- does).
local H = require "helpers"

-- The interpreter behind python3 itself: a version manager's shim can take
-- seconds to start on a busy machine.
local PYTHON = H.sh_cmd("python3 -c 'import sys; print(sys.executable)'"):match("[^\n]+") or "python3"

local function curl(args)
  return H.sh_cmd("curl -sS --max-time 10 " .. args .. " 2>&1")
end

describe("scripts/http.lua, end to end", function()
  local proc, base, host, port, root, outside

  setup(function()
    outside = H.tmpname("_outside")
    root = H.tmpname("_root")
    os.execute(("mkdir -p %s/sub %s/dir"):format(H.q(root), H.q(outside)))
    H.writefile(outside .. "/secret.txt", "TOPSECRET\n")
    H.writefile(outside .. "/dir/secret.txt", "TOPSECRET\n")
    H.writefile(root .. "/a.txt", "file a\n")
    H.writefile(root .. "/sub/index.html", "<p>index</p>\n")
    H.writefile(root .. "/sub/b.json", '{"b":1}\n')
    H.writefile(root .. "/.hidden", "TOPSECRET\n")
    os.execute(("ln -s %s %s"):format(H.q(outside .. "/secret.txt"), H.q(root .. "/link.txt")))
    os.execute(("ln -s %s %s"):format(H.q(outside .. "/dir"), H.q(root .. "/linkdir")))
    os.execute(("ln -s a.txt %s"):format(H.q(root .. "/inside.txt")))
    proc = H.start(("scripts/http.lua tcp://127.0.0.1:0 --root %s --log"):format(H.q(root)))
    base = proc:wait_output("listening on (tcp://%S+),"):gsub("^tcp", "http")
    host, port = H.hostport(proc:wait_output("listening on (tcp://%S+),"))
  end)

  teardown(function()
    assert.equals(0, proc:stop())
    os.execute(("rm -rf %s %s"):format(H.q(root), H.q(outside)))
  end)

  -- Each of the raw requests sent in one write on a connection of its own
  -- (one python3 for all); what came back on each.
  local function raw(...)
    local files = {}
    for i, req in ipairs { ... } do files[i] = H.q(H.writefile(H.tmpname(".req"), req)) end
    local out, rc = H.sh_cmd(("timeout 60 %s spec/fixtures/http_client.py %s %d raw %s")
      :format(H.q(PYTHON), host, port, table.concat(files, " ")))
    assert.equals(0, rc, out)
    local got = {}
    for one in out:gmatch("(.-)%-%-end%-%-\n") do got[#got + 1] = one end
    assert.equals(#files, #got, out)
    return table.unpack(got)
  end

  -- Lines of the access log (--log) that mention 'marker'.
  local function logged(marker)
    local n = 0
    for line in proc:stdout():gmatch("[^\n]+") do
      if line:find(marker, 1, true) then n = n + 1 end
    end
    return n
  end

  it("answers curl, reusing one connection for two URLs", function()
    local out, rc = curl(("-v %s/ '%s/hello?name=curl'"):format(base, base))
    assert.equals(0, rc, out)
    assert.matches("hello\n", out, 1, true)
    assert.matches("hello, curl\n", out, 1, true)
    assert.matches("Re%-using existing connection", out)
    out = curl(("-o /dev/null -o /dev/null -w '%%{num_connects} ' %s/ %s/a.txt"):format(base, base))
    assert.equals("1 0 ", out)
  end)

  it("takes POST and PUT bodies, by Content-Length and chunked (curl)", function()
    assert.equals("some data", (curl(("-d 'some data' %s/echo"):format(base))))
    local out = curl(("-X PUT -d Ada %s/users/1"):format(base))
    assert.equals("stored\n", out)
    out = curl(("-i %s/users/1"):format(base))
    assert.matches("^HTTP/1.1 200 OK\r\n", out)
    assert.matches("Content%-Type: application/json\r\n", out)
    assert.matches('{"id":"1","name":"Ada"}\n', out, 1, true)
    assert.matches("^HTTP/1.1 404 ", (curl(("-i %s/users/2"):format(base))))
    local sent = ("0123456789abcdef"):rep(H.big(10000, 1000))   -- one byte at a time: 16 KB
    local data, got = H.writefile(H.tmpname(".bin"), sent), H.tmpname(".got")
    out = curl(("-v -H 'Transfer-Encoding: chunked' -H 'Content-Type: application/x-test' --data-binary @%s -o %s %s/echo")
      :format(H.q(data), H.q(got), base))
    assert.matches("> Transfer%-Encoding: chunked", out)
    assert.matches("< Content%-Type: application/x%-test", out)
    assert.matches("< Content%-Length: " .. #sent .. "\r", out)
    assert.is_true(H.readfile(got) == sent)
  end)

  it("answers HEAD with the headers of GET and no body (curl -I)", function()
    local out = curl(("-I %s/a.txt"):format(base))
    assert.matches("^HTTP/1.1 200 OK\r\n", out)
    assert.matches("Content%-Length: 7\r\n", out)
    assert.matches("Content%-Type: text/plain; charset=utf%-8\r\n", out)
    assert.not_matches("file a", out)
    out = curl(("-I %s/"):format(base))
    assert.matches("Content%-Length: 6\r\n", out)
  end)

  it("keeps one python http.client connection for several requests", function()
    local out, rc = H.sh_cmd(("timeout 20 %s spec/fixtures/http_client.py %s %d keepalive"):format(H.q(PYTHON), host, port))
    assert.equals(0, rc, out)
    local rows = {}
    for line in out:gmatch("[^\n]+") do rows[#rows + 1] = require("cjson").decode(line) end
    assert.equals(7, #rows)
    assert.same({ 200, "hello\n" }, { rows[1][1], rows[1][2] })
    assert.same({ 200, "hello, py thon\n" }, { rows[2][1], rows[2][2] })
    assert.equals(201, rows[3][1])
    assert.same({ 200, '{"id":"7","name":"Grace"}\n' }, { rows[4][1], rows[4][2] })
    assert.same({ 200, 100000 }, { rows[5][1], rows[5][3] })
    assert.same({ 200, "", 0, "7" }, { rows[6][1], rows[6][2], rows[6][3], rows[6][5] })
    assert.same({ 200, "file a\n" }, { rows[7][1], rows[7][2] })
    for i = 2, #rows do assert.equals(rows[1][4], rows[i][4]) end   -- the same local port
  end)

  it("answers two requests sent in one write, in order (pipelining)", function()
    local out = raw("GET /hello?name=one HTTP/1.1\r\nHost: x\r\n\r\n" ..
                    "GET /hello?name=two HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    local first, second = out:find("hello, one\n", 1, true), out:find("hello, two\n", 1, true)
    assert.truthy(first, out)
    assert.truthy(second, out)
    assert.is_true(first < second)
    assert.equals(2, select(2, out:gsub("HTTP/1.1 200 OK\r\n", "")))
  end)

  it("serves files from the root: index.html, sub-folders, links that stay inside", function()
    assert.equals("file a\n", (curl(base .. "/a.txt")))
    assert.equals("<p>index</p>\n", (curl(base .. "/sub/")))
    assert.equals("<p>index</p>\n", (curl(base .. "/sub")))
    assert.equals('{"b":1}\n', (curl(base .. "/sub/b.json")))
    assert.equals("file a\n", (curl(base .. "/inside.txt")))
    assert.equals("file a\n", (curl(base .. "/sub/../a.txt")))  -- curl resolves the dots itself
    local out = curl(("-i %s/sub/b.json"):format(base))
    assert.matches("Content%-Type: application/json\r\n", out)
  end)

  it("never serves anything outside the root: dots, encoded dots and slashes, links, hidden files", function()
    for _, path in ipairs {
      "/../secret.txt", "/sub/../../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E/secret.txt",
      "/..%2fsecret.txt", "/sub/..%2F..%2Fsecret.txt", "/%2e%2e%2f%2e%2e%2fsecret.txt",
      "/.%2e/secret.txt", "/%2e./secret.txt", "/link.txt", "/linkdir/secret.txt", "/linkdir/",
      "/.hidden", "/%2ehidden", "/a.txt%00", "/a.txt%00.png", "/sub%2fb.json", "/%5c..%5csecret.txt",
      "/..%5csecret.txt", "/%252e%252e/secret.txt", "//etc/passwd", "/%2fetc%2fpasswd",
    } do
      local out = curl(("--path-as-is -i '%s%s'"):format(base, path))
      assert.matches("^HTTP/1.1 404 Not Found\r\n", out, nil, path)
      assert.not_matches("TOPSECRET", out, nil, path)
      assert.not_matches("root:", out, nil, path)
    end
    -- a raw request line, past any client-side normalization
    local out = raw("GET /../../../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert.matches("^HTTP/1.1 404 ", out)
    assert.not_matches("root:", out)
  end)

  it("answers 405 with Allow, and 404", function()
    local out = curl(("-i -X DELETE %s/a.txt"):format(base))
    assert.matches("^HTTP/1.1 405 Method Not Allowed\r\n", out)
    assert.matches("Allow: GET, HEAD\r\n", out)
    out = curl(("-i -X POST %s/users/1"):format(base))
    assert.matches("^HTTP/1.1 405 ", out)
    assert.matches("Allow: GET, HEAD, PUT\r\n", out)
    assert.matches("^HTTP/1.1 404 ", (curl(("-i %s/nope"):format(base))))
  end)

  it("answers the smuggling shapes 400 and oversize heads 431/414, never reaching a route", function()
    local cases = {
      { 400, "POST /smuggle-clte HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" },
      { 400, "POST /smuggle-tecl HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n" },
      { 400, "POST /smuggle-clcl HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello" },
      { 400, "POST /smuggle-clcl2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello!!" },
      { 400, "POST /smuggle-te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" },
      { 400, "POST /smuggle-te2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" },
      { 400, "POST /smuggle-tecolon HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n" },
      { 400, "POST /smuggle-fold HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" },
      { 400, "GET /smuggle-lf HTTP/1.1\nHost: x\n\n" },
      { 400, "GET /smuggle-lf2 HTTP/1.1\r\nHost: x\nX: y\r\n\r\n" },
      { 400, "POST /smuggle-clnum HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\n" },
      { 400, "POST /smuggle-chunk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5x\r\nhello\r\n0\r\n\r\n" },
      { 400, "POST /smuggle-chunk2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n" },
      { 400, "POST /smuggle-chunk3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n" },
      { 400, "GET /smuggle-host HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n" },
      { 431, "GET /smuggle-big HTTP/1.1\r\nHost: x\r\nX-Big: " .. ("a"):rep(9000) .. "\r\n\r\n" },
      { 431, "GET /smuggle-many HTTP/1.1\r\nHost: x\r\n" .. ("X-Many: y\r\n"):rep(101) .. "\r\n" },
      { 414, "GET /smuggle-long" .. ("a"):rep(9000) .. " HTTP/1.1\r\nHost: x\r\n\r\n" },
      { 413, "POST /smuggle-large HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n" },
      { 505, "GET /smuggle-version HTTP/2.0\r\nHost: x\r\n\r\n" },
    }
    local reqs = {}
    for i, c in ipairs(cases) do reqs[i] = c[2] .. "GET /smuggle-after HTTP/1.1\r\nHost: x\r\n\r\n" end
    local outs = { raw(table.unpack(reqs)) }
    for i, c in ipairs(cases) do
      local out = outs[i]
      assert.matches("^HTTP/1.1 " .. c[1] .. " ", out, nil, c[2]:sub(1, 60))
      assert.matches("Connection: close\r\n", out)
      assert.equals(1, select(2, out:gsub("HTTP/1.1 ", "")), out)   -- nothing after it
    end
    assert.equals(0, logged("smuggle"), proc:stdout())
  end)
end)
