-- wrk script for bench/load.py: POST /v1/events with a fresh event each request.
--
-- Environment: BENCH_KEY (API key), BENCH_PREFIX (makes event ids unique per
-- run), BENCH_CUSTOMERS (customer ids c-0 .. c-(N-1)), BENCH_DELAY_MS (pause
-- before each request on a connection, to hold a lower rate; 0 for as fast as
-- possible). Four purchases in five events, at the till or online, and
-- interactions by name; the mix the rule pack in bench/rulepack.py is written for.

local key = os.getenv("BENCH_KEY") or ""
local prefix = os.getenv("BENCH_PREFIX") or "e"
local customers = tonumber(os.getenv("BENCH_CUSTOMERS") or "10000")
local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "0")

local channels = { "pos", "pos", "pos", "web", "app" }
local categories = { "handmade", "lamps", "textiles", "kitchen", "garden", "kids" }
local interactions = { "social_follow", "review_posted", "newsletter_signup", "store_visit", "wishlist_add", "app_login" }

local threads = {}
local counter = 0

function setup(thread)
   thread:set("thread_id", #threads + 1)
   table.insert(threads, thread)
end

function init(args)
   math.randomseed(thread_id * 7919 + os.time())
   wrk.method = "POST"
   wrk.path = "/v1/events"
   wrk.headers["Authorization"] = "Bearer " .. key
   wrk.headers["Content-Type"] = "application/json"
end

local function occurred_at()
   return string.format("2026-%02d-%02dT%02d:%02d:%02dZ", math.random(3, 10), math.random(1, 28),
      math.random(8, 20), math.random(0, 59), math.random(0, 59))
end

function request()
   counter = counter + 1
   local id = string.format("%s-%d-%d", prefix, thread_id, counter)
   local customer = "c-" .. (math.random(customers) - 1)
   local body
   if math.random() < 0.8 then
      local price = math.random(500, 40000) / 100
      local quantity = math.random(1, 3)
      body = string.format(
         '{"event_id":"%s","type":"purchase","customer_id":"%s","occurred_at":"%s","channel":"%s",' ..
         '"store_id":"madrid-%d","order":{"order_id":"o-%s","total":%.2f,"currency":"EUR","items":[' ..
         '{"sku":"SKU-%d","category":"%s","quantity":%d,"unit_price":%.2f}]}}',
         id, customer, occurred_at(), channels[math.random(#channels)], math.random(1, 20), id,
         price * quantity, math.random(1, 500), categories[math.random(#categories)], quantity, price)
   else
      body = string.format(
         '{"event_id":"%s","type":"interaction","name":"%s","customer_id":"%s","occurred_at":"%s",' ..
         '"channel":"web","attributes":{"rating":%d}}',
         id, interactions[math.random(#interactions)], customer, occurred_at(), math.random(1, 5))
   end
   return wrk.format(nil, nil, nil, body)
end

if pause > 0 then
   -- Uniform between half and one and a half times the pause: connections
   -- drift apart instead of sending in step, as independent tills do.
   function delay()
      return math.floor(pause * (0.5 + math.random()))
   end
end

function done(summary, latency, requests)
   local statuses = summary.errors.status
   io.write(string.format(
      'RESULT {"requests":%d,"duration_us":%d,"non_2xx":%d,"socket_errors":%d,' ..
      '"p50_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d}\n',
      summary.requests, summary.duration, statuses,
      summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
      latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
