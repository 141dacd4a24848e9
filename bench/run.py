"""Load benchmarks of wallet-proxy on loopback; writes bench/RESULTS.md. Run: `make bench`.

Everything runs here: a SessionM simulator (bench/upstream.py) under gunicorn gevent with real
latency, the service under the Procfile's gunicorn line, and wrk (Debian) with the Lua scripts in
bench/lua/. Each scenario is bounded in time; the whole run takes about three minutes.
"""
from __future__ import annotations

import base64
import gc
import glob
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
BIN = Path(sys.executable).parent
AUTH = ("bench", "bench-secret")
AUTH_HEADER = "Basic " + base64.b64encode(b"bench:bench-secret").decode()
LATENCY = 0.15
DURATION = int(os.environ.get("BENCH_DURATION", "8"))  # seconds per throughput run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_up(url: str, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            requests.get(url, timeout=0.5)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


class Server:
    """A gunicorn process on a free loopback port."""

    def __init__(self, argv: list[str], env: dict | None = None, probe: str = "/", cwd=ROOT,
                 log_path: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environ = {k: v for k, v in os.environ.items()
                   if not k.startswith(("SESSIONM_", "BRAZE_", "WALLET_PROXY_"))}
        environ.update(env or {}, PORT=str(self.port))
        self.proc = subprocess.Popen([str(BIN / "gunicorn"), *argv, "-b", f"127.0.0.1:{self.port}"],
                                     cwd=cwd, env=environ, stdout=subprocess.DEVNULL,
                                     stderr=open(log_path, "w") if log_path else subprocess.DEVNULL,
                                     start_new_session=True)
        wait_up(self.url + probe)

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def service(upstream_url: str, extra_argv=(), log_path: str | None = None, **env) -> Server:
    """The service on the Procfile's line (`gunicorn -c gunicorn.conf.py wsgi:app`)."""
    settings = {"SESSIONM_CONNECT_URL": upstream_url, "SESSIONM_CONNECT_AUTH": "YmVuY2g6YmVuY2g=",
                "SESSIONM_RETAILER_ID": "bench", "WALLET_PROXY_CLIENTS": "bench:bench-secret"}
    settings.update(env)
    return Server(["-c", "gunicorn.conf.py", *extra_argv, "wsgi:app"], settings, probe="/healthz",
                  log_path=log_path)


def app_durations(log_path: str) -> list[float]:
    """Milliseconds from arrival in the app to the answer, from the service's request log lines."""
    out = []
    with open(log_path) as lines:
        for line in lines:
            if line.startswith("{") and '"wallet_proxy.access"' in line:
                entry = json.loads(line)
                if entry.get("route", "").startswith("/v1/wallets"):
                    out.append(entry["duration_ms"])
    return out


def configure(upstream: Server, latency: float, fault: str = "") -> None:
    requests.post(f"{upstream.url}/_bench/config", params={"latency": latency, "fault": fault},
                  timeout=5).raise_for_status()


def upstream_calls(upstream: Server) -> int:
    return requests.get(f"{upstream.url}/_bench/calls", timeout=5).json()["calls"]


def wrk(url: str, script: str, connections: int, duration: int, threads: int = 2, timeout: int = 5,
        env: dict | None = None, until=None) -> dict:
    """Run wrk with a Lua script; return the script's summary (latencies in µs)."""
    environ = dict(os.environ, BENCH_LUA=str(BENCH / "lua"), BENCH_AUTH=AUTH_HEADER, **(env or {}))
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", f"--timeout={timeout}s",
            "-s", str(BENCH / "lua" / script), url]
    proc = subprocess.Popen(argv, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if until is not None:
        end = time.monotonic() + duration
        while proc.poll() is None and time.monotonic() < end:
            if until():
                proc.send_signal(signal.SIGINT)  # wrk prints its summary on SIGINT
                break
            time.sleep(0.05)
    out, _ = proc.communicate(timeout=duration + 30)
    line = next((l for l in out.splitlines() if l.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError("wrk gave no summary:\n" + out)
    result = json.loads(line[6:])
    counts = next((l for l in out.splitlines() if l.startswith("COUNTS ")), None)
    if counts is not None:
        result["counts"] = json.loads(counts[7:])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["command"] = " ".join(argv[:-3] + [f"bench/lua/{script}", "URL"])
    return result


def machine() -> dict:
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    mem_kb = next(int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines()
                  if l.startswith("MemTotal"))
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    return {"nproc": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem_kb / 1024 / 1024, 1),
            "python": platform.python_version(), "kernel": platform.release(), "wrk": wrk_version}


# --- scenarios ---------------------------------------------------------------------------------

def bench_hits(upstream: Server) -> dict:
    """(1) Cache hits vs a hello-world Flask app on the same gunicorn line."""
    configure(upstream, 0.0)
    # gunicorn.conf.py refuses to start without upstream settings unless the sandbox is asked for
    hello = Server(["-c", "gunicorn.conf.py", "bench.hello:app"], {"WALLET_PROXY_SANDBOX": "1"})
    try:
        hello_run = wrk(hello.url, "hello.lua", 50, DURATION)
    finally:
        hello.close()
    svc = service(upstream.url)
    try:
        for n in range(100):
            requests.get(f"{svc.url}/v1/wallets/warm-{n}", auth=AUTH, timeout=5).raise_for_status()
        hits = wrk(svc.url, "hits.lua", 50, DURATION, env={"BENCH_WARM": "100"})
    finally:
        svc.close()
    return {"hello": hello_run, "hits": hits, "ratio": hits["rps"] / hello_run["rps"]}


def bench_send(upstream: Server, users: int = 5000, renders: int = 3, connections: int = 200) -> dict:
    """(2) A simulated send: users x renders, connections, SessionM at 150 ms."""
    configure(upstream, LATENCY)
    svc = service(upstream.url)
    marker_dir = tempfile.mkdtemp(prefix="wp-bench-")
    marker = os.path.join(marker_dir, "done")
    try:
        result = wrk(svc.url, "send.lua", connections, 120, env={
            "BENCH_USERS": str(users), "BENCH_RENDERS": str(renders), "BENCH_THREADS": "2",
            "BENCH_PREFIX": f"send{int(time.time())}", "BENCH_MARKER": marker},
            until=done_when(lambda: len(glob.glob(marker + ".*")) == 2 or upstream_calls(upstream) >= users))
        calls = upstream_calls(upstream)
    finally:
        svc.close()
        shutil.rmtree(marker_dir, ignore_errors=True)
    return {"run": result, "users": users, "renders": renders, "connections": connections,
            "calls": calls, "calls_per_user": calls / users, "extra_requests": result["requests"] - users * renders}


def done_when(condition, grace: float = 2.0):
    """A wrk stop condition: `condition` held, then `grace` seconds for in-flight renders to land.

    (A render that hit a socket error never reaches the Lua response() hook, so the per-thread
    markers alone could wait forever; the SessionM call count is the backstop.)"""
    seen = []

    def check() -> bool:
        if not seen and condition():
            seen.append(time.monotonic())
        return bool(seen) and time.monotonic() - seen[0] >= grace

    return check


def bench_misses(upstream: Server, connections: int = 64, extra_argv=(), duration: int = DURATION,
                 **env) -> dict:
    """(3) Distinct-user misses: every request a SessionM call at 150 ms."""
    configure(upstream, LATENCY)
    svc = service(upstream.url, extra_argv, **env)
    try:
        result = wrk(svc.url, "misses.lua", connections, duration, env={"BENCH_PREFIX": f"m{time.time_ns()}"})
    finally:
        svc.close()
    target = 0.8 * min(connections, int(env.get("WALLET_PROXY_UPSTREAM_CONCURRENCY", 64))) / LATENCY
    return {"run": result, "connections": connections, "target_rps": target, "ratio": result["rps"] / target,
            "calls": upstream_calls(upstream)}


def warm_up(svc: Server, users: int = 64) -> None:
    """A few real misses first, as a worker in service has had: pooled upstream connections, code
    paths run once. A cold worker's first second is not what a send meets."""
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: requests.get(f"{svc.url}/v1/wallets/warm-up-{n}", auth=AUTH, timeout=5),
                      range(users)))


