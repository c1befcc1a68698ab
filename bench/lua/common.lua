-- Shared by the workload scripts (wrk 4): per-request bearer tokens, a request
-- quota per thread, response counts by status, and one JSON summary line.
--
-- Arguments after `--`: <tokens file> <requests per thread> [workload args...]
--
-- wrk keeps running until its -d deadline even when every thread has
-- stopped, and has no wall clock: each thread notes its own start and finish
-- (date +%s%N) and drops a marker file in $BENCH_MARKERS when done, so the
-- driver can interrupt wrk (SIGINT makes it report at once) and the rate is
-- answered requests over the real elapsed time.

local threads = {}
local thread_count = 0

function setup(thread)
  thread:set("thread_index", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

counts = {}
answered = 0
sent = 0
tokens = {}
quota = 0

-- Every thread takes its own slice of the tokens, so no two threads act as
-- one user at the same time unless the workload wants it.
local function now_ns()
  local clock = io.popen("date +%s%N")
  local value = tonumber(clock:read("*l"))
  clock:close()
  return value
end

function load_common(args)
  for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
  quota = tonumber(args[2])
  start_ns = now_ns()
  finish_ns = 0
end

-- The token for this thread's n-th request.
function token_for(n)
  return tokens[((thread_index * quota + n) % #tokens) + 1]
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
  answered = answered + 1
  if answered == quota then
    finish_ns = now_ns()
    local markers = os.getenv("BENCH_MARKERS")
    if markers then
      local marker = io.open(markers .. "/" .. thread_index .. "-" .. finish_ns, "w")
      marker:close()
    end
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local totals = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("counts")) do
      totals[tostring(status)] = (totals[tostring(status)] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(totals) do parts[#parts + 1] = string.format('"%s":%d', status, n) end
  local first, last = nil, 0
  for _, thread in ipairs(threads) do
    local start, finish = thread:get("start_ns"), thread:get("finish_ns")
    if first == nil or start < first then first = start end
    if finish > last then last = finish end
  end
  local elapsed_us = summary.duration
  if last > 0 then elapsed_us = math.floor((last - first) / 1000) end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"errors":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,"statuses":{%s}}\n',
    summary.requests, elapsed_us, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, table.concat(parts, ",")))
end
