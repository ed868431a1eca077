-- seed_spec.lua -- the seed's Python TCP example ("Sockets", in Portuguese)
-- against scripts/tcp_server.lua and scripts/tcp_client.lua: each side of
-- ours must interoperate with the Python original, and with each other.
local H = require "helpers"

-- The seed's server and client, verbatim except that the port comes from
-- argv[1] (so tests use a free port) and prints are flushed (output files).
local PY_SERVER = [[
import socket, sys
port = int(sys.argv[1]) if len(sys.argv) > 1 else 12345

# Cria um socket TCP/IP
server_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)

# Liga o socket a um endereço e porta
server_socket.bind(('localhost', port))

# Coloca o socket em modo de escuta
server_socket.listen(5)
print("Aguardando conexão...", flush=True)

# Aceita a conexão do cliente
client_socket, addr = server_socket.accept()
print(f"Conexão estabelecida com {addr}", flush=True)

# Recebe dados do cliente
data = client_socket.recv(1024)
print(f"Dados recebidos do cliente: {data.decode()}", flush=True)

# Fecha o socket do cliente
client_socket.close()

# Fecha o socket do servidor
server_socket.close()
]]

-- Under the one-byte shim (make test-onebyte) our client's message arrives a
-- byte at a time, and the seed server's single recv(1024) would print only
-- what had come by then: there, and only there, it reads until the client
-- closes instead (at most 1024 bytes all the same).
if H.ONEBYTE then
  local once = "data = client_socket.recv(1024)"
  local i, j = PY_SERVER:find(once, 1, true)
  assert(i, "PY_SERVER changed")
  PY_SERVER = PY_SERVER:sub(1, i - 1)
    .. 'data = b"".join(iter(lambda: client_socket.recv(1024), b""))[:1024]'
    .. PY_SERVER:sub(j + 1)
end

local PY_CLIENT = [[
import socket, sys
port = int(sys.argv[1]) if len(sys.argv) > 1 else 12345

# Cria um socket TCP/IP
client_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)

# Conecta o socket ao servidor
client_socket.connect(('localhost', port))

# Envia dados para o servidor
client_socket.sendall(b'Hello, servidor!')

# Fecha o socket do cliente
client_socket.close()
]]

-- A background python3 process with its output in files (like H.start).
local function py_start(script, args)
  local p = H.launch_python(script, args)
  function p.stdout() return H.readfile(p.out) or "" end
  function p.stderr() return H.readfile(p.err) or "" end
  function p.exited() local rc = H.readfile(p.rcf); return rc and tonumber(rc) end
  function p.wait(timeout)
    local dl = H.socket.gettime() + (timeout or 5)
    repeat
      local rc = p.exited()
      if rc then return rc end
      H.socket.sleep(0.01)
    until H.socket.gettime() > dl
  end
  function p.wait_output(pattern, timeout)
    local dl = H.socket.gettime() + (timeout or 5)
    repeat
      local m = p.stdout():match(pattern)
      if m then return m end
      if p.exited() then break end
      H.socket.sleep(0.01)
    until H.socket.gettime() > dl
    error(("python: no %q in output\nstdout: %s\nstderr: %s"):format(pattern, p.stdout(), p.stderr()))
  end
  -- By PID: TERM to the 'timeout' wrapper, which passes it on to python3.
  function p.stop()
    if p.exited() then return p.exited() end
    os.execute(("kill -TERM %d 2>/dev/null"):format(p.pid))
    return p.wait(5)
  end
  return p
end

-- Run the seed's Python client to completion (bounded); returns rc, stderr.
local function py_client(port)
  local path = H.writefile(H.tmpname(".py"), PY_CLIENT)
  local err = H.tmpname(".pyerr")
  local _, rc = H.sh_cmd(("timeout -s KILL 10 python3 %s %d 2> %s < /dev/null"):format(H.q(path), port, err))
  return rc, H.readfile(err) or ""
end

describe("seed: the Python TCP example", function()
  local procs = {}
  local function track(p) procs[#procs + 1] = p; return p end
  after_each(function()
    for _, p in ipairs(procs) do p:stop() end
    procs = {}
  end)

  it("Python server receives what tcp_client.lua sends", function()
    local port = H.free_port()
    local py = track(py_start(PY_SERVER, tostring(port)))
    py.wait_output("Aguardando conexão%.%.%.")
    local out, err, rc = H.exec(("scripts/tcp_client.lua tcp://127.0.0.1:%d"):format(port), { timeout = 10 })
    assert.equal(0, rc, "client stderr: " .. tostring(err))
    assert.equal("", out)
    assert.equal(0, py.wait(5), "python stderr: " .. py.stderr())
    local stdout = py.stdout()
    assert.matches("Conexão estabelecida com %('127%.0%.0%.1', %d+%)\n", stdout)
    assert.matches("\nDados recebidos do cliente: Hello, servidor!\n$", stdout)
  end)

  it("tcp_server.lua receives what the Python client sends, then exits 0 by itself", function()
    local srv = track(H.start("scripts/tcp_server.lua tcp://127.0.0.1:0"))
    local addr = srv:wait_output("Escutando em (tcp://[%d.]+:%d+)\n")
    srv:wait_output("Aguardando conexão%.%.%.\n")
    local _, port = H.hostport(addr)
    assert.is_true(port > 0)
    local rc, perr = py_client(port)
    assert.equal(0, rc, "python client: " .. perr)
    assert.equal(0, srv:wait(5), "server stderr: " .. srv:stderr())
    local out = srv:stdout()
    assert.matches("Conexão estabelecida com tcp://127%.0%.0%.1:%d+\n", out)
    assert.matches("\nDados recebidos do cliente: Hello, servidor!\n$", out)
    assert.equal("", srv:stderr())
  end)

  it("tcp_server.lua and tcp_client.lua talk to each other", function()
    local srv = track(H.start("scripts/tcp_server.lua tcp://127.0.0.1:0"))
    local addr = srv:wait_output("Escutando em (tcp://[%d.]+:%d+)\n")
    srv:wait_output("Aguardando conexão%.%.%.\n")
    local out, err, rc = H.exec("scripts/tcp_client.lua " .. H.q(addr), { timeout = 10 })
    assert.equal(0, rc, "client stderr: " .. tostring(err))
    assert.equal("", out)
    assert.equal(0, srv:wait(5), "server stderr: " .. srv:stderr())
    assert.equal(table.concat({
      "Escutando em " .. addr,
      "Aguardando conexão...",
    }, "\n") .. "\n", srv:stdout():match("^(.-\n.-\n)"))
    assert.matches("\nDados recebidos do cliente: Hello, servidor!\n$", srv:stdout())
  end)

  it("tcp_client.lua fails (exit 1, message) when nobody listens", function()
    local port = H.free_port()
    local out, err, rc = H.exec(("scripts/tcp_client.lua tcp://127.0.0.1:%d"):format(port), { timeout = 10 })
    assert.equal(1, rc)
    assert.equal("", out)
    assert.matches("connection refused", err)
  end)
end)
