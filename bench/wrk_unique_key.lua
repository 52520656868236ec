-- wrk cross-check of `make bench` (PERFORMANCE.md): POST a payment intent with a unique
-- Idempotency-Key on every request. Environment: PG_TOKEN (agent token, optional),
-- PG_BODY (form body, default amount=1000&currency=usd).
-- Each wrk thread has its own Lua state: the key is run id . thread id . counter.

local counter = 0
local thread_id = 0
local run_id = string.format("%d%04d", os.time(), math.random(0, 9999))
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_id", #threads)
end

function init(args)
  math.randomseed(os.time() + (thread_id or 0))
  run_id = string.format("%d%06d", os.time(), math.random(0, 999999))
  wrk.method = "POST"
  wrk.body = os.getenv("PG_BODY") or "amount=1000&currency=usd"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  local token = os.getenv("PG_TOKEN")
  if token and token ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. token
  end
end

function request()
  counter = counter + 1
  wrk.headers["Idempotency-Key"] = "wrk-" .. run_id .. "-" .. thread_id .. "-" .. counter
  return wrk.format()
end
