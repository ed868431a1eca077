-- sockhost.http.router -- the router of sockhost.http: a handler that
-- dispatches on the method and the path ("/users/:id", "/files/*rest"),
-- answering 404, or 405 with Allow. Pure Lua, no I/O.
local util = require "sockhost.http.util"

local M = {}

local callable, unescape = util.callable, util.unescape

local Router = {}
Router.__index = Router

local function split_path(path)
  local segs = {}
  for seg in path:gmatch("[^/]+") do segs[#segs + 1] = seg end
  return segs
end

--- http.router() -> router, itself a handler: router(req, res).
function M.router()
  return setmetatable({ exact = {}, patterns = {} }, Router)
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
      r = { pattern = pattern, segs = segs, fns = {} }
      self.patterns[#self.patterns + 1] = r
    end
    r.fns[method] = fn
  else
    local key = "/" .. table.concat(segs, "/")
    self.exact[key] = self.exact[key] or {}
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

-- Params for path segments 'segs' against route r, or nil.
local function match(r, segs, path)
  local params, rs = {}, r.segs
  for i, s in ipairs(rs) do
    local c = s:sub(1, 1)
    if c == "*" then                      -- the raw rest, after i - 1 segments
      local pos = 1
      for _ = 1, i - 1 do pos = select(2, path:find("[^/]+", pos)) + 1 end
      params[s:sub(2)] = (path:sub(pos):gsub("^/+", ""))
      return params
    end
    local seg = segs[i]
    if seg == nil then return nil end
    if c == ":" then
      local v = unescape(seg)
      if v == nil then return nil end
      params[s:sub(2)] = v
    elseif s ~= seg then
      return nil
    end
  end
  if #segs ~= #rs then return nil end
  return params
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
  if fns == nil then fns = self.exact["/" .. table.concat(split_path(path), "/")] end
  local allowed
  if fns then
    local fn = pick(fns, method)
    if fn then req.params = {}; return fn(req, res) end
    allowed = fns
  end
  local segs = split_path(path)
  for _, r in ipairs(self.patterns) do
    local params = match(r, segs, path)
    if params then
      local fn = pick(r.fns, method)
      if fn then req.params = params; return fn(req, res) end
      allowed = allowed or r.fns
    end
  end
  if allowed then
    return 405, { Allow = allow(allowed) }
  end
  return 404
end

return M
