"""Profile a cache hit two ways; writes bench/profile-hits.txt. Run: `.venv/bin/python bench/profile_hits.py`.

1. py-spy (if installed: `pip install py-spy`) samples the service's gunicorn worker while wrk sends
   cache hits: where the whole process spends its time, gunicorn and gevent included.
2. cProfile, CPU time, of the fast path alone called in-process under gevent's monkey-patching (as
   in the worker): our own part of a hit, function by function, and its cost in µs of CPU.
"""
from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "profile-hits.txt"


# py-spy's "function (/path/to/site-packages/module.py:123)" -> "function (module.py)"
FRAME = re.compile(r" \((?:/[^)]*/)?(?:site-packages/|lib/python3\.\d+/)?([^)]*?)(?::\d+)?\)$")


def top_table(collapsed: str, rows: int = 30) -> str:
    """Self and inclusive shares per function from py-spy's collapsed stacks."""
    own, inclusive, total = collections.Counter(), collections.Counter(), 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [re.sub(FRAME, r" (\1)", f) for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"{total} samples", "", "self %   function"]
    lines += [f"{100 * n / total:6.1f}  {f}" for f, n in own.most_common(rows)]
    lines += ["", "incl %   function"]
    lines += [f"{100 * n / total:6.1f}  {f}" for f, n in inclusive.most_common(rows)]
    return "\n".join(lines)


def sample_worker(seconds: int = 8) -> str:
    """py-spy's top table of the service's worker under wrk's cache hits."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(spy):
        return "(py-spy is not installed: pip install py-spy)"
    sys.path.insert(0, str(ROOT))
    from bench.run import configure, service, stand_in, warm_hits, wrk

    upstream = stand_in()
    try:
        configure(upstream, 0.0)
        svc = service(upstream.url)
        try:
            warm_hits(svc.url)
            worker = subprocess.run(["pgrep", "-P", str(svc.proc.pid)], capture_output=True,
                                    text=True).stdout.split()[0]
            raw = Path(f"/tmp/wp-profile-{os.getpid()}.txt")
            proc = subprocess.Popen([spy, "record", "-p", worker, "-d", str(seconds), "-r", "250",
                                     "-f", "raw", "-o", str(raw), "--nonblocking"], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            run = wrk(svc.url, "hits.lua", 50, seconds + 1, env={"BENCH_WARM": "100"})
            proc.communicate(timeout=60)
            text = raw.read_text()
            raw.unlink()
        finally:
            svc.close()
    finally:
        upstream.close()
    return f"wrk: {run['rps']:.0f} req/s of cache hits during the sampling\n\n" + top_table(text)


def profile_fast_path(n: int = 20000) -> str:
    """cProfile (CPU time) of the fast path answering `n` cache hits in-process, under gevent."""
    code = f"""
from gevent import monkey; monkey.patch_all()
import cProfile, io, os, pstats, sys, time
os.environ["WALLET_PROXY_SANDBOX"] = "1"
from wallet_proxy import create_app
from wallet_proxy.settings import parse
app = create_app(parse({{"WALLET_PROXY_CLIENTS": "bench:bench-secret", "WALLET_PROXY_SANDBOX": "1"}}))
sys.stderr = open(os.devnull, "w")  # the access line is written, as in production, to a sink
environ = {{"REQUEST_METHOD": "GET", "PATH_INFO": "/v1/wallets/warm-1", "QUERY_STRING": "",
           "SERVER_NAME": "x", "SERVER_PORT": "80", "wsgi.url_scheme": "http", "SERVER_PROTOCOL": "HTTP/1.1",
           "HTTP_AUTHORIZATION": "Basic YmVuY2g6YmVuY2gtc2VjcmV0", "wsgi.input": io.BytesIO()}}
def hit():
    return b"".join(app(dict(environ), lambda status, headers: None))
hit(); hit()
started = time.process_time()
for _ in range({n}):
    hit()
per = (time.process_time() - started) / {n} * 1e6
assert app.wsgi_app.answered >= {n}
profile = cProfile.Profile(time.process_time)
profile.enable()
for _ in range({n}):
    hit()
profile.disable()
out = io.StringIO()
pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(40)
print(f"{{per:.1f}} µs of CPU per cache hit in the fast path (without the profiler)")
print(out.getvalue())
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    if proc.returncode:
        return "fast path profile failed:\n" + proc.stderr[-3000:]
    text = proc.stdout.replace(str(ROOT) + "/", "").replace(str(Path(sys.executable).parent.parent) + "/", "")
    return re.sub(r"/[^ ]*/lib/python3\.\d+/", "", text)


def main() -> int:
    load = os.getloadavg()
    parts = [f"# Profile of a cache hit ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"load average {load[0]:.1f} on {os.cpu_count()} CPUs)", "",
             "## 1. py-spy, the whole gunicorn worker under wrk -c50 cache hits (wall-clock samples)", "",
             sample_worker(), "",
             "## 2. cProfile (CPU time) of the fast path alone, in-process under gevent", "",
             profile_fast_path()]
    OUT.write_text("\n".join(parts) + "\n")
    print(OUT.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
