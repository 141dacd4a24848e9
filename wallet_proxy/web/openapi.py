"""The OpenAPI 3.1 document, generated with apispec from the app's url_map and the marshmallow schemas.

Every rule of the app is documented: routes declared in `_routes()` (or with a `view.openapi` dict) get
their full parameters, bodies and answers; any other route (one added later) still gets its path
parameters, methods, security from its `@require` scope, and the common error answers.
"""
from __future__ import annotations

import importlib
import re

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from marshmallow import Schema, fields, validate

from ..ids import IdTypeField
from ..version import __version__
from ..wallet.view import SessionMView, WalletQuery, WalletView

package = __name__.split(".")[0]

VERSION = __version__  # the package's one version number (wallet_proxy/version.py)
AUTOMATIC_METHODS = {"HEAD", "OPTIONS"}  # Flask answers these for every rule by itself
_CONVERTER = re.compile(r"<(?:(?P<conv>[a-zA-Z_]+)(?:\([^>]*\))?:)?(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)>")


# -- answer shapes (the SPEC's JSON) ----------------------------------------------------------------

class ErrorDetail(Schema):
    code = fields.String(required=True, metadata={"description": "stable error code",
                                                  "examples": ["invalid_request", "upstream_unavailable"]})
    message = fields.String(required=True, metadata={"description": "safe to show; never a secret"})
    details = fields.Dict(metadata={"description": "per-field reasons, when the input was bad"})


class Error(Schema):
    """`{"ok": false, "error": {"code", "message"}}`: every error answer."""

    ok = fields.Boolean(required=True, validate=validate.Equal(False))
    error = fields.Nested(ErrorDetail, required=True)
    # Braze-compatible paths (/campaigns/trigger/send, /canvas/trigger/send) add Braze's own error fields
    message = fields.String(metadata={"description": "Braze-compatible paths only: Braze's `message`"})
    errors = fields.List(fields.String(), metadata={"description": "Braze-compatible paths only: Braze's "
                                                                  "`errors` list"})


def _n(field_cls, **kw):
    """A field that is always present and may be null (SPEC: absent values are null)."""
    return field_cls(required=True, allow_none=True, **kw)


class Ok(Schema):
    ok = fields.Boolean(required=True)


class Health(Schema):
    ok = fields.Boolean(required=True)
    status = fields.String(validate=validate.OneOf(("ready", "degraded")))
    checks = fields.Dict()
    problems = fields.List(fields.String())


class TagsAnswer(Schema):
    ok = fields.Boolean(required=True)
    user_id = fields.String(required=True)
    tags = fields.List(fields.String(), required=True)
    ttl = _n(fields.Integer)


class IdTypeQuery(Schema):
    id_type = IdTypeField()  # the one vocabulary (ids.py)


# -- answers ------------------------------------------------------------------------------------------

REQUEST_ID = {"description": "the caller's X-Request-ID when valid, else a new one",
              "schema": {"type": "string"}}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying",
                                "schema": {"type": "integer", "minimum": 1}}}


def _json(description: str, schema=None, headers: dict | None = None) -> dict:
    answer = {"description": description, "content": {"application/json": {"schema": schema or Error}}}
    if headers:
        answer["headers"] = headers
    return answer


COMMON_ERRORS = {
    "404": _json("no such route"),
    "405": _json("method not allowed on this route"),
    "413": _json("request body too large"),
    "500": _json("internal error (never a stack trace; logged)"),
}
AUTH_ERRORS = {
    "401": _json("missing or wrong credentials",
                 headers={"WWW-Authenticate": {"schema": {"type": "string"}}}),
    "403": _json("this client lacks the route's scope (or, on wallets, a bad `sig`)"),
    "429": _json("over WALLET_PROXY_CLIENT_RATE (only when set), or `too_many_failures`: 10 failed "
                 "authentications a minute from one address or for one client name", headers=_RETRY_AFTER),
}
UPSTREAM_ERRORS = {
    "502": _json("the upstream answered something unusable, or refused this service's credentials"),
    "503": _json("upstream down, throttling or breaker open; or `not_configured`", headers=_RETRY_AFTER),
    "504": _json("upstream timeout (or `outcome_unknown` for a send that may have gone)"),
}


