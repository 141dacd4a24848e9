-- Cache hits: cycle over the prewarmed users warm-0 .. warm-(WARM-1).
dofile(os.getenv("BENCH_LUA") .. "/common.lua")
local warm = tonumber(os.getenv("BENCH_WARM") or "100")
local n = 0
wrk.headers["Authorization"] = os.getenv("BENCH_AUTH")

function request()
   n = n + 1
   return wrk.format("GET", "/v1/wallets/warm-" .. (n % warm))
end
