"""Planning a triggered send: validate, normalise, de-duplicate and chunk, before any Braze call.

Pure functions (no Flask, no I/O): both doors of the SPEC — `POST /v1/braze/trigger` (SessionM's flat
template fields) and the Braze-compatible relay (Braze's own bodies) — become a `Plan`: the exact
Braze bodies to send, one per chunk of at most 50 recipients. The engine runs plans; a dry run
answers them.

Braze facts checked here (each with its public page):
- recipients: exactly one of `external_user_id`, `user_alias`, `braze_id`, `email`; `prioritization`
  required with `email`; `send_to_existing_only` (default true) cannot be used with `user_alias`, and
  `false` needs `attributes` — https://braze.com/docs/api/objects_filters/recipient_object
- Braze de-duplicates recipients only within one call, using the trigger properties of the LAST
  occurrence (same page, "Recipient object deduping"); ours are split into chunks of 50, so a
  recipient listed twice is dropped here, its last occurrence kept.
- at most 50 recipients a call; `broadcast: true` takes no `recipients`; an `audience` call counts
  against 250 requests/minute —
  https://braze.com/docs/api/endpoints/messaging/send_messages/post_send_triggered_campaigns
- `trigger_properties` at most 50 KB — https://braze.com/docs/api/objects_filters/trigger_properties_object
- a canvas reads `context` (`{{context.${name}}}`); `canvas_entry_properties` is the former name, still
  accepted —
  https://www.braze.com/docs/user_guide/messaging/design_and_edit/personalize/sources/canvas_entry_properties
  and https://braze.com/docs/user_guide/engagement_tools/canvas/create_a_canvas/
  canvas_entry_properties_event_properties
- the API key goes in the `Authorization` header; the legacy `api_key` body field is never forwarded —
  https://www.braze.com/docs/api/endpoints/messaging/send_messages/post_send_triggered_canvases/
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate, validates_schema

from ..braze_limits import IDENTIFIERS, MAX_PROPERTIES_BYTES, PATHS, RECIPIENTS_PER_CALL, properties_problem
from ..errors import InvalidRequest, field_problems, invalid_fields

CHUNK = RECIPIENTS_PER_CALL  # Braze: at most 50 recipients per trigger call
MAX_RECIPIENTS = 2500  # ours: one request of a SessionM send, in chunks of CHUNK
ID_FIELD = {"campaign": "campaign_id", "canvas": "canvas_id"}
# Where a send's properties go: a campaign reads `trigger_properties`; a canvas reads `context` (Braze's
# current name), `canvas_entry_properties` being the former name that Braze still accepts.
PROPERTIES = {"campaign": "trigger_properties", "canvas": "context"}
ACCEPTED_PROPERTIES = {"campaign": ("trigger_properties",), "canvas": ("context", "canvas_entry_properties")}
ALL_PROPERTIES = ("trigger_properties", "context", "canvas_entry_properties")
NEVER_FORWARDED = ("api_key",)  # Braze's legacy key-in-body field: it would carry a caller's secret
_KEY = re.compile(r"^[\x21-\x7e]{1,255}\Z")

_ACRONYM = re.compile(r"([A-Z]+)([A-Z][a-z])")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_NON_WORD = re.compile(r"[^A-Za-z0-9]+")


def snake_case(name: str) -> str:
    """Normalise a field name for Liquid: "Offer Title" -> offer_title, "pointAwardAmount" -> point_award_amount.
    """
    name = _ACRONYM.sub(r"\1_\2", str(name))
    name = _CAMEL.sub(r"\1_\2", name)
    return _NON_WORD.sub("_", name).strip("_").lower()


def spelt_as(name, field: str) -> bool:
    """True when `name` is some spelling of `field`: any case, with or without separators
    (`dryRun`, `"Dry Run"`, `DRY-RUN`, `dryrun` are all dry_run)."""
    return isinstance(name, str) and snake_case(name).replace("_", "") == field.replace("_", "")


def invalid(messages: dict) -> InvalidRequest:
    """A 400 naming every bad field and why."""
    return invalid_fields("trigger body", messages)


def problems_list(details) -> list[str]:
    """The "field: reason" lines of an error's details (Braze's `errors` list on the relay)."""
    return field_problems(details) if isinstance(details, dict) else []


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


_size_problem = properties_problem  # measured on the bytes sent (braze_limits.encode)


class Properties(fields.Dict):
    """A properties object: a JSON object of at most 50 KB."""

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        problem = _size_problem(value)
        if problem:
            raise ValidationError(problem)
        return value


class UserAlias(fields.Dict):
    """Braze's user alias object: `alias_name` and `alias_label`, both non-empty strings."""

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        for name in ("alias_name", "alias_label"):
            if not isinstance(value.get(name), str) or not value[name]:
                raise ValidationError(f"needs {name} (a non-empty string)")
        return value


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
    dry_run = StrictBoolean(metadata={"description": "validate and answer the Braze bodies, send nothing"})

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
    """One recipient of Braze's own trigger body, checked as Braze checks it (passed through as sent)."""

    class Meta:
        unknown = INCLUDE

    external_user_id = IdString()
    user_alias = UserAlias()
    braze_id = IdString()
    email = fields.String(validate=validate.Length(1, 512))
    prioritization = fields.List(fields.String(), validate=validate.Length(min=1))
    send_to_existing_only = StrictBoolean()
    attributes = fields.Dict()
    trigger_properties = Properties()
    context = Properties()
    canvas_entry_properties = Properties()

    @validates_schema
    def _identified(self, data, **kwargs):
        given = [name for name in IDENTIFIERS if name in data]
        if len(given) != 1:
            got = f" (got {' and '.join(given)})" if given else ""
            raise ValidationError("needs exactly one of external_user_id, user_alias, braze_id or email"
                                  + got, given[1] if len(given) > 1 else "external_user_id")
        if "email" in data and "prioritization" not in data:
            raise ValidationError("is required with email (which profile to send to when several share "
                                  "the address), e.g. [\"identified\", \"most_recently_updated\"]",
                                  "prioritization")
        if "send_to_existing_only" in data and "user_alias" in data:
            raise ValidationError("cannot be used with user_alias", "send_to_existing_only")
        if data.get("send_to_existing_only") is False and "attributes" not in data:
            raise ValidationError("false needs attributes (Braze creates the user with them)",
                                  "send_to_existing_only")


