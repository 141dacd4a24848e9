"""`make gameday`: one bounded, scripted bad afternoon on loopback, counted as customers would see it.

The setup, as in production: two instances (the Procfile's gunicorn line, WEB_CONCURRENCY=2) behind
the shipped nginx configuration (deploy/nginx, only addresses changed), Redis as a master, a replica
and three Sentinels (`redis+sentinel://`), stand-ins for SessionM and Braze in their own processes
(bench/gameday_upstreams.py, with fault controls).

The work, at the same time: a Braze send of N users x 3 renders (HTML, text, AMP) through nginx at a
steady rate, each render with Braze's 2 s timeout and retried later like Braze's `:retry` (up to 5
times, with backoff) after a 5xx, a timeout or a refused connection; triggered messages through
`/v1/braze/trigger` and the Braze-compatible `/campaigns/trigger/send`, each with an Idempotency-Key and
retried by its client after a connection error or a 5xx; a `tags import` and an `attributes sync`.

The faults, on a schedule (fractions of the send): SessionM 30 % errors for 10 s then hung for 5 s;
the Redis master killed (Sentinel fails over); one worker of instance A SIGKILLed; instance B rolled
(SIGTERM, then started again); Braze 429 with a short reset for 10 s then 503 for 3 s; twice the
send's rate for 15 s.

It prints and writes (bench/gameday.md + bench/gameday.svg) the timeline and the goals, and exits 1
when a goal is missed. `--smoke` is a ~1-minute version of the same run.
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import gevent.pool  # noqa: E402
import redis  # noqa: E402
import urllib3  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gameday_report import write_report  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MASTER = "gd-master"
SECRETS = {"braze": "gameday-braze-secret-0001", "sessionm": "gameday-sessionm-secret-01",
           "ops": "gameday-ops-secret-0000001"}
RENDERS = ("html", "text", "amp")
TIMEOUT = 2.0  # Braze's Connected Content timeout
RETRIES = 5  # Braze's `:retry`
# Fault times as shares of the send's planned length.
PLAN = {"sessionm": 0.08, "redis": 0.40, "worker": 0.50, "rollout": 0.60, "braze": 0.70, "burst": 0.82}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None, what: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout} s")


class Run:
    """Every process of the run, started in a temporary directory and stopped together."""

    def __init__(self, args):
        self.args = args
        self.dir = Path(tempfile.mkdtemp(prefix="wp-gameday-"))
        self.procs: list[subprocess.Popen] = []
        self.t0 = 0.0
        self.events: list[tuple[float, float, str]] = []  # (start, end, label), seconds from t0

    def rel(self, epoch: float | None = None) -> float:
        return (time.time() if epoch is None else epoch) - self.t0

    def start(self, argv, name: str, env=None, port: int | None = None, cwd=ROOT) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        if port:
            wait_port(port, proc, name)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if not self.args.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- Redis: master, replica, three Sentinels ------------------------------------------------

    def redis(self) -> str:
        server = shutil.which("redis-server")
        sentinel = shutil.which("redis-sentinel")
        if not server or not sentinel:
            raise SystemExit("gameday needs redis-server and redis-sentinel (apt-get install redis-server "
                             "redis-sentinel; .ci/run installs them)")
        self.master_port, self.replica_port = free_port(), free_port()
        base = [server, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--repl-diskless-sync-delay", "0", "--dir", str(self.dir)]
        self.master = self.start(base + ["--port", str(self.master_port)], "redis-master",
                                 port=self.master_port)
        self.start(base + ["--port", str(self.replica_port), "--replicaof", "127.0.0.1",
                           str(self.master_port)], "redis-replica", port=self.replica_port)
        self.sentinel_ports = [free_port() for _ in range(3)]
        for n, port in enumerate(self.sentinel_ports):
            conf = self.dir / f"sentinel-{n}.conf"
            conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                            f"sentinel monitor {MASTER} 127.0.0.1 {self.master_port} 2\n"
                            f"sentinel down-after-milliseconds {MASTER} 1000\n"
                            f"sentinel failover-timeout {MASTER} 5000\n"
                            f"sentinel parallel-syncs {MASTER} 1\n")
            self.start([sentinel, str(conf)], f"sentinel-{n}", port=port)
        replica = redis.Redis(port=self.replica_port, socket_timeout=1)
        end = time.monotonic() + 20
        while replica.info("replication").get("master_link_status") != "up":
            if time.monotonic() > end:
                raise RuntimeError("the replica did not follow the master")
            time.sleep(0.1)
        watcher = redis.Redis(port=self.sentinel_ports[0], socket_timeout=1)
        while (not watcher.sentinel_slaves(MASTER)
               or watcher.sentinel_master(MASTER).get("num-other-sentinels", 0) < 2):
            if time.monotonic() > end:
                raise RuntimeError("the Sentinels did not find each other and the replica")
            time.sleep(0.2)
        nodes = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{nodes}/{MASTER}/0"

    def master_port_now(self) -> int | None:
        try:
            return int(redis.Redis(port=self.sentinel_ports[1], socket_timeout=0.5)
                       .sentinel_get_master_addr_by_name(MASTER)[1])
        except (redis.RedisError, TypeError):
            return None

    # --- stand-ins, instances, nginx --------------------------------------------------------------

    def stand_ins(self) -> None:
        self.sessionm_port, self.braze_port = free_port(), free_port()
        for name, port in (("sessionm", self.sessionm_port), ("braze", self.braze_port)):
            self.start([str(BIN / "gunicorn"), "-k", "gevent", "-w", "1", "--worker-connections", "4000",
                        "-b", f"127.0.0.1:{port}", "--chdir", str(ROOT / "bench"), "--log-level", "warning",
                        f"gameday_upstreams:{name}"], f"standin-{name}", port=port,
                       cwd=ROOT / "bench")  # not the service's gunicorn.conf.py

    def environment(self, redis_url: str) -> dict:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SESSIONM_", "BRAZE_", "WALLET_PROXY_"))}
        env.update(
            WALLET_PROXY_REDIS_URL=redis_url, WEB_CONCURRENCY="2",
            SESSIONM_CONNECT_URL=f"http://127.0.0.1:{self.sessionm_port}",
            SESSIONM_CONNECT_AUTH="Z2FtZWRheTpnYW1lZGF5", SESSIONM_RETAILER_ID="gameday",
            SESSIONM_CORE_URL=f"http://127.0.0.1:{self.sessionm_port}", SESSIONM_CORE_API_KEY="gd-core",
            SESSIONM_CORE_API_SECRET="gd-core-secret-000001",
            BRAZE_REST_URL=f"http://127.0.0.1:{self.braze_port}", BRAZE_API_KEY="gd-braze-rest-key",
            WALLET_PROXY_CLIENTS=",".join([f"braze:{SECRETS['braze']}:wallet+sync",
                                           f"sessionm:{SECRETS['sessionm']}:trigger",
                                           f"ops:{SECRETS['ops']}"]))
        return env

    def instance(self, name: str, port: int) -> subprocess.Popen:
        line = next(x for x in (ROOT / "Procfile").read_text().splitlines() if x.startswith("web:"))
        argv = [str(BIN / "gunicorn")] + line.split(":", 1)[1].split()[1:]
        env = dict(self.env, PORT=str(port))
        proc = self.start(argv, f"instance-{name}", env=env, port=port)
        end = time.monotonic() + 30
        while len(workers(proc.pid)) < 2:
            if time.monotonic() > end:
                raise RuntimeError(f"instance {name} did not start its workers")
            time.sleep(0.1)
        return proc

    def nginx(self, ports: list[int]) -> int:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.access(binary, os.X_OK):
            raise SystemExit("gameday needs nginx (apt-get install nginx; .ci/run installs it)")
        conf_dir = self.dir / "nginx"
        (conf_dir / "conf.d").mkdir(parents=True)
        shutil.copy(ROOT / "deploy/nginx/nginx.conf", conf_dir / "nginx.conf")
        site = (ROOT / "deploy/nginx/conf.d/wallet-proxy.conf").read_text()
        upstreams = iter(ports)
        # only addresses change, as in tests/test_nginx.py: the instances' and the listen port of both
        # server blocks (the Braze host and the webhooks' host)
        site, n = re.subn(r"^(\s*server\s+)app\d+:8000", lambda m: f"{m.group(1)}127.0.0.1:{next(upstreams)}",
                          site, flags=re.M)
        port = free_port()
        site, listens = re.subn(r"^(\s*listen\s+)8080\b", lambda m: f"{m.group(1)}127.0.0.1:{port}", site,
                                flags=re.M)
        assert n == 2 and listens == 2, "the shipped nginx site changed shape"
        (conf_dir / "conf.d/wallet-proxy.conf").write_text(site)
        shutil.copy(ROOT / "deploy/nginx/conf.d/wallet-proxy.proxy", conf_dir / "conf.d/wallet-proxy.proxy")
        (conf_dir / "conf.d/00-gameday-temp-paths.conf").write_text("".join(
            f"{kind}_temp_path {conf_dir / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi",
                                                                   "scgi")))
        main = f"pid {conf_dir / 'nginx.pid'}; daemon off;" + (" user root;" if os.geteuid() == 0 else "")
        self.start([binary, "-p", str(conf_dir), "-c", str(conf_dir / "nginx.conf"), "-e",
                    str(conf_dir / "error.log"), "-g", main], "nginx", port=port)
        return port


def workers(master_pid: int) -> list[int]:
    """The worker processes of a gunicorn master (its children)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == master_pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return found


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as status:
                total += next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
        except (OSError, StopIteration):
            pass
    return round(total / 1024, 1)


