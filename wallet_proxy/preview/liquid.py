"""The preview page's Liquid playground: python-liquid with Braze's syntax, filters and hard limits.

Braze renders Liquid with Shopify's engine plus its own filters and tags; this module gets close
enough for a marketer to try a Connected Content template against a real wallet. Everything a
template can do is bounded (source size, loop iterations, output bytes, local variables, sequence
and number sizes, wall-clock time), because the playground runs in the same workers that answer
Braze. No Flask here: the route maps `TemplateProblem` to an HTTP error.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import inspect
import json
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from liquid import Environment, RenderContext
from liquid.ast import Node
from liquid.exceptions import (
    FilterArgumentError,
    LiquidError,
    LiquidSyntaxError,
    ResourceLimitError,
    UnknownFilterError,
)
from liquid.tag import Tag
from liquid.token import TOKEN_EXPRESSION
from liquid.undefined import is_undefined

MAX_SOURCE_CHARS = 20_000
MAX_OUTPUT_BYTES = 200_000
MAX_LOOP_ITERATIONS = 10_000
MAX_LOCALS_BYTES = 1_000_000
MAX_SEQUENCE_ITEMS = 10_000
MAX_INT_BITS = 4_096
MAX_SECONDS = 0.5

# Braze's `${name}` attribute syntax (`{{${first_name}}}`): inside markup it means the variable `name`.
_DOLLAR = re.compile(r"\$\{\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*\}")
_BLOCK_TAG = re.compile(r"\{%-?\s*(end)?(\w+)")
_SAVE = re.compile(r":save\s+([A-Za-z_][A-Za-z0-9_]*)")


class RenderTimeout(ResourceLimitError):
    """The template ran longer than the playground allows."""


class AbortMessage(Exception):
    """Braze's `{% abort_message('why') %}`: the message would not be sent for this user."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class TemplateProblem(Exception):
    """Why a template did not render: kind (syntax, render, limit), reason, and where (1-based)."""

    kind: str
    reason: str
    line: int | None = None
    column: int | None = None
    source_line: str | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.reason}"

    def as_dict(self) -> dict:
        """The problem as JSON-ready details."""
        return {"kind": self.kind, "reason": self.reason, "line": self.line, "column": self.column,
                "source_line": self.source_line}


@dataclass
class Rendered:
    """A finished render: its output, or the reason Braze would abort the message."""

    output: str
    aborted: str | None
    elapsed_ms: float


def markup_spans(source: str):
    """Yield (start, end) of each `{{ }}` / `{% %}` in one linear pass; end is None when never closed.

    `${name}` is one atom, so the `}` closing it is not taken for the end of `{{ }}`. A scan rather
    than a lazy regex: python-liquid's lexer (and `.*?` regexes) go quadratic on unclosed markup.
    """
    pos = 0
    while True:
        candidates = [i for i in (source.find("{{", pos), source.find("{%", pos)) if i >= 0]
        if not candidates:
            return
        start = min(candidates)
        closer = "}}" if source.startswith("{{", start) else "%}"
        i, end = start + 2, -1
        while True:
            if end < i:
                end = source.find(closer, i)
            dollar = source.find("${", i, end if end >= 0 else len(source))
            if dollar < 0:
                break
            close = source.find("}", dollar + 2)
            if close < 0:
                break
            i = close + 1
        if end < 0:
            yield start, None
            return
        yield start, end + 2
        pos = end + 2


def braze_syntax(source: str) -> str:
    """Rewrite Braze's `${name}` to `name` inside `{{ }}` and `{% %}` (line numbers unchanged)."""
    out, pos = [], 0
    for start, end in markup_spans(source):
        end = len(source) if end is None else end
        out.append(source[pos:start])
        out.append(_DOLLAR.sub(r"\1", source[start:end]))
        pos = end
    out.append(source[pos:])
    return "".join(out)


# --- Braze filters (https://www.braze.com/docs/user_guide/personalization_and_dynamic_content/liquid/)

def _text(value) -> str:
    if value is None or is_undefined(value):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _digest(name):
    return lambda value: hashlib.new(name, _text(value).encode()).hexdigest()


def _hmac(name, encoding):
    def apply(value, key=""):
        mac = hmac.new(_text(key).encode(), _text(value).encode(), name).digest()
        return mac.hex() if encoding == "hex" else base64.b64encode(mac).decode()
    return apply


