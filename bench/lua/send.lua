-- A Braze send: USERS users, each rendered RENDERS times back to back (HTML, text, AMP), spread over
-- the threads; each thread stops after its share and drops a marker file so run.py can end wrk.
-- With INSTANCES > 1, one wrk per instance runs this script: render r of user k goes to instance
-- (k + r) % INSTANCES (a load balancer in front of them), so every user's renders meet on both.
dofile(os.getenv("BENCH_LUA") .. "/common.lua")
local users = tonumber(os.getenv("BENCH_USERS") or "5000")
local renders = tonumber(os.getenv("BENCH_RENDERS") or "3")
local nthreads = tonumber(os.getenv("BENCH_THREADS") or "2")
local instances = tonumber(os.getenv("BENCH_INSTANCES") or "1")
local instance = tonumber(os.getenv("BENCH_INSTANCE") or "0")
local prefix = os.getenv("BENCH_PREFIX") or "send"
local marker = os.getenv("BENCH_MARKER")
local received, quota = 0, 0
local user, render = nil, -1
wrk.headers["Authorization"] = os.getenv("BENCH_AUTH")

local function mine(k, r)
   return (k + r) % instances == instance
end

function init(args)
   -- this thread's users are tid, tid + nthreads, ... below `users`
   for k = tid, users - 1, nthreads do
      for r = 0, renders - 1 do
         if mine(k, r) then quota = quota + 1 end
      end
   end
   user = tid
end

local function next_pair()
   -- the next (user, render) of this thread and instance, or nil past the end
   while user < users do
      render = render + 1
      if render >= renders then
         render, user = 0, user + nthreads
      end
      if user < users and mine(user, render) then
         return user
      end
   end
   return nil
end

local last_answer = os.time()

local function finish()
   -- the marker holds how many of this thread's renders were answered
   local f = io.open(marker .. "." .. instance .. "." .. tid, "w")
   f:write(tostring(received))
   f:close()
   wrk.thread:stop()
end

function request()
   local k, tag = next_pair(), "send"
   if k == nil then
      if os.time() - last_answer > 6 then
         -- every render was sent and none has been answered for longer than wrk's 5 s timeout:
         -- the rest were lost (a timeout or a closed connection, which wrk does not report to
         -- the script); stop instead of waiting for them until the run's limit
         finish()
      end
      -- past the quota while other connections are still busy: repeat a cached user, tagged so
      -- its answer is not counted as part of the send
      k, tag = tid, "extra"
   end
   return wrk.format("GET", "/v1/wallets/" .. prefix .. "-" .. k, {["X-Request-ID"] = tag, ["Authorization"] = wrk.headers["Authorization"]})
end

function response(status, headers, body)
   if headers["X-Request-ID"] ~= "send" then
      return
   end
   received = received + 1
   last_answer = os.time()
   if received == quota then
      finish()
   end
end
