-- layers_spec.lua -- the layering rules that `make check-layers` enforces
-- (spec/layers.sh) hold for this tree, and each one fails when broken: a
-- Lua header in core/, a libevent header in bindings/, two object files
-- that use each other's symbols, or a longer circle.
local H = require "helpers"

local function sh(cmd)
  local out = H.tmpname(".out")
  local _, rc = H.sh_cmd(cmd .. " > " .. out .. " 2>&1")
  return H.readfile(out), rc
end

-- A throwaway tree under spec/tmp with core/ and bindings/ files.
local function tree(files)
  local root = H.tmpname("-tree")
  assert(os.execute("mkdir -p " .. root .. "/core " .. root .. "/bindings"))
  for path, src in pairs(files) do H.writefile(root .. "/" .. path, src) end
  return root
end

-- Compile C sources (name -> text) into objects in 'root'; their paths.
local function objects(root, sources)
  local objs = {}
  for name, src in pairs(sources) do
    local c, o = root .. "/" .. name .. ".c", root .. "/" .. name .. ".o"
    H.writefile(c, src)
    local out, rc = sh("cc -c -o " .. H.q(o) .. " " .. H.q(c))
    assert(rc == 0, out)
    objs[#objs + 1] = H.q(o)
  end
  table.sort(objs)
  return table.concat(objs, " ")
end

local clean = { ["core/a.c"] = "#include <event2/event.h>\n", ["bindings/b.c"] = "#include <lua.h>\n" }

describe("layers (make check-layers)", function()
  it("hold for this tree", function()
    local out, rc = sh("make -s check-layers")
    assert.equal(0, rc, out)
  end)

  it("fail on a Lua header in core/", function()
    local root = tree({ ["core/x.c"] = "#include <lauxlib.h>\n", ["bindings/b.c"] = "#include <lua.h>\n" })
    local out, rc = sh("sh spec/layers.sh " .. H.q(root))
    assert.not_equal(0, rc)
    assert.matches("core/ must not include Lua headers", out, 1, true)
    assert.matches("core/x.c:1", out, 1, true)
  end)

  it("fail on a libevent header in bindings/", function()
    local root = tree({ ["core/a.c"] = "#include <event2/event.h>\n",
                        ["bindings/l_x.c"] = "#include <event2/buffer.h>\n" })
    local out, rc = sh("sh spec/layers.sh " .. H.q(root))
    assert.not_equal(0, rc)
    assert.matches("bindings/ must not include libevent headers", out, 1, true)
    assert.matches("l_x.c:1", out, 1, true)
  end)

  it("pass a tree that keeps them, with objects in a line", function()
    local root = tree(clean)
    local objs = objects(root, {
      a = "int b_fn(void); int a_fn(void) { return b_fn(); }",
      b = "int c_fn(void); int b_fn(void) { return c_fn(); }",
      c = "int c_fn(void) { return 1; }",
    })
    local out, rc = sh("sh spec/layers.sh " .. H.q(root) .. " " .. objs)
    assert.equal(0, rc, out)
  end)

  it("fail on two objects that use each other", function()
    local root = tree(clean)
    local objs = objects(root, {
      a = "int b_fn(void); int a_fn(void) { return b_fn(); }",
      b = "int a_fn(void); int b_fn(void) { return a_fn(); }",
    })
    local out, rc = sh("sh spec/layers.sh " .. H.q(root) .. " " .. objs)
    assert.not_equal(0, rc)
    assert.matches("a circle", out, 1, true)
    assert.matches("a.o", out, 1, true)
    assert.matches("b.o", out, 1, true)
  end)

  it("fail on a circle through three objects", function()
    local root = tree(clean)
    local objs = objects(root, {
      a = "int b_fn(void); int a_fn(void) { return b_fn(); }",
      b = "int c_fn(void); int b_fn(void) { return c_fn(); }",
      c = "int a_fn(void); int c_fn(void) { return a_fn(); }",
    })
    local out, rc = sh("sh spec/layers.sh " .. H.q(root) .. " " .. objs)
    assert.not_equal(0, rc)
    assert.matches("a circle", out, 1, true)
  end)
end)
