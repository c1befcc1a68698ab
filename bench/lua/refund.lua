-- Refund storm: an admin refunds 1 unit of a random paid order among <orders>
-- (each seeded with 4 units of product 1 + id % 100), so refunds of one order
-- race each other and some ask for units already refunded (409). Every
-- request has its own key.
-- Args: <tokens> <requests per thread> <orders> <instance> (keys differ per
-- instance: every wrk process refunds as the same admin)
dofile("bench/lua/common.lua")

function init(args)
  load_common(args)
  orders = tonumber(args[3])
  instance = args[4]
  math.randomseed(thread_index * 7919 + os.time())
end

function request()
  sent = sent + 1
  local order = math.random(1, orders)
  local body = '{"items":[{"productId":' .. (1 + order % 100) .. ',"quantity":1}]}'
  local headers = {
    ["Authorization"] = "Bearer " .. token_for(sent),
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = "bench-refund-" .. instance .. "-" .. thread_index .. "-" .. sent,
  }
  return wrk.format("POST", "/api/v1/admin/orders/" .. order .. "/refunds", headers, body)
end