def _schema(dotted: str):
    """A schema class by dotted name inside the package, or None while that module does not exist."""
    module, _, name = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(f"{package}.{module}"), name, None)
    except ImportError:
        return None


def _body(schema_name: str, description: str) -> dict:
    schema = _schema(schema_name) or {"type": "object"}
    return {"required": True, "description": description,
            "content": {"application/json": {"schema": schema}}}


# Per-route declarations, keyed by endpoint then method. Anything not said here is generic.
def _routes() -> dict:
    wallet_headers = {
        "Cache-Status": {"description": "RFC 9211", "schema": {"type": "string"}},
        "ETag": {"schema": {"type": "string"}},
        "Cache-Control": {"schema": {"type": "string"}},
    }
    trigger_answers = {
        "201": _json("Braze accepted the send: each chunk's dispatch_id (a repeat of a key answers the "
                     "first result, with Idempotent-Replayed: true)", {"type": "object"}),
        "200": _json("dry run (`dry_run: true` or `?dry_run=1`): the exact Braze bodies that would be sent; "
                     "nothing sent or recorded", {"type": "object"}),
        "400": _json("bad body, or a blank Idempotency-Key / message_id (Braze not called)"),
        "409": _json("same Idempotency-Key with a different body"),
        "422": _json("braze_not_sent: Braze answered 201 with a notice (canvas paused or archived), "
                     "nothing was sent (the relay answers Braze's 201 as is)"),
        "4XX": _json("Braze's own 4xx and its message (not retried)"),
        **UPSTREAM_ERRORS,
    }
    idem = [{"in": "header", "name": "Idempotency-Key", "required": False,
             "schema": {"type": "string", "maxLength": 255},
             "description": "a repeat within 24 h answers the first result without calling Braze"},
            {"in": "query", "name": "dry_run", "required": False,
             "schema": {"type": "string", "enum": ["0", "1"]},
             "description": "1: validate and answer the Braze bodies without sending"}]
    native = _schema("sends.plan.NativeTrigger")
    html = {"description": "an HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}
    see_other = {"description": "see other (the next page)",
                 "headers": {"Location": {"schema": {"type": "string"}}}}
    preview_query = [{"in": "query", "name": "user_id", "schema": {"type": "string", "maxLength": 128}},
                     {"in": "query", "name": "culture", "schema": {"type": "string"},
                      "description": "BCP 47 tag; empty means en-US"}]
    csrf = {"in": "header", "name": "X-CSRF-Token", "required": False, "schema": {"type": "string"},
            "description": "the page's CSRF token, for a browser session (not needed with Basic/Bearer)"}
    preview = {
        "preview.login_form": {"get": {"summary": "The marketers' sign-in form",
                                       "responses": {"200": html}}},
        "preview.login": {"post": {
            "summary": "Sign in to the preview page with a client name and secret (preview or admin scope); "
                       "10 failed attempts a minute from one address or for one name (at any door), "
                       "then 429",
            "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
                "type": "object", "required": ["name", "secret", "csrf_token"],
                "properties": {"name": {"type": "string"}, "secret": {"type": "string"},
                               "csrf_token": {"type": "string"}}}}}},
            "responses": {"303": see_other, "401": {**html, "description": "wrong name or secret"},
                          "403": {**html,
                                  "description": "expired form, or a client without the preview scope"},
                          "429": {**html, "description": "too many failed sign-ins from this address",
                                  "headers": _RETRY_AFTER}}}},
        "preview.logout": {"post": {"summary": "Sign out", "parameters": [csrf],
                                    "responses": {"303": see_other}}},
        "preview.page": {"get": {
            "summary": "The preview page: a user's wallet, its Liquid paths, a template playground",
            "parameters": preview_query,
            "responses": {"200": html, "400": {**html, "description": "bad user id or culture"},
                          "401": {**html, "description": "the sign-in form"},
                          "404": {**html, "description": "SessionM does not know the user"},
                          **{code: {**html, "description": answer["description"]}
                             for code, answer in UPSTREAM_ERRORS.items()}}}},
        "preview.api_wallet": {"get": {
            "summary": "The preview page's data for one user: flattened wallet, status, raw payload",
            "parameters": [{**preview_query[0], "required": True}, preview_query[1]],
            "responses": {"200": _json("the wallet, how it was obtained, SessionM's raw answer",
                                       {"type": "object"}),
                          "400": _json("bad user id or culture"), "404": _json("user_not_found"),
                          **UPSTREAM_ERRORS}}},
        "preview.api_render": {"post": {
            "summary": "Render a Liquid template against a user's wallet, inside hard limits",
            "parameters": [csrf],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["template", "user_id"],
                "properties": {"template": {"type": "string"}, "user_id": {"type": "string"},
                               "culture": {"type": "string"}}}}}},
            "responses": {"200": _json("the rendered output", {"type": "object"}),
                          "400": _json("bad body"),
                          "422": _json("the template did not render: line and reason"),
                          **UPSTREAM_ERRORS}}},
    }
    return {
        **preview,
        "static": {"get": {"summary": "The preview page's scripts and styles",
                           "responses": {"200": {"description": "a static file",
                                                 "content": {"*/*": {"schema": {"type": "string"}}}},
                                         "304": {"description": "not modified"}}}},
        "ops.index": {"get": {"summary": "What this is, and whether it runs in sandbox mode",
                              "responses": {"200": _json("service description", {"type": "object"})}}},
        "ops.healthz": {"get": {"summary": "The process is alive",
                                "responses": {"200": _json("alive", Ok)}}},
        "ops.readyz": {"get": {"summary": "Ready to answer; degradations are reported, never a failure",
                               "responses": {"200": _json("ready or degraded", Health)}}},
        "ops.metrics": {"get": {"summary": "Prometheus metrics (metrics or admin scope unless "
                                           "WALLET_PROXY_PUBLIC_METRICS=1)",
                                "responses": {"200": {
                                    "description": "Prometheus text exposition",
                                    "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "ops.openapi_json": {"get": {"summary": "This document",
                                     "responses": {"200": _json("OpenAPI 3.1", {"type": "object"})}}},
        "wallets.get_wallet": {"get": {
            "summary": "A user's flattened wallet (Braze Connected Content)",
            "parameters": [{"in": "query", "schema": WalletQuery}],
            "responses": {
                "200": _json("the wallet (or, with on_error=empty, ok=false and an empty wallet); with "
                             "view=sessionm, SessionM's own get_user_offers shape",
                             {"oneOf": [WalletView, SessionMView]}, wallet_headers),
                "422": _json("upstream_refused: SessionM refused the request as invalid (not retried)"),
                "304": {"description": "not modified (If-None-Match)"},
                "400": _json("bad user id or query: the details name each field"),
                "404": _json("user_not_found (or no such route)"),
                **UPSTREAM_ERRORS,
            }}},
        "wallets.forget_wallet": {"delete": {
            "summary": "Forget every cached culture of a user (admin)",
            "parameters": [{"in": "query", "schema": WalletQuery}],
            "responses": {"204": {"description": "forgotten"},
                          "400": _json("bad user id or query"),
                          "503": _json("the shared cache is unreachable", headers=_RETRY_AFTER),
                          "504": _json("external id resolution timed out"),
                          "502": _json("external id resolution failed")}}},
        "tags.add_tags": {"post": {
            "summary": "Add SessionM tags to a user (Braze webhook target)",
            "parameters": [{"in": "query", "schema": _schema("tags.routes.TagsQuery") or IdTypeQuery}],
            "requestBody": _body("tags.routes.TagsBody", "1-50 tags and an optional ttl in seconds"),
            "responses": {"200": _json("SessionM accepted the tags", TagsAnswer),
                          "400": _json("bad body or user id (SessionM not called)"),
                          "404": _json("SessionM does not know the user"),
                          "422": _json("SessionM Core refused the tags themselves (not retried)"),
                          "429": _json("SessionM Core is throttling (Braze retries)", headers=_RETRY_AFTER),
                          **UPSTREAM_ERRORS}}},
        "trigger.trigger": {"post": {
            "summary": "SessionM template fields to a Braze triggered send",
            "parameters": idem,
            "requestBody": _body("sends.plan.FlatTrigger", "campaign_id or canvas_id, the audience, and any "
                                 "other fields (they become trigger properties)"),
            "responses": trigger_answers}},
        "trigger.campaigns_trigger_send": {"post": {
            "summary": "Braze-compatible relay of /campaigns/trigger/send",
            "parameters": idem,
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": native or {"type": "object"}}}},
            "responses": trigger_answers}},
        "trigger.canvas_trigger_send": {"post": {
            "summary": "Braze-compatible relay of /canvas/trigger/send",
            "parameters": idem,
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": native or {"type": "object"}}}},
            "responses": trigger_answers}},
    }


# -- assembly ----------------------------------------------------------------------------------------

def openapi_path(rule: str) -> tuple[str, list[str]]:
    """Turn a werkzeug rule (`/v1/wallets/<anypath:user_id>`) into an OpenAPI path and its params."""
    names = [m.group("name") for m in _CONVERTER.finditer(rule)]
    return _CONVERTER.sub(lambda m: "{" + m.group("name") + "}", rule), names


def _path_parameter(name: str, converter: str | None) -> dict:
    schema = {"type": "integer"} if converter == "int" else {"type": "string"}
    if name == "user_id":
        schema = {"type": "string", "minLength": 1, "maxLength": 128, "pattern": r"^[A-Za-z0-9\-_.@:+]+$"}
        description = "SessionM user id (or external id with id_type=external)"
    else:
        description = name
    return {"in": "path", "name": name, "required": True, "schema": schema, "description": description}


def _scope(view) -> str | None:
    return getattr(view, "required_scope", None)


def _operation(app: Flask, endpoint: str, method: str, declared: dict | None) -> dict:
    view = app.view_functions[endpoint]
    doc = (view.__doc__ or "").strip().splitlines()
    operation = {"operationId": f"{endpoint}.{method}".replace(".", "_"),
                 "summary": doc[0] if doc else endpoint, "tags": [endpoint.partition(".")[0]],
                 "responses": {}}
    if declared:
        operation.update({k: v for k, v in declared.items() if k != "responses"})
        operation["responses"].update(declared.get("responses", {}))
    else:
        operation["responses"]["200"] = {"description": "success"}
    scope = _scope(view)
    if scope:
        operation["security"] = [{"basic": []}, {"bearer": []}]
        operation["x-scope"] = scope
        for code, answer in AUTH_ERRORS.items():
            operation["responses"].setdefault(code, answer)
        operation["responses"].setdefault("503", _json("this route's upstream is not configured",
                                                       headers=_RETRY_AFTER))
    if method in ("post", "put", "patch"):
        operation["responses"].setdefault("400", _json("bad request body"))
        if "application/json" in operation.get("requestBody", {}).get("content", {}):
            # SPEC "All JSON POST routes": one strict reading (web/http.py JsonRequest)
            operation["responses"].setdefault("415", _json("the body's Content-Type is not application/json"))
    for code, answer in COMMON_ERRORS.items():
        operation["responses"].setdefault(code, answer)
    # SPEC: every answer carries X-Request-ID (the caller's, when it sent a valid one)
    operation["responses"] = {code: {**answer, "headers": {**answer.get("headers", {}),
                                                            "X-Request-ID": REQUEST_ID}}
                              for code, answer in operation["responses"].items()}
    return operation


def build_spec(app: Flask) -> dict:
    """Return the OpenAPI 3.1 document (a dict) of every rule of `app`."""
    plugin = MarshmallowPlugin()
    spec = APISpec(title="wallet-proxy", version=VERSION, openapi_version="3.1.0", plugins=[plugin],
                   info={"description": "Braze Connected Content facade over SessionM's offer wallet, "
                                        "tags and triggered sends."})
    for field_cls, kind in (("sends.plan.StrictBoolean", "boolean"),):
        cls = _schema(field_cls)
        if cls is not None:
            plugin.map_to_openapi_type(cls, kind, None)
    spec.components.security_scheme("basic", {"type": "http", "scheme": "basic",
                                              "description": "a WALLET_PROXY_CLIENTS name and secret"})
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer",
                                               "description": "a WALLET_PROXY_CLIENTS secret"})
    spec.components.schema("Error", schema=Error)
    declared_routes = _routes()
    paths: dict[str, dict] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        path, _ = openapi_path(rule.rule)
        view = app.view_functions[rule.endpoint]
        declared = getattr(view, "openapi", None) or declared_routes.get(rule.endpoint, {})
        operations = paths.setdefault(path, {})
        converters = {m.group("name"): m.group("conv") for m in _CONVERTER.finditer(rule.rule)}
        for method in sorted((rule.methods or set()) - AUTOMATIC_METHODS):
            operation = _operation(app, rule.endpoint, method.lower(), declared.get(method.lower()))
            params = [_path_parameter(n, c) for n, c in converters.items()]
            operation["parameters"] = params + list(operation.get("parameters", []))
            operations[method.lower()] = operation
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return tighten(spec.to_dict())


