-- wrk script: GET /api/products/{1..4}, anonymous (so the gateway's limit
-- counts every request against 127.0.0.1), then the figures the README
-- reports.
math.randomseed(42)

request = function()
  local product = math.random(1, 4)
  return wrk.format("GET", "/api/products/" .. product)
end

done = function(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local errors = summary.errors
  io.write(string.format("requests %d in %.1f s: %.0f req/s\n",
    summary.requests, seconds, summary.requests / seconds))
  io.write(string.format("latency p50 %.2f ms, p95 %.2f ms, p99 %.2f ms, max %.2f ms\n",
    latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
  io.write(string.format("non-2xx %d, socket errors %d\n", errors.status,
    errors.connect + errors.read + errors.write + errors.timeout))
end