def bench_hung(upstream: Server, connections: int = 200, duration: int = 6) -> dict:
    """(4) SessionM hung: every answer must leave in under 2 s."""
    configure(upstream, 0.0)
    log_path = tempfile.mktemp(prefix="wp-bench-hung-", suffix=".log")
    svc = service(upstream.url, log_path=log_path)
    try:
        warm_up(svc)
        configure(upstream, 0.0, "fault-timeout")
        result = wrk(svc.url, "misses.lua", connections, duration, timeout=5,
                     env={"BENCH_PREFIX": f"h{time.time_ns()}"})
    finally:
        svc.close()
        configure(upstream, 0.0)
    inside = app_durations(log_path)
    os.unlink(log_path)
    return {"run": result, "under_2s": result["max_us"] < 2_000_000 and result["timeouts"] == 0,
            "app_max_ms": max(inside) if inside else None, "app_answers": len(inside)}


def bench_overload(upstream: Server, connections: int, duration: int = 8, slots: int = 64) -> dict:
    """(#14 target 2) Distinct users on `connections` connections against `slots` SessionM slots at
    150 ms: goodput (200s per second) vs slots / latency, every answer within 2 s at the client,
    every other answer a 503 with Retry-After. wrk re-sends at once after a 503 (Braze would wait
    for Retry-After), the harshest case for the service."""
    configure(upstream, LATENCY)
    log_path = tempfile.mktemp(prefix="wp-bench-overload-", suffix=".log")
    svc = service(upstream.url, log_path=log_path, WALLET_PROXY_UPSTREAM_CONCURRENCY=str(slots))
    try:
        warm_up(svc)
        configure(upstream, LATENCY)  # resets the call counter
        result = wrk(svc.url, "overload.lua", connections, duration, timeout=5,
                     env={"BENCH_PREFIX": f"o{time.time_ns()}"})
        calls = upstream_calls(upstream)
    finally:
        svc.close()
    details = {}
    with open(log_path) as lines:
        for line in lines:
            if line.startswith("{") and '"wallet_proxy.access"' in line:
                entry = json.loads(line)
                if entry["status"] >= 500:
                    key = f"{entry['status']} {entry.get('detail', '')}"
                    details[key] = details.get(key, 0) + 1
    os.unlink(log_path)
    seconds = result["duration_us"] / 1e6
    counts = result["counts"]
    capacity = slots / LATENCY
    goodput = counts["ok"] / seconds
    return {"run": result, "connections": connections, "slots": slots, "capacity": capacity,
            "goodput": goodput, "ratio": goodput / capacity, "calls_per_s": calls / seconds,
            "refusals_per_s": counts["refused_retry_after"] / seconds, "service_5xx": details,
            "within_2s": result["max_us"] < 2_000_000 and result["timeouts"] == 0
            and not (result["connect_errors"] + result["read_errors"] + result["write_errors"]),
            "only_503_retry_after": counts["503_without_retry_after"] == 0 and counts["other"] == 0}