class NativeTrigger(Schema):
    """Braze's own `campaigns/trigger/send` or `canvas/trigger/send` body; unknown fields pass through."""

    class Meta:
        unknown = INCLUDE

    campaign_id = IdString()
    canvas_id = IdString()
    send_id = fields.String(validate=validate.Length(1, 64))
    trigger_properties = Properties()
    context = Properties()
    canvas_entry_properties = Properties()
    broadcast = StrictBoolean()
    audience = fields.Dict()
    recipients = fields.List(fields.Nested(NativeRecipient), validate=validate.Length(1, MAX_RECIPIENTS))
    dry_run = StrictBoolean(metadata={"description": "ours, not Braze's: validate and answer the Braze "
                                                     "bodies, send nothing (never forwarded)"})

    @validates_schema
    def _audience(self, data, **kwargs):
        if data.get("broadcast") and "recipients" in data:
            raise ValidationError("not allowed with broadcast: true", "recipients")
        if not data.get("broadcast") and "recipients" not in data and "audience" not in data:
            raise ValidationError("give recipients, an audience, or broadcast: true", "recipients")


_flat = FlatTrigger()
_flat_recipient = FlatRecipient()
_native = NativeTrigger()


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
    """What to send: the endpoint kind, one Braze body per chunk, and a digest of the request.

    `door` is "flat" (`/v1/braze/trigger`) or "relay" (Braze's own paths): it decides how an answer
    is rendered. `duplicates_dropped` counts recipients listed more than once (sent once).
    """

    kind: str
    bodies: tuple
    sizes: tuple
    digest: str
    door: str = "flat"
    duplicates_dropped: int = 0
    dropped_fields: tuple = field(default=())

    @property
    def broadcast(self) -> bool:
        return self.bodies[0].get("broadcast") is True

    @property
    def path(self) -> str:
        return PATHS[self.kind]