# -- the rules the marshmallow schemas cannot say ------------------------------------------------------
#
# Checked by schemathesis (tests/test_schemathesis.py): data this document calls valid is accepted, data
# it calls invalid is refused. Each rule mirrors the server's own check, named beside it.

# ids.normalise_culture: stripped, `_` for `-`, empty means en-US
CULTURE = r"^\s*(?:[A-Za-z]{2,3}(?:[-_][A-Za-z]{4})?(?:[-_](?:[A-Za-z]{2}|[0-9]{3}))?)?\s*$"
USER_ID = r"^[A-Za-z0-9\-_.@:+]{1,128}$"  # ids.valid_user_id, which also refuses dots alone
DOTS_ONLY = r"^\s*\.+\s*$"
# tags.routes.Seconds + tags.rules.MAX_TTL: ASCII digits (spaces around stripped), 1 to 2**31 - 1
TTL_DIGITS = (r"^[\t-\r\x1c-\x1f ]*0*(?:[1-9][0-9]{0,8}|1[0-9]{9}|20[0-9]{8}|21[0-3][0-9]{7}|214[0-6][0-9]{6}"
              r"|2147[0-3][0-9]{5}|21474[0-7][0-9]{4}|214748[0-2][0-9]{3}|2147483[0-5][0-9]{2}"
              r"|21474836[0-3][0-9]|214748364[0-7])[\t-\r\x1c-\x1f ]*$")  # str.strip's ASCII spaces