def bench_memory(count: int = 100_000) -> dict:
    """(5) Memory of cached wallets in the in-process store (resident set growth), stored as the client does.

    Each user's SessionM answer is its own JSON text (its own user offer ids, dates and points, from
    the sandbox's 8-offer catalogue), decoded and normalised by the real code path
    (`sessionm.interpret`), so catalogue strings shared across users are shared here too.
    """
    from datetime import datetime, timezone

    from wallet_proxy.sandbox.connect import make_wallet
    from wallet_proxy.upstream.connect import interpret
    from wallet_proxy.upstream.transport import Reply
    from wallet_proxy.wallet.stores import Entry, MemoryStore

    def resident() -> int:
        gc.collect()
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    now = datetime.now(timezone.utc)
    store = MemoryStore(count, 3600)
    offers = 0
    before = resident()
    started = time.monotonic()
    for n in range(count):
        raw = json.dumps({"status": "ok", "payload": make_wallet(f"user-{n:06d}", "en-US", now)})
        wallet = interpret(Reply(200, {}, json.loads(raw), 0.0))
        offers += len(wallet["offers"])
        store.put(f"user-{n:06d}", "en-US", Entry(wallet, time.time()))
        del raw
    after = resident()
    return {"count": count, "bytes_total": after - before, "bytes_per_wallet": (after - before) / count,
            "avg_offers": offers / count, "seconds": time.monotonic() - started, "cached": len(store)}


