"""JSON on the hot paths (SessionM's answers in, wallet bodies out) through orjson, a C codec.

A 50-offer SessionM answer is ~37 KB: the standard library spent ~0.3 ms decoding it and ~0.4 ms
encoding the flat view, a tenth of a miss's CPU (bench/RESULTS.md, "CPU per distinct-user miss").
orjson writes the same compact UTF-8 JSON as `json.dumps(separators=(",", ":"), ensure_ascii=False)`
(insertion order, the same escapes; a float may be spelled 1e16 for 1e+16, the same number). What it
refuses -- NaN/Infinity literals, lone surrogates, integers past 64 bits when writing, non-string
keys -- goes to the standard library, so those are read and written as before. One reading differs:
orjson reads an integer past 64 bits as a float (the same value to 16 digits; no balance comes near).
"""
from __future__ import annotations

import json

import orjson


def loads(data: bytes | str):
    """Decode JSON text or UTF-8 bytes; ValueError when it is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass  # the standard library decides: it accepts what orjson refuses, or raises ValueError
    return json.loads(data)


def dumps(value) -> bytes:
    """Compact UTF-8 JSON bytes (no spaces, non-ASCII kept as UTF-8)."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: big ints, non-str keys, lone surrogates
        pass
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


_LINE_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def log_line(value: dict) -> str:
    """One log line's JSON text: compact, non-ASCII kept, anything not JSON written as its `str()`.

    The same text as `json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)`, from one
    C call: the standard library's encoder is set up anew for each call with these options, and a log line
    is written for every request."""
    try:
        return orjson.dumps(value, default=str, option=_LINE_OPTIONS).decode()
    except TypeError:  # big ints, non-str keys, lone surrogates: the standard library writes them
        pass
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
