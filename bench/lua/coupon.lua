-- Coupon storm: every request is a distinct user issuing coupon <id>.
-- Args: <tokens> <requests per thread> <coupon id>
dofile("bench/lua/common.lua")

function init(args)
  load_common(args)
  path = "/api/v1/coupons/" .. args[3] .. "/issue"
end

function request()
  sent = sent + 1
  return wrk.format("POST", path, { ["Authorization"] = "Bearer " .. token_for(sent) }, nil)
end
