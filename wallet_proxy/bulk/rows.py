"""Reading a CSV of users for a bulk job: streaming, row validation, and the rejects file.

A Braze segment export (a `user_id` column, or `--user-column`) or rows of `user_id,tags,ttl`. The file
is streamed row by row, so memory does not grow with its length: a physical line longer than
MAX_LINE bytes is never held, it becomes one rejected row. A row that cannot be sent becomes a
`BadRow` with its line number and the reason, which the runner writes to the rejects CSV.
"""
from __future__ import annotations

import csv
import hashlib
import os
import re
import threading
from dataclasses import dataclass
from typing import Iterable, Iterator

from ..ids import normalise_culture, valid_user_id
from ..tags.rules import MAX_TAGS, check_tag, parse_ttl

MAX_LINE = 65536  # bytes in one physical line, its line break included
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as the start of a formula
CULTURE_COLUMNS = ("culture", "language")  # Braze's export names the profile's language `language`


class FileError(Exception):
    """The file, its journal or the options cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Row:
    """One user to process: the CSV line it came from, the user id, and its tags and ttl (tags import)."""

    line: int
    user_id: str
    tags: tuple = ()
    ttl: int | None = None
    culture: str | None = None  # prewarm: the row's normalised culture, when the file has the column

    @property
    def key(self) -> str:
        """Identity for the duplicate check: the same user with the same tags and ttl (or culture) is
        sent once."""
        parts = (self.user_id, "\x1e".join(self.tags), str(self.ttl))
        if self.culture is not None:
            parts += (self.culture,)
        return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class BadRow:
    """A row that cannot be sent, and why (it goes to the rejects CSV)."""

    line: int
    user_id: str
    reason: str
    tags: tuple = ()
    ttl: int | None = None

    @property
    def key(self) -> str:
        return f"#line:{self.line}"


def _open(path: str):
    try:
        return open(path, "rb")
    except OSError as exc:
        raise FileError(f"{path}: cannot open: {exc.strerror or exc}") from exc


def _lines(handle, too_long: list) -> Iterator[str]:
    """The physical lines of a binary file as text, never holding more than MAX_LINE bytes of one.

    A longer line is read through and dropped: its number (1-based) is appended to `too_long` and an
    empty line takes its place, so the CSV reader's line numbers stay those of the file. UTF-8 errors
    raise FileError with the line and byte. Excel's BOM is dropped.
    """
    number = 0
    while True:
        raw = handle.readline(MAX_LINE + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE:
            while not raw.endswith(b"\n"):
                raw = handle.readline(MAX_LINE)
                if not raw:
                    break
            too_long.append(number)
            yield "\n"
            continue
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FileError(f"{handle.name}: line {number} is not UTF-8 (byte 0x{raw[exc.start]:02x} at "
                            f"column {exc.start + 1}); save the file as UTF-8 (Braze exports are "
                            f"UTF-8)") from exc


def scan(path: str) -> int:
    """Check that `path` is readable UTF-8 CSV before anything is sent; return its number of rows.

    One pass over the whole file, so a bad byte or malformed CSV near the end stops the run before its
    first call (the message gives the line), rather than after part of the file was sent. The count
    feeds the progress bar's ETA.
    """
    count = 0
    with _open(path) as handle:
        reader = csv.reader(_lines(handle, []))
        try:
            for cells in reader:
                if any(c.strip() for c in cells):
                    count += 1
        except csv.Error as exc:
            raise FileError(f"{path}: line {reader.line_num}: malformed CSV ({exc})") from exc
    return max(0, count - 1)


def read_rows(path: str, *, user_column: str | None = None, tags: Iterable[str] = (), ttl: int | None = None,
              need_tags: bool = True, cultures: bool = False) -> Iterator[Row | BadRow]:
    """Stream the rows of a Braze segment export or a `user_id,tags,ttl` file; raise FileError.

    The first non-blank line is the header. A `tags` column holds `;`-separated tags and a `ttl`
    column seconds; `tags` are added to every row's own, and `ttl` applies where a row has none.
    With `cultures`, a `culture` (or else `language`) column gives each row's culture, normalised as
    the wallet route normalises `culture=` (empty is en-US).
    """
    column = (user_column or "user_id").strip()
    extra = tuple(dict.fromkeys(tags))
    too_long: list = []
    with _open(path) as handle:
        reader = csv.reader(_lines(handle, too_long))
        header = None
        for cells in reader:
            if any(c.strip() for c in cells):
                header = [c.strip().lower() for c in cells]
                break
        if header is None:
            raise FileError(f"{path}: the file is empty (expected a header line naming a {column!r} column)")
        if column.lower() not in header:
            raise FileError(f"{path}: no {column!r} column in the header (columns: "
                            f"{', '.join(repr(h[:40]) for h in header[:20])}); name the user id column "
                            f"with --user-column")
        user_at = header.index(column.lower())
        tags_at = header.index("tags") if "tags" in header and need_tags else None
        ttl_at = header.index("ttl") if "ttl" in header and need_tags else None
        culture_at = next((header.index(c) for c in CULTURE_COLUMNS if c in header and cultures), None)
        if need_tags and tags_at is None and not extra:
            raise FileError(f"{path}: no tags to add: give --tag TAG (repeatable) or a 'tags' column")
        too_long.clear()  # a long line before the header is no row
        try:
            for cells in reader:
                while too_long and too_long[0] <= reader.line_num:
                    yield BadRow(too_long.pop(0), "", f"line: longer than {MAX_LINE // 1024} KB, not read")
                if not any(c.strip() for c in cells):
                    continue  # blank lines (and lines of empty cells) are not rows
                row = _parse(reader.line_num, cells, user_at, tags_at, ttl_at, extra, ttl)
                if culture_at is not None and isinstance(row, Row):
                    row = _with_culture(row, _cell(cells, culture_at))
                yield row
            while too_long:
                yield BadRow(too_long.pop(0), "", f"line: longer than {MAX_LINE // 1024} KB, not read")
        except csv.Error as exc:
            raise FileError(f"{path}: line {reader.line_num}: malformed CSV ({exc})") from exc


def _with_culture(row: Row, text: str) -> Row | BadRow:
    try:
        culture = normalise_culture(text)
    except ValueError as exc:
        return BadRow(row.line, row.user_id, f"{CULTURE_COLUMNS[0]}: {exc}, got {text[:20]!r}")
    return Row(row.line, row.user_id, row.tags, row.ttl, culture)


def _cell(cells: list, index: int | None) -> str:
    """A cell, stripped, with a rejects file's formula guard undone (`'=...` is read as `=...`)."""
    text = cells[index].strip() if index is not None and index < len(cells) else ""
    return text[1:] if text[:1] == "'" and text[1:2] in FORMULA_START else text


def _parse(line, cells, user_at, tags_at, ttl_at, extra, default_ttl) -> Row | BadRow:
    user_id = _cell(cells, user_at)
    if not user_id:
        return BadRow(line, "", "user_id: empty")
    own = [t.strip() for t in _cell(cells, tags_at).split(";") if t.strip()] if tags_at is not None else []
    tags = tuple(dict.fromkeys(own + list(extra)))
    ttl_text = _cell(cells, ttl_at)
    ttl = default_ttl
    if ttl_text:
        ttl, problem = parse_ttl(ttl_text)  # the webhook's rule: what it refuses is refused here too
        if problem:
            return BadRow(line, user_id, f"ttl: {problem}", tags)
    if not valid_user_id(user_id):
        return BadRow(line, user_id[:128], "user_id: must be 1-128 ASCII letters, digits or -_.@:+",
                      tags, ttl)
    if tags_at is not None or extra:
        if not tags:
            return BadRow(line, user_id, "tags: none (empty tags cell and no --tag)", tags, ttl)
        if len(tags) > MAX_TAGS:
            return BadRow(line, user_id, f"tags: {len(tags)} tags, at most {MAX_TAGS}", tags, ttl)
        for tag in tags:
            problem = check_tag(tag)
            if problem:
                return BadRow(line, user_id, f"tags: {problem}", tags, ttl)
    return Row(line, user_id, tags, ttl)


class Rejects:
    """The rejects CSV (`line,user_id,tags,ttl,reason`), opened on the first reject.

    It has the importer's own columns, so once fixed it can be imported again as it is. Control
    characters in a cell are written escaped (`printable`: hostile ids and tags, and upstream
    reasons, must not run terminal escapes when the file is shown); cells are neutralised against
    spreadsheet formulas (a cell starting with = + - @ gets a leading `'`, which the importer drops
    again when it reads the file), and the file is created 0600, never through a symbolic link: it
    holds user ids.
    """

    HEADER = ("line", "user_id", "tags", "ttl", "reason")

    def __init__(self, path: str, append: bool):
        self.path = path
        self.append = append and os.path.lexists(path)
        self._handle = None
        self._writer = None
        self._lock = threading.Lock()
        if os.path.islink(path):
            raise FileError(f"{path}: is a symbolic link; refusing to write rejects through it")
        if not append and os.path.lexists(path):
            os.remove(path)  # a stale rejects file from an earlier run would mislead

    def write(self, line: int, user_id: str, tags: tuple, ttl, reason: str) -> None:
        # Workers reject rows concurrently (a refused batch rejects several at once): two first writes
        # racing would each open the file and one would truncate the other's rows.
        with self._lock:
            if self._writer is None:
                self._handle = open(private_file(self.path, append=self.append), "a" if self.append else "w",
                                    encoding="utf-8", newline="")
                self._writer = csv.writer(self._handle)
                if not self.append:
                    self._writer.writerow(self.HEADER)
            cells = (line, user_id, ";".join(tags), "" if ttl is None else ttl, reason)
            self._writer.writerow([neutralise(printable(str(c))) for c in cells])
            self._handle.flush()  # before the journal says "rejected", so kill -9 never loses a reject

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


# Characters a terminal acts on or that change how a line reads: C0 and C1 controls (ESC starts CSI and
# OSC sequences, CR rewrites a line, NUL, LF...), DEL, line and paragraph separators, and the
# bidirectional overrides and isolates ("Trojan Source"). Written as \\xHH / \\uHHHH instead.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` safe to show a person: `cat rejects.csv` or an error line runs no terminal escape."""
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text)


def neutralise(cell: str) -> str:
    """Keep a spreadsheet from reading `cell` as a formula (OWASP "CSV injection"): prefix a `'`."""
    return "'" + cell if cell.startswith(FORMULA_START) else cell


def private_file(path: str, *, append: bool = False, exclusive: bool = False) -> int:
    """Open (or create) `path` for writing, mode 0600, refusing a symbolic link; return the fd.

    A file left by an older version with wider permissions is narrowed to 0600.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    flags |= os.O_EXCL if exclusive else (os.O_APPEND if append else os.O_TRUNC)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if os.path.islink(path):
            raise FileError(f"{path}: is a symbolic link; refusing to write through it") from exc
        raise FileError(f"{path}: cannot create: {exc.strerror or exc}") from exc
    os.fchmod(fd, 0o600)
    return fd


def default_rejects(path: str) -> str:
    """FILE.csv -> FILE.rejects.csv"""
    root, ext = os.path.splitext(path)
    return f"{root}.rejects{ext or '.csv'}"
