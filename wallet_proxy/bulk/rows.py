"""Reading a CSV of users for a bulk job: streaming, row validation, and the rejects file.

A Braze segment export (a `user_id` column, or `--user-column`) or rows of `user_id,tags,ttl`. The file
is streamed row by row, so memory does not grow with its length; a row that cannot be sent becomes a
`BadRow` with its line number and the reason, which the runner writes to the rejects CSV.
"""
from __future__ import annotations

import csv
import hashlib
import os
import threading
from dataclasses import dataclass
from typing import Iterable, Iterator

from ..ids import valid_user_id
from ..tags.rules import MAX_TAGS, check_tag


class FileError(Exception):
    """The file, its journal or the options cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Row:
    """One user to process: the CSV line it came from, the user id, and its tags and ttl (tags import)."""

    line: int
    user_id: str
    tags: tuple = ()
    ttl: int | None = None

    @property
    def key(self) -> str:
        """Identity for the duplicate check: the same user with the same tags and ttl is sent once."""
        raw = "\x1f".join((self.user_id, "\x1e".join(self.tags), str(self.ttl)))
        return hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()


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



def scan(path: str) -> int:
    """Check that `path` is readable UTF-8; return its number of non-blank lines after the header.

    Decoding line by line in binary gives the exact line of a bad byte, which a text stream (decoding
    8 KB chunks) cannot; the count feeds the progress bar's ETA.
    """
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise FileError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    count = 0
    with handle:
        for number, raw in enumerate(handle, 1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise FileError(f"{path}: line {number} is not UTF-8 (byte 0x{raw[exc.start]:02x} at "
                                f"column {exc.start + 1}); save the file as UTF-8 (Braze exports are "
                                f"UTF-8)") from exc
            if text.strip():
                count += 1
    return max(0, count - 1)


def read_rows(path: str, *, user_column: str | None = None, tags: Iterable[str] = (), ttl: int | None = None,
              need_tags: bool = True) -> Iterator[Row | BadRow]:
    """Stream the rows of a Braze segment export or a `user_id,tags,ttl` file; raise FileError.

    The first non-blank line is the header. A `tags` column holds `;`-separated tags and a `ttl`
    column seconds; `tags` are added to every row's own, and `ttl` applies where a row has none.
    """
    column = (user_column or "user_id").strip()
    extra = tuple(dict.fromkeys(tags))
    handle = open(path, encoding="utf-8-sig", newline="")  # utf-8-sig drops Excel's BOM
    with handle:
        reader = csv.reader(handle)
        header = None
        for cells in reader:
            if any(c.strip() for c in cells):
                header = [c.strip().lower() for c in cells]
                break
        if header is None:
            raise FileError(f"{path}: the file is empty (expected a header line naming a {column!r} column)")
        if column.lower() not in header:
            raise FileError(f"{path}: no {column!r} column in the header (columns: "
                            f"{', '.join(repr(h) for h in header[:20])}); name the user id column with "
                            f"--user-column")
        user_at = header.index(column.lower())
        tags_at = header.index("tags") if "tags" in header and need_tags else None
        ttl_at = header.index("ttl") if "ttl" in header and need_tags else None
        if need_tags and tags_at is None and not extra:
            raise FileError(f"{path}: no tags to add: give --tag TAG (repeatable) or a 'tags' column")
        try:
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue  # blank lines (and lines of empty cells) are not rows
                yield _parse(reader.line_num, cells, user_at, tags_at, ttl_at, extra, ttl)
        except csv.Error as exc:
            raise FileError(f"{path}: line {reader.line_num}: malformed CSV ({exc})") from exc


def _cell(cells: list, index: int | None) -> str:
    return cells[index].strip() if index is not None and index < len(cells) else ""


def _parse(line, cells, user_at, tags_at, ttl_at, extra, default_ttl) -> Row | BadRow:
    user_id = _cell(cells, user_at)
    if not user_id:
        return BadRow(line, "", "user_id: empty")
    own = [t.strip() for t in _cell(cells, tags_at).split(";") if t.strip()] if tags_at is not None else []
    tags = tuple(dict.fromkeys(own + list(extra)))
    ttl_text = _cell(cells, ttl_at)
    ttl = default_ttl
    if ttl_text:
        try:
            ttl = int(ttl_text)
        except ValueError:
            ttl = None
        if ttl is None or ttl <= 0:
            return BadRow(line, user_id,
                          f"ttl: must be a positive whole number of seconds, got {ttl_text[:20]!r}", tags)
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

    It has the importer's own columns, so once fixed it can be imported again as it is.
    """

    HEADER = ("line", "user_id", "tags", "ttl", "reason")

    def __init__(self, path: str, append: bool):
        self.path = path
        self.append = append and os.path.exists(path)
        self._handle = None
        self._writer = None
        self._lock = threading.Lock()
        if not append and os.path.exists(path):
            os.remove(path)  # a stale rejects file from an earlier run would mislead

    def write(self, line: int, user_id: str, tags: tuple, ttl, reason: str) -> None:
        # Workers reject rows concurrently (a refused batch rejects several at once): two first writes
        # racing would each open the file and one would truncate the other's rows.
        with self._lock:
            if self._writer is None:
                self._handle = open(self.path, "a" if self.append else "w", encoding="utf-8", newline="")
                self._writer = csv.writer(self._handle)
                if not self.append:
                    self._writer.writerow(self.HEADER)
            self._writer.writerow((line, user_id, ";".join(tags), "" if ttl is None else ttl, reason))
            self._handle.flush()  # before the journal says "rejected", so kill -9 never loses a reject

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()




def default_rejects(path: str) -> str:
    """FILE.csv -> FILE.rejects.csv"""
    root, ext = os.path.splitext(path)
    return f"{root}.rejects{ext or '.csv'}"