class Load:
    """The Braze send and the triggered messages, each attempt recorded."""

    def __init__(self, run: Run, base: str, args):
        self.run, self.base, self.args = run, base, args
        self.http = urllib3.PoolManager(maxsize=4000, block=False, retries=False)
        self.attempts: list[tuple] = []  # (start rel s, latency s, outcome, first attempt?, kind)
        self.renders: list[dict] = []
        self.messages: list[dict] = []
        self.rate_at = lambda t: args.rate

    def get(self, url: str, headers: dict) -> tuple[str, float, bytes]:
        start = time.time()
        try:
            answer = self.http.request("GET", url, headers=headers, timeout=urllib3.Timeout(total=TIMEOUT),
                                       preload_content=True)
        except urllib3.exceptions.TimeoutError:
            return "timeout", time.time() - start, b""
        except urllib3.exceptions.HTTPError:
            return "conn", time.time() - start, b""
        elapsed = time.time() - start
        if elapsed > TIMEOUT:
            return "timeout", elapsed, b""
        return str(answer.status), elapsed, answer.data

    def render(self, user: str, kind: str) -> None:
        url = f"{self.base}/v1/wallets/{user}?render={kind}"
        headers = urllib3.make_headers(basic_auth=f"braze:{SECRETS['braze']}")
        record = {"user": user, "kind": kind, "ok": False, "stale": False, "attempts": 0, "gave_up": ""}
        for attempt in range(1 + RETRIES):
            if attempt:
                gevent.sleep(min(self.args.retry_cap, self.args.retry_base * 2 ** (attempt - 1)))
            start = time.time()
            status, elapsed, body = self.get(url, headers)
            record["attempts"] += 1
            outcome = status
            if status == "200":
                record["ok"] = True
                record["stale"] = b'"stale": true' in body or b'"stale":true' in body
            elif status.isdigit():
                try:
                    error = json.loads(body).get("error") or {}
                except (ValueError, AttributeError):
                    error = {}
                code = error.get("code", "")
                if "circuit breaker" in error.get("message", ""):
                    code = "breaker_open"
                outcome = f"{status} {code}".strip()
            self.attempts.append((self.run.rel(start), elapsed, outcome, attempt == 0, "render"))
            if record["ok"]:
                break
            if status.isdigit() and int(status) < 500 and int(status) not in (408, 429):
                record["gave_up"] = f"non-retryable {outcome}"
                break
        else:
            record["gave_up"] = "retries exhausted"
        self.renders.append(record)

    def send(self, users: int) -> None:
        """Dispatch users at the send's rate (renders/s / 3 users a second), three renders each."""
        group = gevent.pool.Group()
        t = 0.0
        for n in range(users):
            delay = self.run.t0 + t - time.time()
            if delay > 0:
                gevent.sleep(delay)
            user = f"gd-u-{n}"
            self.run.first_seen[user] = self.run.rel()
            for kind in RENDERS:
                group.spawn(self.render, user, kind)
            t += len(RENDERS) / self.rate_at(t)
        self.send_ended = self.run.rel()
        group.join()

    def trigger(self, n: int, relay: bool, at: float) -> None:
        gevent.sleep(max(0.0, self.run.t0 + at - time.time()))
        message = f"gd-msg-{'r' if relay else 'f'}-{n}-{uuid.uuid4().hex[:6]}"
        headers = {"Authorization": f"Bearer {SECRETS['sessionm']}", "Content-Type": "application/json",
                   "Idempotency-Key": message}
        if relay:
            path, body, timeout = "/campaigns/trigger/send", {
                "campaign_id": "c-gameday", "recipients": [{"external_user_id": f"gd-r-{n}"}],
                "trigger_properties": {"gd_msg": message}}, 2.0  # a Braze client waits ~2 s
        else:
            path, body, timeout = "/v1/braze/trigger", {
                "campaign_id": "c-gameday", "external_user_id": f"gd-f-{n}", "gd_msg": message}, 35.0
        record = {"message": message, "door": "relay" if relay else "trigger", "final": None, "attempts": 0}
        for attempt in range(6):
            if attempt:
                gevent.sleep(min(16, 2 ** (attempt - 1)))
            start = time.time()
            try:
                answer = self.http.request("POST", self.base + path, body=json.dumps(body), headers=headers,
                                           timeout=urllib3.Timeout(total=timeout))
                status = str(answer.status)
                try:
                    code = (json.loads(answer.data).get("error") or {}).get("code", "")
                except (ValueError, AttributeError):
                    code = ""
                outcome = f"{status} {code}".strip()
            except urllib3.exceptions.HTTPError as exc:
                status = outcome = "timeout" if isinstance(exc, urllib3.exceptions.TimeoutError) else "conn"
            record["attempts"] += 1
            record["final"] = outcome
            self.attempts.append((self.run.rel(start), time.time() - start, outcome, attempt == 0,
                                  record["door"]))
            if status.isdigit() and int(status) < 500:
                break
        self.messages.append(record)


