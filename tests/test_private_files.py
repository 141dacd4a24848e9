"""The command line's own files -- `attributes sync`'s `--state`, the journal of `tags import` -- through the
installed `wallet-proxy` command (issue #22 item 4; README "A whole segment, every night").

They hold user ids, and whoever can change them can mark profiles "already synced" or rows "done":
created 0600, never through a symbolic link (the file, nor SQLite's -wal and -shm beside it), an
existing one others may read or write refused; every file problem is one line and exit status 2.
"""
from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

COMMAND = str(Path(sys.executable).with_name("wallet-proxy"))


def env() -> dict:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SESSIONM_", "BRAZE_", "WALLET_PROXY_"))}
    environ.update(WALLET_PROXY_SANDBOX="1", PYTHONUNBUFFERED="1")  # the built-in simulators, on purpose
    return environ


def run(tmp_path, *args) -> tuple[int, list[str]]:
    """Exit status and the stderr lines of `wallet-proxy ARGS` meant for the operator (the sandbox's
    own warning left out)."""
    result = subprocess.run([COMMAND, *args], cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines()  # the sandbox's announcements (cli.py, services.py)
             if "built-in SessionM simulator" not in line and "using the built-in simulators" not in line]
    return result.returncode, lines


@pytest.fixture
def segment(tmp_path) -> str:
    (tmp_path / "seg.csv").write_text("user_id\nu1\nu2\n")
    return "seg.csv"


def sync(tmp_path, segment, state) -> tuple[int, list[str]]:
    return run(tmp_path, "attributes", "sync", segment, "--state", str(state))


def refused(result, *words) -> None:
    code, lines = result
    assert code == 2 and len(lines) == 1, result
    assert lines[0].startswith("wallet-proxy attributes sync: "), lines
    for word in words:
        assert word in lines[0], (word, lines)


class TestStateFile:
    def test_created_0600_and_used_again(self, tmp_path, segment):
        state = tmp_path / "state.db"
        assert sync(tmp_path, segment, state) == (0, [])
        for name in (state, Path(f"{state}-wal"), Path(f"{state}-shm")):
            if name.exists():
                assert stat.S_IMODE(name.stat().st_mode) == 0o600, name
        assert sync(tmp_path, segment, state) == (0, [])

    def test_a_missing_folder_is_one_line(self, tmp_path, segment):
        refused(sync(tmp_path, segment, tmp_path / "nowhere" / "state.db"), "nowhere/state.db",
                "No such file or directory")

    @pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
    def test_a_symbolic_link_is_refused_and_its_target_untouched(self, tmp_path, segment, suffix):
        target = tmp_path / "elsewhere"
        target.write_text("keep me")
        state = tmp_path / "state.db"
        if suffix:  # a state file of a finished run, with a link planted beside it
            assert sync(tmp_path, segment, state)[0] == 0
            Path(f"{state}{suffix}").unlink(missing_ok=True)
        os.symlink(target, f"{state}{suffix}")
        refused(sync(tmp_path, segment, state), f"state.db{suffix}: is a symbolic link")
        assert target.read_text() == "keep me"

    @pytest.mark.parametrize("mode", [0o666, 0o644, 0o660])
    def test_an_existing_file_others_may_read_or_change_is_refused_as_it_is(self, tmp_path, segment, mode):
        state = tmp_path / "state.db"
        assert sync(tmp_path, segment, state)[0] == 0
        os.chmod(state, mode)
        refused(sync(tmp_path, segment, state), f"has permissions {mode:04o}", "chmod 600")
        assert stat.S_IMODE(state.stat().st_mode) == mode

    def test_something_that_is_no_state_file_is_one_line(self, tmp_path, segment):
        garbage = tmp_path / "garbage.db"
        garbage.write_text("not a database\n" * 100)
        garbage.chmod(0o600)
        refused(sync(tmp_path, segment, garbage), "garbage.db", "cannot use it as the state file")
        (tmp_path / "folder.db").mkdir()
        refused(sync(tmp_path, segment, tmp_path / "folder.db"), "folder.db: is not a regular file")


