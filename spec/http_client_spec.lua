-- The HTTP client of sockhost.http (http.request, http.get, http.client),
-- in-process (sockhost.so), against peers the spec starts on loopback:
--   nginx (Debian's /usr/sbin/nginx, non-daemon, one process, its own
--     prefix and config in a temp folder): GET, HEAD, POST, keep-alive
--     proven from its access log ($connection, $connection_requests),
--     pool_size, unread bodies, stale connections, 50 MB each way, TLS
--     with a throwaway CA (spec/fixtures/tls_certs.sh), IPv6;
--   spec/fixtures/http_peer.py (/usr/bin/python3): canned responses for
--     the odd cases, redirects, timeouts, and the SHA-256 of an upload.
local H = require "helpers"
local sh = H.sh
local http = require "sockhost.http"

local NGINX = "/usr/sbin/nginx"
local PY = "/usr/bin/python3"

local D                -- temp folder: nginx prefix, files, certificates
local ngx              -- the nginx process
local PORT, SHORT, TLS_PORT   -- nginx: keep-alive 60 s; keep-alive 1 s; TLS
local IPV6             -- whether nginx listens on [::1] too
local py, PY_PORT      -- the python3 peer
local BIG_MB = H.big(50, 2)

local function path(name) return D .. "/" .. name end

local function ipv6_available()
  local s = H.socket.tcp6 and H.socket.tcp6()
  if not s then return false end
  local ok = s:bind("::1", 0)
  s:close()
  return ok == 1 or ok == true
end

local function nginx_conf()
  local www, tmp = path("www"), path("tmp")
  return ([[
daemon off;
master_process off;
worker_processes 1;
error_log %s/error.log info;
pid %s/nginx.pid;
events { worker_connections 512; }
http {
  client_body_temp_path %s/body; proxy_temp_path %s/proxy;
  fastcgi_temp_path %s/fcgi; uwsgi_temp_path %s/uwsgi; scgi_temp_path %s/scgi;
  log_format conn '$connection $connection_requests $request_method $request_uri $status $content_length $http_transfer_encoding';
  access_log %s/access.log conn;
  root %s;
  keepalive_requests 10000;
  server {
    listen 127.0.0.1:%d;
    %s
    keepalive_timeout 60s;
    location = /post { client_max_body_size 1m; return 200 "posted\n"; }
  }
  server {
    listen 127.0.0.1:%d;
    keepalive_timeout 1s;
    location = /post { return 200 "posted\n"; }
  }
  server {
    listen 127.0.0.1:%d ssl;
    ssl_certificate %s;
    ssl_certificate_key %s;
    keepalive_timeout 60s;
  }
}
]]):format(D, D, tmp, tmp, tmp, tmp, tmp, D, www, PORT,
    IPV6 and ("listen [::1]:%d;"):format(PORT) or "", SHORT, TLS_PORT,
    path("srv.pem"), path("srv.key"))
end

-- The access log as { conn =, n =, method =, uri =, status =, length =, te = },
-- once it has at least 'want' lines whose uri has 'mark' (bounded wait).
local function log_lines(mark, want)
  local deadline = H.socket.gettime() + 3
  while true do
    local got = {}
    for l in (H.readfile(path("access.log")) or ""):gmatch("[^\n]+") do
      local c, n, m, u, s, len, te = l:match("^(%d+) (%d+) (%S+) (%S+) (%d+) (%S+) (%S+)$")
      if u and u:find(mark, 1, true) then
        got[#got + 1] = { conn = tonumber(c), n = tonumber(n), method = m, uri = u,
                          status = tonumber(s), length = len, te = te }
      end
    end
    if #got >= (want or 0) or H.socket.gettime() > deadline then return got end
    H.socket.sleep(0.02)
  end
end

local function distinct_conns(lines)
  local seen, n = {}, 0
  for _, l in ipairs(lines) do
    if not seen[l.conn] then seen[l.conn], n = true, n + 1 end
  end
  return n
end

local function sha256_file(p)
  local out = H.sh_cmd("sha256sum " .. H.q(p))
  return out:match("^(%x+)")
end

local function url(p, port) return ("http://127.0.0.1:%d%s"):format(port or PORT, p) end