def stats(port: int) -> dict:
    answer = urllib3.PoolManager().request("GET", f"http://127.0.0.1:{port}/_gd/stats", timeout=30)
    return json.loads(answer.data)


def fault(port: int, mode: str, seconds: float) -> None:
    urllib3.PoolManager().request("POST", f"http://127.0.0.1:{port}/_gd/fault?mode={mode}&seconds={seconds}",
                                  timeout=5)


def cli(run: Run, command: list[str], name: str) -> subprocess.Popen:
    return run.start([str(BIN / "wallet-proxy"), *command], name, env=dict(run.env))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="the ~1-minute version (fewer users and rows)")
    parser.add_argument("--users", type=int, help="users in the send (full 20000, smoke 1200)")
    parser.add_argument("--rate", type=float, help="renders per second (full 300, smoke 60)")
    parser.add_argument("--triggers", type=int, help="messages through /v1/braze/trigger (300, smoke 30)")
    parser.add_argument("--relayed", type=int, help="messages through the Braze door (full 100, smoke 10)")
    parser.add_argument("--rows", type=int, help="rows of the tags import and attributes sync (5000, 300)")
    parser.add_argument("--retry-base", type=float, default=None,
                        help="first :retry backoff, s (full 4, smoke 2)")
    parser.add_argument("--retry-cap", type=float, default=30.0, help="longest :retry backoff, s")
    parser.add_argument("--report", help="the report (default bench/gameday.md; smoke: gameday-smoke.md in "
                                         "the temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory (logs)")
    args = parser.parse_args(argv)
    smoke = args.smoke
    args.users = args.users or (1200 if smoke else 20000)
    args.rate = args.rate or (60.0 if smoke else 300.0)
    args.triggers = args.triggers if args.triggers is not None else (30 if smoke else 300)
    args.relayed = args.relayed if args.relayed is not None else (10 if smoke else 100)
    args.rows = args.rows or (300 if smoke else 5000)
    args.retry_base = args.retry_base or (2.0 if smoke else 4.0)
    report = Path(args.report) if args.report else (
        Path(tempfile.gettempdir()) / "gameday-smoke.md" if smoke else ROOT / "bench/gameday.md")
    run = Run(args)
    run.first_seen = {}
    try:
        return play(run, args, report)
    finally:
        run.close()


