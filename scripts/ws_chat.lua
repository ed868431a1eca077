-- ws_chat.lua -- a chat room in the browser: one small page (GET /) and a
-- WebSocket room (/ws) on the same port. Each message a client sends goes
-- to everyone, the sender too, as the text frame "<nick> text".
--
--   sockhost scripts/ws_chat.lua [address]   (default tcp://127.0.0.1:7011)
--   then open http://127.0.0.1:7011/ in two browser tabs
--
-- A newcomer is named guestN; everyone sees who joins and leaves. "/nick
-- NAME" (1 to 16 ASCII letters, digits, _ or -) renames. A message is at
-- most 1000 bytes of UTF-8 (the WebSocket layer closes with 1009 past 4
-- KiB); control characters in it are shown escaped ("\x1b"); the page
-- shows text, never HTML.
-- Browsers are checked for the page's own origin (another site's page
-- cannot join); clients that send no Origin (scripts) are let in.
-- As in chat.lua, each client has its own channel of outgoing messages,
-- written out by a task of its own, so a client that stops reading never
-- holds up the room: once 64 KiB wait for it, it is dropped (and logged).
-- Idle clients are pinged every 20 s and dropped if they do not answer.
local sh = require "sockhost"
local http = require "sockhost.http"

local MAX_QUEUED = 64 * 1024      -- bytes waiting for one client before it is dropped
local MAX_TEXT = 1000             -- bytes of one message
local clients = {}                -- client -> true
local by_nick = {}                -- nick -> client
local guests = 0

local PAGE = [[<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>sockhost chat</title>
<style>
body { font: 15px sans-serif; margin: 1em auto; max-width: 40em; }
#messages { list-style: none; padding: 0.5em; height: 60vh; overflow-y: auto; border: 1px solid #ccc; }
#messages li { white-space: pre-wrap; word-break: break-word; }
form { display: flex; gap: 0.5em; margin-top: 0.5em; }
#input { flex: 1; }
#status { color: #888; }
</style></head>
<body>
<h1>sockhost chat <small id="status">connecting</small></h1>
<ul id="messages"></ul>
<form id="form"><input id="input" autocomplete="off" maxlength="1000" autofocus>
<button id="send" type="submit">Send</button></form>
<script>
"use strict";
const list = document.getElementById("messages");
const input = document.getElementById("input");
const status = document.getElementById("status");
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
function show(text) {
  const li = document.createElement("li");
  li.textContent = text;                 // text, never HTML
  list.appendChild(li);
  list.scrollTop = list.scrollHeight;
}
ws.onopen = () => { status.textContent = "connected"; };
ws.onmessage = (ev) => show(ev.data);
ws.onclose = (ev) => { status.textContent = "disconnected (" + ev.code + ")"; };
document.getElementById("form").onsubmit = (ev) => {
  ev.preventDefault();
  if (input.value !== "" && ws.readyState === WebSocket.OPEN) ws.send(input.value);
  input.value = "";
};
</script>
</body></html>
]]

-- A task per client: send the messages queued for it, until its channel is
-- closed and empty or the connection fails.
local function writer(c)
  for text in function() return c.out:receive() end do
    c.queued = c.queued - #text
    if not c.ws:send(text) then break end
  end
end

local leave

-- Control characters (C0, DEL) escaped; the rest is valid UTF-8 already.
local function shown(text)
  return (text:gsub("[%z\1-\31\127]", function(b) return ("\\x%02x"):format(b:byte()) end))
end

-- Queue a message for one client. Never blocks.
local function send(c, text)
  if c.gone then return end
  if c.queued + #text > MAX_QUEUED or not c.out:send(text, 0) then
    sh.log("warn", ("ws_chat: dropping %s (%s): not reading, %d bytes waiting"):format(c.nick, c.peer, c.queued))
    c.ws:abort()
    return leave(c, "not reading")
  end
  c.queued = c.queued + #text
end

local function broadcast(text)
  for c in pairs(clients) do send(c, text) end
end

function leave(c, why)
  if c.gone then return end
  c.gone = true
  clients[c], by_nick[c.nick] = nil, nil
  sh.log("info", ("ws_chat: %s (%s) left%s"):format(c.nick, c.peer, why and ": " .. why or ""))
  broadcast("* " .. c.nick .. " left")
end

local function rename(c, name)
  if #name > 16 or not name:match("^[A-Za-z0-9_%-]+$") then
    send(c, "* a nick is 1 to 16 letters, digits, _ or -")
  elseif by_nick[name] then
    send(c, "* " .. name .. " is taken")
  else
    broadcast("* " .. c.nick .. " is now " .. name)
    by_nick[c.nick], by_nick[name], c.nick = nil, c, name
  end
end

local function room(ws)
  local c = { ws = ws, peer = ws.conn:peer(), out = sh.channel(MAX_QUEUED), queued = 0 }
  local out <close> = c.out
  local writing = sh.spawn(writer, c)
  repeat guests = guests + 1 until not by_nick["guest" .. guests]
  c.nick = "guest" .. guests
  clients[c], by_nick[c.nick] = true, c
  sh.log("info", ("ws_chat: %s (%s) joined"):format(c.nick, c.peer))
  send(c, "* welcome, you are " .. c.nick .. " (/nick NAME to rename)")
  broadcast("* " .. c.nick .. " joined")
  local why
  while not c.gone do
    local text, err, code = ws:receive()
    if not text then
      if err ~= "closed" then why = err end
      if code and code ~= 1000 and code ~= 1001 and err == "closed" then why = "code " .. code end
      break
    end
    local name = text:match("^/nick%s+(%S+)%s*$")
    if name then
      rename(c, name)
    elseif #text > MAX_TEXT then
      send(c, "* too long (at most " .. MAX_TEXT .. " bytes)")
    elseif text ~= "" then
      broadcast("<" .. c.nick .. "> " .. shown(text))
    end
    sh.sleep(0)              -- one message a turn: a flood cannot starve the writers
  end
  leave(c, why)
  out:close()                -- the writer sends what is queued, then ends
  writing:join()
end

-- The page's own origin only (http or https on the Host asked for); no
-- Origin at all: not a browser, let in.
local function same_origin(origin, req)
  if origin == nil then return true end
  local host = req.headers.host
  return host ~= nil and (origin == "http://" .. host or origin == "https://" .. host)
end

local app = http.router()
app:get("/", function(req, res)
  res:header("Content-Type", "text/html; charset=utf-8")
  res:header("Cache-Control", "no-store")
  return res:finish(PAGE)
end)
app:websocket("/ws", room, { origins = same_origin, max_message = 4096,
                             ping_interval = 20, ping_timeout = 20 })

local addr = arg[1] or "tcp://127.0.0.1:7011"
local srv = assert(http.listen(addr, app))
print("ws_chat: listening on " .. srv:address() .. ", open http://"
  .. srv:address():gsub("^tcp://", "") .. "/")