describe("sockhost.http client against nginx", function()
  setup(function()
    D = H.sh_cmd("mktemp -d " .. H.q(H.TMP .. "/httpc.XXXXXX")):gsub("%s+$", "")
    assert(D:match("/httpc%."), "no temp folder")
    local out, rc = H.sh_cmd("sh spec/fixtures/tls_certs.sh " .. H.q(D) .. " 2>&1")
    assert(rc == 0 and out:match("ok"), "cannot make certificates: " .. out)
    os.execute("mkdir -p " .. H.q(path("www")) .. " " .. H.q(path("tmp")))
    H.writefile(path("www/hello.txt"), "hello from nginx\n")
    H.writefile(path("www/mid.bin"), ("0123456789abcdef"):rep(65536))   -- 1 MiB
    assert(H.sh_cmd(("head -c %d /dev/urandom > %s; echo done"):format(BIG_MB * 1000000,
      H.q(path("www/big.bin")))):match("done"))
    IPV6 = ipv6_available()
    PORT, SHORT, TLS_PORT = H.free_port(), H.free_port(), H.free_port()
    H.writefile(path("nginx.conf"), nginx_conf())
    ngx = H.launch(("%s -p %s -c %s -e %s"):format(NGINX, H.q(D), H.q(path("nginx.conf")),
      H.q(path("error.log"))), "nginx")
    for _, p in ipairs { PORT, SHORT, TLS_PORT } do H.tcp("127.0.0.1", p):close() end
  end)

  teardown(function()
    if ngx then ngx:stop() end
    if D and D:match("/httpc%.") then os.execute("rm -rf " .. H.q(D)) end
  end)

  it("GET reuses one connection: nginx sees N requests over 1 connection", function()
    local got = {}
    H.run(function()
      local c = http.client()
      for i = 1, 5 do
        local res = assert(c:get(url("/hello.txt?t=reuse&i=" .. i)))
        got[i] = { res.status, res.reason, res.headers["content-length"], res.headers["Content-Type"], res:body() }
      end
      got.stats = c:stats()
      c:close()
    end)
    for i = 1, 5 do
      assert.same({ 200, "OK", "17", "text/plain", "hello from nginx\n" }, got[i])
    end
    assert.equal(1, got.stats.created)
    assert.equal(4, got.stats.reused)
    local lines = log_lines("t=reuse", 5)
    assert.equal(5, #lines)
    assert.equal(1, distinct_conns(lines))
    for i = 1, 5 do assert.equal(i, lines[i].n) end
  end)

  it("HEAD has no body, and the connection goes on", function()
    local got = {}
    H.run(function()
      local c = http.client()
      local res = assert(c:request("HEAD", url("/mid.bin?t=head")))
      got.head = { res.status, res.headers["content-length"], res:body() }
      res = assert(c:get(url("/hello.txt?t=head")))
      got.get = res:body()
      c:close()
    end)
    assert.same({ 200, tostring(16 * 65536), "" }, got.head)
    assert.equal("hello from nginx\n", got.get)
    local lines = log_lines("t=head", 2)
    assert.equal("HEAD", lines[1].method)
    assert.equal(1, distinct_conns(lines))
    assert.equal(2, lines[2].n)
  end)

  it("POST sends a string with Content-Length and a function's pieces chunked", function()
    local got = {}
    H.run(function()
      local c = http.client()
      local res = assert(c:request("POST", url("/post?t=post&k=string"), { body = "a=1&b=2" }))
      got[1] = { res.status, res:body() }
      local n = 0
      res = assert(c:request("POST", url("/post?t=post&k=function"), { body = function()
        n = n + 1
        if n <= 3 then sh.sleep(0.01) return ("x"):rep(1000) end
      end }))
      got[2] = { res.status, res:body() }
      res = assert(c:request("POST", url("/post?t=post&k=none")))
      got[3] = { res.status, res:body() }
      c:close()
    end)
    assert.same({ { 200, "posted\n" }, { 200, "posted\n" }, { 200, "posted\n" } }, got)
    local lines = log_lines("t=post", 3)
    assert.equal("7", lines[1].length)
    assert.equal("-", lines[1].te)
    assert.equal("chunked", lines[2].te)
    assert.equal("0", lines[3].length)
    assert.equal(1, distinct_conns(lines))
  end)

  it("keeps at most pool_size idle connections", function()
    local got = {}
    H.run(function()
      local c = http.client { pool_size = 2 }
      -- four at once: each holds its response unread until all four have one
      local function batch(tag)
        local ready, all = 0, sh.event()
        local tasks = {}
        for i = 1, 4 do
          tasks[i] = sh.spawn(function()
            local res = assert(c:get(url("/hello.txt?t=size&b=" .. tag .. "&i=" .. i)))
            ready = ready + 1
            if ready == 4 then all:set() end
            assert(all:wait(5))
            return res:body()
          end)
        end
        for i = 1, 4 do assert.equal("hello from nginx\n", tasks[i]:join()) end
      end
      batch(1)
      got.after1 = c:stats()
      batch(2)
      got.after2 = c:stats()
      c:close()
    end)
    assert.equal(2, got.after1.idle)
    assert.equal(4, got.after1.created)
    assert.equal(2, got.after1.closed)
    assert.equal(6, got.after2.created)
    assert.equal(2, got.after2.reused)
    local first, second = {}, {}
    for _, l in ipairs(log_lines("t=size", 8)) do
      if l.uri:find("b=1", 1, true) then first[l.conn] = true else second[#second + 1] = l end
    end
    local again = 0
    for _, l in ipairs(second) do if first[l.conn] then again = again + 1 assert.equal(2, l.n) end end
    assert.equal(4, #second)
    assert.equal(2, again)
  end)

  it("a connection whose body was not read to its end is not reused", function()
    local got = {}
    H.run(function()
      local c = http.client()
      local res = assert(c:get(url("/mid.bin?t=unread&i=1")))
      local n = 0                              -- the first 1000 bytes of 1 MiB
      while n < 1000 do n = n + #assert(res:read(1000 - n)) end
      got.piece = n
      res:close()
      res = assert(c:get(url("/hello.txt?t=unread&i=2")))
      got.body = res:body()
      got.stats = c:stats()
      c:close()
    end)
    assert.equal(1000, got.piece)
    assert.equal("hello from nginx\n", got.body)
    assert.equal(2, got.stats.created)
    assert.equal(0, got.stats.reused)
    local lines = log_lines("t=unread", 2)
    assert.equal(2, distinct_conns(lines))
    assert.equal(1, lines[2].n)
  end)

  it("a stale pooled connection nginx closed is retried once for GET, never for POST", function()
    -- nginx closes an idle connection after 1 s. The process is kept busy
    -- (a blocking sleep: the loop does not turn) past that, so the close has
    -- not been seen when the next request takes the pooled connection.
    local got = {}
    H.run(function()
      local c = http.client()
      local res = assert(c:get(url("/hello.txt?t=stale&i=1", SHORT)))
      got.first = res:body()
      H.socket.sleep(1.6)
      res, got.err = c:get(url("/hello.txt?t=stale&i=2", SHORT))
      got.second = res and res:body()
      got.stats = c:stats()
      res = assert(c:request("POST", url("/post?t=stale&i=3", SHORT), { body = "x" }))
      got.post_ok = res:body()
      H.socket.sleep(1.6)
      got.post = { c:request("POST", url("/post?t=stale&i=4", SHORT), { body = "x" }) }
      got.stats2 = c:stats()
      c:close()
    end, 20)
    assert.equal("hello from nginx\n", got.first)
    assert.is_nil(got.err)
    assert.equal("hello from nginx\n", got.second)
    assert.equal(2, got.stats.created)
    assert.equal(1, got.stats.reused)           -- the stale one was lent (not seen closed), then the retry
    assert.equal("posted\n", got.post_ok)
    assert.same({ nil, "closed" }, got.post)
    assert.equal(2, got.stats2.created)         -- no new connection for the POST
    local lines = log_lines("t=stale", 3)
    H.socket.sleep(0.1)
    lines = log_lines("t=stale", 3)
    assert.equal(3, #lines)                     -- i=4 never reached nginx
    assert.equal(2, distinct_conns(lines))
    assert.equal(1, lines[2].n)                 -- the retry: a new connection
  end)

  it(("downloads %d MB and uploads %d MB chunked, SHA-256 equal"):format(BIG_MB, BIG_MB), function()
    local py_port
    local proc = H.launch(("timeout -s KILL 120 %s -u spec/fixtures/http_peer.py"):format(PY), "python3")
    py_port = tonumber(proc:wait_output("^(%d+)\n"))
    local got = {}
    local ok, err = pcall(H.run, function()
      local c = http.client()
      local res = assert(c:get(url("/big.bin?t=big"), { max_body = -1 }))
      local f = assert(io.open(path("got.bin"), "wb"))
      local n = 0
      while true do
        local piece, rerr = res:read()
        if not piece then got.err = rerr break end
        n = n + #piece
        f:write(piece)
      end
      f:close()
      got.n = n
      local src = assert(io.open(path("www/big.bin"), "rb"))
      res = assert(c:request("POST", url("/upload", py_port), { body = function()
        return src:read(65536)
      end }))
      src:close()
      got.up = res:body()
      c:close()
    end, 120)
    proc:stop()
    assert(ok, err)
    assert.is_nil(got.err)
    assert.equal(BIG_MB * 1000000, got.n)
    local want = sha256_file(path("www/big.bin"))
    assert.equal(want, sha256_file(path("got.bin")))
    assert.equal(("%d %s\n"):format(BIG_MB * 1000000, want), got.up)
  end)

  it("https with a throwaway CA; reuse over TLS; verify failures are 'tls: ...'", function()
    local got = {}
    H.run(function()
      local c = http.client { ca = path("ca.pem") }
      for i = 1, 2 do
        local res = assert(c:get(("https://localhost:%d/hello.txt?t=tls&i=%d"):format(TLS_PORT, i)))
        got[i] = res:body()
      end
      got.stats = c:stats()
      c:close()
      got.unknown = { http.get(("https://127.0.0.1:%d/hello.txt?t=tls&i=3"):format(TLS_PORT),
        { ca = path("ca2.pem") }) }
      got.mismatch = { http.get(("https://127.0.0.1:%d/hello.txt?t=tls&i=4"):format(TLS_PORT),
        { ca = path("ca.pem"), servername = "other.example" }) }
      got.plain = { http.get(("https://127.0.0.1:%d/hello.txt"):format(PORT), { ca = path("ca.pem") }) }
      got.noca = { http.get(("https://127.0.0.1:%d/hello.txt"):format(TLS_PORT), { ca = path("none.pem") }) }
    end)
    assert.equal("hello from nginx\n", got[1])
    assert.equal("hello from nginx\n", got[2])
    assert.equal(1, got.stats.created)
    assert.is_nil(got.unknown[1])
    assert.matches("^tls: unknown CA: ", got.unknown[2])
    assert.is_nil(got.mismatch[1])
    assert.matches("^tls: name mismatch: ", got.mismatch[2])
    assert.is_nil(got.plain[1])
    assert.matches("^tls: not TLS: ", got.plain[2])
    assert.is_nil(got.noca[1])
    assert.equal("tls: cannot load CA file '" .. path("none.pem") .. "': no such file or directory", got.noca[2])
    local lines = log_lines("t=tls", 2)
    assert.equal(2, #lines)
    assert.equal(1, distinct_conns(lines))
  end)

  it("IPv6 literal: http://[::1]:port/", function()
    if not IPV6 then pending("::1 is not available on this machine") return end
    local got = {}
    H.run(function()
      local res = assert(http.get(("http://[::1]:%d/hello.txt?t=v6"):format(PORT)))
      got.status, got.body = res.status, res:body()
    end)
    assert.equal(200, got.status)
    assert.equal("hello from nginx\n", got.body)
    assert.equal(1, #log_lines("t=v6", 1))
  end)
end)

describe("sockhost.http client against a python3 peer", function()
  setup(function()
    py = H.launch(("timeout -s KILL 300 %s -u spec/fixtures/http_peer.py"):format(PY), "python3")
    PY_PORT = tonumber(py:wait_output("^(%d+)\n"))
  end)
  teardown(function() if py then py:stop() end end)

  local function run(fn)
    local got
    H.run(function()
      local c = http.client()
      got = fn(c)
      c:close()
    end, 20)
    return got
  end

  local function p(s) return url(s, PY_PORT) end

  it("a close-delimited body is read to the close; the connection is not kept", function()
    local got = run(function(c)
      local res = assert(c:get(p("/close")))
      return { res.status, res.headers["content-type"], res:body(), c:stats().idle, c:stats().closed }
    end)
    assert.same({ 200, "text/plain", "all until the close", 0, 1 }, got)
  end)

  it("a chunked body with extensions and trailers; the connection is kept", function()
    local got = run(function(c)
      local res = assert(c:get(p("/chunked")))
      local a = res:body()
      res = assert(c:get(p("/chunked")))
      local pieces = {}
      for piece in function() return res:read() end do pieces[#pieces + 1] = piece end
      return { a, table.concat(pieces), c:stats().created, c:stats().reused }
    end)
    assert.same({ "hello world", "hello world", 1, 1 }, got)
  end)

  it("skips 100 and 103 before the final response; repeated headers", function()
    local got = run(function(c)
      local res = assert(c:get(p("/interim")))
      local keys = {}
      for k in pairs(res.headers) do keys[#keys + 1] = k end
      table.sort(keys)
      return { res.status, res:body(), res.headers["set-cookie"], res:header_all("Set-Cookie"),
               res:header_all("x-none"), keys, res.headers["SET-COOKIE"] }
    end)
    assert.same({ 200, "final", "a=1, b=2", { "a=1", "b=2" }, {}, { "content-length", "set-cookie" },
                  "a=1, b=2" }, got)
  end)

  it("204 and 304 have no body, whatever Content-Length says", function()
    local got = run(function(c)
      local r1 = assert(c:get(p("/204")))
      local r2 = assert(c:get(p("/304")))
      local r3 = assert(c:get(p("/chunked")))
      return { r1.status, r1:body(), r1.headers["x-empty"], r2.status, r2:body(), r3:body(),
               c:stats().created }
    end)
    assert.same({ 204, "", "yes", 304, "", "hello world", 1 }, got)
  end)

  it("HTTP/1.0 without keep-alive: not kept", function()
    local got = run(function(c)
      local res = assert(c:get(p("/http10")))
      return { res.version, res:body(), c:stats().idle }
    end)
    assert.same({ "1.0", "old!", 0 }, got)
  end)

  it("redirects: returned as they are by default, followed when asked", function()
    local got = run(function(c)
      local out = {}
      local res = assert(c:get(p("/to/3")))
      out.plain = { res.status, res.headers.location, res:body() }
      res = assert(c:get(p("/to/3"), { redirects = 3 }))
      out.followed = { res.status, res:body(), res.url }
      out.too_many = { c:get(p("/to/3"), { redirects = 2 }) }
      res = assert(c:request("POST", p("/see-other"), { body = "abc", redirects = 1 }))
      out.see_other = res:body()
      res = assert(c:request("PUT", p("/keep-method"), { body = "abcd", redirects = 1 }))
      out.keep = res:body()
      return out
    end)
    assert.same({ 302, "/to/2", "moved\n" }, got.plain)
    assert.same({ 200, "GET 0\n", ("http://127.0.0.1:%d/method"):format(PY_PORT) }, got.followed)
    assert.same({ nil, "too many redirects" }, got.too_many)
    assert.equal("GET 0\n", got.see_other)
    assert.equal("PUT 4\n", got.keep)
  end)

  it("sends the given headers, Host and User-Agent", function()
    local got = run(function(c)
      local res = assert(c:get(p("/headers"), { headers = { ["X-One"] = "1", Accept = "text/plain" } }))
      return res:body()
    end)
    assert.matches("\naccept: text/plain\n", "\n" .. got)
    assert.matches("\nx%-one: 1\n", got)
    assert.matches("\nhost: 127%.0%.0%.1:" .. PY_PORT .. "\n", got)
    assert.matches("\nuser%-agent: sockhost/", got)
  end)

  it("bad responses are 'bad response: ...'", function()
    local got = run(function(c)
      local out = {}
      for _, k in ipairs { "garbage", "noise", "conflict", "gzip", "both", "barelf", "badheader",
                           "ctlvalue", "twote", "badlength", "te10", "101", "halfhead", "nothing",
                           "emptyhead", "many1xx" } do
        out[k] = { c:get(p("/" .. k)) }
      end
      for _, k in ipairs { "badchunk", "cut", "nocrlf", "badtrailer", "cuttrailer" } do
        local res = assert(c:get(p("/" .. k)))
        out[k] = { res:body() }
      end
      out.stats = c:stats()
      return out
    end)
    assert.same({ nil, "bad response: bare LF" }, got.barelf)
    assert.same({ nil, "bad response: bad header line" }, got.badheader)
    assert.same({ nil, "bad response: bad header value" }, got.ctlvalue)
    assert.same({ nil, "bad response: two transfer-encoding headers" }, got.twote)
    assert.same({ nil, "bad response: bad content-length" }, got.badlength)
    assert.same({ nil, "bad response: transfer-encoding in HTTP/1.0" }, got.te10)
    assert.same({ nil, "bad response: 101 without an upgrade" }, got["101"])
    assert.same({ nil, "bad response: closed in the head" }, got.halfhead)
    assert.same({ nil, "bad response: closed before the response" }, got.nothing)
    assert.same({ nil, "bad response: empty head" }, got.emptyhead)
    assert.same({ nil, "bad response: too many 1xx responses" }, got.many1xx)
    assert.same({ nil, "bad response: bad chunk" }, got.nocrlf)
    assert.same({ nil, "bad response: bad trailer" }, got.badtrailer)
    assert.same({ nil, "bad response: closed in the trailers" }, got.cuttrailer)
    assert.equal(0, got.stats.idle + got.stats.busy)     -- none of them kept
    assert.same({ nil, "bad response: bad status line" }, got.garbage)
    assert.same({ nil, "bad response: bad status line" }, got.noise)
    assert.same({ nil, "bad response: conflicting content-length" }, got.conflict)
    assert.same({ nil, "bad response: transfer-encoding other than chunked" }, got.gzip)
    assert.same({ nil, "bad response: both content-length and transfer-encoding" }, got.both)
    assert.same({ nil, "bad response: bad chunk size" }, got.badchunk)
    assert.same({ nil, "bad response: body cut short" }, got.cut)
  end)

  it("response heads read whole (in C) and cut in two (line by line) come out the same", function()
    local names = { "edge-ka10", "edge-close", "edge-te", "edge-cl2", "edge-cllist", "edge-ws",
                    "edge-noreason", "edge-emptyreason", "edge-keep11", "interim", "204", "304",
                    "http10", "chunked", "garbage", "badheader", "ctlvalue", "twote", "badlength",
                    "te10", "conflict", "gzip", "both", "barelf", "101" }
    local got = run(function()
      local out = {}
      for _, name in ipairs(names) do
        for _, pre in ipairs { "", "split/" } do
          local c = http.client()
          local res, err = c:get(p("/" .. pre .. name))
          local r = { err = err }
          if res then
            local h = {}
            for k, v in pairs(res.headers) do h[k] = v end
            r = { status = res.status, reason = res.reason, version = res.version, headers = h,
                  lengths = res:header_all("Content-Length"), body = res:body() }
            r.idle = c:stats().idle
          end
          c:close()
          out[pre .. name] = r
        end
      end
      return out
    end)
    for _, name in ipairs(names) do
      assert.same(got[name], got["split/" .. name], name)
    end
    local function short(name) local r = got[name] return { r.status, r.reason, r.version, r.body, r.idle } end
    assert.same({ 200, "Fine", "1.0", "k10", 1 }, short("edge-ka10"))
    assert.same({ 200, "OK", "1.1", "cl", 0 }, short("edge-close"))
    assert.same({ 200, "OK", "1.1", "abc", 1 }, short("edge-te"))
    assert.equal("Chunked", got["edge-te"].headers["transfer-encoding"])
    assert.same({ 201, "Created", "1.1", "xyz", 1 }, short("edge-cl2"))
    assert.same({ "3", "3" }, got["edge-cl2"].lengths)
    assert.same({ 200, "OK", "1.1", "list", 1 }, short("edge-cllist"))
    assert.same({ 200, "\xe9t\xe9 ", "1.1", "ws", 1 }, short("edge-ws"))
    assert.same({ ["x-a"] = "tabs\tin side", ["x-b"] = "", ["x-c"] = "\xff\x80", ["content-length"] = "2" },
                got["edge-ws"].headers)
    assert.same({ 200, "", "1.1", "nr", 1 }, short("edge-noreason"))
    assert.same({ 299, "", "1.1", "", 0 }, short("edge-emptyreason"))
    assert.same({ 200, "OK", "1.1", "", 1 }, short("edge-keep11"))
    assert.same({ err = "bad response: bad status line" }, got.garbage)
    assert.same({ err = "bad response: bad header line" }, got.badheader)
    assert.same({ err = "bad response: transfer-encoding in HTTP/1.0" }, got.te10)
  end)

  it("120 generated heads, good and broken: read whole and cut in two, the same result", function()
    local N = 120
    local got
    H.run(function()
      got = {}
      for n = 1, N do
        for _, pre in ipairs { "", "split/" } do
          local c = http.client()
          local res, err = c:get(p("/" .. pre .. "gen/" .. n))
          local r = { err = err }
          if res then
            local h = {}
            for k, v in pairs(res.headers) do h[k] = v end
            local body, berr = res:body()
            r = { status = res.status, reason = res.reason, version = res.version, headers = h,
                  body = body, berr = berr }
          end
          c:close()
          got[pre .. n] = r
        end
      end
    end, 120)
    local ok, bad = 0, 0
    for n = 1, N do
      assert.same(got[tostring(n)], got["split/" .. n], "generated head " .. n)
      if got[tostring(n)].status then ok = ok + 1 else bad = bad + 1 end
    end
    assert.is_true(ok >= 20 and bad >= 20, ("%d read, %d refused"):format(ok, bad))
  end)

  it("conn:take_response: a whole head in one call; false leaves the input alone", function()
    local got = run(function()
      local out = {}
      local function fetch(path)
        local conn = assert(sh.connect("tcp://127.0.0.1:" .. PY_PORT))
        conn:settimeout(5)
        assert(conn:write("GET " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\n"))
        return conn
      end
      local function wait_for(conn, n)         -- bounded: until n bytes or the end are buffered
        for _ = 1, 500 do
          local have, ended = conn:pending()
          if not have or have >= n or ended then return end
          sh.sleep(0.01)
        end
      end
      local conn = fetch("/edge-cl2")
      wait_for(conn, 65)
      out.whole = { conn:take_response(65536) }
      out.body = conn:read(3)
      conn:close()
      conn = fetch("/edge-cl2")
      wait_for(conn, 65)
      out.small = { conn:take_response(20) }     -- over max_head: left for the slow reader
      out.small_left = conn:read(65)
      conn:close()
      conn = fetch("/garbage")
      wait_for(conn, 1000)
      out.bad = { conn:take_response(65536) }
      out.bad_left = conn:read("a")
      out.closed = { conn:take_response(65536) }
      conn:close()
      return out
    end)
    assert.same({ 201, "Created", 1, "content-length: 3\r\nCONTENT-LENGTH: 3", 3, false, false, false },
                got.whole)
    assert.equal("xyz", got.body)
    assert.same({ false }, got.small)
    assert.equal("HTTP/1.1 201 Created\r\ncontent-length: 3\r\nCONTENT-LENGTH: 3\r\n\r\nxyz", got.small_left)
    assert.same({ false }, got.bad)
    assert.equal("HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n", got.bad_left)
    assert.same({ nil, "closed" }, got.closed)
  end)

  it("too large: a body past max_body, a head past max_head", function()
    local got = run(function(c)
      local out = {}
      out.length = { c:get(p("/long"), { max_body = 1000 }) }
      local res = assert(c:get(p("/longchunks"), { max_body = 50000 }))
      out.chunks = { res:body() }
      res = assert(c:get(p("/long")))
      out.smaller = { res:body(99999) }
      res = assert(c:get(p("/long")))
      out.fits = #assert(res:body())
      out.head = { c:get(p("/hugehead")) }
      return out
    end)
    assert.same({ nil, "too large" }, got.length)
    assert.same({ nil, "too large" }, got.chunks)
    assert.same({ nil, "too large" }, got.smaller)
    assert.equal(100000, got.fits)
    assert.same({ nil, "too large" }, got.head)
  end)

  it("refused, bad urls", function()
    local port = H.free_port()
    local got = run(function(c)
      return {
        refused = { c:get(("http://127.0.0.1:%d/"):format(port)) },
        scheme = { c:get("ftp://127.0.0.1/") },
        port = { c:get("http://127.0.0.1:99999/") },
        nohost = { c:get("http:///x") },
        space = { c:get("http://127.0.0.1/a b") },
        noscheme = { c:get("127.0.0.1/") },
        userinfo = { c:get("http://me:secret@127.0.0.1/") },
      }
    end)
    assert.same({ nil, "connection refused" }, got.refused)
    assert.same({ nil, "bad url: not http or https" }, got.scheme)
    assert.same({ nil, "bad url: bad port" }, got.port)
    assert.same({ nil, "bad url: no host" }, got.nohost)
    assert.same({ nil, "bad url: bad character" }, got.space)
    assert.same({ nil, "bad url: no scheme" }, got.noscheme)
    assert.same({ nil, "bad url: user info not supported" }, got.userinfo)
    local closed = run(function(c)
      c:close()
      return { c:get(p("/chunked")) }
    end)
    assert.same({ nil, "closed" }, closed)
  end)

  it("timeouts: read_timeout for each read, timeout for the whole request", function()
    local got = run(function(c)
      local out = {}
      local t0 = sh.now()
      out.stall = { c:get(p("/stall"), { read_timeout = 0.8 }) }
      out.stall_t = sh.now() - t0
      local res = assert(c:get(p("/slow"), { read_timeout = 0.8 }))   -- the head comes at once
      t0 = sh.now()
      out.slow = { res:body() }
      out.slow_t = sh.now() - t0
      -- each byte comes within 0.1 s, so read_timeout never ends it: timeout does
      t0 = sh.now()
      res = assert(c:get(p("/trickle"), { read_timeout = 1, timeout = 1 }))
      out.trickle = { res:body() }
      out.trickle_t = sh.now() - t0
      res = assert(c:get(p("/trickle"), { read_timeout = 1 }))
      out.whole = res:body()
      return out
    end)
    assert.same({ nil, "timeout" }, got.stall)
    assert.is_true(got.stall_t >= 0.79 and got.stall_t < 1.9, "took " .. got.stall_t)
    assert.same({ nil, "timeout" }, got.slow)
    assert.is_true(got.slow_t >= 0.79 and got.slow_t < 1.9, "took " .. got.slow_t)
    assert.same({ nil, "timeout" }, got.trickle)
    assert.is_true(got.trickle_t >= 0.9 and got.trickle_t < 2.5, "took " .. got.trickle_t)
    assert.equal(("t"):rep(30), got.whole)
  end)

  it("a body function's nil, err ends the request with 'body: err'; its error is raised", function()
    local got = run(function(c)
      local out = {}
      out.err = { c:request("POST", p("/upload"), { body = function() return nil, "disk gone" end }) }
      out.raised = { pcall(c.request, c, "POST", p("/upload"), { body = function() error("boom", 0) end }) }
      out.stats = c:stats()
      return out
    end)
    assert.same({ nil, "body: disk gone" }, got.err)
    assert.same({ false, "boom" }, got.raised)
    assert.equal(0, got.stats.busy)
  end)

  it("raises on programming errors only", function()
    H.run(function()
      assert.has_error(function() http.get(42) end, "bad argument #2 to 'request' (string expected, got number)")
      assert.has_error(function() http.get(p("/"), { bogus = 1 }) end,
        "bad argument to 'http.request' (unknown option 'bogus')")
      assert.has_error(function() http.get(p("/"), { headers = { ["Content-Length"] = "1" } }) end,
        "bad argument to 'http.request' (header 'Content-Length' is set by the client)")
      assert.has_error(function() http.get(p("/"), { headers = { X = "a\r\nb" } }) end,
        "bad argument to 'http.request' (bad value for header 'X')")
    end)
  end)
end)