# --- report --------------------------------------------------------------------------------------

def ms(us: float) -> str:
    return f"{us / 1000:.1f} ms"


def report(m: dict, r: dict, total_seconds: float) -> str:
    hits, send, misses, hung, mem, model = (r["hits"], r["send"], r["misses"], r["hung"], r["memory"],
                                           r["model"])
    s = send["run"]
    rows = [
        ("1. cache hits / hello-world Flask (same gunicorn line)",
         f"{hits['hits']['rps']:.0f} / {hits['hello']['rps']:.0f} req/s = **{hits['ratio']:.2f}**", "≥ 0.80",
         hits["ratio"] >= 0.80),
        (f"2. send: {send['users']:,} users × {send['renders']} renders, {send['connections']} connections, "
         "SessionM 150 ms",
         f"calls/users = **{send['calls_per_user']:.2f}** ({send['calls']:,}/{send['users']:,}); "
         f"p99 **{ms(s['p99_us'])}**; non-2xx **{s['non2xx']}**, socket errors "
         f"{s['connect_errors'] + s['read_errors'] + s['write_errors'] + s['timeouts']}",
         "1.00; < 500 ms; 0",
         abs(send["calls_per_user"] - 1) < 0.005 and s["p99_us"] < 500_000 and s["non2xx"] == 0),
        (f"3. distinct-user misses, {misses['connections']} connections, SessionM 150 ms",
         f"{misses['run']['rps']:.0f} req/s = **{misses['ratio']:.2f}** × (concurrency ÷ latency = "
         f"{misses['target_rps'] / 0.8:.0f})", "≥ 0.80", misses["ratio"] >= 0.80),
        ("4. SessionM hung, 200 connections",
         f"max **{ms(hung['run']['max_us'])}**, p99 {ms(hung['run']['p99_us'])} at the client; "
         f"max **{hung['app_max_ms']:.0f} ms** from arrival in the app to its answer "
         f"(request log, {hung['app_answers']:,} answers); "
         f"{hung['run']['requests']:,} answers ({hung['run']['non2xx']:,} non-2xx: 503/504 by design), "
         f"wrk timeouts {hung['run']['timeouts']}", "100 % < 2 s", hung["under_2s"]),
        ("5. memory per cached wallet (resident set growth)",
         f"**{mem['bytes_per_wallet']:,.0f} B** per wallet (avg {mem['avg_offers']:.1f} offers); "
         f"**{mem['bytes_total'] / 2**20:,.0f} MiB** for {mem['count']:,}", "reported", True),
    ]
    lines = [
        "# Benchmark results", "",
        f"Measured in one run of `make bench` (`.venv/bin/python bench/run.py`), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{total_seconds:.0f} s in total. Everything on loopback on one machine: the load generator (wrk), the "
        "service (the Procfile's `gunicorn -c gunicorn.conf.py wsgi:app`, one gevent worker) and the SessionM "
        "simulator (`bench/upstream.py` under gunicorn gevent, real sleeps for latency) share the CPUs, so "
        "absolute figures are low; the ratios are the point.", "",
        "## Machine", "",
        f"- nproc: {m['nproc']}; CPU: {m['cpu']}; memory: {m['memory_gib']} GiB",
        f"- Python {m['python']}, Linux {m['kernel']}, {m['wrk']}", "",
        "## Results", "",
        "| scenario | measured | target | met |", "| --- | --- | --- | --- |",
    ]
    lines += [f"| {a} | {b} | {c} | {'yes' if d else '**no**'} |" for a, b, c, d in rows]
    lines += ["", "## Serving model: gevent vs gthread", "",
              f"Distinct-user misses with {model['connections']} connections held open at once, SessionM at "
              "150 ms, `WALLET_PROXY_UPSTREAM_CONCURRENCY=64`, one worker process:", "",
              "| worker | req/s | p50 | p99 | max | non-2xx | socket errors/timeouts |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, run in model["runs"].items():
        x = run["run"]
        lines.append(f"| {name} | {x['rps']:.0f} | {ms(x['p50_us'])} | {ms(x['p99_us'])} | {ms(x['max_us'])} | "
                     f"{x['non2xx']} | {x['connect_errors'] + x['read_errors'] + x['write_errors']}/{x['timeouts']} |")
    lines += ["", "## Commands", "",
              f"- hits: `{hits['hits']['command']}` (100 prewarmed users), hello: `{hits['hello']['command']}`",
              f"- send: `{s['command']}`, stopped when every thread's share is answered "
              f"({send['extra_requests']} extra requests to an already-cached user were in flight at the end and are in the latency figures)",
              f"- misses: `{misses['run']['command']}`",
              f"- hung: `{hung['run']['command']}` with the simulator's `fault-timeout` (no answer for 30 s)",
              f"- memory: {mem['count']:,} sandbox SessionM answers, one per user, each decoded and normalised by "
              f"`sessionm.interpret` into a `MemoryStore`, in-process, {mem['seconds']:.1f} s", "",
              "Raw figures:", "", "```json", json.dumps(r, indent=1, default=str)[:6000], "```", ""]
    return "\n".join(lines)


def main() -> int:
    """Run every scenario once and write bench/RESULTS.md."""
    if shutil.which("wrk") is None:
        print("wrk is required: sudo apt-get install -y wrk", file=sys.stderr)
        return 2
    started = time.monotonic()
    m = machine()
    upstream = Server(["-k", "gevent", "-w", "1", "--worker-connections", "10000", "--chdir", str(BENCH),
                       "--no-control-socket", "upstream:app"], probe="/_bench/calls")
    results = {}
    import redis_hits  # Redis-mode hits vs memory-mode hits (its own module and RESULTS section)

    try:
        steps = [("hits", lambda: bench_hits(upstream)), ("send", lambda: bench_send(upstream)),
                 ("misses", lambda: bench_misses(upstream)), ("hung", lambda: bench_hung(upstream)),
                 ("redis_hits", lambda: redis_hits.bench_redis_hits(upstream))]
        for name, step in steps:
            print(f"bench: {name} ...", flush=True)
            results[name] = step()
        print("bench: serving model ...", flush=True)
        results["model"] = {"connections": 1000, "runs": {
            "gevent (4000 worker_connections)": bench_misses(upstream, 1000, duration=5),
            "gthread (64 threads)": bench_misses(upstream, 1000, ["-k", "gthread", "--threads", "64"],
                                                 duration=5),
        }}
    finally:
        upstream.close()
    print("bench: memory ...", flush=True)
    results["memory"] = bench_memory()
    text = report(m, results, time.monotonic() - started)
    text = redis_hits.splice(text, redis_hits.section(results["redis_hits"]))
    (BENCH / "RESULTS.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
