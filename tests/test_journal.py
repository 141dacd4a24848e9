"""The bulk runs' on-disk journal: what --resume relies on to lose no row and resend none that finished."""
from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading

import pytest

from wallet_proxy.bulk.journal import DONE, REJECTED, Journal, file_identity, journal_path, stored_identity
from wallet_proxy.bulk.rows import FileError

IDENTITY = {"file": {"size": 10, "head": "ab"}, "tags": ["vip"], "ttl": None}


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "seg.csv.journal")


def test_journal_path_sits_beside_the_input():
    assert journal_path("/data/seg.csv") == "/data/seg.csv.journal"


def test_records_outcomes_and_reads_them_back(path):
    journal = Journal(path, IDENTITY, resume=False)
    assert journal.lookup("u1") is None
    journal.record("u1", 2, DONE)
    journal.record("u2", 3, REJECTED)
    assert journal.lookup("u1") == (2, DONE) and journal.lookup("u2") == (3, REJECTED)
    journal.record("u1", 2, REJECTED)  # a later outcome replaces the earlier one
    assert journal.lookup("u1") == (2, REJECTED)
    journal.close(finished=False)
    assert os.path.exists(path)


def test_a_fresh_run_refuses_a_journal_left_by_an_interrupted_one(path):
    Journal(path, IDENTITY, resume=False).close(finished=False)
    with pytest.raises(FileError, match="--resume"):
        Journal(path, IDENTITY, resume=False)


def test_resume_needs_a_journal(path):
    with pytest.raises(FileError, match="no journal"):
        Journal(path, IDENTITY, resume=True)


def test_resume_reads_what_the_first_run_recorded(path):
    first = Journal(path, IDENTITY, resume=False)
    first.record("u1", 2, DONE)
    first.close(finished=False)
    again = Journal(path, IDENTITY, resume=True)
    assert again.lookup("u1") == (2, DONE) and again.lookup("u9") is None
    again.close(finished=False)


@pytest.mark.parametrize("change", ["tags", "ttl", "file"])
def test_resume_with_other_options_is_refused_naming_them(path, change):
    Journal(path, IDENTITY, resume=False).close(finished=False)
    other = dict(IDENTITY, **{change: "different"})
    with pytest.raises(FileError, match=change):
        Journal(path, other, resume=True)
    assert stored_identity(path) == IDENTITY, "the refused run did not overwrite the identity"


def test_a_finished_run_removes_its_journal_unless_kept(path):
    journal = Journal(path, IDENTITY, resume=False, keep=False)
    journal.record("u1", 2, DONE)
    journal.close(finished=True)
    assert not any(os.path.exists(path + suffix) for suffix in ("", "-wal", "-shm"))


def test_a_kept_or_unfinished_journal_stays(path):
    Journal(path, IDENTITY, resume=False, keep=True).close(finished=True)
    assert os.path.exists(path)
    os.remove(path)
    Journal(path, IDENTITY, resume=False).close(finished=True)  # kept unless asked otherwise
    assert os.path.exists(path)
    os.remove(path)
    Journal(path, IDENTITY, resume=False, keep=False).close(finished=False)
    assert os.path.exists(path)


def test_a_scratch_journal_is_always_removed(path):
    Journal(path, IDENTITY, resume=False, scratch=True).close(finished=False)
    assert not os.path.exists(path)


