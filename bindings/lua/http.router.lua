-- sockhost.http.router -- the router of sockhost.http: a handler that
-- dispatches on the method and the path ("/users/:id", "/files/*rest"),
-- answering 404, or 405 with Allow. Lua, and the C parser module's
-- route set (bindings/l_route.c: the dynamic patterns matched in one call)
-- and split_path; no I/O.
local util = require "sockhost.http.util"

local M = {}

local callable, unescape = util.callable, util.unescape

local Router = {}
Router.__index = Router

local P = require "sockhost.http.parser"

-- The non-empty segments between slashes, in C: { "a", "b" } for "/a//b/",
-- whether the path holds a '%', whether it is "/" .. table.concat(segs, "/").
local split_path, normal_path, routes = P.split_path, P.normal_path, P.routes

--- http.router() -> router, itself a handler: router(req, res).
function M.router()
  -- exact: path -> { method = fn } (nexact of them); patterns: the dynamic
  -- routes in order, each { pattern, fns = { method = fn } }, compiled into
  -- 'set' (a route set of the C module) at the same index.
  return setmetatable({ exact = {}, nexact = 0, patterns = {}, set = routes() }, Router)
end

--- router:route(method, pattern, fn) -> router. pattern: "/users/:id"
-- (":name" matches one segment, percent-decoded into req.params.name),
-- "/files/*rest" (the remainder of the path, raw, possibly empty).
function Router:route(method, pattern, fn)
  if type(method) ~= "string" or not method:find("^[%u%d_%-]+$") then error("bad method", 2) end
  if type(pattern) ~= "string" or pattern:sub(1, 1) ~= "/" then error("bad pattern (must start with '/')", 2) end
  if not callable(fn) then error("bad handler (a function expected)", 2) end
  local segs, dynamic = split_path(pattern), false
  for i, s in ipairs(segs) do
    if s:sub(1, 1) == ":" then dynamic = true
    elseif s:sub(1, 1) == "*" then
      if i ~= #segs then error("'*' must be the last segment", 2) end
      dynamic = true
    end
  end
  if dynamic then
    local r
    for _, x in ipairs(self.patterns) do
      if x.pattern == pattern then r = x end
    end
    if not r then
      r = { pattern = pattern, fns = {}, index = self.set:add(pattern) }
      self.patterns[r.index] = r
    end
    r.fns[method] = fn
  else
    local key = "/" .. table.concat(segs, "/")
    if not self.exact[key] then self.exact[key], self.nexact = {}, self.nexact + 1 end
    self.exact[key][method] = fn
  end
  return self
end

--- router:websocket(pattern, fn [, opts]) -> router. A GET route that
-- upgrades to a WebSocket (sockhost.websocket, loaded on first use) and
-- calls fn(ws, req); opts are websocket.upgrade's.
function Router:websocket(pattern, fn, opts)
  if not callable(fn) then error("bad handler (a function expected)", 2) end
  local ok, h = pcall(require("sockhost.websocket").handler, fn, opts)
  if not ok then error(h, 2) end
  return self:route("GET", pattern, h)
end

for _, m in ipairs { "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS" } do
  Router[m:lower()] = function(self, pattern, fn) return self:route(m, pattern, fn) end
end

local function pick(fns, method)
  return fns[method] or (method == "HEAD" and fns.GET) or nil
end

local function allow(fns)
  local t = {}
  for m in pairs(fns) do t[#t + 1] = m end
  if fns.GET and not fns.HEAD then t[#t + 1] = "HEAD" end
  table.sort(t)
  return table.concat(t, ", ")
end

function Router:__call(req, res)
  local path, method = req.path, req.method
  local fns = self.exact[path]
  if fns == nil and self.nexact > 0 and not normal_path(path) then   -- "/a//b/" is "/a/b"
    fns = self.exact["/" .. table.concat(split_path(path), "/")]
  end
  local allowed
  if fns then
    local fn = pick(fns, method)
    if fn then req.params = {}; return fn(req, res) end
    allowed = fns
  end
  -- The dynamic routes that match, in order (the C route set).
  local set, patterns, i, params = self.set, self.patterns, 0, nil
  while true do
    i, params = set:match(path, i)
    if not i then break end
    fns = patterns[i].fns
    local fn = pick(fns, method)
    if fn then req.params = params; return fn(req, res) end
    allowed = allowed or fns
  end
  if allowed then
    return 405, { Allow = allow(allowed) }
  end
  return 404
end

return M
