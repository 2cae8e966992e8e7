-- wrk script for benches/e2e/run.sh.
-- * At the end prints one line "WRKJSON {...}" (requests, errors, latency percentiles in us).
-- * With env WRK_UNIQUE=1 every request gets a distinct query ("?u=<thread>-<n>", or
--   "&u=..." when the URL already has a query), so every request is a different cache key.
local unique = os.getenv("WRK_UNIQUE") == "1"
local counter = 0
local nthreads = 0

setup = function(thread)
  thread:set("tid", nthreads)
  nthreads = nthreads + 1
end

if unique then
  local sep = string.find(wrk.path, "?", 1, true) and "&" or "?"
  request = function()
    counter = counter + 1
    return wrk.format(nil, wrk.path .. sep .. "u=" .. tostring(tid or 0) .. "-" .. counter)
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d,\"err_connect\":%d,\"err_read\":%d," ..
    "\"err_write\":%d,\"err_status\":%d,\"err_timeout\":%d,\"lat_mean_us\":%.1f," ..
    "\"lat_max_us\":%d,\"p50_us\":%d,\"p90_us\":%d,\"p99_us\":%d,\"p999_us\":%d}\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
