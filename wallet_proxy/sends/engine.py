"""The trigger engine: SessionM template fields or Braze bodies -> chunked, at-most-once Braze sends.

Pure planning (validate, normalise, chunk) is separate from running (idempotency, Braze calls), so both
doors of the SPEC — `POST /v1/braze/trigger` and the Braze-compatible relay — share one engine.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate, validates_schema

from ..errors import ApiError, InvalidRequest, OutcomeUnknown

CHUNK = 50  # Braze: at most 50 recipients per trigger call
MAX_RECIPIENTS = 2500
PROPERTIES = {"campaign": "trigger_properties", "canvas": "canvas_entry_properties"}
ID_FIELD = {"campaign": "campaign_id", "canvas": "canvas_id"}
_KEY = re.compile(r"^[\x21-\x7e]{1,255}\Z")

_ACRONYM = re.compile(r"([A-Z]+)([A-Z][a-z])")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_NON_WORD = re.compile(r"[^A-Za-z0-9]+")


def snake_case(name: str) -> str:
    """Normalise a field name for Liquid: "Offer Title" -> offer_title, "pointAwardAmount" -> point_award_amount."""
    name = _ACRONYM.sub(r"\1_\2", str(name))
    name = _CAMEL.sub(r"\1_\2", name)
    return _NON_WORD.sub("_", name).strip("_").lower()


class StrictBoolean(fields.Field):
    """A JSON boolean and nothing else: "true", 1 or "yes" are errors (SPEC: a string is 400)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise ValidationError("must be a JSON boolean (true or false), not " + type(value).__name__)
        return value


class IdString(fields.String):
    """A non-empty Braze id or user id of sane length."""

    def __init__(self, **kwargs):
        super().__init__(validate=validate.Length(1, 512), **kwargs)


class FlatRecipient(Schema):
    """One recipient of a SessionM send: its customer identifier plus its own properties."""

    class Meta:
        unknown = INCLUDE

    external_user_id = IdString(required=True)


class FlatTrigger(Schema):
    """The reserved fields of SessionM's template body (the rest become properties)."""

    class Meta:
        unknown = INCLUDE

    campaign_id = IdString()
    canvas_id = IdString()
    broadcast = StrictBoolean(load_default=False)
    external_user_id = IdString()
    recipients = fields.List(fields.Dict(), validate=validate.Length(1, MAX_RECIPIENTS))

    @validates_schema
    def _audience(self, data, **kwargs):
        has_one = "external_user_id" in data
        has_many = "recipients" in data
        if data.get("broadcast"):
            if has_many or has_one:
                name = "recipients" if has_many else "external_user_id"
                raise ValidationError("not allowed with broadcast: true (a broadcast goes to the whole "
                                      "audience of the campaign or canvas)", name)
        elif not (has_one or has_many):
            raise ValidationError("give external_user_id, a recipients list, or broadcast: true",
                                  "external_user_id")
        elif has_one and has_many:
            raise ValidationError("give external_user_id or recipients, not both", "recipients")


class NativeRecipient(Schema):
    """One recipient of Braze's own trigger body (passed through as Braze reads it)."""

    class Meta:
        unknown = INCLUDE

    external_user_id = IdString()
    user_alias = fields.Dict()
    email = fields.String(validate=validate.Length(1, 512))
    send_to_existing_only = StrictBoolean()
    attributes = fields.Dict()
    trigger_properties = fields.Dict()
    canvas_entry_properties = fields.Dict()

    @validates_schema
    def _identified(self, data, **kwargs):
        if not any(k in data for k in ("external_user_id", "user_alias", "email")):
            raise ValidationError("needs external_user_id, user_alias or email", "external_user_id")


