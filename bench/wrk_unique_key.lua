-- wrk cross-check of `make bench` (PERFORMANCE.md): POST a payment intent with a unique
-- Idempotency-Key on every request, so every request is a new decision (a repeated key would be
-- a cheap replay and inflate the figure). Environment: PG_TOKEN (agent token, optional),
-- PG_BODY (form body, default amount=1000&currency=usd).
--
-- Each wrk thread runs this file in its own Lua state; the key is
-- "wrk-" .. 64 random bits of this thread .. "-" .. thread number .. "-" .. counter.

local counter = 0
local threads = {}
local prefix = "wrk-unset-"

-- Runs in the main state: give each thread its number (the global `thread_number` there).
function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_number", #threads)
end

local function random_hex()
  local f = io.open("/dev/urandom", "rb")
  if not f then
    return string.format("%d%06d", os.time(), math.random(0, 999999))
  end
  local bytes = f:read(8)
  f:close()
  return (bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

function init(args)
  prefix = "wrk-" .. random_hex() .. "-" .. tostring(thread_number or 0) .. "-"
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
  wrk.headers["Idempotency-Key"] = prefix .. counter
  return wrk.format()
end