def url_escape(value) -> str:
    """Escape what a URL may not contain, keeping URL punctuation (Ruby's URI.escape)."""
    return quote(_text(value), safe="!#$&'()*+,-./:;=?@[]_~")


def url_param_escape(value) -> str:
    """Escape everything a query parameter value may not contain, `&` included (CGI.escape)."""
    return quote(_text(value), safe="-._~")


def json_escape(value) -> str:
    """Escape a string for use inside a JSON string literal (no surrounding quotes)."""
    return json.dumps(_text(value), ensure_ascii=False)[1:-1]


def property_accessor(value, key=""):
    """`{{hash | property_accessor: 'key'}}`: look a key up by a computed name."""
    if isinstance(value, dict):
        return value.get(_text(key))
    return None


def number_with_delimiter(value, delimiter=",") -> str:
    """123456 -> 123,456 (Braze's number formatting filter)."""
    try:
        number = float(value) if "." in _text(value) else int(_text(value))
    except ValueError:
        return _text(value)
    text = f"{number:,}"
    return text.replace(",", _text(delimiter)) if delimiter != "," else text


def _to_datetime(value, now: datetime) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    text = _text(value).strip()
    if text in ("now", "today"):
        return now
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        try:
            return datetime.fromtimestamp(float(text), tz=timezone.utc)
        except (OverflowError, OSError, ValueError):  # past year 9999: not a date a template can show
            raise FilterArgumentError(f"date: {text[:40]} is out of range as epoch seconds",
                                      token=None) from None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class BrazeEnvironment(Environment):
    """A python-liquid environment with Braze's filters and tags and the playground's limits."""

    def __init__(self, *, clock=time.time, max_output: int = MAX_OUTPUT_BYTES,
                 max_loop: int = MAX_LOOP_ITERATIONS, max_locals: int = MAX_LOCALS_BYTES):
        super().__init__(strict_filters=True)
        self.clock = clock
        # class-level knobs in python-liquid; set per instance so tests can tighten them
        self.loop_iteration_limit = max_loop
        self.output_stream_limit = max_output
        self.local_namespace_limit = max_locals
        for name, func in {
            "md5": _digest("md5"), "sha1": _digest("sha1"), "sha2": _digest("sha256"),
            "hmac_sha1": _hmac("sha1", "hex"), "hmac_sha1_hex": _hmac("sha1", "hex"),
            "hmac_sha1_base64": _hmac("sha1", "base64"), "hmac_sha256": _hmac("sha256", "hex"),
            "hmac_sha256_hex": _hmac("sha256", "hex"), "hmac_sha256_base64": _hmac("sha256", "base64"),
            "base64": lambda v: base64.b64encode(_text(v).encode()).decode(),
            "url_escape": url_escape, "url_param_escape": url_param_escape, "json_escape": json_escape,
            "property_accessor": property_accessor, "number_with_delimiter": number_with_delimiter,
            "date": self._date, "time_zone": self._time_zone,
        }.items():
            self.add_filter(name, func)
        self.add_tag(AbortMessageTag)
        self.add_tag(ConnectedContentTag)

    def _date(self, value, fmt=None):
        """Braze's `date`: strftime on a date, an ISO string, epoch seconds, or 'now' (UTC)."""
        if value is None or is_undefined(value):
            return ""
        moment = _to_datetime(value, datetime.fromtimestamp(self.clock(), tz=timezone.utc))
        if moment is None:
            return _text(value)
        if fmt is None or is_undefined(fmt):
            return moment.isoformat()
        if _text(fmt) == "%s":
            return str(int(moment.timestamp()))
        try:
            return moment.strftime(_text(fmt))
        except ValueError as exc:
            raise FilterArgumentError(f"date: {exc}", token=None) from exc

    def _time_zone(self, value, zone=""):
        """Braze's `time_zone`: the same moment in another IANA zone ('America/New_York')."""
        moment = _to_datetime(value, datetime.fromtimestamp(self.clock(), tz=timezone.utc))
        if moment is None:
            return _text(value)
        try:
            return moment.astimezone(ZoneInfo(_text(zone)))
        except (ZoneInfoNotFoundError, ValueError) as exc:
            shown = repr(_text(zone)[:40]) if isinstance(zone, str) else "that value"
            raise FilterArgumentError(f"time_zone: unknown time zone {shown} (expected a name such as "
                                      "'America/New_York')", token=None) from exc


