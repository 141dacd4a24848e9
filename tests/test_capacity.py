"""bench/capacity.py: its inputs are what bench/RESULTS.md says; docs/capacity.md's table is its output."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import time
import uuid

import pytest

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("capacity", ROOT / "bench" / "capacity.py")
capacity = importlib.util.module_from_spec(spec)
sys.modules["capacity"] = capacity
spec.loader.exec_module(capacity)

RESULTS = (ROOT / "bench" / "RESULTS.md").read_text()


def table_row(scenario: str) -> str:
    """The `measured` cell of one scenario of RESULTS.md's results table."""
    row = next(line for line in RESULTS.splitlines() if line.startswith(f"| {scenario}"))
    return row.split(" | ")[1]


def number(text: str) -> float:
    return float(text.replace(",", ""))


def test_inputs_match_the_results_table_of_the_same_file():
    bench = capacity.load()
    hits = re.match(r"([\d,.]+) / [\d,.]+ req/s", table_row("1.")).group(1)
    assert round(bench.hits_per_second) == number(hits)
    misses = table_row("3.")
    assert round(bench.miss_rps) == number(re.match(r"([\d,.]+) req/s", misses).group(1))
    # The table's "concurrency ÷ latency" is the ceiling the efficiency is measured against.
    ceiling = number(re.search(r"concurrency ÷ latency = ([\d,.]+)", misses).group(1))
    assert round(bench.miss_connections / bench.miss_latency) == ceiling
    assert bench.miss_efficiency == pytest.approx(bench.miss_rps / ceiling, rel=0.01)
    send = table_row("2.")
    # at least one call per user: under 1 the bench's send only stopped before reaching every user
    # the table prints two decimals (100,002 calls for 100,000 users is "1.00")
    printed = number(re.search(r"calls/users = \*\*([\d.]+)\*\*", send).group(1))
    assert round(bench.calls_per_user, 2) == max(1.0, printed)
    assert round(bench.send_p99 * 1000, 1) == number(re.search(r"p99 \*\*([\d.]+) ms\*\*", send).group(1))
    memory = table_row("5.")
    assert round(bench.bytes_per_wallet) == number(re.search(r"\*\*([\d,]+) B\*\*", memory).group(1))


def test_the_docs_table_is_what_the_script_computes():
    shown = capacity.docs_section((ROOT / "docs" / "capacity.md").read_text())
    assert shown == capacity.examples_table(capacity.load()), (
        "docs/capacity.md is stale: run .venv/bin/python bench/capacity.py --update-docs")


def test_the_arithmetic_by_hand():
    bench = capacity.Bench(hits_per_second=4000, miss_rps=64 / 0.15, miss_connections=64, miss_latency=0.15,
                           bytes_per_wallet=5000, calls_per_user=1.0, send_p99=0.3)  # efficiency 1.0
    p = capacity.plan(bench, 1_000_000, 60_000, 0.5)  # 1,000 messages/s
    assert p.requests_per_second == 3000 and p.sessionm_calls_per_second == 1000
    assert p.sessionm_in_flight == 500  # Little's law: 1,000/s x 0.5 s
    assert p.for_hits == pytest.approx(3000 / (4000 * 0.5))
    assert p.for_misses == pytest.approx(500 / (64 * 0.8))
    assert p.instances == 10 and p.send_minutes == pytest.approx(1_000_000 / 60_000)
    assert p.redis_wallets == 360_000  # 1,000/s for TTL + stale = 360 s
    # Redis holds JSON, not the process's deflated form: at least REDIS_WALLET_BYTES a wallet
    assert p.redis_mib == pytest.approx(360_000 * max(5000, capacity.REDIS_WALLET_BYTES) * 1.5 / 2**20)
    assert p.process_cache_mib == pytest.approx(min(360_000 * 5000 / 2**20, 256 * 0.75))
    assert p.prewarm and any("500 recipients" in r for r in p.reasons)
    warm = capacity.plan(bench, 1_000_000, 60_000, 0.5, prewarmed=True)
    assert warm.sessionm_calls_per_second == 0 and warm.instances == 2 and warm.redis_wallets == 1_000_000
    small = capacity.plan(bench, 400, 100, 0.2)
    assert small.instances == 2 and not small.prewarm
    slow = capacity.plan(bench, 400, 100, 1.2)
    assert slow.prewarm and "SessionM at 1.2 s" in slow.reasons[0]


def test_the_command_line(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "capacity.py"), "1000000", "--per-minute",
                             "50000", "--latency", "0.3"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "instances (gevent worker processes): " in result.stdout and "Redis:" in result.stdout


@pytest.mark.redis
def test_redis_holds_a_wallet_in_less_than_the_planning_figure(redis_url):
    """The plan uses the per-process bytes per wallet for Redis too: check Redis' own measure is below."""
    import json
    from datetime import datetime, timezone

    import redis
    from wallet_proxy.sandbox.connect import make_wallet
    from wallet_proxy.upstream.connect import interpret
    from wallet_proxy.upstream.transport import Reply
    from wallet_proxy.wallet import keys
    from wallet_proxy.wallet.redis_store import RedisStore
    from wallet_proxy.wallet.stores import Entry, MemoryStore

    # A plain client with redis-py's patient defaults: this measures memory, not the short timeouts.
    client = redis.Redis.from_url(redis_url)
    store = RedisStore(client, MemoryStore(1 << 20, 360), 60, 300)
    now, prefix, used = datetime.now(timezone.utc), uuid.uuid4().hex[:8], []
    for n in range(300):
        user = f"cap-{prefix}-{n:04d}"
        answer = {"status": "ok", "payload": make_wallet(user, "en-US", now)}
        wallet = interpret(Reply(200, {}, json.loads(json.dumps(answer)), 0.0))
        store.put(user, "en-US", Entry(wallet, time.time()))
        assert store.healthy(), "the write did not land"
        used.append(client.memory_usage(keys.wallet_key(user)))
    per_wallet = sum(used) / len(used)
    assert 500 < per_wallet < capacity.REDIS_WALLET_BYTES, per_wallet
