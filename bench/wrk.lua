-- wrk script for bench/http_bench.py.
--
-- Always: done() prints one line "BENCH_JSON {...}" with the numbers the Python side
-- needs (rate inputs, p50/p99, errors), so it never parses wrk's human-readable text.
--
-- With BENCH_POST_FILE set: every request is a POST taken from that file, one line
-- "user_id token idempotency_key [path]" each (path: /score unless given), and no line
-- is ever sent twice.
-- Script args (after "--"): first index to use, number of wrk threads. Thread i sends
-- lines first+i, first+i+T, first+i+2T, ... so threads never share a line.
-- Without BENCH_POST_FILE no request() is defined and wrk sends its static GET, so
-- the GET and nginx runs pay no per-request Lua cost.

local post_file = os.getenv("BENCH_POST_FILE")
local threads = {}
local next_id = 0

function setup(thread)
   -- Runs in the main Lua state, once per thread, before init().
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

if post_file then
   local lines = {}
   local cursor = 1
   generated = 0      -- globals: done() reads them through thread:get()
   last_index = -1
   exhausted = 0
   statuses = {}

   function init(args)
      local first = tonumber(args[1])
      local stride = tonumber(args[2])
      local index = 0
      for line in io.lines(post_file) do
         if index >= first and (index - first) % stride == id then
            table.insert(lines, { index, line })
         end
         index = index + 1
      end
   end

   function request()
      local entry = lines[cursor]
      if entry == nil then
         -- Never reuse a key: stop this thread and let Python report the run as invalid.
         exhausted = exhausted + 1
         wrk.thread:stop()
         return wrk.format("GET", "/healthz")
      end
      cursor = cursor + 1
      generated = generated + 1
      last_index = entry[1]
      local user, token, key, path = entry[2]:match("^(%S+) (%S+) (%S+) ?(%S*)$")
      if path == "" then path = "/score" end
      local body = '{"user_id":"' .. user .. '","increment":1}'
      return wrk.format("POST", path, {
         ["Authorization"] = "Bearer " .. token,
         ["Content-Type"] = "application/json",
         ["Idempotency-Key"] = key,
      }, body)
   end

   function response(status, headers, body)
      statuses[status] = (statuses[status] or 0) + 1
   end
end

local function json_object(tbl)
   local parts = {}
   for key, value in pairs(tbl) do
      table.insert(parts, string.format('"%s":%s', tostring(key), tostring(value)))
   end
   return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
   local out = {
      requests = summary.requests,
      duration_us = summary.duration,
      bytes = summary.bytes,
      p50_us = latency:percentile(50),
      p99_us = latency:percentile(99),
      max_us = latency.max,
      errors = json_object(summary.errors),
   }
   if post_file then
      local codes, total, last, exhausted = {}, 0, -1, 0
      for _, thread in ipairs(threads) do
         for code, count in pairs(thread:get("statuses")) do
            codes[code] = (codes[code] or 0) + count
         end
         total = total + thread:get("generated")
         last = math.max(last, thread:get("last_index"))
         exhausted = exhausted + thread:get("exhausted")
      end
      out.statuses = json_object(codes)
      out.generated = total
      out.last_index = last
      out.exhausted = exhausted
   end
   io.write("BENCH_JSON " .. json_object(out) .. "\n")
end
