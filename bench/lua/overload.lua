-- Overload: distinct users only (every request a SessionM call or a refusal), counting answers by
-- kind: 200s (goodput), 503s with Retry-After, and anything else.
dofile(os.getenv("BENCH_LUA") .. "/common.lua")
local prefix = os.getenv("BENCH_PREFIX") or "over"
local n = 0
ok, refused, bare503, other = 0, 0, 0, 0
wrk.headers["Authorization"] = os.getenv("BENCH_AUTH")

function request()
   n = n + 1
   return wrk.format("GET", "/v1/wallets/" .. prefix .. "-" .. tid .. "-" .. n)
end

function response(status, headers, body)
   if status == 200 then
      ok = ok + 1
   elseif status == 503 then
      if headers["Retry-After"] then refused = refused + 1 else bare503 = bare503 + 1 end
   else
      other = other + 1
   end
end

function done(summary, latency, requests)
   local totals = {ok = 0, refused = 0, bare503 = 0, other = 0}
   for _, thread in ipairs(threads) do
      for key, _ in pairs(totals) do
         totals[key] = totals[key] + thread:get(key)
      end
   end
   io.write(string.format('COUNTS {"ok": %d, "refused_retry_after": %d, "503_without_retry_after": %d, ' ..
                          '"other": %d}\n', totals.ok, totals.refused, totals.bare503, totals.other))
   summary_line(summary, latency)
end
