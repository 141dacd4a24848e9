"""POST /v1/users/<user_id>/tags: a Braze webhook campaign's target, relayed to SessionM Core's tags.

Braze retries a webhook on 408, 429 and 5xx (5 times in 30 minutes, honouring Retry-After) and drops
it on any other 4xx, so a body we cannot send is a 400 (never forwarded) and SessionM trouble is a
429/503 with Retry-After: never a 2xx for tags SessionM has not accepted.
"""
from __future__ import annotations

import time

from flask import Blueprint, jsonify, request
from marshmallow import RAISE, Schema, ValidationError, fields, validate

from ..errors import InvalidRequest, invalid_fields
from ..ids import EXTERNAL, IdTypeField, check_user_id
from ..web.http import deadline, require, state
from .rules import MAX_TAG_LENGTH, MAX_TAGS, MAX_TTL, control_character

bp = Blueprint("tags", __name__)


def _not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("a tag must not be empty or only spaces")


def _no_control(value: str) -> None:
    problem = control_character(value)
    if problem:
        raise ValidationError(problem)


class Seconds(fields.Integer):
    """A whole number of seconds: a JSON integer, or a string of ASCII digits.

    Braze builds a webhook's body with Liquid, so `"ttl": "{{ 30 | times: 86400 }}"` arrives as the
    string "2592000"; anything else that is not an integer (1.5, true, "30d") stays a 400.
    """

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            value = int(value.strip())
        return super()._deserialize(value, attr, data, **kwargs)


class TagsBody(Schema):
    """Body of the tags webhook: 1-50 non-empty tags of at most 128 characters, optional ttl."""

    class Meta:
        unknown = RAISE  # a typo such as "TTL" must be a 400, not silently dropped

    tags = fields.List(
        fields.String(validate=[validate.Length(min=1, max=MAX_TAG_LENGTH), _not_blank, _no_control]),
        required=True, validate=validate.Length(min=1, max=MAX_TAGS))
    ttl = Seconds(strict=True, load_default=None, allow_none=True,
                  validate=validate.Range(min=1, max=MAX_TTL),
                  metadata={"type": ["integer", "string"], "pattern": "^[0-9]+$",
                            "description": "seconds the tags last (a string of digits is accepted: Braze "
                                           "builds bodies with Liquid); without it the tags are counters"})


class TagsQuery(Schema):
    class Meta:
        unknown = RAISE

    id_type = IdTypeField()


_body = TagsBody()
_query = TagsQuery()


def _load(schema: Schema, data, what: str) -> dict:
    """Validate with marshmallow; a 400 names each bad field and why."""
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise invalid_fields(what, exc.messages) from exc


@bp.post("/v1/users/<anypath:user_id>/tags")
@require("tags", "core")
def add_tags(user_id: str):
    """Add tags to a SessionM user; 200 only once SessionM Core has accepted them."""
    check_user_id(user_id)
    query = _load(_query, request.args.to_dict(), "query")
    data = request.get_json(lists={"tags": MAX_TAGS})  # a 1 MB list of tags is counted, not validated
    if not isinstance(data, dict):
        raise InvalidRequest('the body must be a JSON object such as {"tags": ["vip"], "ttl": 2592000}',
                             details={"_body": ["not a JSON object"]})
    body = _load(_body, data, "body")
    services = state()
    timeout = max(0.05, min(services.settings.upstream_timeout, deadline() - time.monotonic()))
    services.core.add_tags(user_id, body["tags"], body["ttl"], timeout,
                           external=query["id_type"] == EXTERNAL)
    return jsonify(ok=True, user_id=user_id, tags=body["tags"], ttl=body["ttl"])
