-- Distinct users with wallets of BENCH_SIZE offers: every request a miss (bench/cpu_per_miss.py).
dofile(os.getenv("BENCH_LUA") .. "/common.lua")
local prefix = os.getenv("BENCH_PREFIX") or "miss"
local size = os.getenv("BENCH_SIZE") or "5"
local n = 0
wrk.headers["Authorization"] = os.getenv("BENCH_AUTH")

function request()
   n = n + 1
   return wrk.format("GET", "/v1/wallets/n" .. size .. "-" .. prefix .. "-" .. tid .. "-" .. n)
end
