-- sockhost.metrics -- metrics a script registers, and this process's part of
-- /metrics (--metrics): sockhost.stats() and the script's metrics in the
-- Prometheus text exposition format, version 0.0.4.
--
--   local m = sockhost.metrics
--   local reqs = m.counter("app_requests", "Requests served", { "method" })
--   reqs:inc(1, { "GET" })                   -- or { method = "GET" }
--   local q = m.gauge("app_queue", "Jobs waiting")
--   q:set(12)
--   local lat = m.histogram("app_latency_seconds", "Latency", { 0.01, 0.1, 1 })
--   lat:observe(0.03)
--
-- Names follow Prometheus: [a-zA-Z_:][a-zA-Z0-9_:]*, label names
-- [a-zA-Z_][a-zA-Z0-9_]* (not beginning with "__"; "le" is a histogram's).
-- A counter named "x" is exposed as "x_total" ("x_total" stays as it is).
-- The names beginning with "sockhost_" are the host's. Under -w N each
-- worker has its own values; the master's /metrics sums them.
local M = {}

local format, concat = string.format, table.concat
local mtype = math.type

local registry = {}     -- name -> metric, and in order of registration
local order = {}

local NAME = "^[%a_:][%w_:]*$"
local LABEL = "^[%a_][%w_]*$"

local function check_name(name)
  if type(name) ~= "string" or not name:match(NAME) then
    error(format("bad metric name %q (expected [a-zA-Z_:][a-zA-Z0-9_:]*)", tostring(name)), 3)
  end
  if name:match("^sockhost_") then error(format("metric name %q: sockhost_ is the host's", name), 3) end
end

local function check_labels(labels, reserved)
  labels = labels or {}
  if type(labels) ~= "table" then error("labels must be a list of names", 3) end
  local seen = {}
  for i, l in ipairs(labels) do
    if type(l) ~= "string" or not l:match(LABEL) or l:match("^__") or l == reserved then
      error(format("bad label name %q", tostring(l)), 3)
    end
    if seen[l] then error(format("label %q given twice", l), 3) end
    seen[l] = i
  end
  return labels
end

-- Label values escaped as the text format wants: \ " and newline.
local function escape_value(v)
  return (tostring(v):gsub("[\\\"\n]", { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end
M.escape_label_value = escape_value

local function escape_help(s)
  return (s:gsub("[\\\n]", { ["\\"] = "\\\\", ["\n"] = "\\n" }))
end

local function number(v)
  if v ~= v then return "NaN" end
  if v == math.huge then return "+Inf" end
  if v == -math.huge then return "-Inf" end
  if mtype(v) == "integer" or (v == math.floor(v) and math.abs(v) < 2^53) then
    return format("%d", v)
  end
  local short = format("%.15g", v)
  return tonumber(short) == v and short or format("%.17g", v)
end
M.format_number = number

-- The label values a call gives, as a list in the metric's order: a list,
-- or a table by name. Returns the key of the series and the list.
local function values_of(m, given)
  local n = #m.labels
  if n == 0 then
    if given ~= nil and next(given) ~= nil then error(m.name .. " has no labels", 3) end
    return "", {}
  end
  if type(given) ~= "table" then error(format("%s needs %d label values", m.name, n), 3) end
  local list = {}
  for i, l in ipairs(m.labels) do
    local v = given[i]
    if v == nil then v = given[l] end
    if v == nil then error(format("%s: no value for label %q", m.name, l), 3) end
    list[i] = tostring(v)
  end
  return concat(list, "\0"), list
end

-- '{a="x",b="y"}' for the label names and values ('extra': one more pair).
local function labelset(names, values, extra_name, extra_value)
  local parts = {}
  for i, l in ipairs(names) do parts[#parts + 1] = format('%s="%s"', l, escape_value(values[i])) end
  if extra_name then parts[#parts + 1] = format('%s="%s"', extra_name, extra_value) end
  if #parts == 0 then return "" end
  return "{" .. concat(parts, ",") .. "}"
end

local function series(m, labelvalues)
  local key, list = values_of(m, labelvalues)
  local s = m.series[key]
  if not s then
    s = { values = list, value = 0 }
    if m.kind == "histogram" then
      s.counts, s.sum, s.count = {}, 0, 0
      for i = 1, #m.buckets do s.counts[i] = 0 end
    end
    m.series[key] = s
    m.keys[#m.keys + 1] = key
  end
  return s
end

local Metric = {}
Metric.__index = Metric

local function amount(n, what)
  if n == nil then return 1 end
  if type(n) ~= "number" then error(what .. ": number expected", 3) end
  return n
end

-- counter:inc([n [, labelvalues]]), gauge:inc(...): add n (default 1).
function Metric:inc(n, labelvalues)
  n = amount(n, self.name)
  if self.kind == "counter" and n < 0 then error(self.name .. ": a counter only goes up", 2) end
  if self.kind == "histogram" then error(self.name .. ": a histogram is observed", 2) end
  local s = series(self, labelvalues)
  s.value = s.value + n
end

-- gauge:dec([n [, labelvalues]])
function Metric:dec(n, labelvalues)
  if self.kind ~= "gauge" then error(self.name .. ": only a gauge goes down", 2) end
  local s = series(self, labelvalues)
  s.value = s.value - amount(n, self.name)
end

-- gauge:set(v [, labelvalues])
function Metric:set(v, labelvalues)
  if self.kind ~= "gauge" then error(self.name .. ": only a gauge is set", 2) end
  if type(v) ~= "number" then error(self.name .. ": number expected", 2) end
  series(self, labelvalues).value = v
end

-- histogram:observe(v [, labelvalues])
function Metric:observe(v, labelvalues)
  if self.kind ~= "histogram" then error(self.name .. ": only a histogram is observed", 2) end
  if type(v) ~= "number" then error(self.name .. ": number expected", 2) end
  local s = series(self, labelvalues)
  for i, b in ipairs(self.buckets) do
    if v <= b then s.counts[i] = s.counts[i] + 1 end
  end
  s.sum, s.count = s.sum + v, s.count + 1
end

-- metric:value([labelvalues]) -> the current value (a histogram: count, sum).
function Metric:value(labelvalues)
  local key = values_of(self, labelvalues)
  local s = self.series[key]
  if self.kind == "histogram" then return s and s.count or 0, s and s.sum or 0 end
  return s and s.value or 0
end

local function register(kind, name, help, labels, extra)
  check_name(name)
  if type(help) ~= "string" then error("help text expected", 3) end
  local exposed = name
  if kind == "counter" and not name:match("_total$") then exposed = name .. "_total" end
  if kind == "histogram" and (name:match("_bucket$") or name:match("_count$") or name:match("_sum$")) then
    error(format("histogram name %q ends like its series", name), 3)
  end
  if registry[exposed] or registry[name] then error(format("metric %q already registered", name), 3) end
  local m = setmetatable({ kind = kind, name = exposed, help = help,
    labels = check_labels(labels, kind == "histogram" and "le" or nil),
    series = {}, keys = {} }, Metric)
  for k, v in pairs(extra or {}) do m[k] = v end
  registry[exposed] = m
  order[#order + 1] = m
  return m
end

-- sockhost.metrics.counter(name, help [, labels]) -> counter
function M.counter(name, help, labels)
  return register("counter", name, help, labels)
end

-- sockhost.metrics.gauge(name, help [, labels]) -> gauge
function M.gauge(name, help, labels)
  return register("gauge", name, help, labels)
end

-- sockhost.metrics.histogram(name, help, buckets [, labels]) -> histogram;
-- buckets: upper bounds, increasing (+Inf is added).
function M.histogram(name, help, buckets, labels)
  if type(buckets) ~= "table" or #buckets == 0 then error("buckets: a list of upper bounds expected", 2) end
  local b = {}
  for i, v in ipairs(buckets) do
    if type(v) ~= "number" or v ~= v then error("buckets: numbers expected", 2) end
    if i > 1 and v <= b[i - 1] then error("buckets must increase", 2) end
    b[i] = v
  end
  if b[#b] ~= math.huge then b[#b + 1] = math.huge end
  return register("histogram", name, help, labels, { buckets = b })
end

-- ---------------- Rendering ----------------

local function family(out, name, kind, help)
  out[#out + 1] = format("# HELP %s %s", name, escape_help(help))
  out[#out + 1] = format("# TYPE %s %s", name, kind)
end

local function sample(out, name, labels, v)
  out[#out + 1] = format("%s%s %s", name, labels, number(v))
end

-- The host's own metrics, from sockhost.stats().
local function host_metrics(out, s)
  family(out, "sockhost_connections_open", "gauge", "Accepted connections open now")
  sample(out, "sockhost_connections_open", "", s.connections.open)
  family(out, "sockhost_connections_accepted_total", "counter", "Connections accepted")
  sample(out, "sockhost_connections_accepted_total", "", s.connections.accepted)
  local addrs = {}
  for a in pairs(s.listeners) do addrs[#addrs + 1] = a end
  table.sort(addrs)
  local per = {
    { "sockhost_listener_connections_open", "gauge", "Connections open, by listener", "open" },
    { "sockhost_listener_accepted_total", "counter", "Connections accepted, by listener", "accepted" },
    { "sockhost_listener_refused_total", "counter", "Connections refused at max_conns, by listener", "refused" },
  }
  for _, p in ipairs(per) do
    family(out, p[1], p[2], p[3])
    for _, a in ipairs(addrs) do
      sample(out, p[1], format('{listener="%s"}', escape_value(a)), s.listeners[a][p[4]])
    end
  end
  family(out, "sockhost_read_bytes_total", "counter", "Bytes connections' reads took")
  sample(out, "sockhost_read_bytes_total", "", s.bytes["in"])
  family(out, "sockhost_written_bytes_total", "counter", "Bytes connections' writes handed on")
  sample(out, "sockhost_written_bytes_total", "", s.bytes.out)
  family(out, "sockhost_tasks", "gauge", "Live tasks, by state")
  for _, st in ipairs({ "running", "ready", "parked" }) do
    sample(out, "sockhost_tasks", format('{state="%s"}', st), s.tasks[st])
  end
  family(out, "sockhost_tasks_parked", "gauge", "Parked tasks, by what they wait for")
  local reasons = {}
  for r in pairs(s.tasks.waiting) do reasons[#reasons + 1] = r end
  table.sort(reasons)
  for _, r in ipairs(reasons) do
    sample(out, "sockhost_tasks_parked", format('{reason="%s"}', r), s.tasks.waiting[r])
  end
  family(out, "sockhost_timers", "gauge", "Armed after/every timers")
  sample(out, "sockhost_timers", "", s.timers)
  family(out, "sockhost_lua_memory_bytes", "gauge", "Memory the Lua state uses")
  sample(out, "sockhost_lua_memory_bytes", "", s.memory.lua)
  family(out, "sockhost_resident_memory_bytes", "gauge", "Resident set size")
  sample(out, "sockhost_resident_memory_bytes", "", s.memory.rss)
  family(out, "sockhost_limit_hits_total", "counter", "Times each limit fired")
  local limits = {}
  for l in pairs(s.limits) do limits[#limits + 1] = l end
  table.sort(limits)
  for _, l in ipairs(limits) do
    sample(out, "sockhost_limit_hits_total", format('{limit="%s"}', l), s.limits[l])
  end
end

local function script_metrics(out)
  for _, m in ipairs(order) do
    family(out, m.name, m.kind, m.help)
    for _, key in ipairs(m.keys) do
      local s = m.series[key]
      if m.kind == "histogram" then
        for i, b in ipairs(m.buckets) do
          sample(out, m.name .. "_bucket", labelset(m.labels, s.values, "le", number(b)), s.counts[i])
        end
        sample(out, m.name .. "_sum", labelset(m.labels, s.values), s.sum)
        sample(out, m.name .. "_count", labelset(m.labels, s.values), s.count)
      else
        sample(out, m.name, labelset(m.labels, s.values), s.value)
      end
    end
  end
end

-- sockhost.metrics.render() -> this process's metrics as exposition text.
function M.render()
  local out = {}
  host_metrics(out, require("sockhost").stats())
  script_metrics(out)
  out[#out + 1] = ""
  return concat(out, "\n")
end

-- sockhost.metrics.parse(text) -> { ["name{labels}"] = value, ... }: the
-- samples of exposition text (what sockhost.stats{ all = true } returns).
function M.parse(text)
  local t = {}
  for line in text:gmatch("[^\n]+") do
    if line:sub(1, 1) ~= "#" then
      local key, v = line:match("^(.-) (%S+)$")
      if key then
        local n = tonumber(v) or (v == "+Inf" and math.huge) or (v == "-Inf" and -math.huge) or (0 / 0)
        if math.type(n) == "float" and n == math.floor(n) and math.abs(n) < 2^53 then n = math.tointeger(n) end
        t[key] = n
      end
    end
  end
  return t
end

return M
