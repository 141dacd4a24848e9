"""`wallet-proxy tags import`: the CSV importer against a fake SessionM Core over HTTP."""
from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest

from tests.fakes import FakeUpstream, Recorded, Reply
from wallet_proxy import cli
from wallet_proxy.bulk.jobs import import_tags
from wallet_proxy.bulk.rows import FileError
from wallet_proxy.bulk.runner import RetryPolicy
from wallet_proxy.upstream import transport as upstream
from wallet_proxy.upstream.core import CoreClient, tags_answer, tags_body

pytestmark = pytest.mark.usefixtures("quiet_fakes")

TAGS = re.compile(r"^/priv/v1/apps/core-key/users/(.+)/tags$")
FAST = RetryPolicy(attempts=8, base=0.001, cap=0.01)


class FakeCore:
    """A fake Core that counts accepted tag calls per user and can fail each user's first attempts.

    Over HTTP (a FakeUpstream server) by default. `in_process=True` makes `client()` an in-process
    stand-in (InProcessCore) for the big runs (10,000 and 40,000 rows): they test the runner, not HTTP,
    which the small tests exercise. It also keeps the memory test to the importer's own memory: an
    in-process werkzeug server drains each closed connection with a 10 MB read buffer, and tracemalloc
    (which counts every thread) took it for the importer's peak whenever the drain found data to read.
    """

    def __init__(self, fail=None, delay: float = 0.0, in_process: bool = False):
        self.fail = fail or (lambda user_id, attempt: None)
        self.delay = delay
        self.in_process = in_process
        self.attempts: Counter = Counter()
        self.accepted: Counter = Counter()
        self.bodies: dict = {}
        self.lock = threading.Lock()
        self.server = None
        if in_process:
            self.url = "http://core.in-process"
        else:
            self.server = FakeUpstream()
            self.server.on("POST", TAGS.pattern, self.answer)
            self.url = self.server.url

    def answer(self, recorded):
        user_id = TAGS.match(recorded.path).group(1)
        with self.lock:
            self.attempts[user_id] += 1
            attempt = self.attempts[user_id]
        failure = self.fail(user_id, attempt)
        if failure is not None:
            return failure
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            self.accepted[user_id] += 1
            self.bodies[user_id] = recorded.json
        return Reply(200, {"status": "ok", "user": {"id": user_id}})

    def client(self, concurrency: int = 8):
        if self.in_process:
            return InProcessCore(self)
        return CoreClient(self.url, "core-key", "core-secret", upstream.make_session(concurrency))

    def close(self):
        if self.server is not None:
            self.server.close()


class InProcessCore:
    """CoreClient's add_tags without the socket: the same body, the fake's answer read by the client's
    own tags_answer, so retries and errors are those of the real client."""

    def __init__(self, fake: FakeCore):
        self.fake = fake

    def add_tags(self, user_id: str, tags: list, ttl, timeout: float, external: bool = False) -> dict:
        body = json.dumps(tags_body(tags, ttl)).encode()
        reply = self.fake.answer(Recorded("POST", f"/priv/v1/apps/core-key/users/{user_id}/tags", {}, body))
        if reply.delay:
            time.sleep(reply.delay)
        data = reply.body
        if isinstance(data, (bytes, str)):
            try:
                data = json.loads(data)
            except ValueError:
                data = None
        return tags_answer(upstream.Reply(reply.status, reply.headers, data, 0.0), ttl)


@pytest.fixture
def core():
    fake = FakeCore()
    yield fake
    fake.close()


def write(path: Path, text: str, encoding="utf-8") -> str:
    path.write_bytes(text.encode(encoding))
    return str(path)


def run(path, core, **kwargs):
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("rate", 10_000)
    kwargs.setdefault("stream", io.StringIO())
    return import_tags(path, core.client(), **kwargs)


def rejects_of(path) -> list[list[str]]:
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