def digest(route: str, body: dict) -> str:
    """A stable hash of a request (route and whole body): the same key with another body is a conflict."""
    canonical = json.dumps({"route": route, "body": body}, sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def split_dry_run(body, query_flag: bool = False) -> tuple[dict, bool]:
    """Take the `dry_run` field out of `body` (a JSON boolean); `?dry_run=1` sets it too.

    Any spelling the flat door would normalise to `dry_run` (`dryRun`, `"Dry Run"`) is the flag too:
    it must never become a trigger property while the caller believes nothing is sent.
    """
    if not isinstance(body, dict):
        return body, query_flag
    names = [k for k in body if spelt_as(k, "dry_run")]
    if not names:
        return body, query_flag
    if len(names) > 1:
        raise invalid({names[1]: ["give dry_run once"]})
    flag = body[names[0]]
    if not isinstance(flag, bool):
        raise invalid({names[0]: ["must be a JSON boolean (true or false), not " + type(flag).__name__]})
    return {k: v for k, v in body.items() if k != names[0]}, flag or query_flag


def is_secret_name(name) -> bool:
    """True for any spelling of an API key's field name: `api_key`, `API_KEY`, `apiKey`, `"Api Key"`,
    `api-key`, `apikey`, and names ending in one (`rest_api_key`, `sessionm_apikey`): a caller's secret,
    never forwarded. Separators do not count: `apikey` (no separator) was forwarded to Braze (#20)."""
    squashed = snake_case(name).replace("_", "")
    return any(squashed.endswith(secret.replace("_", "")) for secret in NEVER_FORWARDED)


def _without_secrets(body: dict) -> tuple[dict, tuple]:
    """`body` without any API key field at any depth (objects inside lists included), and the
    (snake_case) names dropped. Walks with a stack: the body is already limited to 32 levels."""
    dropped: list[str] = []

    def clean(value):
        if isinstance(value, dict):
            if any(is_secret_name(k) for k in value):
                dropped.extend(snake_case(k) for k in value if is_secret_name(k))
                value = {k: v for k, v in value.items() if not is_secret_name(k)}
            if any(isinstance(v, (dict, list)) for v in value.values()):
                value = {k: clean(v) if isinstance(v, (dict, list)) else v for k, v in value.items()}
            return value
        if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
            return [clean(v) if isinstance(v, (dict, list)) else v for v in value]
        return value

    cleaned = clean(body)
    return cleaned, tuple(sorted(set(dropped)))


def identity(recipient: dict):
    """The identifier Braze would de-duplicate `recipient` on (emails compared case-insensitively)."""
    for name in IDENTIFIERS:
        if name in recipient:
            value = recipient[name]
            if name == "email" and isinstance(value, str):
                return name, value.strip().lower()
            if name == "user_alias" and isinstance(value, dict):
                return name, (value.get("alias_label"), value.get("alias_name"))
            return name, value
    return None


def dedupe(recipients: list[dict]) -> tuple[list[dict], int]:
    """One recipient per identifier, with the properties of its LAST occurrence (Braze: "uses the
    trigger properties from the last occurrence", https://www.braze.com/docs/api/objects_filters/
    recipient_object); answer the kept ones (in the order of those last occurrences) and how many
    were dropped."""
    seen = set()
    kept = []
    for recipient in reversed(recipients):
        key = identity(recipient)
        try:
            hash(key)
        except TypeError:
            key = json.dumps(key, sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        kept.append(recipient)
    kept.reverse()
    return kept, len(recipients) - len(kept)


def _blank(value) -> bool:
    """An empty or blank id (or null) counts as absent: SessionM's advanced settings may carry both
    `braze_campaign_id` and `braze_canvas_id`, one of them empty."""
    return value is None or (isinstance(value, str) and not value.strip())


def _without_blank_ids(body: dict, names) -> dict:
    if any(name in body and _blank(body[name]) for name in names):
        return {k: v for k, v in body.items() if not (k in names and _blank(v))}
    return body


def _refuse_long_lists(body: dict) -> None:
    """A recipients list over MAX_RECIPIENTS is refused before any item is looked at (SPEC: All JSON
    POST routes): 61,000 recipients fit in 1 MB, and validating each costs seconds of a worker."""
    for name, value in body.items():
        if isinstance(value, list) and len(value) > MAX_RECIPIENTS and snake_case(name) == "recipients":
            raise invalid({name: [f"at most {MAX_RECIPIENTS} recipients a call (got {len(value)}); send "
                                  "the rest in another call"]})


def _chunks(base: dict, recipients: list | None) -> tuple[tuple, tuple]:
    if not recipients:
        return (base,), (0,)
    bodies, sizes = [], []
    for start in range(0, len(recipients), CHUNK):
        part = recipients[start:start + CHUNK]
        bodies.append({**base, "recipients": part})
        sizes.append(len(part))
    return tuple(bodies), tuple(sizes)


def _pick_kind(fields_: dict):
    """Return (kind, the field holding the Braze id, problem) from SessionM's field names.

    With `braze_campaign_id` / `braze_canvas_id` present (SessionM's advanced settings), a plain
    `campaign_id` is SessionM's own campaign data and stays a property.
    """
    prefixed = [k for k in ("braze_campaign_id", "braze_canvas_id") if k in fields_]
    names = prefixed or [k for k in ("campaign_id", "canvas_id") if k in fields_]
    if len(names) != 1:
        problem = "give exactly one of campaign_id or canvas_id" + (
            f" (got {' and '.join(names)})" if names else "")
        return None, None, problem
    name = names[0]
    return ("canvas" if "canvas" in name else "campaign"), name, None


def plan_flat(body) -> Plan:
    """Validate SessionM's flat template body and turn it into Braze bodies (400 names the field)."""
    if not isinstance(body, dict):
        raise invalid({"body": ["must be a JSON object"]})
    _refuse_long_lists(body)
    original = body
    body, dropped = _without_secrets(body)
    fields_ = _without_blank_ids(normalise(body), ("campaign_id", "canvas_id", "braze_campaign_id",
                                                   "braze_canvas_id"))
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
    problem = _size_problem(shared)
    if problem:
        raise invalid({props: [f"(every field but the ids and flags) {problem}"]})
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
                own, _ = _without_secrets(raw)
                own = normalise(own, f"recipients.{index}.")
                _flat_recipient.load(own)
            except ValidationError as exc:
                errors[str(index)] = exc.messages
                continue
            problem = _size_problem(own)
            if problem:
                errors[str(index)] = {props: [problem]}
                continue
            recipients.append({"external_user_id": own["external_user_id"], props: own})
        if errors:
            raise invalid({"recipients": errors})
    duplicates = 0
    if recipients:
        recipients, duplicates = dedupe(recipients)
    bodies, sizes = _chunks(base, recipients)
    return Plan(kind, bodies, sizes, digest("flat", original), "flat", duplicates, dropped)


def plan_native(kind: str, body) -> Plan:
    """Validate Braze's own body for `kind` ("campaign"/"canvas") and chunk its recipients by 50."""
    if not isinstance(body, dict):
        raise invalid({"body": ["must be a JSON object"]})
    _refuse_long_lists(body)
    original = body
    body, dropped = _without_secrets(body)
    body = _without_blank_ids(body, ("campaign_id", "canvas_id"))
    id_field = ID_FIELD[kind]
    other = ID_FIELD["canvas" if kind == "campaign" else "campaign"]
    problems = {}
    if id_field not in body:
        problems[id_field] = [f"is required by {PATHS[kind]}"]
    if other in body:
        problems[other] = [f"not allowed on this path: it sends a {kind}; give exactly one id"]
    accepted = ACCEPTED_PROPERTIES[kind]
    reads = " or ".join(accepted)

    def wrong_properties(holder: dict) -> dict:
        found = {}
        for name in ALL_PROPERTIES:
            if name in holder and name not in accepted:
                found[name] = [f"a {kind} send reads {reads}"]
        given = [name for name in accepted if name in holder]
        if len(given) > 1:  # Braze's docs do not say which would win: refuse rather than lose one
            found[given[1]] = [f"give one of {' or '.join(given)} (context is the current name)"]
        return found

    problems.update(wrong_properties(body))
    recipients = body.get("recipients")
    if isinstance(recipients, list):
        for index, recipient in enumerate(recipients):
            if isinstance(recipient, dict):
                for name, reason in wrong_properties(recipient).items():
                    problems.setdefault("recipients", {}).setdefault(str(index), {})[name] = reason
    try:
        _native.load(body)
    except ValidationError as exc:
        for name, reason in exc.messages.items():
            if name == "recipients" and isinstance(reason, dict) and isinstance(problems.get(name), dict):
                for index, more in reason.items():
                    known = problems[name].setdefault(str(index), {})
                    if isinstance(more, dict):
                        known.update(more)
                    else:  # the item itself is wrong (null, not an object): said once for it
                        known["_schema"] = more
            else:
                problems[name] = reason
    if problems:
        raise invalid(problems)
    base = {k: v for k, v in body.items() if k != "recipients"}
    duplicates = 0
    if recipients:
        recipients, duplicates = dedupe(recipients)
    bodies, sizes = _chunks(base, recipients)
    return Plan(kind, bodies, sizes, digest(kind, original), "relay", duplicates, dropped)


def check_key(value, name: str = "idempotency_key") -> str:
    """Validate a given Idempotency-Key / message_id: 1-255 visible ASCII characters.

    Only call it when the caller gave a key: a blank, whitespace-only or null key is a 400, never "no
    key" (that would silently turn off at-most-once for a caller who meant to have it).
    """
    if value is None:
        raise invalid({name: ["is null: give 1-255 visible ASCII characters, or leave it out"]})
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise invalid({name: ["must be 1-255 visible ASCII characters"]})
    text = str(value)
    if not text.strip():
        raise invalid({name: ["is blank: give 1-255 visible ASCII characters, or leave it out"]})
    if not _KEY.match(text):
        raise invalid({name: ["must be 1-255 visible ASCII characters"]})
    return text
