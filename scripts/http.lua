-- http.lua -- a small HTTP/1.1 server on sockhost.http: a few routes (path
-- parameters, a query string, a POST body) and the files of a folder, with
-- keep-alive and pipelining. Bad and smuggling-shaped requests are answered
-- 400/413/414/431 by sockhost.http before any route runs.
--
--   sockhost scripts/http.lua [address] [--root DIR] [--log]
--     address  default tcp://127.0.0.1:8080
--     --root   the folder whose files are served (default: the current one);
--              nothing outside it is reachable: no "..", no hidden files, no
--              symbolic links that lead out
--     --log    print one line per request that reaches the routes
--
--   curl http://127.0.0.1:8080/                      -> hello
--   curl 'http://127.0.0.1:8080/hello?name=you'      -> hello, you
--   curl -X PUT -d 'Ada' http://127.0.0.1:8080/users/1
--   curl http://127.0.0.1:8080/users/1               -> {"id":"1","name":"Ada"}
--   curl -d 'some data' http://127.0.0.1:8080/echo   -> some data
--   curl http://127.0.0.1:8080/README.md             (a file under the root)
local http = require "sockhost.http"

local addr, root, log = "tcp://127.0.0.1:8080", ".", false
local i = 1
while arg[i] do
  if arg[i] == "--root" then root = assert(arg[i + 1], "--root needs a folder"); i = i + 1
  elseif arg[i] == "--log" then log = true
  else addr = arg[i] end
  i = i + 1
end

local app = http.router()
local users = {}                  -- id -> name, in memory

app:get("/", function() return "hello\n" end)

app:get("/hello", function(req)
  return "hello, " .. (req.query.name or "world") .. "\n"
end)

app:get("/users/:id", function(req)
  local name = users[req.params.id]
  if not name then return 404 end
  return 200, { ["Content-Type"] = "application/json" },
    ('{"id":%q,"name":%q}\n'):format(req.params.id, name)
end)

app:put("/users/:id", function(req)
  local name = req:body()          -- nil: too large or broken; answered for us
  if not name then return end
  local new = users[req.params.id] == nil
  users[req.params.id] = name
  return new and 201 or 200, "stored\n"
end)

app:post("/echo", function(req)
  local body = req:body()
  if not body then return end
  return 200, { ["Content-Type"] = req.headers["content-type"] or "application/octet-stream" }, body
end)

app:get("/*path", http.static(root))

local handler = app
if log then
  handler = function(req, res)
    print(req.method, req.target)
    return app(req, res)
  end
end

local srv = assert(http.listen(addr, handler))
print("http: listening on " .. srv:address() .. ", files from " .. root)