class NativeTrigger(Schema):
    """Braze's own `campaigns/trigger/send` or `canvas/trigger/send` body; unknown fields pass through."""

    class Meta:
        unknown = INCLUDE

    campaign_id = IdString()
    canvas_id = IdString()
    send_id = fields.String(validate=validate.Length(1, 64))
    trigger_properties = fields.Dict()
    canvas_entry_properties = fields.Dict()
    broadcast = StrictBoolean()
    audience = fields.Dict()
    recipients = fields.List(fields.Nested(NativeRecipient),
                             validate=validate.Length(1, MAX_RECIPIENTS))

    @validates_schema
    def _audience(self, data, **kwargs):
        if data.get("broadcast") and "recipients" in data:
            raise ValidationError("not allowed with broadcast: true", "recipients")
        if not data.get("broadcast") and "recipients" not in data and "audience" not in data:
            raise ValidationError("give recipients, an audience, or broadcast: true", "recipients")


_flat = FlatTrigger()
_flat_recipient = FlatRecipient()
_native = NativeTrigger()


def _dotted(messages, prefix="") -> list[str]:
    """Flatten marshmallow's nested messages to "recipients.3.external_user_id: reason" lines."""
    lines = []
    for field, value in messages.items():
        path = f"{prefix}{field}"
        if isinstance(value, dict):
            lines.extend(_dotted(value, path + "."))
        else:
            lines.append(f"{path}: {' '.join(map(str, value))}")
    return lines


def invalid(messages: dict) -> InvalidRequest:
    """A 400 naming every bad field and why."""
    return InvalidRequest("invalid trigger body: " + "; ".join(_dotted(messages)), details=messages)


def normalise(fields_: dict, where: str = "") -> dict:
    """Return `fields_` with snake_case names; two names becoming one, or an empty name, is a 400."""
    out: dict = {}
    origin: dict = {}
    for name, value in fields_.items():
        snake = snake_case(name)
        if not snake:
            raise invalid({f"{where}{name}": ["a field name needs at least one letter or digit"]})
        if snake in out:
            raise invalid({f"{where}{name}": [f"becomes {snake!r}, as does {origin[snake]!r}: send one"]})
        out[snake] = value
        origin[snake] = name
    return out


@dataclass(frozen=True)
class Plan:
    """What to send: the endpoint kind, one Braze body per chunk, and a digest of the request."""

    kind: str
    bodies: tuple
    sizes: tuple
    digest: str

    @property
    def broadcast(self) -> bool:
        return self.bodies[0].get("broadcast") is True


