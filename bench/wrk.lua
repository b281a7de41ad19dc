-- wrk script for bench/pay.py: counts responses by status and prints them as JSON.
-- Args (after --): METHOD PATH [API_KEY [BODY [RUN_ID]]]. With a run id, every request carries
-- its own Idempotency-Key (RUN_ID-thread-sequence), so each POST /pay is a new payment; an
-- empty BODY sends none (GET).

local threads = {}
local next_id = 1

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  method, path, key, body, run = args[1], args[2], args[3], args[4], args[5]
  if body == "" then body = nil end
  seq = 0
  statuses = {}
  headers = {}
  if key then
    headers["Authorization"] = "Bearer " .. key
  end
  if body then
    headers["Content-Type"] = "application/json"
  end
end

function request()
  if run then
    seq = seq + 1
    headers["Idempotency-Key"] = run .. "-" .. tid .. "-" .. seq
  end
  return wrk.format(method, path, headers, body)
end

function response(status, hdrs, resp_body)
  local k = tostring(status)
  statuses[k] = (statuses[k] or 0) + 1
end

function done(summary, latency, requests)
  local merged = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do
      merged[k] = (merged[k] or 0) + v
    end
  end
  local parts = {}
  for k, v in pairs(merged) do
    table.insert(parts, string.format('"%s": %d', k, v))
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "statuses": {%s}, ' ..
    '"socket_errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, table.concat(parts, ", "),
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