class TestReading:
    def test_segment_export_with_bom_quotes_blank_lines_and_duplicates(self, tmp_path, core):
        path = write(tmp_path / "seg.csv", '\ufeffexternal_id,user_id,email\n'
                     'e1,u1,"a@x.com"\n\n"e2","u2","Smith, Jo"\n,\ne1,u1,a@x.com\n"e3","u3","two\nlines"\n')
        summary = run(path, core, tags=["vip", "winter"], ttl=3600)
        assert summary.sent == 3 and summary.duplicates == 1 and summary.rejected == 0
        assert dict(core.accepted) == {"u1": 1, "u2": 1, "u3": 1}
        assert core.bodies["u2"] == {"tags": ["vip", "winter"], "ttl": 3600}
        assert not os.path.exists(path + ".journal"), "a finished run leaves no journal behind"
        assert not os.path.exists(tmp_path / "seg.rejects.csv")

    def test_user_id_tags_ttl_rows_with_their_own_tags_and_ttl(self, tmp_path, core):
        path = write(tmp_path / "rows.csv", "user_id,tags,ttl\nu1,a;b; c ,60\nu2,a,\nu1,a;b;c,60\n")
        summary = run(path, core, tags=["all"], ttl=10)
        assert summary.sent == 2 and summary.duplicates == 1
        assert core.bodies["u1"] == {"tags": ["a", "b", "c", "all"], "ttl": 60}
        assert core.bodies["u2"] == {"tags": ["a", "all"], "ttl": 10}

    def test_same_user_with_different_tags_is_sent_for_each(self, tmp_path, core):
        path = write(tmp_path / "rows.csv", "user_id,tags\nu1,a\nu1,b\n")
        assert run(path, core).sent == 2
        assert core.accepted["u1"] == 2

    def test_user_column_option(self, tmp_path, core):
        path = write(tmp_path / "seg.csv", "Braze ID,SessionM ID\nb1,s1\n")
        assert run(path, core, user_column="SessionM ID", tags=["vip"]).sent == 1
        assert list(core.accepted) == ["s1"]


class TestMalformedFiles:
    def test_missing_user_column_names_it_and_the_columns_found(self, tmp_path, core):
        path = write(tmp_path / "seg.csv", "external_id,email\ne1,a\n")
        with pytest.raises(FileError, match=r"no 'user_id' column .*'external_id', 'email'.*--user-column"):
            run(path, core, tags=["vip"])
        assert core.attempts == {}

    def test_no_tags_anywhere_is_an_error(self, tmp_path, core):
        path = write(tmp_path / "seg.csv", "user_id\nu1\n")
        with pytest.raises(FileError, match="--tag"):
            run(path, core)

    def test_non_utf8_bytes_give_the_line_and_byte(self, tmp_path, core):
        path = tmp_path / "seg.csv"
        path.write_bytes(b"user_id,name\nu1,ok\nu2,Caf\xe9\n")
        with pytest.raises(FileError, match=r"line 3 is not UTF-8 \(byte 0xe9"):
            run(str(path), core, tags=["vip"])
        assert core.attempts == {}, "nothing is sent from a file that cannot be read whole"

    def test_empty_file(self, tmp_path, core):
        with pytest.raises(FileError, match="empty"):
            run(write(tmp_path / "seg.csv", "\n\n"), core, tags=["vip"])

    def test_missing_file(self, tmp_path, core):
        with pytest.raises(FileError, match="cannot open"):
            run(str(tmp_path / "nope.csv"), core, tags=["vip"])

    def test_bad_rows_go_to_rejects_with_line_and_reason(self, tmp_path, core):
        path = write(tmp_path / "rows.csv", "user_id,tags,ttl\nu1,a,60\nu2,a,soon\nu3,a,-1\nbad id,a,\n"
                     ",a,\nu4,;,\nu5," + ";".join(f"t{i}" for i in range(51)) + ",\nu6," + "x" * 129 + ",\n")
        summary = run(path, core)
        assert summary.sent == 1 and summary.rejected == 7
        rows = rejects_of(tmp_path / "rows.rejects.csv")
        assert rows[0] == ["line", "user_id", "tags", "ttl", "reason"]
        reasons = {r[0]: (r[1], r[4]) for r in rows[1:]}
        assert reasons["3"] == ("u2", "ttl: must be a positive whole number of seconds, got 'soon'")
        assert reasons["4"][1].startswith("ttl: ")
        assert reasons["5"] == ("bad id", "user_id: must be 1-128 ASCII letters, digits or -_.@:+")
        assert reasons["6"] == ("", "user_id: empty")
        assert reasons["7"][1].startswith("tags: none")
        assert reasons["8"][1] == "tags: 51 tags, at most 50"
        assert "longer than 128" in reasons["9"][1]
        assert list(core.accepted) == ["u1"]

    def test_a_tag_with_a_control_character_is_a_rejected_row(self, tmp_path, core):
        path = write(tmp_path / "rows.csv", 'user_id,tags\nu1,ok\nu2,"a\tb"\nu3,"x\u0085y"\n')
        summary = run(path, core)
        assert summary.sent == 1 and summary.rejected == 2
        reasons = {r[1]: r[4] for r in rejects_of(tmp_path / "rows.rejects.csv")[1:]}
        assert reasons == {"u2": "tags: must not contain control characters (found U+0009)",
                           "u3": "tags: must not contain control characters (found U+0085)"}

    def test_bad_tag_option_is_an_error(self, tmp_path, core):
        with pytest.raises(FileError, match="--tag"):
            run(write(tmp_path / "seg.csv", "user_id\nu1\n"), core, tags=[" "])