def test_each_record_survives_kill_9(path, tmp_path):
    # A child records rows and is killed without closing: every committed row is there on resume.
    script = textwrap.dedent(f"""
        import os, signal
        from wallet_proxy.bulk.journal import DONE, Journal
        j = Journal({path!r}, {IDENTITY!r}, resume=False)
        for i in range(50):
            j.record(f"u{{i}}", i + 2, DONE)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=os.getcwd(), timeout=60)
    assert done.returncode == -9
    journal = Journal(path, IDENTITY, resume=True)
    assert [journal.lookup(f"u{i}") for i in (0, 49)] == [(2, DONE), (51, DONE)]
    journal.close(finished=False)


def test_stored_identity(tmp_path, path):
    assert stored_identity(path) is None
    (tmp_path / "junk.journal").write_bytes(b"not a database at all" * 100)
    assert stored_identity(str(tmp_path / "junk.journal")) is None
    Journal(path, IDENTITY, resume=False).close(finished=False)
    assert stored_identity(path) == IDENTITY
    empty = str(tmp_path / "empty.journal")
    db = sqlite3.connect(empty)
    db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT)")
    db.commit()
    db.close()
    assert stored_identity(empty) is None


def test_file_identity_notices_a_different_file(tmp_path):
    a = tmp_path / "a.csv"
    a.write_text("user_id\nu1\n")
    first = file_identity(str(a))
    assert first == file_identity(str(a)) and first["size"] == a.stat().st_size
    a.write_text("user_id\nu2\n")  # same size, other content
    assert file_identity(str(a))["head"] != first["head"]
    a.write_text("user_id\nu1\nu3\n")
    assert file_identity(str(a))["size"] != first["size"]
    big = tmp_path / "big.csv"
    big.write_bytes(b"x" * 70000)
    head = file_identity(str(big))["head"]
    big.write_bytes(b"x" * 69999 + b"y")  # differs only past the first 64 KB, same size: not noticed
    assert file_identity(str(big))["head"] == head and file_identity(str(big))["size"] == 70000
    big.write_bytes(b"x" * 65536 + b"y" + b"x" * 4463)  # the first byte past 64 KB: not noticed either
    assert file_identity(str(big))["head"] == head
    big.write_bytes(b"x" * 65535 + b"y" + b"x" * 4464)  # the last byte of the first 64 KB: noticed
    assert file_identity(str(big))["head"] != head


@pytest.mark.parametrize("suffix", ["-wal", "-shm"])
def test_a_link_in_place_of_sqlites_side_files_is_refused(path, tmp_path, suffix):
    # SQLite writes the journal's pages to FILE.journal-wal/-shm: a link there would send them elsewhere.
    target = tmp_path / "elsewhere"
    target.write_text("keep me")
    os.symlink(target, path + suffix)
    with pytest.raises(FileError, match=suffix):
        Journal(path, IDENTITY, resume=False)
    assert target.read_text() == "keep me" and not os.path.exists(path)


def test_a_second_run_started_at_the_same_moment_does_not_wipe_the_first(path, monkeypatch):
    first = Journal(path, IDENTITY, resume=False)
    first.record("u1", 2, DONE)
    # the second run looked before the first had created its journal (the check and the creation race)
    monkeypatch.setattr(os.path, "lexists", lambda name: False)
    with pytest.raises(FileError):
        Journal(path, IDENTITY, resume=False)
    monkeypatch.undo()
    assert first.lookup("u1") == (2, DONE)
    first.close(finished=False)
    again = Journal(path, IDENTITY, resume=True)
    assert again.lookup("u1") == (2, DONE)
    again.close(finished=False)


def test_resume_never_follows_a_link_planted_after_the_check(path, tmp_path, monkeypatch):
    Journal(path, IDENTITY, resume=False).close(finished=False)
    target = tmp_path / "elsewhere"
    target.write_text("keep me")
    target.chmod(0o644)
    os.rename(path, tmp_path / "moved.journal")
    os.symlink(target, path)
    monkeypatch.setattr(os.path, "islink", lambda name: False)  # swapped in after the link check
    with pytest.raises(FileError, match="is a symbolic link"):  # O_NOFOLLOW's ELOOP, in words
        Journal(path, IDENTITY, resume=True)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644 and target.read_text() == "keep me"


@pytest.mark.parametrize("suffix", ["", "-wal"])
@pytest.mark.parametrize("mode", [0o644, 0o666, 0o620])
def test_resume_refuses_a_journal_others_may_read_or_change(path, suffix, mode):
    # whoever can write it can mark rows done (never sent); whoever can read it reads user ids (#22)
    journal = Journal(path, IDENTITY, resume=False)
    journal.record("u1", 2, DONE)
    journal.db.execute("PRAGMA wal_autocheckpoint=0")
    assert os.path.exists(path + "-wal")
    os.chmod(path + suffix, mode)
    with pytest.raises(FileError, match=f"{suffix}: has permissions {mode:04o}.*chmod 600"):
        Journal(path, IDENTITY, resume=True)
    assert stat.S_IMODE(os.stat(path + suffix).st_mode) == mode  # left as it is for the operator to check
    journal.close(finished=False)


def test_the_runners_threads_record_through_the_journals_lock(path):
    journal = Journal(path, IDENTITY, resume=False)

    def worker(n):
        with journal.lock:
            journal.record(f"u{n}", n + 2, DONE)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [journal.lookup(f"u{n}") for n in range(4)] == [(n + 2, DONE) for n in range(4)]
    journal.close(finished=False)


def test_a_refused_resume_names_exactly_the_options_that_changed(path):
    Journal(path, IDENTITY, resume=False).close(finished=False)
    with pytest.raises(FileError, match=r"\(tags\);"):
        Journal(path, dict(IDENTITY, tags=["other"]), resume=True)
    with pytest.raises(FileError, match=r"\(delimiter\);"):  # an option the first run did not have
        Journal(path, dict(IDENTITY, delimiter=";"), resume=True)


def test_a_finished_journal_leaves_no_side_file_even_while_another_reader_has_it_open(path):
    # A side file left behind would be paired with the next run's new journal of the same name.
    journal = Journal(path, IDENTITY, resume=False, keep=False)
    journal.record("u1", 2, DONE)
    reader = sqlite3.connect(path)
    assert reader.execute("SELECT count(*) FROM rows").fetchone() == (1,)
    try:
        journal.close(finished=True)
        assert [s for s in ("", "-wal", "-shm") if os.path.exists(path + s)] == []
    finally:
        reader.close()