# tags.rules.check_tag: not blank, no control character (Unicode category Cc)
TAG = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
KEY = r"^[\x21-\x7e]{1,255}$"  # sends.plan.check_key: 1-255 visible ASCII characters
BRAZE_ID = {"type": "string", "minLength": 1, "maxLength": 512}
IDENTIFIERS = ("external_user_id", "user_alias", "braze_id", "email")  # sends.plan.IDENTIFIERS
PROPERTIES = {"campaign": ("trigger_properties",), "canvas": ("context", "canvas_entry_properties")}


def _has(*names: str) -> dict:
    return {"required": list(names)}


def _is_true(name: str) -> dict:
    return {"required": [name], "properties": {name: {"const": True}}}


def _none_of(*schemas: dict) -> dict:
    return {"not": {"anyOf": list(schemas)}}


def _recipient_rules() -> dict:
    """sends.plan.NativeRecipient: exactly one identifier; email needs prioritization; ..."""
    one_of = []
    for name in IDENTIFIERS:
        branch = {"required": [name, "prioritization"] if name == "email" else [name],
                  **_none_of(*[_has(other) for other in IDENTIFIERS if other != name])}
        if name == "user_alias":  # send_to_existing_only cannot be used with user_alias
            branch["not"]["anyOf"].append(_has("send_to_existing_only"))
        one_of.append(branch)
    return {"oneOf": one_of,
            # send_to_existing_only: false needs attributes (Braze creates the user with them)
            "anyOf": [{"not": _has("send_to_existing_only")},
                      {"properties": {"send_to_existing_only": {"const": True}}}, _has("attributes")]}