class TestFilesAreSafe:
    """SPEC: rejects cells neutralised against formulas; journal and rejects 0600, never through a link;
    a line over 64 KB is one rejected row."""

    def test_rejects_cells_are_neutralised_against_spreadsheet_formulas(self, tmp_path, core):
        import csv

        path = write(tmp_path / "rows.csv", 'user_id,tags,ttl\n'
                     '"=HYPERLINK(""http://evil/"",""x"")",-1+2;@SUM(A1),\n+4915550,,\n')
        assert run(path, core).rejected == 2
        rows = rejects_of(tmp_path / "rows.rejects.csv")
        assert rows[1][1:3] == ['\'=HYPERLINK("http://evil/","x")', "'-1+2;@SUM(A1)"]
        assert rows[2][1] == "'+4915550" and rows[2][4].startswith("tags: none")
        assert all(not cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row)
        # Fixed and imported as it is, the guard is read back: the user id is +4915550 again.
        rows[2][2] = "'-vip"
        with open(tmp_path / "fixed.csv", "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([rows[0], rows[2]])
        assert run(str(tmp_path / "fixed.csv"), core).sent == 1
        assert core.bodies["+4915550"] == {"tags": ["-vip"]}

    def test_rejects_and_journal_are_created_0600(self, tmp_path):
        core = FakeCore(lambda u, a: Reply(401, {}) if u == "u9" else None)
        try:
            users = "\n".join(f"u{i}" for i in range(10))
            path = write(tmp_path / "seg.csv", f"user_id\n{users}\nbad id\n")
            summary = run(path, core, tags=["vip"], concurrency=1)
        finally:
            core.close()
        assert summary.fatal, "stopped: the journal stays"
        for name in ("seg.rejects.csv", "seg.csv.journal", "seg.csv.journal-wal"):
            if os.path.exists(tmp_path / name):
                assert oct(os.stat(tmp_path / name).st_mode & 0o777) == "0o600", name
        assert os.path.exists(tmp_path / "seg.csv.journal")

    def test_a_rejects_file_that_is_a_symlink_is_refused_and_its_target_untouched(self, tmp_path, core):
        target = tmp_path / "elsewhere.txt"
        target.write_text("precious\n")
        os.symlink(target, tmp_path / "seg.rejects.csv")
        with pytest.raises(FileError, match="symbolic link"):
            run(write(tmp_path / "seg.csv", "user_id\nbad id\n"), core, tags=["vip"])
        assert target.read_text() == "precious\n" and core.attempts == {}

    @pytest.mark.parametrize("suffix", ["", "-wal"])
    def test_a_journal_that_is_a_symlink_is_refused_and_its_target_untouched(self, tmp_path, core, suffix):
        target = tmp_path / "elsewhere.db"
        os.symlink(target, tmp_path / f"seg.csv.journal{suffix}")
        with pytest.raises(FileError, match="symbolic link"):
            run(write(tmp_path / "seg.csv", "user_id\nu1\n"), core, tags=["vip"])
        assert not target.exists() and core.attempts == {}

    def test_a_line_over_64_kb_is_one_rejected_row_and_the_rest_is_sent(self, tmp_path, core):
        path = write(tmp_path / "seg.csv", "user_id,note\nu1,a\nu2," + "x" * 200_000 + "\nu3,b\n")
        summary = run(path, core, tags=["vip"])
        assert summary.sent == 2 and summary.rejected == 1
        assert sorted(core.accepted) == ["u1", "u3"]
        (row,) = rejects_of(tmp_path / "seg.rejects.csv")[1:]
        assert row[0] == "3" and row[4] == "line: longer than 64 KB, not read"

    def test_a_huge_line_is_never_held_in_memory(self, tmp_path):
        core = FakeCore(in_process=True)
        path = tmp_path / "seg.csv"
        with open(path, "wb") as handle:
            handle.write(b"user_id\nu1\n")
            for _ in range(64):
                handle.write(b"y" * 65536)  # one 4 MB line
            handle.write(b"\nu2\n")
        tracemalloc.start()
        summary = run(str(path), core, tags=["vip"])
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert summary.sent == 2 and summary.rejected == 1
        assert peak < 1_000_000, f"{peak} bytes for a 4 MB line"

    def test_a_quoted_field_too_large_for_csv_stops_before_any_call(self, tmp_path, core):
        big = "\n".join("z" * 60_000 for _ in range(4))  # 240 KB in lines under 64 KB: a malformed file
        path = write(tmp_path / "seg.csv", f'user_id,note\nu1,a\nu2,"{big}"\n')
        with pytest.raises(FileError, match=r"line \d+: malformed CSV"):
            run(path, core, tags=["vip"])
        assert core.attempts == {}, "nothing sent from a file that cannot be read to its end"


class TestRetries:
    def test_ten_thousand_rows_with_429s_and_500s_are_each_tagged_exactly_once(self, tmp_path):
        # In process (InProcessCore): Core's answers mapped by the client's own code, no sockets.
        def fail(user_id, attempt):
            n = int(user_id[1:])
            if n % 16 == 0 and attempt == 1:
                return Reply(429, {"status": "error"}, headers={"Retry-After": "0"})
            if n % 25 == 0 and attempt <= 2:
                return Reply(500, {"status": "error"})
            if n % 41 == 0 and attempt == 1:
                return Reply(503, b"<html>maintenance</html>")
            return None

        core = FakeCore(fail, in_process=True)
        try:
            users = [f"u{i}" for i in range(10_000)]
            path = write(tmp_path / "seg.csv", "user_id\n" + "\n".join(users) + "\n")
            started = time.monotonic()
            # expiring tags: a 5xx on a counter tag is not retried (outcome unknown, tested below)
            summary = run(path, core, tags=["vip"], ttl=60, concurrency=16, rate=100_000)
            elapsed = time.monotonic() - started
        finally:
            core.close()
        assert summary.rejected == 0 and summary.sent == 10_000
        assert set(core.accepted) == set(users)
        assert set(core.accepted.values()) == {1}, "every row tagged exactly once"
        assert summary.retries == sum(core.attempts.values()) - 10_000 > 1500
        print(f"10,000 rows with {summary.retries} retries in {elapsed:.1f}s")

    def test_retry_after_is_honoured_and_pauses_everyone(self, tmp_path):
        core = FakeCore(lambda u, a: Reply(429, {}, headers={"Retry-After": "3"}) if a == 1 else None)
        sleeps = []
        try:
            path = write(tmp_path / "seg.csv", "user_id\nu1\n")
            summary = run(path, core, tags=["vip"], sleep=sleeps.append)
        finally:
            core.close()
        assert summary.sent == 1 and core.attempts["u1"] == 2
        assert max(sleeps) >= 3.0

    def test_backoff_grows_exponentially_with_jitter(self):
        low = [RetryPolicy(base=1.0, cap=60.0, rng=lambda: 0.0).delay(n) for n in range(1, 8)]
        high = [RetryPolicy(base=1.0, cap=60.0, rng=lambda: 1.0).delay(n) for n in range(1, 8)]
        assert low == [0.5, 1, 2, 4, 8, 16, 30]
        assert high == [1, 2, 4, 8, 16, 32, 60]
        assert RetryPolicy(rng=lambda: 0.0).delay(1, hint=45.0) == 45.0  # what SessionM asked for

    @pytest.mark.parametrize("status, code", [(404, "user_not_found"), (422, "upstream_refused"),
                                              (400, "upstream_refused")])
    def test_other_4xx_are_not_retried_and_are_rejected(self, tmp_path, status, code):
        core = FakeCore(lambda u, a: Reply(status, {"status": "error", "errors": {"code": "nope"}}))
        try:
            path = write(tmp_path / "seg.csv", "user_id\nu1\n")
            summary = run(path, core, tags=["vip"])
        finally:
            core.close()
        assert core.attempts["u1"] == 1
        assert summary.rejected == 1
        assert rejects_of(tmp_path / "seg.rejects.csv")[1][4].startswith(code)

    def test_status_error_inside_200_is_rejected_not_counted_as_tagged(self, tmp_path):
        core = FakeCore(lambda u, a: Reply(200, {"status": "error", "errors": {"code": "tag_limit"}}))
        try:
            summary = run(write(tmp_path / "seg.csv", "user_id\nu1\n"), core, tags=["vip"])
        finally:
            core.close()
        assert summary.sent == 0 and summary.rejected == 1

    @pytest.mark.parametrize("code, reason", [("VALIDATION", "upstream_refused"),
                                              ("requires_registered_user", "user_not_found")])
    def test_codes_inside_200_are_rejected_by_what_they_mean_and_not_retried(self, tmp_path, code, reason):
        # https://docs.sessionm.com/developer/APIs/Core/Overview/overview_statuses_errors.htm
        core = FakeCore(lambda u, a: Reply(200, {"status": "error", "errors": {"code": code}}))
        try:
            summary = run(write(tmp_path / "seg.csv", "user_id\nu1\n"), core, tags=["vip"])
        finally:
            core.close()
        assert core.attempts["u1"] == 1 and summary.rejected == 1
        assert rejects_of(tmp_path / "seg.rejects.csv")[1][4].startswith(reason + ":")

    def test_credential_codes_inside_200_stop_the_run(self, tmp_path):
        core = FakeCore(lambda u, a: Reply(200, {"status": "error", "errors": {"code": "invalid_api_key"}}))
        try:
            path = write(tmp_path / "seg.csv", "user_id\n" + "\n".join(f"u{i}" for i in range(50)) + "\n")
            summary = run(path, core, tags=["vip"], concurrency=2)
        finally:
            core.close()
        assert summary.fatal and "INVALID_API_KEY" in summary.fatal
        assert sum(core.attempts.values()) <= 4, "no point sending 50 rows with a refused key"

    def test_a_counter_tag_that_timed_out_is_rejected_as_outcome_unknown_not_retried(self, tmp_path):
        core = FakeCore(lambda u, a: Reply(200, {"status": "ok"}, delay=0.5))
        try:
            path = write(tmp_path / "seg.csv", "user_id\nu1\n")
            summary = run(path, core, tags=["vip"], timeout=0.1)
            expiring = run(write(tmp_path / "exp.csv", "user_id\nu2\n"), core, tags=["vip"], ttl=60,
                           timeout=0.1, retry=RetryPolicy(attempts=2, base=0.001))
        finally:
            core.close()
        assert core.attempts["u1"] == 1, "a counter tag that may have been counted is never resent"
        assert summary.rejected == 1 and summary.retries == 0
        assert rejects_of(tmp_path / "seg.rejects.csv")[1][4].startswith("outcome_unknown: ")
        assert core.attempts["u2"] == 2 and expiring.retries == 1, "an expiring tag is retried"

    @pytest.mark.parametrize("reply", [Reply(500, {}), Reply(200, {"status": "error",
                                                                  "errors": {"code": "INTERNAL_SERVER_ERROR"}})])
    def test_a_counter_tag_core_failed_on_is_rejected_as_outcome_unknown_not_retried(self, tmp_path, reply):
        # Issue #21 item 10: the same rule as the webhook door (a 5xx or INTERNAL_SERVER_ERROR may have
        # counted a tag without ttl; https://docs.sessionm.com/developer/APIs/Core/Customers/customers_tags.htm)
        core = FakeCore(lambda u, a: reply)
        try:
            summary = run(write(tmp_path / "seg.csv", "user_id\nu1\n"), core, tags=["vip"],
                          retry=RetryPolicy(attempts=3, base=0.001))
        finally:
            core.close()
        assert core.attempts["u1"] == 1 and summary.rejected == 1 and summary.retries == 0
        assert rejects_of(tmp_path / "seg.rejects.csv")[1][4].startswith("outcome_unknown: ")

    def test_persistent_5xx_gives_up_after_max_attempts(self, tmp_path):
        core = FakeCore(lambda u, a: Reply(503, {}))
        try:
            summary = run(write(tmp_path / "seg.csv", "user_id\nu1\n"), core, tags=["vip"], ttl=60,
                          retry=RetryPolicy(attempts=3, base=0.001))
        finally:
            core.close()
        assert core.attempts["u1"] == 3 and summary.rejected == 1
        assert "gave up after 3 attempts" in rejects_of(tmp_path / "seg.rejects.csv")[1][4]

    def test_refused_credentials_stop_the_run_and_keep_the_journal(self, tmp_path):
        core = FakeCore(lambda u, a: Reply(401, {}))
        try:
            path = write(tmp_path / "seg.csv", "user_id\n" + "\n".join(f"u{i}" for i in range(50)) + "\n")
            summary = run(path, core, tags=["vip"], concurrency=2)
        finally:
            core.close()
        assert summary.fatal and "credentials" in summary.fatal
        assert sum(core.attempts.values()) <= 4, "no point sending 50 rows with a refused key"
        assert os.path.exists(path + ".journal")


class TestRate:
    def test_rate_bounds_calls_per_second(self, tmp_path, core):
        path = write(tmp_path / "seg.csv", "user_id\n" + "\n".join(f"u{i}" for i in range(30)) + "\n")
        started = time.monotonic()
        run(path, core, tags=["vip"], rate=50, concurrency=8)
        # 30 calls at 50/s: the 30th slot is 29/50 s after the first.
        assert time.monotonic() - started >= 29 / 50 - 0.02


class TestProgress:
    def test_plain_lines_when_not_a_terminal(self, tmp_path, core):
        stream = io.StringIO()
        path = write(tmp_path / "seg.csv", "user_id\n" + "\n".join(f"u{i}" for i in range(200)) + "\n")
        run(path, core, tags=["vip"], stream=stream, interval=0.0)
        lines = stream.getvalue().splitlines()
        assert lines and re.match(r"tags import: \d+/200 rows \([\d.]+%\), [\d.]+ rows/s, ETA \d+:\d\d:\d\d, "
                                  r"0 rejected, 0 retries$", lines[-1])
        assert "\r" not in stream.getvalue()

    def test_a_line_every_interval_even_while_every_row_is_retrying(self, tmp_path, caplog):
        # SessionM fails the only row 5 times (about 0.2 + 0.4 + 0.8 + 1.6 s of backoff): no row
        # finishes for seconds, yet a line must come every interval, and each retry is logged at debug.
        core = FakeCore(lambda u, a: Reply(503, {"status": "error"}) if a <= 5 else None, in_process=True)
        stream = io.StringIO()
        path = write(tmp_path / "seg.csv", "user_id\nsecret-user-1\n")
        with caplog.at_level(logging.DEBUG, logger="wallet_proxy.bulk.runner"):
            summary = run(path, core, tags=["vip"], ttl=60, stream=stream, interval=0.2,
                          retry=RetryPolicy(attempts=8, base=0.4, cap=10.0))
        assert summary.sent == 1 and summary.retries == 5
        waiting = [line for line in stream.getvalue().splitlines() if "0/1 rows" in line]
        assert len(waiting) >= 4, stream.getvalue()
        assert any(re.search(r", [1-5] retries$", line) for line in waiting)
        retried = [r for r in caplog.records
                   if r.levelno == logging.DEBUG and "retrying in" in r.getMessage()]
        assert len(retried) == 5
        assert retried[0].getMessage().startswith("line 2: upstream_unavailable (attempt 1 of 8)")
        assert not any("secret-user-1" in r.getMessage() for r in caplog.records), "no user id in logs"

    def test_a_bar_with_rate_and_eta_on_a_terminal(self, tmp_path, core):
        class Terminal(io.StringIO):
            def isatty(self):
                return True

        stream = Terminal()
        path = write(tmp_path / "seg.csv", "user_id\n" + "\n".join(f"u{i}" for i in range(50)) + "\n")
        run(path, core, tags=["vip"], stream=stream)
        assert "50/50" in stream.getvalue() and "row/s" in stream.getvalue()


class TestJournal:
    def test_a_fresh_run_refuses_an_existing_journal(self, tmp_path, core):
        path = write(tmp_path / "seg.csv", "user_id\nu1\n")
        Path(path + ".journal").write_bytes(b"")
        with pytest.raises(FileError, match="--resume"):
            run(path, core, tags=["vip"])
        assert core.attempts == {}

    def test_resume_without_a_journal_is_an_error(self, tmp_path, core):
        with pytest.raises(FileError, match="no journal"):
            run(write(tmp_path / "seg.csv", "user_id\nu1\n"), core, tags=["vip"], resume=True)

    def test_resume_refuses_a_changed_file_or_options(self, tmp_path):
        core = FakeCore(lambda u, a: Reply(401, {}))  # stops the run, leaving its journal
        try:
            path = write(tmp_path / "seg.csv", "user_id\nu1\nu2\n")
            run(path, core, tags=["vip"])
            with pytest.raises(FileError, match="tags"):
                run(path, core, tags=["other"], resume=True)
            write(tmp_path / "seg.csv", "user_id\nu1\nu2\nu3\n")
            with pytest.raises(FileError, match="size"):
                run(path, core, resume=True)
        finally:
            core.close()

    def test_memory_stays_flat_in_the_number_of_rows(self, tmp_path):
        # Every row is the same user: one call, and the rest exercises the streaming reader, the
        # bounded queue and the on-disk duplicate check. In process (see FakeCore): tracemalloc counts
        # every thread, and a fake HTTP server in this process is not the importer.
        core = FakeCore(in_process=True)

        def peak(rows: int) -> int:
            path = write(tmp_path / f"dup{rows}.csv", "user_id\n" + "u1\n" * rows)
            tracemalloc.start()
            summary = run(path, core, tags=["vip"])
            size = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert summary.duplicates == rows - 1
            return size

        small, large = peak(2_000), peak(40_000)
        assert large < small * 1.5 + 200_000, (small, large)


def cli_env(core_url: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SESSIONM_", "BRAZE_", "WALLET_PROXY_"))}
    env.update(SESSIONM_CORE_URL=core_url, SESSIONM_CORE_API_KEY="core-key",
               SESSIONM_CORE_API_SECRET="core-secret", PYTHONUNBUFFERED="1")
    return env


class TestCommandLine:
    def test_exit_status_and_summary(self, tmp_path, core, monkeypatch, capsys):
        monkeypatch.chdir(tmp_path)
        for name, value in cli_env(core.url).items():
            monkeypatch.setenv(name, value)
        write(tmp_path / "ok.csv", "user_id\nu1\nu2\n")
        assert cli.main(["tags", "import", "ok.csv", "--tag", "vip", "--tag", "gold", "--ttl", "60"]) == 0
        assert "2 tagged" in capsys.readouterr().out
        assert core.bodies["u1"] == {"tags": ["vip", "gold"], "ttl": 60}
        write(tmp_path / "bad.csv", "user_id\nu3\nbad id\n")
        assert cli.main(["tags", "import", "bad.csv", "--tag", "vip", "--rejects", "out.csv"]) == 1
        assert "1 rejected (see out.csv)" in capsys.readouterr().out
        assert rejects_of(tmp_path / "out.csv")[1][:2] == ["3", "bad id"]
        write(tmp_path / "nocol.csv", "email\nx\n")
        assert cli.main(["tags", "import", "nocol.csv", "--tag", "vip"]) == 2
        assert "no 'user_id' column" in capsys.readouterr().err

    def test_bad_ttl_option_is_a_usage_error(self, tmp_path, capsys):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["tags", "import", "x.csv", "--tag", "vip", "--ttl", "soon"])
        assert exit_info.value.code == 2
        assert "--ttl: must be a positive whole number of seconds, got 'soon'" in capsys.readouterr().err

    def test_killed_mid_way_then_resumed_tags_every_row_with_only_in_flight_rows_resent(self, tmp_path):
        # Expiring tags (a ttl): sending one again only renews it, so in-flight rows may be resent.
        core = FakeCore(delay=0.02)
        concurrency = 4
        try:
            users = [f"u{i}" for i in range(300)]
            write(tmp_path / "seg.csv", "user_id\n" + "\n".join(users) + "\n")
            command = [sys.executable, "-m", "wallet_proxy.cli", "tags", "import", "seg.csv", "--tag", "vip",
                       "--concurrency", str(concurrency), "--rate", "1000", "--backoff", "0.01",
                       "--ttl", "3600"]
            proc = subprocess.Popen(command, cwd=tmp_path, env=cli_env(core.url), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
            deadline = time.monotonic() + 30
            while sum(core.accepted.values()) < 80 and time.monotonic() < deadline:
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            first = sum(core.accepted.values())
            assert 80 <= first < 300, "killed mid-way"
            assert os.path.exists(tmp_path / "seg.csv.journal")

            core.delay = 0.0
            result = subprocess.run(command[:6] + ["--resume"], cwd=tmp_path, env=cli_env(core.url),
                                    capture_output=True, text=True, timeout=60)
        finally:
            core.close()
        assert result.returncode == 0, result.stderr
        assert set(core.accepted) == set(users), "no row lost"
        twice = [u for u, n in core.accepted.items() if n > 1]
        assert max(core.accepted.values()) <= 2
        assert len(twice) <= concurrency, f"only rows in flight at the kill may be resent: {twice}"
        assert "done by the interrupted run" in result.stdout
        assert not os.path.exists(tmp_path / "seg.csv.journal")

    def test_counter_tags_in_flight_at_a_kill_are_not_resent_but_rejected_as_outcome_unknown(self, tmp_path):
        # Counter tags (no ttl) count once per call that reaches Core
        # (https://docs.sessionm.com/developer/APIs/Core/Customers/customers_tags.htm): never twice.
        core = FakeCore(delay=0.05)
        concurrency = 4
        try:
            users = [f"u{i}" for i in range(300)]
            write(tmp_path / "seg.csv", "user_id\n" + "\n".join(users) + "\n")
            command = [sys.executable, "-m", "wallet_proxy.cli", "tags", "import", "seg.csv", "--tag", "vip",
                       "--concurrency", str(concurrency), "--rate", "1000", "--backoff", "0.01"]
            proc = subprocess.Popen(command, cwd=tmp_path, env=cli_env(core.url), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
            deadline = time.monotonic() + 30
            while sum(core.attempts.values()) < 60 and time.monotonic() < deadline:
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)  # rows are in Core's hands (it sleeps 50 ms on each)
            proc.wait(10)
            time.sleep(0.2)  # let the fake finish counting what it received
            assert 60 <= sum(core.attempts.values()) < 300, "killed mid-way"
            core.delay = 0.0
            result = subprocess.run(command[:6] + ["--resume"], cwd=tmp_path, env=cli_env(core.url),
                                    capture_output=True, text=True, timeout=60)
        finally:
            core.close()
        assert result.returncode == 1, result.stderr  # rows rejected: see the rejects file
        assert max(core.accepted.values()) == 1, "a counter tag was sent twice"
        rejected = rejects_of(tmp_path / "seg.rejects.csv")[1:]
        unknown = {r[1] for r in rejected if r[4].startswith("outcome_unknown")}
        assert 1 <= len(unknown) <= concurrency, unknown
        assert set(core.accepted) | unknown == set(users), "no row lost: tagged once, or listed as unknown"
        assert f"outcome_unknown: {len(unknown)}" in result.stdout

    def test_resume_rejects_a_counter_row_journalled_in_flight_without_sending_it(self, tmp_path, core):
        from wallet_proxy.bulk.journal import IN_FLIGHT, Journal, file_identity
        from wallet_proxy.bulk.rows import read_rows

        path = write(tmp_path / "seg.csv", "user_id\nu1\nu2\nu3\n")
        identity = {"job": "tags import", **file_identity(path), "user_column": "user_id", "tags": ["vip"],
                    "ttl": None}
        rows = [r for r in read_rows(path, tags=["vip"]) if r.user_id == "u2"]
        journal = Journal(path + ".journal", identity, resume=False)
        journal.record(rows[0].key, rows[0].line, IN_FLIGHT)  # what a kill -9 mid-call leaves
        journal.close(finished=False)
        summary = run(path, core, tags=["vip"], resume=True)
        assert dict(core.accepted) == {"u1": 1, "u3": 1}, "u2 may have been counted: never sent again"
        assert summary.sent == 2 and summary.rejected == 1 and summary.by_reason == {"outcome_unknown": 1}
        (row,) = rejects_of(tmp_path / "seg.rejects.csv")[1:]
        assert row[:2] == ["3", "u2"] and row[4].startswith("outcome_unknown: ")

    def test_an_expiring_row_journalled_in_flight_is_sent_again(self, tmp_path, core):
        from wallet_proxy.bulk.journal import IN_FLIGHT, Journal, file_identity
        from wallet_proxy.bulk.rows import read_rows

        path = write(tmp_path / "seg.csv", "user_id\nu1\nu2\n")
        identity = {"job": "tags import", **file_identity(path), "user_column": "user_id", "tags": ["vip"],
                    "ttl": 60}
        (row,) = [r for r in read_rows(path, tags=["vip"], ttl=60) if r.user_id == "u2"]
        journal = Journal(path + ".journal", identity, resume=False)
        journal.record(row.key, row.line, IN_FLIGHT)
        journal.close(finished=False)
        assert run(path, core, tags=["vip"], ttl=60, resume=True).sent == 2
        assert dict(core.accepted) == {"u1": 1, "u2": 1}

    def test_sigterm_stops_cleanly_and_resume_sends_nothing_twice(self, tmp_path):
        core = FakeCore(delay=0.02)
        try:
            users = [f"u{i}" for i in range(200)]
            write(tmp_path / "seg.csv", "user_id\n" + "\n".join(users) + "\n")
            command = [sys.executable, "-m", "wallet_proxy.cli", "tags", "import", "seg.csv", "--tag", "vip",
                       "--concurrency", "4", "--rate", "1000"]
            proc = subprocess.Popen(command, cwd=tmp_path, env=cli_env(core.url), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 30
            while sum(core.accepted.values()) < 40 and time.monotonic() < deadline:
                time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=20)
            assert proc.returncode == 130, err
            assert "--resume" in err and "INTERRUPTED" in out
            core.delay = 0.0
            result = subprocess.run(command + ["--resume"], cwd=tmp_path, env=cli_env(core.url),
                                    capture_output=True, text=True, timeout=60)
        finally:
            core.close()
        assert result.returncode == 0, result.stderr
        assert set(core.accepted) == set(users) and set(core.accepted.values()) == {1}