class LimitedContext(RenderContext):
    """A render context that enforces the wall-clock budget and size limits on every loop and filter."""

    deadline: float = float("inf")
    monotonic = staticmethod(time.monotonic)
    max_items = MAX_SEQUENCE_ITEMS

    def check_time(self) -> None:
        """Raise RenderTimeout once the render's budget is spent."""
        if self.monotonic() > self.deadline:
            raise RenderTimeout("the template took too long to render", token=None)

    def loop(self, namespace, forloop):
        """Check the clock before every iteration, not only when the loop starts."""
        inner = forloop.it

        def timed():
            for item in inner:
                self.check_time()
                yield item

        forloop.it = timed()
        return super().loop(namespace, forloop)

    def filter(self, name, token):
        """Wrap every filter so a huge sequence, number or string cannot be built or consumed."""
        func = super().filter(name, token)
        context = self

        def limited(left, *args, **kwargs):
            context.check_time()
            for value in (left, *args):
                context.check_size(value, name)
            result = func(left, *args, **kwargs)
            context.check_size(result, name)
            return result

        return limited

    def check_size(self, value, name: str) -> None:
        """Raise a resource error for values that could take the worker down."""
        if isinstance(value, bool):
            return
        if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            raise ResourceLimitError(f"{name}: number too large", token=None)
        if isinstance(value, (range, list, tuple, dict)) and len(value) > self.max_items:
            raise ResourceLimitError(f"{name}: more than {self.max_items} items", token=None)
        if isinstance(value, str) and len(value) > self.env.output_stream_limit:
            raise ResourceLimitError(f"{name}: string longer than the output limit", token=None)


def _tag_argument(stream) -> tuple:
    """Return (tag token, raw argument text), leaving the stream on the tag's last token."""
    token = stream.current
    if stream.peek.kind == TOKEN_EXPRESSION:
        next(stream)
        return token, stream.current.value
    return token, ""


class _TagNode(Node):
    __slots__ = ("argument",)

    def __init__(self, token, argument: str):
        super().__init__(token)
        self.argument = argument


class AbortMessageNode(_TagNode):
    def render_to_output(self, context, buffer) -> int:
        """Stop the render the way Braze stops the send."""
        match = re.fullmatch(r"\s*\(?\s*(['\"])(.*)\1\s*\)?\s*", self.argument, re.S)
        raise AbortMessage(match.group(2) if match else self.argument.strip(" ()"))


class AbortMessageTag(Tag):
    """`{% abort_message('reason') %}`."""

    name = "abort_message"
    block = False

    def parse(self, stream) -> Node:
        """Keep the raw argument; the reason is a quoted string or nothing."""
        return AbortMessageNode(*_tag_argument(stream))


class ConnectedContentNode(_TagNode):
    def render_to_output(self, context, buffer) -> int:
        """In the playground the wallet is already fetched: bind it under the `:save` name."""
        match = _SAVE.search(self.argument)
        if match:
            context.assign(match.group(1), context.globals.get("wallet"))
        return 0


class ConnectedContentTag(Tag):
    """`{% connected_content URL ... :save wallet %}`, accepted so a whole Braze block can be pasted."""

    name = "connected_content"
    block = False

    def parse(self, stream) -> Node:
        """Keep the raw argument (URL and options), which may itself hold `{{ }}`."""
        return ConnectedContentNode(*_tag_argument(stream))


