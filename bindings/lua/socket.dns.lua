-- sockhost.socket.dns -- LuaSocket's socket.dns on sockhost's non-blocking
-- resolver (sockhost.resolve): look-ups yield the calling task. Reverse
-- look-ups (tohostname, getnameinfo) read the hosts file only: sockhost's
-- resolver asks no PTR questions.
local sh = require "sockhost"

local M = {}

local function family(ip)
  return sh.address.is_ip(ip) == "ipv6" and "inet6" or "inet"
end

-- The addresses of a name or literal, or nil, "host not found".
local function lookup(name)
  if type(name) ~= "string" then error("bad argument #1 (string expected)", 3) end
  local ips = sh.resolve(name)
  if not ips or #ips == 0 then return nil, "host not found" end
  return ips
end

-- The names the hosts file gives an address: the first, and the others.
local function names_of(ip)
  local f = io.open("/etc/hosts")
  if not f then return nil end
  local names
  for line in f:lines() do
    local fields = {}
    for w in line:gsub("#.*", ""):gmatch("%S+") do fields[#fields + 1] = w end
    if fields[1] == ip and fields[2] then
      names = names or {}
      for i = 2, #fields do names[#names + 1] = fields[i] end
    end
  end
  f:close()
  return names
end

local function resolved(name, ips)
  local aliases = {}
  local canonical = name
  if sh.address.is_ip(name) then
    local names = names_of(name)
    if names then
      canonical = names[1]
      for i = 2, #names do aliases[#aliases + 1] = names[i] end
    end
  end
  return { name = canonical, alias = aliases, ip = ips }
end

-- toip(name) -> first IP, { name =, alias = {}, ip = {...} } | nil, err
function M.toip(name)
  local ips, err = lookup(name)
  if not ips then return nil, err end
  return ips[1], resolved(name, ips)
end

-- tohostname(address) -> name, info | nil, err (names from the hosts file)
function M.tohostname(addr)
  local ips, err = lookup(addr)
  if not ips then return nil, err end
  for _, ip in ipairs(ips) do
    local names = names_of(ip)
    if names then
      local aliases = {}
      for i = 2, #names do aliases[i - 1] = names[i] end
      return names[1], { name = names[1], alias = aliases, ip = ips }
    end
  end
  if not sh.address.is_ip(addr) then return addr, resolved(addr, ips) end
  return nil, "host not found"
end

-- getaddrinfo(name) -> { { family = "inet" | "inet6", addr = ip }, ... } | nil, err
function M.getaddrinfo(name)
  local ips, err = lookup(name)
  if not ips then return nil, err end
  local list = {}
  for i, ip in ipairs(ips) do list[i] = { family = family(ip), addr = ip } end
  return list
end

-- getnameinfo(address [, port]) -> { names }, service | nil, err
function M.getnameinfo(addr, port)
  local names = addr and M.tohostname(addr)
  if addr and not names then return nil, "host not found" end
  return names and { names } or {}, port and tostring(port) or nil
end

-- gethostname() -> this machine's name
function M.gethostname()
  for _, path in ipairs { "/proc/sys/kernel/hostname", "/etc/hostname" } do
    local f = io.open(path)
    if f then
      local name = f:read("l")
      f:close()
      if name and name ~= "" then return name end
    end
  end
  return "localhost"
end

return M