def _native_body(kind: str) -> dict:
    """sends.plan.plan_native: this path's id only, its own properties, an audience."""
    own, other = ("campaign_id", "canvas_id") if kind == "campaign" else ("canvas_id", "campaign_id")
    accepted = PROPERTIES[kind]
    foreign = [name for names in PROPERTIES.values() for name in names if name not in accepted]
    holder_rules = [{"not": _has(name)} for name in foreign]
    if len(accepted) > 1:  # one of context / canvas_entry_properties, not both
        holder_rules.append({"not": _has(*accepted)})
    recipient = {"$ref": "#/components/schemas/NativeRecipient"}
    return {"allOf": [
        {"$ref": "#/components/schemas/NativeTrigger"},
        {"required": [own], "not": _has(other)},
        *holder_rules,
        {"properties": {"recipients": {"items": {"allOf": [recipient, *holder_rules]}}}},
        {"not": {"allOf": [_is_true("broadcast"), _has("recipients")]}},
        {"anyOf": [_is_true("broadcast"), _has("recipients"), _has("audience")]},
    ]}


def _flat_body() -> dict:
    """sends.plan.plan_flat: exactly one of campaign_id / canvas_id; exactly one audience."""
    audiences = {"external_user_id": _has("external_user_id"), "recipients": _has("recipients"),
                 "broadcast": _is_true("broadcast")}
    return {"allOf": [
        {"$ref": "#/components/schemas/FlatTrigger"},
        {"oneOf": [_has("campaign_id"), _has("canvas_id")]},
        {"oneOf": [{**rule, **_none_of(*[r for n, r in audiences.items() if n != name])}
                   for name, rule in audiences.items()]},
        # every other field becomes a snake_case property: a name needs a letter or a digit
        {"propertyNames": {"pattern": "[A-Za-z0-9]"}},
        {"properties": {"recipients": {"items": {
            "type": "object", "required": ["external_user_id"],
            "properties": {"external_user_id": BRAZE_ID}, "propertyNames": {"pattern": "[A-Za-z0-9]"}}}}},
    ]}


