-- A Braze send: USERS users, each rendered RENDERS times back to back (HTML, text, AMP), spread over
-- the threads; each thread stops after its share and drops a marker file so run.py can end wrk.
dofile(os.getenv("BENCH_LUA") .. "/common.lua")
local users = tonumber(os.getenv("BENCH_USERS") or "5000")
local renders = tonumber(os.getenv("BENCH_RENDERS") or "3")
local nthreads = tonumber(os.getenv("BENCH_THREADS") or "2")
local prefix = os.getenv("BENCH_PREFIX") or "send"
local marker = os.getenv("BENCH_MARKER")
local sent, received = 0, 0
wrk.headers["Authorization"] = os.getenv("BENCH_AUTH")

local function quota()
   -- users tid, tid + nthreads, ... below `users`
   return math.floor((users - 1 - tid) / nthreads + 1) * renders
end

function request()
   local k = math.floor(sent / renders)
   sent = sent + 1
   local user = tid + k * nthreads
   local tag = "send"
   if user >= users then
      -- past the quota while other connections are still busy: repeat a cached user, tagged so
      -- its answer is not counted as part of the send
      user, tag = tid, "extra"
   end
   return wrk.format("GET", "/v1/wallets/" .. prefix .. "-" .. user, {["X-Request-ID"] = tag, ["Authorization"] = wrk.headers["Authorization"]})
end

function response(status, headers, body)
   if headers["X-Request-ID"] ~= "send" then
      return
   end
   received = received + 1
   if received == quota() then
      local f = io.open(marker .. "." .. tid, "w")
      f:write(tostring(received))
      f:close()
      wrk.thread:stop()
   end
end
