-- Order storm: funded users order 1 unit of a random product among <products>
-- (or always product 1 when <products> is 1); the users whose line in the
-- tokens file carries a user-coupon id use it. Every request has its own key.
-- Args: <tokens> <requests per thread> <products>
dofile("bench/lua/common.lua")

function init(args)
  load_common(args)
  products = tonumber(args[3])
  math.randomseed(thread_index * 7919 + os.time())
end

function request()
  sent = sent + 1
  local token, coupon = token_for(sent):match("^(%S+)%s*(%d*)$")
  local product = math.random(1, products)
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
