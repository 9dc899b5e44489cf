-- wrk script for bench/http_wrk.py: each connection thread posts its own share of the
-- charges in WRK_BODIES (one JSON object per line; thread k takes lines k, k+T, k+2T, ...),
-- one per request, and says at the end how many it generated, as one JSON line.
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local bodies = {}
sent = 0  -- a global: done() reads it with thread:get
local headers = {}

function init(args)
  local count = tonumber(os.getenv("WRK_THREADS"))
  local line_no = 0
  for line in io.lines(os.getenv("WRK_BODIES")) do
    if line_no % count == id then
      table.insert(bodies, line)
    end
    line_no = line_no + 1
  end
  headers["Authorization"] = "Bearer " .. os.getenv("WRK_KEY")
  headers["Content-Type"] = "application/json"
end

function request()
  sent = sent + 1
  local body = bodies[sent]
  if body == nil then
    body = "{}"  -- out of charges: a 422 the bench reports as too few bodies
  end
  return wrk.format("POST", "/v1/charges", headers, body)
end

function done(summary, latency, requests)
  local generated = {}
  for _, thread in ipairs(threads) do
    table.insert(generated, string.format("%d", thread:get("sent")))
  end
  io.write(string.format('{"generated": [%s], "p50_us": %d, "p99_us": %d}\n',
    table.concat(generated, ","), latency:percentile(50), latency:percentile(99)))
end
