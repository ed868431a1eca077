-- sockhost.http.router -- the router of sockhost.http: a handler that
-- dispatches on the method and the path ("/users/:id", "/files/*rest"),
-- answering 404, or 405 with Allow. Lua, and the C parser module's
-- split_path; no I/O.
local util = require "sockhost.http.util"

local M = {}

local callable, unescape = util.callable, util.unescape

local Router = {}
Router.__index = Router

local LITERAL, PARAM, REST = 1, 2, 3
local NONE = {}
local compile

-- The non-empty segments between slashes, in C: { "a", "b" } for "/a//b/",
-- whether the path holds a '%', whether it is "/" .. table.concat(segs, "/").
local split_path = require("sockhost.http.parser").split_path

--- http.router() -> router, itself a handler: router(req, res).
function M.router()
  -- exact: path -> { method = fn }; patterns: the dynamic routes in order,
  -- also indexed by a literal first segment (first[seg]: a list in order)
  -- or in 'wild' when the first segment is a parameter or the rest.
  return setmetatable({ exact = {}, patterns = {}, first = {}, wild = {} }, Router)
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
      -- Compiled once: each segment's kind (LITERAL, PARAM, REST) and the
      -- parameter's name; 'n' segments, 'rest' if the last is "*".
      local kinds, names = {}, {}
      for i, s in ipairs(segs) do
        local c = s:sub(1, 1)
        kinds[i] = c == ":" and PARAM or c == "*" and REST or LITERAL
        names[i] = kinds[i] ~= LITERAL and s:sub(2) or nil
      end
      r = { pattern = pattern, segs = segs, fns = {}, match = compile(segs, kinds, names),
            index = #self.patterns + 1 }
      self.patterns[r.index] = r
      local list = self.wild
      if kinds[1] == LITERAL then
        list = self.first[segs[1]]
        if not list then list = {}; self.first[segs[1]] = list end
      end
      list[#list + 1] = r
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

-- The raw rest of 'path' after i - 1 segments, without leading slashes.
local function rest_of(path, i)
  local pos = 1
  for _ = 1, i - 1 do pos = select(2, path:find("[^/]+", pos)) + 1 end
  return (path:sub(pos):gsub("^/+", ""))
end

-- A route's matcher, made once as Lua code: match(segs, ns, path, pct) ->
-- params or nil, for the path's segments 'segs' (#segs = ns; 'pct': the
-- path holds a '%'). The segment count and the literal segments are
-- compared first, so that a route that does not match allocates nothing;
-- the params table is made in one constructor.
function compile(segs, kinds, names)
  local n, q = #segs, function(x) return ("%q"):format(x) end
  local code = { "local unescape, rest_of = ...\nreturn function(segs, ns, path, pct)\n" }
  local function add(...) for _, x in ipairs { ... } do code[#code + 1] = x end end
  if kinds[n] == REST then add("if ns < ", n - 1, " then return nil end\n")
  else add("if ns ~= ", n, " then return nil end\n") end
  for i = 1, n do
    if kinds[i] == LITERAL then add("if segs[", i, "] ~= ", q(segs[i]), " then return nil end\n") end
  end
  local fields = {}
  for i = 1, n do
    if kinds[i] == PARAM then
      add("local p", i, " = segs[", i, "]\n",
          "if pct then p", i, " = unescape(p", i, ") if p", i, " == nil then return nil end end\n")
      fields[#fields + 1] = "[" .. q(names[i]) .. "] = p" .. i
    elseif kinds[i] == REST then
      fields[#fields + 1] = "[" .. q(names[i]) .. "] = rest_of(path, " .. i .. ")"
    end
  end
  add("return { ", table.concat(fields, ", "), " }\nend\n")
  return assert(load(table.concat(code), "=(route)", "t"))(unescape, rest_of)
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
  local exact, segs, pct, normal = self.exact, nil, nil, nil
  local fns = exact[path]
  if fns == nil then
    segs, pct, normal = split_path(path)
    if not normal then fns = exact["/" .. table.concat(segs, "/")] end   -- "/a//b/" is "/a/b"
  end
  local allowed
  if fns then
    local fn = pick(fns, method)
    if fn then req.params = {}; return fn(req, res) end
    allowed = fns
  end
  if not segs then segs, pct = split_path(path) end
  -- The routes that may match, in order: those whose first segment is
  -- segs[1], merged with those that start with a parameter.
  local ns, a, b, i, j = #segs, self.first[segs[1] or ""] or NONE, self.wild, 1, 1
  while true do
    local r, ra, rb = nil, a[i], b[j]
    if ra and (rb == nil or ra.index < rb.index) then r, i = ra, i + 1
    elseif rb then r, j = rb, j + 1
    else break end
    local params = r.match(segs, ns, path, pct)
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
