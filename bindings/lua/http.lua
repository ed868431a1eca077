-- sockhost.http -- HTTP/1.1 server helpers and a client: serve a connection (keep-alive,
-- pipelining, request bodies by Content-Length or chunked, HEAD, Expect:
-- 100-continue), a small router and a static file handler.
--
-- The public entry: it gathers the parts, each a module of its own that
-- requires none of the others but sockhost.http.util:
--   sockhost.http.parser  the strict head parser (C: bindings/l_http.c on
--                         core/sh_http.c), chunk sizes, realpath
--   sockhost.http.util    reason phrases, dates, escapes, query strings
--   sockhost.http.server  http.serve, http.listen: requests and responses
--   sockhost.http.router  http.router
--   sockhost.http.static  http.static, http.mime
--   sockhost.http.client  http.request, http.get, http.client: requests
--                         over a keep-alive pool (sockhost.pool)
local P = require "sockhost.http.parser"
local util = require "sockhost.http.util"
local server = require "sockhost.http.server"
local router = require "sockhost.http.router"
local static = require "sockhost.http.static"
local client = require "sockhost.http.client"

local M = {}

M.parser = P.version
M.parse_head = P.parse_head
M.chunk_size = P.chunk_size
M.realpath = P.realpath

M.reason = util.reason
M.date = util.date
M.unescape = util.unescape
M.parse_query = util.parse_query

M.serve = server.serve
M.listen = server.listen

M.router = router.router

M.request = client.request
M.get = client.get
M.client = client.client

M.static = static.static
M.mime = static.mime

return M