SEND_ANSWER = {"type": "object", "required": ["ok"], "properties": {
    "ok": {"type": "boolean", "const": True},
    "dispatch_id": {"type": "string", "description": "Braze's id of this send (one chunk)"},
    "dispatch_ids": {"type": "array", "items": {"type": ["string", "null"]},
                     "description": "each chunk's dispatch_id, in order (null for a chunk that failed)"},
    "message": {"type": "string", "description": "Braze's `message`: `success`"},
    "notice": {"type": "string", "description": "Braze's notice (canvas paused or archived): nothing sent"},
    "errors": {"type": "array", "description": "Braze's non-fatal errors"},
    "chunks": {"type": "array", "items": {"type": "object"},
               "description": "each chunk of 50: its index, recipients and dispatch_id or error"},
    "duplicates_dropped": {"type": "integer", "minimum": 0},
}}
RELAY_ANSWER = {"type": "object", "required": ["dispatch_id", "message"], "properties": {
    "dispatch_id": {"type": "string"}, "message": {"type": "string", "examples": ["success"]},
    "notice": {"type": "string"}, "errors": {"type": "array"}}}
EXAMPLES = {
    "/v1/users/{user_id}/tags": {"segment tag for 30 days": {"value": {"tags": ["winter-2026"],
                                                                       "ttl": 2592000}},
                                 "ttl built with Liquid": {"value": {"tags": ["vip"], "ttl": "2592000"}},
                                 "counter tag": {"value": {"tags": ["visited-store"]}}},
    "/v1/braze/trigger": {"one customer": {"value": {"campaign_id": "c-123", "external_user_id": "cust-1",
                                                     "Offer Title": "Double espresso", "points": 50}},
                          "several customers": {"value": {"canvas_id": "cv-9", "recipients": [
                              {"external_user_id": "cust-1", "offer_title": "Espresso"},
                              {"external_user_id": "cust-2", "offer_title": "Latte"}]}}},
    "/campaigns/trigger/send": {"Braze's own body": {"value": {
        "campaign_id": "c-123", "recipients": [{"external_user_id": "cust-1",
                                                "trigger_properties": {"offer_title": "Espresso"}}]}}},
    "/canvas/trigger/send": {"Braze's own body": {"value": {
        "canvas_id": "cv-9", "recipients": [{"external_user_id": "cust-1", "context": {"points": 50}}]}}},
}