def play(run: Run, args, report: Path) -> int:
    print(f"gameday: setting up in {run.dir}", flush=True)
    redis_url = run.redis()
    run.stand_ins()
    run.env = run.environment(redis_url)
    ports = {"A": free_port(), "B": free_port()}
    instances = {"A": run.instance("A", ports["A"]), "B": run.instance("B", ports["B"])}
    nginx_port = run.nginx(list(ports.values()))
    base = f"http://127.0.0.1:{nginx_port}"
    load = Load(run, base, args)
    duration = args.users * len(RENDERS) / args.rate
    at = {name: share * duration for name, share in PLAN.items()}
    burst = (at["burst"], at["burst"] + 15)
    load.rate_at = lambda t: args.rate * (2 if burst[0] <= t < burst[1] else 1)

    # Files for the two command-line jobs.
    tags_csv, attrs_csv = run.dir / "tags.csv", run.dir / "attributes.csv"
    with open(tags_csv, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["user_id", "tags"])
        writer.writerows([f"gd-t-{n}", "gd-counter"] for n in range(args.rows))
    with open(attrs_csv, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["user_id"])
        writer.writerows([f"gd-a-{n}"] for n in range(args.rows))

    memory_start = {name: rss_mb(workers(proc.pid)) for name, proc in instances.items()}
    load_start = os.getloadavg()
    print(f"gameday: {args.users} users x 3 renders at {args.rate:.0f}/s (~{duration:.0f} s), "
          f"{args.triggers}+{args.relayed} triggered messages, {args.rows} tag rows and profiles; "
          f"faults at {', '.join(f'{k} {v:.0f}s' for k, v in at.items())}", flush=True)
    # Warm the instances (imports, pools, connections) as production's would be, and let the two
    # command-line jobs start (a Python start-up costs seconds of CPU here) before the clock starts.
    warm = gevent.pool.Pool(20)
    warm_headers = urllib3.make_headers(basic_auth=f"braze:{SECRETS['braze']}")
    warm.map(lambda n: load.get(f"{base}/v1/wallets/gd-warm-{n}", warm_headers), range(200))
    jobs = {}
    tag_rate = max(50, args.rows / max(30, duration * 0.6))  # done within the send
    jobs["tags"] = cli(run, ["tags", "import", str(tags_csv), "--rate", str(tag_rate), "--rejects",
                             str(run.dir / "tags.rejects.csv"), "--progress-interval", "30"], "cli-tags")
    jobs["sync"] = cli(run, ["attributes", "sync", str(attrs_csv), "--rejects",
                             str(run.dir / "attrs.rejects.csv"), "--state", str(run.dir / "attrs.state"),
                             "--progress-interval", "30"],
                       "cli-sync")
    run.t0 = time.time() + 3.0
    failover = {}

    def at_time(t: float) -> None:
        gevent.sleep(max(0.0, run.t0 + t - time.time()))

    def window(when: float, port: int, mode: str, seconds: float, label: str) -> None:
        """At `when`, switch a stand-in's fault on for `seconds`, and put it on the timeline."""
        at_time(when)
        fault(port, mode, seconds)
        run.events.append((run.rel(), run.rel() + seconds, label))

    def schedule() -> None:
        window(at["sessionm"], run.sessionm_port, "errors30", 10, "SessionM 30 % errors")
        window(at["sessionm"] + 10, run.sessionm_port, "hang", 5, "SessionM hung")
        run.recovered = at["sessionm"] + 15
        at_time(at["redis"])
        before = run.master_port_now()
        run.master.kill()
        killed = run.rel()
        while run.master_port_now() in (before, None) and run.rel() < killed + 30:
            gevent.sleep(0.05)
        failover["at"] = run.rel()
        run.events.append((killed, failover["at"], "Redis master killed, Sentinel fails over"))
        gevent.spawn(single_flight_probe, run, ports, failover)
        at_time(at["worker"])
        victim = sorted(workers(instances["A"].pid))[0]
        os.kill(victim, signal.SIGKILL)
        run.events.append((run.rel(), run.rel() + 1, "instance A: a worker SIGKILLed"))
        at_time(at["rollout"])
        started = run.rel()
        instances["B"].send_signal(signal.SIGTERM)
        while instances["B"].poll() is None and run.rel() < started + 30:
            gevent.sleep(0.05)
        instances["B"] = run.instance("B", ports["B"])
        run.events.append((started, run.rel(), "instance B rolled (SIGTERM, start)"))
        window(at["braze"], run.braze_port, "429", 10, "Braze 429, reset 2 s")
        window(at["braze"] + 10, run.braze_port, "5xx", 3, "Braze 503 burst")

    def watch_lag() -> None:  # this process's own loop: a late wake-up delays every attempt it times
        while True:
            before = time.time()
            gevent.sleep(0.1)
            run.lag.append((run.rel(), time.time() - before - 0.1))

    run.lag = []
    lag_watcher = gevent.spawn(watch_lag)
    scheduler = gevent.spawn(schedule)
    run.events.append((burst[0], burst[1], "2x the send's rate"))
    senders = [gevent.spawn(load.send, args.users)]
    total = args.triggers + args.relayed
    for n in range(total):
        senders.append(gevent.spawn(load.trigger, n, n >= args.triggers, duration * n / max(1, total)))
    while not all(s.dead for s in senders):
        gevent.sleep(5)
        done = len(load.renders)
        print(f"gameday: t={run.rel():5.0f}s renders done {done}/{args.users * 3}, "
              f"messages {len(load.messages)}/{total}", flush=True)
    scheduler.join(timeout=60)
    lag_watcher.kill()
    for name, job in jobs.items():
        try:
            job.wait(max(1, 120 - run.rel() + duration))
        except subprocess.TimeoutExpired:
            job.kill()
    end = run.rel()
    memory_end = {name: rss_mb(workers(proc.pid)) for name, proc in instances.items()}

    sessionm, braze = stats(run.sessionm_port), stats(run.braze_port)
    # The profiles as they should be: the wallet each user has now, through the service.
    expected = {}
    pool = gevent.pool.Pool(50)
    headers = urllib3.make_headers(basic_auth=f"braze:{SECRETS['braze']}")

    def expect(user):
        answer = load.http.request("GET", f"{base}/v1/wallets/{user}", headers=headers, timeout=10)
        if answer.status == 200:
            wallet = json.loads(answer.data)
            expected[user] = (wallet["available_points"], wallet["offer_count"])

    pool.map(expect, [f"gd-a-{n}" for n in range(args.rows)])
    facts = {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}",
        "load": (load_start, os.getloadavg()), "args": vars(args), "duration": duration, "end": end,
        "events": sorted(run.events), "recovered": getattr(run, "recovered", None), "failover": failover,
        "memory": (memory_start, memory_end), "jobs": {k: v.returncode for k, v in jobs.items()},
        "tags_rejects": read_rejects(run.dir / "tags.rejects.csv"),
        "attrs_rejects": read_rejects(run.dir / "attrs.rejects.csv"),
        "expected_profiles": expected, "first_seen": run.first_seen,
        "nginx": nginx_errors(run.dir / "nginx.log"), "lag": run.lag,
    }
    if args.keep:
        (run.dir / "sessionm-stats.json").write_text(json.dumps(sessionm))
        (run.dir / "attempts.json").write_text(json.dumps({"attempts": load.attempts, "renders": load.renders,
                                                           "first_seen": run.first_seen, "t0": run.t0}))
    missed = write_report(report, load, sessionm, braze, facts)
    print(report.read_text(), flush=True)
    if args.keep:
        print(f"gameday: logs kept in {run.dir}")
    return 1 if missed else 0