class TestJournal:
    def test_an_interrupted_runs_journal_others_may_change_is_refused(self, tmp_path, segment):
        # a journal left by an interrupted run (the journal of a finished run is deleted)
        code, lines = run(tmp_path, "tags", "import", "seg.csv", "--tag", "vip", "--ttl", "60")
        assert code == 0, lines
        from wallet_proxy.bulk.journal import Journal, file_identity

        identity = {"job": "tags import", **file_identity(str(tmp_path / "seg.csv")), "user_column": "user_id",
                    "tags": ["vip"], "ttl": 60}
        Journal(str(tmp_path / "seg.csv.journal"), identity, resume=False).close(finished=False)
        os.chmod(tmp_path / "seg.csv.journal", 0o666)
        code, lines = run(tmp_path, "tags", "import", "seg.csv", "--resume")
        assert code == 2 and len(lines) == 1, lines
        assert lines[0].startswith("wallet-proxy tags import: ") and "has permissions 0666" in lines[0], lines
        os.chmod(tmp_path / "seg.csv.journal", 0o600)
        code, lines = run(tmp_path, "tags", "import", "seg.csv", "--resume")
        assert code == 0, lines

    def test_a_rejects_file_in_a_missing_folder_is_one_line(self, tmp_path):
        (tmp_path / "bad.csv").write_text("user_id\nu1\nbad id\n")
        code, lines = run(tmp_path, "tags", "import", "bad.csv", "--tag", "vip", "--ttl", "60",
                          "--rejects", str(tmp_path / "nowhere" / "r.csv"))
        assert code == 2 and len(lines) == 1, lines
        assert "nowhere/r.csv: cannot create: No such file or directory" in lines[0], lines


# -- control characters in what a person reads (issue #22 item 5) ----------------------------------------

HOSTILE = ('user_id,tags,ttl\n"evil\x1b]0;owned\x07id",vip,60\n"a\x1b[2Jb",vip,60\n"line\r\nbreak",vip,60\n'
           'u1,"tag\x9b31m",60\n"=cmd|calc",vip,60\n"x\u202eevil",vip,60\n"c1\x85x",vip,60\nu2,vip,60\n')
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


class TestNothingATerminalRuns:
    def test_the_rejects_file_escapes_control_characters_and_still_neutralises_formulas(self, tmp_path):
        (tmp_path / "hostile.csv").write_text(HOSTILE, encoding="utf-8")
        code, lines = run(tmp_path, "tags", "import", "hostile.csv")
        assert code == 1, lines
        text = (tmp_path / "hostile.rejects.csv").read_bytes().decode("utf-8")
        rows = text.split("\r\n")  # the CSV's own row ends; no cell runs over a line, no control character
        assert not [row for row in rows if CONTROL.search(row) or "\n" in row or "\r" in row], repr(text)
        assert rows[0] == "line,user_id,tags,ttl,reason" and rows[-1] == "" and len(rows) == 9, rows
        assert rows[1].startswith(r"2,evil\x1b]0;owned\x07id,vip,60,"), rows[1]
        assert rows[3].startswith(r"5,line\x0d\x0abreak,"), rows[3]
        assert r"tag\x9b31m" in rows[4] and rows[6].startswith(r"8,x\u202eevil,") and r"c1\x85x" in rows[7]
        assert rows[5].startswith("7,'=cmd|calc,"), rows[5]  # the formula stays text in a spreadsheet

    def test_error_and_summary_lines_escape_what_came_from_outside(self, tmp_path):
        name = "seg\x1b[31m\x9b.csv"  # a file name is outside text too
        (tmp_path / name).write_text("email\nx@example.com\n")
        result = subprocess.run([COMMAND, "tags", "import", name, "--tag", "vip"], cwd=tmp_path, env=env(),
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and not CONTROL.search(result.stderr + result.stdout), repr(result.stderr)
        assert r"seg\x1b[31m\x9b.csv: no 'user_id' column" in result.stderr, result.stderr
        (tmp_path / name).write_text("user_id\nu1\nbad id\n")
        result = subprocess.run([COMMAND, "tags", "import", name, "--tag", "vip", "--ttl", "60"], cwd=tmp_path,
                                env=env(), capture_output=True, text=True, timeout=60)
        assert result.returncode == 1 and not CONTROL.search(result.stderr + result.stdout), repr(result.stdout)
        assert r"tags import seg\x1b[31m\x9b.csv: 2 rows, 1 tagged" in result.stdout, result.stdout

    def test_the_commands_log_lines_escape_them_too(self):
        # a log line may quote outside text (an upstream's answer, a traceback's message)
        script = ("import logging; from wallet_proxy.cli import setup_logging; setup_logging(); "
                  "logging.getLogger('wallet_proxy').warning('upstream said %s', '\\x1b]0;owned\\x07\\x9b2J');"
                  "logging.getLogger('wallet_proxy').exception('boom', exc_info=ValueError('\\x1b[2J'))")
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert not CONTROL.search(result.stderr), repr(result.stderr)
        assert r"upstream said \x1b]0;owned\x07\x9b2J" in result.stderr and r"ValueError: \x1b[2J" in result.stderr
