-- sockhost.http.static -- the static file handler of sockhost.http: the
-- files under a directory for GET and HEAD, none outside it (no "..", no
-- hidden files, no symbolic links that lead out), with a Content-Type from
-- the extension.
local P = require "sockhost.http.parser"
local util = require "sockhost.http.util"

local M = {}

local unescape = util.unescape

local FILE_PIECE = 65536    -- a file is read and sent in pieces of this size

local MIME = {
  html = "text/html; charset=utf-8", htm = "text/html; charset=utf-8",
  css = "text/css; charset=utf-8", js = "text/javascript; charset=utf-8",
  json = "application/json", txt = "text/plain; charset=utf-8", md = "text/plain; charset=utf-8",
  xml = "application/xml", svg = "image/svg+xml", png = "image/png", jpg = "image/jpeg",
  jpeg = "image/jpeg", gif = "image/gif", webp = "image/webp", ico = "image/x-icon",
  wasm = "application/wasm", pdf = "application/pdf", lua = "text/plain; charset=utf-8",
}
M.mime = MIME

-- The file for the raw URL path under root, or nil: each segment is
-- percent-decoded and must not be empty after decoding, "." or "..", start
-- with "." (hidden files), or hold "/", "\" or NUL; the resolved real path
-- (symbolic links followed) must lie inside the real root.
local function resolve(rootreal, path)
  local segs = {}
  for seg in path:gmatch("[^/]+") do
    local s = unescape(seg)
    if s == nil or s:sub(1, 1) == "." or s:find("[/\\%z]") then return nil end
    segs[#segs + 1] = s
  end
  local real, kind = P.realpath(rootreal .. "/" .. table.concat(segs, "/"))
  if real == nil then return nil end
  if real ~= rootreal and real:sub(1, #rootreal + 1) ~= rootreal .. "/" then return nil end
  if kind == "directory" then
    real, kind = P.realpath(real .. "/index.html")
    if real == nil or real:sub(1, #rootreal + 1) ~= rootreal .. "/" then return nil end
  end
  if kind ~= "file" then return nil end
  return real
end

--- http.static(root) -> handler(req, res [, path]) serving the files under
-- the directory root for GET and HEAD (path defaults to req.path). Raises
-- if root is not a directory.
function M.static(root)
  local rootreal, kind = P.realpath(root)
  if kind ~= "directory" then
    error(("static: '%s' is not a directory"):format(tostring(root)), 2)
  end
  if rootreal == "/" then rootreal = "" end
  return function(req, res, path)
    if req.method ~= "GET" and req.method ~= "HEAD" then
      return 405, { Allow = "GET, HEAD" }
    end
    local file = resolve(rootreal, path or req.path)
    local f = file and io.open(file, "rb")
    if not f then return 404 end
    local size = f:seek("end")
    f:seek("set")
    res:status(200)
    res:header("Content-Type", MIME[file:match("%.([%w]+)$") or ""] or "application/octet-stream")
    res:header("Content-Length", size)
    if req.method == "HEAD" then f:close(); return res:finish() end
    local left = size
    while left > 0 do
      local piece = f:read(left < FILE_PIECE and left or FILE_PIECE)
      if not piece or not res:write(piece) then break end
      left = left - #piece
    end
    f:close()
    return res:finish()
  end
end

return M
