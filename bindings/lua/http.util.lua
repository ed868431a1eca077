-- sockhost.http.util -- the small helpers that the parts of sockhost.http
-- share: reason phrases, HTTP dates, percent-decoding, query strings, and
-- whether a handler can be called. Pure Lua; requires nothing.
local M = {}

local REASONS = {
  [100] = "Continue", [101] = "Switching Protocols", [102] = "Processing",
  [103] = "Early Hints",
  [200] = "OK", [201] = "Created", [202] = "Accepted", [204] = "No Content",
  [206] = "Partial Content",
  [301] = "Moved Permanently", [302] = "Found", [303] = "See Other",
  [304] = "Not Modified", [307] = "Temporary Redirect", [308] = "Permanent Redirect",
  [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden", [404] = "Not Found",
  [405] = "Method Not Allowed", [406] = "Not Acceptable", [408] = "Request Timeout",
  [409] = "Conflict", [410] = "Gone", [411] = "Length Required", [412] = "Precondition Failed",
  [413] = "Content Too Large", [414] = "URI Too Long", [415] = "Unsupported Media Type",
  [416] = "Range Not Satisfiable", [417] = "Expectation Failed", [422] = "Unprocessable Content",
  [426] = "Upgrade Required", [429] = "Too Many Requests", [431] = "Request Header Fields Too Large",
  [500] = "Internal Server Error", [501] = "Not Implemented", [502] = "Bad Gateway",
  [503] = "Service Unavailable", [504] = "Gateway Timeout", [505] = "HTTP Version Not Supported",
}

--- http.reason(status) -> the reason phrase ("Not Found"), "" if unknown.
function M.reason(status)
  return REASONS[status] or ""
end

local DAYS = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" }
local MONTHS = { "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" }
local date_at, date_text

--- http.date([t]) -> an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") for
-- the time t (default now; cached for the current second).
function M.date(t)
  local now = t == nil
  t = t or os.time()
  if now and t == date_at then return date_text end
  local d = os.date("!*t", t)
  local s = ("%s, %02d %s %04d %02d:%02d:%02d GMT"):format(DAYS[d.wday], d.day,
    MONTHS[d.month], d.year, d.hour, d.min, d.sec)
  if now then date_at, date_text = t, s end
  return s
end

--- http.unescape(s) -> s with %XX decoded | nil for a malformed escape.
function M.unescape(s)
  if not s:find("%", 1, true) then return s end
  if s:gsub("%%%x%x", ""):find("%", 1, true) then return nil end
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

--- http.parse_query(s) -> { name = value } from "a=1&b=x+y" (decoded, "+"
-- is a space; the first of repeated names wins; malformed pairs skipped).
function M.parse_query(s)
  local t = {}
  if not s then return t end
  for pair in s:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    k = M.unescape((k:gsub("+", " ")))
    v = M.unescape((v:gsub("+", " ")))
    if k and v and k ~= "" and t[k] == nil then t[k] = v end
  end
  return t
end

--- util.callable(h) -> whether h is a function or a table with __call (a
-- handler).
function M.callable(h)
  if type(h) == "function" then return true end
  local mt = getmetatable(h)
  return type(mt) == "table" and mt.__call ~= nil
end

return M
