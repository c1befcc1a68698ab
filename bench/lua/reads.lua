-- Reads: the product list, a product's detail and popular products, in turn.
-- Args: <tokens> <requests per thread> <products>
dofile("bench/lua/common.lua")

function init(args)
  load_common(args)
  products = tonumber(args[3])
end

function request()
  sent = sent + 1
  local kind = sent % 3
  if kind == 0 then return wrk.format("GET", "/api/v1/products?limit=20") end
  if kind == 1 then return wrk.format("GET", "/api/v1/products/" .. ((sent % products) + 1)) end
  return wrk.format("GET", "/api/v1/products/popular?days=3&limit=5")
end
