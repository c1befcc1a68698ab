-- Order storm: funded users order 1 unit of a random product among <products>
-- (or always the first when <products> is 1); the users whose line in the
-- tokens file carries a user-coupon id use it. Every request has its own key.
-- Products are numbered from <first product> (1 unless given).
-- Args: <tokens> <requests per thread> <products> [first product]
dofile("bench/lua/common.lua")

function init(args)
  load_common(args)
  products = tonumber(args[3])
  first_product = tonumber(args[4] or "1")
  math.randomseed(thread_index * 7919 + os.time())
end

function request()
  sent = sent + 1
  local token, coupon = token_for(sent):match("^(%S+)%s*(%d*)$")
  local product = first_product + math.random(0, products - 1)
  local body = '{"items":[{"productId":' .. product .. ',"quantity":1}]'
  if coupon ~= "" then body = body .. ',"userCouponId":' .. coupon end
  body = body .. "}"
  local headers = {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = "bench-" .. thread_index .. "-" .. sent,
  }
  return wrk.format("POST", "/api/v1/orders", headers, body)
end
