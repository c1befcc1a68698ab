-- Charges: 1,000 KRW with a new idempotency key each time.
-- Args: <tokens> <requests per thread>
dofile("bench/lua/common.lua")

function init(args)
  load_common(args)
end

function request()
  sent = sent + 1
  local headers = {
    ["Authorization"] = "Bearer " .. token_for(sent),
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = "charge-" .. thread_index .. "-" .. sent,
  }
  return wrk.format("POST", "/api/v1/wallet/charges", headers, '{"amount":1000}')
end