def single_flight_probe(run: Run, ports: dict, failover: dict) -> None:
    """2 s after the failover: 20 concurrent first reads of one user, 10 through each instance."""
    gevent.sleep(max(0.0, run.t0 + failover["at"] + 2.0 - time.time()))
    user = f"gd-sf-{uuid.uuid4().hex[:10]}"
    http = urllib3.PoolManager(maxsize=40)
    headers = urllib3.make_headers(basic_auth=f"braze:{SECRETS['braze']}")
    statuses = []

    def read(port):
        try:
            statuses.append(http.request("GET", f"http://127.0.0.1:{port}/v1/wallets/{user}", headers=headers,
                                         timeout=5).status)
        except urllib3.exceptions.HTTPError:
            statuses.append("conn")

    group = gevent.pool.Group()
    for port in list(ports.values()) * 10:
        group.spawn(read, port)
    group.join()
    failover.update(probe_user=user, probe_statuses=statuses, probe_at=run.rel())


def nginx_errors(path: Path) -> dict:
    """nginx's own error lines by kind (its error log goes to stderr, beside the access log)."""
    kinds = {"no live upstreams": 0, "timed out (110: Connection timed out) while connecting": 0,
             "prematurely closed": 0, "Connection refused": 0}
    with open(path, errors="replace") as log:
        for line in log:
            if not line.startswith("{"):
                for kind in kinds:
                    if kind in line:
                        kinds[kind] += 1
    return kinds


def read_rejects(path: Path) -> dict:
    """user_id -> reason, from a rejects CSV (absent: none)."""
    if not path.exists():
        return {}
    with open(path, newline="") as rows:
        return {row.get("user_id", ""): row.get("reason", "") for row in csv.DictReader(rows)}


if __name__ == "__main__":
    sys.exit(main())