class Playground:
    """Parses and renders marketers' templates with Braze's syntax inside hard limits."""

    def __init__(self, *, clock=time.time, monotonic=time.monotonic, max_source: int = MAX_SOURCE_CHARS,
                 max_seconds: float = MAX_SECONDS, **limits):
        self.env = BrazeEnvironment(clock=clock, **limits)
        self.monotonic = monotonic
        self.max_source = max_source
        self.max_seconds = max_seconds

    def render(self, source: str, data: dict) -> Rendered:
        """Render `source` with `data` bound; raise TemplateProblem with line and reason on failure."""
        if len(source) > self.max_source:
            raise TemplateProblem("limit", f"the template is longer than {self.max_source} characters")
        started = self.monotonic()
        for start, end in markup_spans(source):
            if end is None:  # caught here: python-liquid takes seconds to find this on large input
                opener = source[start:start + 2]
                line, column = _line_of(source, start)
                raise TemplateProblem("syntax", f"'{opener}' is never closed (expected "
                                      f"'{'}}' if opener == '{{' else '%}'}')", line, column + 1,
                                      source.splitlines()[line - 1])
        rewritten = braze_syntax(source)
        try:
            template = self.env.from_string(rewritten)
        except LiquidError as exc:
            raise self._problem("syntax", exc, source, rewritten) from None
        context = LimitedContext(template, globals=template.make_globals(data))
        context.monotonic = self.monotonic
        context.deadline = started + self.max_seconds
        buffer = template._get_buffer()  # the LimitedStringIO that enforces output_stream_limit
        aborted = None
        try:
            template.render_with_context(context, buffer)
        except AbortMessage as exc:
            aborted = exc.reason
        except ResourceLimitError as exc:
            raise self._problem("limit", exc, source, rewritten) from None
        except LiquidError as exc:
            raise self._problem("render", exc, source, rewritten) from None
        except RecursionError:
            raise TemplateProblem("limit", "the template nests too deeply") from None
        except MemoryError:
            raise
        except Exception as exc:  # a filter failing in a way python-liquid does not wrap (ValueError...)
            raise self._unexpected(exc, source) from None
        return Rendered(output=buffer.getvalue(), aborted=aborted,
                        elapsed_ms=round((self.monotonic() - started) * 1000, 2))

    def _problem(self, kind: str, exc: LiquidError, source: str, rewritten: str) -> TemplateProblem:
        at_fault = _failed_filter(exc)
        name = at_fault.name if at_fault else None
        reason = plain_reason(str(exc.message or ""), name, inspect.ismethod(self.env.filters.get(name)))
        lines = source.splitlines() or [""]
        where = exc.context()
        if where is None:
            where = _locate(self.env, rewritten, reason)
        if where is None:
            return TemplateProblem(kind, reason)
        line, column = where[0], where[1]
        source_line = lines[line - 1] if 0 < line <= len(lines) else None
        return TemplateProblem(kind, reason, line, column + 1, source_line)


    def _unexpected(self, exc: Exception, source: str) -> TemplateProblem:
        """A filter's own failure, in words: which filter, on which line; never the exception's text."""
        at_fault = _failed_filter(exc)
        if at_fault is None:
            return TemplateProblem("render", "a value in the template is not of a kind its filter or tag can use")
        reason = f"the filter '{at_fault.name}' cannot work with this value or these arguments"
        where = LiquidError(reason, token=at_fault.token).context() if at_fault.token is not None else None
        if where is None:
            return TemplateProblem("render", reason)
        lines = source.splitlines() or [""]
        line = where[0]
        return TemplateProblem("render", reason, line, where[1] + 1,
                               lines[line - 1] if 0 < line <= len(lines) else None)


# Python's own words for a call that did not fit a function's signature: python-liquid passes them on
# as a filter's error ("plus() missing 1 required positional argument: 'other'").
_MISSING = re.compile(r"^(?:[\w.<>]+)\(\) missing (\d+) required positional arguments?")
_TAKES = re.compile(r"^(?:[\w.<>]+)\(\) takes (?:from (\d+) to )?(\d+) positional arguments? but (\d+)")
_KEYWORD = re.compile(r"^(?:[\w.<>]+)\(\) got an unexpected keyword argument '(\w+)'")
# Anything else that reads like Python rather than like the template's problem.
_PYTHON_WORDS = re.compile(
    r"\w\(\)|__\w+__|<locals>|<lambda>|NoneType|positional argument|keyword-only|keyword argument|"
    r"has no attribute|not subscriptable|not iterable|unsupported operand|object is not|"
    r"'(?:str|int|float|dict|list|tuple|bool|NoneType|Decimal)' object|Traceback|range\(\d|\{'")


# python-liquid names a value's Python type ("slice expected an integer start, found dict").
_KINDS = {"dict": "an object", "list": "a list", "tuple": "a list", "str": "text", "float": "a decimal number",
          "int": "a whole number", "Decimal": "a decimal number", "range": "a range", "bool": "true or false",
          "NoneType": "nil", "Undefined": "an undefined variable", "StrictUndefined": "an undefined variable"}