def digest(route: str, body: dict) -> str:
    """A stable hash of a request: the same key with another body is a conflict."""
    canonical = json.dumps({"route": route, "body": body}, sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _chunks(base: dict, recipients: list | None) -> tuple[tuple, tuple]:
    if not recipients:
        return (base,), (0,)
    bodies, sizes = [], []
    for start in range(0, len(recipients), CHUNK):
        part = recipients[start:start + CHUNK]
        bodies.append({**base, "recipients": part})
        sizes.append(len(part))
    return tuple(bodies), tuple(sizes)


def _pick_kind(fields_: dict) -> tuple[str, str, str]:
    """Return (kind, the field holding the Braze id, its value) from SessionM's field names.

    With `braze_campaign_id` / `braze_canvas_id` present (SessionM's advanced settings), a plain
    `campaign_id` is SessionM's own campaign data and stays a property.
    """
    prefixed = [k for k in ("braze_campaign_id", "braze_canvas_id") if k in fields_]
    names = prefixed or [k for k in ("campaign_id", "canvas_id") if k in fields_]
    if len(names) != 1:
        problem = "give exactly one of campaign_id or canvas_id" + (
            f" (got {' and '.join(names)})" if names else "")
        return None, None, problem
    field = names[0]
    return ("canvas" if "canvas" in field else "campaign"), field, None


def plan_flat(body) -> Plan:
    """Validate SessionM's flat template body and turn it into Braze bodies (400 names the field)."""
    if not isinstance(body, dict):
        raise invalid({"body": ["must be a JSON object"]})
    fields_ = normalise(body)
    kind, id_field, problem = _pick_kind(fields_)
    if problem:
        raise invalid({"campaign_id": [problem]})
    reserved = {"broadcast", "external_user_id", "recipients"}
    checked = {k: fields_[k] for k in reserved if k in fields_}
    checked[ID_FIELD[kind]] = fields_[id_field]
    try:
        loaded = _flat.load(checked)
    except ValidationError as exc:
        messages = exc.messages
        if ID_FIELD[kind] in messages and id_field != ID_FIELD[kind]:
            messages = {id_field if k == ID_FIELD[kind] else k: v for k, v in messages.items()}
        raise invalid(messages) from exc
    props = PROPERTIES[kind]
    # SPEC: external_user_id, email and every other field become properties; the id and flags do not.
    shared = {k: v for k, v in fields_.items() if k not in (id_field, "broadcast", "recipients")}
    base = {ID_FIELD[kind]: loaded[ID_FIELD[kind]]}
    if loaded["broadcast"]:
        base["broadcast"] = True
    if shared:
        base[props] = shared
    recipients = None
    if "external_user_id" in loaded:
        recipients = [{"external_user_id": loaded["external_user_id"]}]
    elif "recipients" in loaded:
        recipients = []
        errors = {}
        for index, raw in enumerate(loaded["recipients"]):
            try:
                own = normalise(raw, f"recipients.{index}.")
                _flat_recipient.load(own)
            except ValidationError as exc:
                errors[str(index)] = exc.messages
                continue
            recipients.append({"external_user_id": own["external_user_id"], props: own})
        if errors:
            raise invalid({"recipients": errors})
    bodies, sizes = _chunks(base, recipients)
    return Plan(kind, bodies, sizes, digest("flat", body))


def plan_native(kind: str, body) -> Plan:
    """Validate Braze's own body for `kind` ("campaign"/"canvas") and chunk its recipients by 50."""
    if not isinstance(body, dict):
        raise invalid({"body": ["must be a JSON object"]})
    id_field = ID_FIELD[kind]
    other = ID_FIELD["canvas" if kind == "campaign" else "campaign"]
    problems = {}
    if id_field not in body:
        problems[id_field] = [f"is required by /{kind}s/trigger/send" if kind == "campaign"
                              else "is required by /canvas/trigger/send"]
    if other in body:
        problems[other] = [f"not allowed on this path: it sends a {kind}; give exactly one id"]
    wrong_props = PROPERTIES["canvas" if kind == "campaign" else "campaign"]
    if wrong_props in body:
        problems[wrong_props] = [f"a {kind} send reads {PROPERTIES[kind]}"]
    try:
        _native.load(body)
    except ValidationError as exc:
        problems.update(exc.messages)
    if problems:
        raise invalid(problems)
    base = {k: v for k, v in body.items() if k != "recipients"}
    bodies, sizes = _chunks(base, body.get("recipients"))
    return Plan(kind, bodies, sizes, digest(kind, body))


def check_key(key) -> str | None:
    """Validate an Idempotency-Key / message_id: 1-255 visible ASCII characters."""
    if key is None or key == "":
        return None
    if isinstance(key, bool) or not isinstance(key, (str, int)) or not _KEY.match(str(key)):
        raise invalid({"idempotency_key": ["must be 1-255 visible ASCII characters"]})
    return str(key)


@dataclass
class Outcome:
    """The answer of a run: 201 and a body, or the ApiError to raise; `replayed` for a repeat."""

    body: dict | None
    error: ApiError | None
    replayed: bool = False


class TriggerEngine:
    """Runs plans against Braze: chunk by chunk, recorded in the idempotency store when keyed."""

    def __init__(self, braze, store):
        self.braze = braze
        self.store = store

    def run(self, plan: Plan, key: str | None = None) -> Outcome:
        """Send the chunks of `plan` that still need sending; a repeat of a done key sends nothing."""
        chunks = [{"index": i, "recipients": n, "state": "new"} for i, n in enumerate(plan.sizes)]
        owner = None
        if key is not None:
            claim = self.store.begin(key, plan.digest, chunks)
            if claim.replay:
                return answer(claim.record["chunks"], replayed=True)
            chunks, owner = claim.record["chunks"], claim.owner
        save = (lambda done=False: self.store.record(key, owner, chunks, done)) if key else (lambda done=False: None)
        try:
            self._send(plan, chunks, save)
        finally:
            for chunk in chunks:  # an unexpected error mid-call: Braze may have acted
                if chunk["state"] == "sending":
                    chunk.update(state="unknown", error=_error(OutcomeUnknown(
                        "the send failed unexpectedly after it may have reached Braze")))
            save(True)
        return answer(chunks, replayed=False)

    def _send(self, plan: Plan, chunks: list[dict], save) -> None:
        deadline = self.braze.deadline()
        stop: ApiError | None = None
        for chunk in chunks:
            if chunk["state"] not in ("new", "failed"):
                continue
            if stop is not None:
                # Braze is down or unsure: do not hammer it; these chunks stay resendable.
                chunk.update(state="failed", error={
                    "status": 503, "code": "not_attempted", "retry_after": stop.retry_after or 1,
                    "message": f"not sent: an earlier chunk failed with {stop.code}; repeat to send it"})
                continue
            chunk["state"] = "sending"
            chunk.pop("error", None)
            save()  # recorded before the call, so a crash mid-call leaves it "sending" -> unknown
            try:
                chunk["dispatch_id"] = self.braze.send(plan.kind, plan.bodies[chunk["index"]], deadline)
                chunk["state"] = "sent"
            except OutcomeUnknown as exc:
                chunk.update(state="unknown", error=_error(exc))
                stop = exc
            except ApiError as exc:
                chunk.update(state="failed", error=_error(exc))
                if exc.status >= 500:
                    stop = exc
            save()


def _error(exc: ApiError) -> dict:
    return {"status": exc.status, "code": exc.code, "message": exc.message,
            "retry_after": exc.retry_after}


def answer(chunks: list[dict], replayed: bool) -> Outcome:
    """Turn chunk states into our answer: 201 when every chunk was sent, else the worst error."""
    public = []
    for chunk in chunks:
        item = {"index": chunk["index"], "recipients": chunk["recipients"]}
        if chunk["state"] == "sent":
            item["dispatch_id"] = chunk["dispatch_id"]
        else:
            error = chunk.get("error") or {"code": "not_attempted", "message": "not sent yet"}
            item["error"] = {"code": error["code"], "message": error["message"]}
        public.append(item)
    dispatch_ids = [c["dispatch_id"] for c in chunks if c["state"] == "sent"]
    failed = [c for c in chunks if c["state"] != "sent"]
    if not failed:
        return Outcome({"ok": True, "message": "success", "dispatch_id": dispatch_ids[0],
                        "dispatch_ids": dispatch_ids, "chunks": public}, None, replayed)
    unknown = [c for c in failed if c["state"] == "unknown"]
    server = [c for c in failed if (c.get("error") or {}).get("status", 503) >= 500]
    worst = (unknown or server or failed)[0]
    error = worst.get("error") or {"status": 503, "code": "upstream_unavailable", "message": "not sent"}
    message = error["message"]
    if len(chunks) > 1:
        message = f"{len(failed)} of {len(chunks)} chunks not sent ({len(dispatch_ids)} sent): {message}"
    retry_after = max((c["error"].get("retry_after") or 0 for c in server if c.get("error")), default=0)
    exc = ApiError(message, status=error["status"], retry_after=retry_after or None,
                   details={"dispatch_ids": dispatch_ids, "chunks": public})
    exc.code = error["code"] if error["code"] != "not_attempted" else "upstream_unavailable"
    return Outcome(None, exc, replayed)