def _query(operation: dict, name: str) -> dict | None:
    for parameter in operation.get("parameters", []):
        if parameter.get("in") == "query" and parameter.get("name") == name:
            return parameter
    return None


def tighten(doc: dict) -> dict:
    """Add to `doc` the rules of the server that its marshmallow schemas do not express."""
    paths, schemas = doc["paths"], doc["components"]["schemas"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            culture = _query(operation, "culture")
            if culture is not None:
                culture["schema"] = {**culture["schema"], "type": "string", "pattern": CULTURE}
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "Idempotency-Key" and parameter["in"] == "header":
                    parameter["schema"] = {"type": "string", "pattern": KEY}
                if parameter["in"] == "path" and parameter["name"] == "user_id":
                    parameter["schema"] = {**parameter["schema"], "pattern": USER_ID,
                                           "not": {"pattern": DOTS_ONLY}}
    for path in ("/preview", "/preview/api/wallet"):
        user_id = _query(paths[path]["get"], "user_id")
        if user_id is not None:  # preview.routes._user_id: stripped; the page alone may have none
            optional = path == "/preview"
            user_id["schema"] = {"type": "string", "not": {"pattern": DOTS_ONLY},
                                 "pattern": r"^\s*" + ("(?:" if optional else "") + USER_ID[1:-1]
                                 + (")?" if optional else "") + r"\s*$"}
    tags = schemas.get("TagsBody", {}).get("properties", {})
    if "ttl" in tags:
        description = tags["ttl"].get("description")
        tags["ttl"] = {"description": description, "default": None, "anyOf": [
            {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
            {"type": "string", "pattern": TTL_DIGITS}, {"type": "null"}]}
    if "tags" in tags:
        tags["tags"]["items"]["pattern"] = TAG
    if "NativeRecipient" in schemas:
        schemas["NativeRecipient"].update(_recipient_rules())
        # sends.plan.UserAlias: alias_name and alias_label, non-empty strings
        schemas["NativeRecipient"].setdefault("properties", {})["user_alias"] = {
            "type": "object", "required": ["alias_name", "alias_label"],
            "properties": {"alias_name": {"type": "string", "minLength": 1},
                           "alias_label": {"type": "string", "minLength": 1}}}
    bodies = {"/v1/braze/trigger": _flat_body(), "/campaigns/trigger/send": _native_body("campaign"),
              "/canvas/trigger/send": _native_body("canvas")}
    for path, schema in bodies.items():
        operation = paths.get(path, {}).get("post")
        if operation is None:
            continue
        body = operation["requestBody"]
        operation["requestBody"] = {**body, "content": {"application/json": {
            **body["content"]["application/json"], "schema": schema}}}
        answer = RELAY_ANSWER if path != "/v1/braze/trigger" else SEND_ANSWER
        operation["responses"]["201"] = {**operation["responses"]["201"],
                                         "content": {"application/json": {"schema": answer}}}
    for path, examples in EXAMPLES.items():
        operation = paths.get(path, {}).get("post")
        if operation and "requestBody" in operation:
            body = operation["requestBody"]
            operation["requestBody"] = {**body, "content": {"application/json": {
                **body["content"]["application/json"], "examples": examples}}}
    return doc