_FOUND = re.compile(r"\bfound (%s)\b" % "|".join(sorted(_KINDS, key=len, reverse=True)))
_PROPERTY = re.compile(r"^can't read property '(.*?)'(?: of .*)?$", re.S)
_VALUE_REPR = re.compile(r"^(?:[{\[(]|range\(|True$|False$|None$)")


def plain_reason(reason: str, filter_name: str | None, bound: bool = False) -> str:
    """`reason` as a marketer reads it: Python's signature errors and internals become words.

    `bound`: the filter is a method, so Python counted `self` among the positional arguments too.
    """
    name = filter_name
    if name and reason.startswith(name + ": "):
        reason = reason[len(name) + 2:]
    elif name is None:
        prefix = re.match(r"^(\w+): ", reason)
        if prefix and _PYTHON_WORDS.search(reason[prefix.end():]):
            name, reason = prefix.group(1), reason[prefix.end():]
    reason = _FOUND.sub(lambda m: f"found {_KINDS[m.group(1)]}", reason)
    reason = re.sub(r"\bexpected an integer start\b", "expected a whole number as its start", reason)
    reason = re.sub(r"\bexpected an integer\b", "expected a whole number", reason)
    prop = _PROPERTY.match(reason)
    if prop and name:
        if _VALUE_REPR.match(prop.group(1)):
            return f"the filter '{name}' expects a property name (text) as its argument"
        return f"the filter '{name}' cannot read the property {prop.group(1)[:40]!r} of these values"
    if name:
        missing = _MISSING.match(reason)
        if missing and "__init__" not in reason:
            count = int(missing.group(1))
            return (f"the filter '{name}' needs {'an argument' if count == 1 else f'{count} more arguments'} "
                    f"after a colon, e.g. {{{{ value | {name}: ... }}}}")
        takes = _TAKES.match(reason)
        if takes and "__init__" not in reason:
            skip = 2 if bound else 1  # the value the filter is applied to (and `self`)
            most, given = int(takes.group(2)) - skip, int(takes.group(3)) - skip
            if most <= 0:
                return f"the filter '{name}' takes no argument; remove what follows '{name}:'"
            return (f"the filter '{name}' takes at most {most} argument{'s' if most > 1 else ''}, "
                    f"got {given}")
        keyword = _KEYWORD.match(reason)
        if keyword:
            return f"the filter '{name}' has no option '{keyword.group(1)}'"
    if not reason or _PYTHON_WORDS.search(reason):
        if name:
            return f"the filter '{name}' cannot work with this value or these arguments"
        return "a value in the template is not of a kind its filter or tag can use"
    return reason if not name or reason.startswith(name) else f"{name}: {reason}"


def _failed_filter(exc: BaseException):
    """The python-liquid filter node (`name`, `token`) whose call raised `exc`, or None."""
    found = None
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            node = tb.tb_frame.f_locals.get("self")
            if type(node).__name__ == "Filter" and isinstance(getattr(node, "name", None), str):
                found = node  # the innermost one: a filter inside another's arguments
            tb = tb.tb_next
        if found is not None:
            return found
        exc = exc.__cause__ or exc.__context__
    return None


def _line_of(source: str, index: int) -> tuple[int, int]:
    line = source.count("\n", 0, index) + 1
    return line, index - (source.rfind("\n", 0, index) + 1)


def _locate(env: Environment, source: str, reason: str) -> tuple[int, int] | None:
    """Find the line of an error python-liquid reported without a position (end of expression/input)."""
    wanted = re.search(r"expected tag end(\w+)", reason)
    if wanted:  # an unclosed block: point at the opener no closer matches
        stack = []
        for match in _BLOCK_TAG.finditer(source):
            if match.group(2) != wanted.group(1):
                continue
            if match.group(1):
                if stack:
                    stack.pop()
            else:
                stack.append(match.start())
        if stack:
            return _line_of(source, stack[-1])
    for start, end in markup_spans(source):  # the first markup that fails on its own
        chunk = source[start:end]
        tag = _BLOCK_TAG.match(chunk)
        if tag:
            if tag.group(1) or tag.group(2) not in env.tags:  # closers and else/elsif/when mean nothing alone
                continue
            if getattr(env.tags.get(tag.group(2)), "block", False):  # test an opener with its closer
                chunk += "{%% end%s %%}" % tag.group(2)
        try:
            env.from_string(chunk)
        except LiquidSyntaxError:
            return _line_of(source, start)
        except (LiquidError, UnknownFilterError):
            continue
    return None
