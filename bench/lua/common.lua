-- Shared by the bench scripts: thread ids, auth header, and a one-line JSON summary for run.py.
threads = {}  -- global: a script's done() reads per-thread counters from it
local counter = 0

function setup(thread)
   thread:set("tid", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

function summary_line(summary, latency)
   local statuses = 0
   io.write(string.format(
      'BENCH {"requests": %d, "duration_us": %d, "non2xx": %d, "connect_errors": %d, ' ..
      '"read_errors": %d, "write_errors": %d, "timeouts": %d, "p50_us": %d, "p99_us": %d, ' ..
      '"max_us": %d, "mean_us": %.1f}\n',
      summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
      summary.errors.read, summary.errors.write, summary.errors.timeout,
      latency:percentile(50), latency:percentile(99), latency.max, latency.mean))
end

function done(summary, latency, requests)
   summary_line(summary, latency)
end
