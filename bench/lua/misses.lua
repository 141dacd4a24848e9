-- Distinct users only: every request is a cache miss (a SessionM call).
dofile(os.getenv("BENCH_LUA") .. "/common.lua")
local prefix = os.getenv("BENCH_PREFIX") or "miss"
local n = 0
wrk.headers["Authorization"] = os.getenv("BENCH_AUTH")

function request()
   n = n + 1
   return wrk.format("GET", "/v1/wallets/" .. prefix .. "-" .. tid .. "-" .. n)
end
