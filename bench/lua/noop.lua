-- The no-op component: one GET after another.
-- Args: <tokens> <requests per thread>
dofile("bench/lua/common.lua")

function init(args)
  load_common(args)
end

function request()
  return wrk.format("GET", "/")
end
