"""GET /openapi.json: a valid OpenAPI 3.1 document covering every rule of the app, and true to the answers."""
from __future__ import annotations

import base64

import jsonschema
import pytest
from flask import Blueprint, jsonify
from openapi_spec_validator import validate

from tests.conftest import OFFERS_PATH, make_settings
from tests.fakes import Reply
from wallet_proxy.web.http import require
from wallet_proxy.web.openapi import AUTOMATIC_METHODS, openapi_path

WALLET = {"Authorization": "Basic " + base64.b64encode(b"braze:bz-secret").decode()}
VIEW_KEYS = {"ok", "stale", "user_id", "culture", "available_points", "total_points", "offer_count",
             "offers", "groups", "categories", "user", "fetched_at"}


@pytest.fixture
def full_app(sessionm, app_for):
    """Every upstream group configured, so every blueprint's routes are live."""
    return app_for(make_settings(sessionm.url, core_url=sessionm.url, braze_url=sessionm.url))


def document(app) -> dict:
    response = app.test_client().get("/openapi.json")  # open: no credentials
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def validator_for(spec: dict, name: str):
    """A JSON Schema 2020-12 validator of components.schemas[name] (OpenAPI 3.1 schemas are JSON Schema)."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    return jsonschema.Draft202012Validator(schema)


class TestDocument:
    def test_is_valid_openapi_3_1(self, full_app):
        spec = document(full_app)
        assert spec["openapi"] == "3.1.0"
        validate(spec)  # raises on any structural error

    def test_every_rule_is_documented_with_its_methods_and_path_parameters(self, full_app):
        spec = document(full_app)
        rules = list(full_app.url_map.iter_rules())
        assert len(rules) >= 10  # ops, wallets, tags, trigger, relay, preview...
        for rule in rules:
            path, params = openapi_path(rule.rule)
            assert path in spec["paths"], f"{rule.rule} is not documented"
            operations = spec["paths"][path]
            for method in rule.methods - AUTOMATIC_METHODS:
                operation = operations.get(method.lower())
                assert operation, f"{method} {rule.rule} is not documented"
                declared = {(p["in"], p["name"]) for p in operation.get("parameters", [])}
                assert {("path", name) for name in params} <= declared
                assert "500" in operation["responses"]
                assert all("X-Request-ID" in answer["headers"] for answer in operation["responses"].values())
        documented = {(p, m) for p, ops in spec["paths"].items() for m in ops}
        routed = {(openapi_path(r.rule)[0], m.lower()) for r in rules for m in r.methods - AUTOMATIC_METHODS}
        assert documented == routed  # nothing documented that does not exist

    def test_secured_routes_declare_auth_and_their_errors(self, full_app):
        spec = document(full_app)
        for rule in full_app.url_map.iter_rules():
            view = full_app.view_functions[rule.endpoint]
            scope = getattr(view, "required_scope", None)
            for method in rule.methods - AUTOMATIC_METHODS:
                operation = spec["paths"][openapi_path(rule.rule)[0]][method.lower()]
                if scope:
                    assert operation["x-scope"] == scope
                    assert operation["security"]
                    assert {"401", "403", "429"} <= set(operation["responses"])
                else:
                    assert "security" not in operation

    def test_wallet_query_parameters_come_from_the_marshmallow_schema(self, full_app):
        operation = document(full_app)["paths"]["/v1/wallets/{user_id}"]["get"]
        query = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
        assert {"culture", "sig", "group", "category", "type", "expiring_within_days", "limit", "sort",
                "on_error", "id_type"} <= set(query)
        assert query["limit"]["schema"]["maximum"] == 1000 and query["limit"]["schema"]["minimum"] == 1
        assert set(query["on_error"]["schema"]["enum"]) == {"status", "empty"}
        assert "-expires_at" in query["sort"]["schema"]["enum"]
        assert {"200", "304", "400", "401", "403", "404", "502", "503", "504"} <= set(operation["responses"])
        assert "Retry-After" in operation["responses"]["503"]["headers"]

    def test_bodies_of_tags_and_trigger_are_documented(self, full_app):
        paths = document(full_app)["paths"]
        tags = paths["/v1/users/{user_id}/tags"]["post"]
        assert tags["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/TagsBody")
        for path in ("/v1/braze/trigger", "/campaigns/trigger/send", "/canvas/trigger/send"):
            operation = paths[path]["post"]
            assert operation["requestBody"]["required"] is True
            assert any(p["name"] == "Idempotency-Key" for p in operation["parameters"])
            assert {"400", "409", "503", "504"} <= set(operation["responses"])

    def test_a_route_added_later_is_documented_generically(self, full_app):
        extra = Blueprint("later", __name__)

        @extra.post("/v1/later/<thing_id>")
        @require("admin")
        def later(thing_id):
            """Do a later thing."""
            return jsonify(ok=True)

        full_app.register_blueprint(extra)
        operation = document(full_app)["paths"]["/v1/later/{thing_id}"]["post"]
        assert operation["summary"] == "Do a later thing."
        assert operation["x-scope"] == "admin" and "401" in operation["responses"]
        assert operation["parameters"][0] == {"in": "path", "name": "thing_id", "required": True,
                                              "schema": {"type": "string"}, "description": "thing_id"}


class TestAnswersMatchTheDocument:
    def test_wallet_view_schema_requires_every_key_and_matches_a_real_answer(self, full_app):
        spec = document(full_app)
        assert VIEW_KEYS <= set(spec["components"]["schemas"]["WalletView"]["required"])
        body = full_app.test_client().get("/v1/wallets/u1", headers=WALLET).get_json()
        validator_for(spec, "WalletView").validate(body)
        assert body["offers"], "the fixture has offers: the offer schema was exercised"

    def test_on_error_empty_body_matches_too(self, full_app, sessionm):
        sessionm.on("POST", OFFERS_PATH, Reply(500, {"status": "error"}))
        body = full_app.test_client().get("/v1/wallets/u1?on_error=empty", headers=WALLET).get_json()
        assert body["ok"] is False
        validator_for(document(full_app), "WalletView").validate(body)

    def test_error_answers_match_the_error_schema(self, full_app):
        spec = document(full_app)
        client = full_app.test_client()
        for response in (client.get("/v1/wallets/u1"), client.get("/v1/wallets/bad%20id", headers=WALLET),
                         client.get("/v1/wallets/u1?limit=0", headers=WALLET), client.get("/nowhere")):
            assert response.status_code >= 400
            validator_for(spec, "Error").validate(response.get_json())

    def test_bad_view_is_rejected_by_the_schema(self, full_app):
        """The schema is not vacuous: a view missing a key or with a wrong type fails it."""
        spec = document(full_app)
        body = full_app.test_client().get("/v1/wallets/u1", headers=WALLET).get_json()
        validator = validator_for(spec, "WalletView")
        for broken in ({k: v for k, v in body.items() if k != "offers"}, {**body, "offer_count": "2"},
                       {**body, "offers": [{**body["offers"][0], "redeemable": None}]}):
            assert not validator.is_valid(broken)


def test_every_route_has_its_own_declaration(full_app):
    """The generic fallback keeps a new route documented; its answers still deserve a declaration."""
    from wallet_proxy.web.openapi import _routes

    declared = _routes()
    missing = [f"{sorted(rule.methods - AUTOMATIC_METHODS)} {rule.rule} ({rule.endpoint})"
               for rule in full_app.url_map.iter_rules()
               if not getattr(full_app.view_functions[rule.endpoint], "openapi", None)
               and not all(m.lower() in declared.get(rule.endpoint, {})
                           for m in rule.methods - AUTOMATIC_METHODS)]
    assert missing == [], "declare these in wallet_proxy/openapi.py _routes() (or set view.openapi): " + \
        "; ".join(missing)


class TestTheDocumentSaysWhatTheServerChecks:
    """Rules the marshmallow schemas cannot say, added by web/openapi.tighten (issue 21 items 13-14);
    tests/test_schemathesis.py checks the document against the server with both data modes."""

    @pytest.fixture
    def spec(self, app_for):
        from wallet_proxy.settings import parse

        return document(app_for(parse({})))

    @staticmethod
    def valid(spec: dict, schema: dict, instance) -> bool:
        validator = jsonschema.Draft202012Validator({**schema, "components": spec["components"]})
        return validator.is_valid(instance)

    def body(self, spec, path):
        return spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]

    def test_a_ttl_string_is_digits_from_1(self, spec):
        ttl = spec["components"]["schemas"]["TagsBody"]["properties"]["ttl"]
        good = (1, "1", " 30 ", 2**31 - 1, "2147483647", None)
        assert [self.valid(spec, ttl, v) for v in good] == [True] * 6
        assert [self.valid(spec, ttl, v) for v in (0, "0", "000", "2147483648", 2**31, "1.5", "x", -3)] == \
            [False] * 8

    def test_culture_and_preview_user_id_have_the_servers_patterns(self, spec):
        def param(path, name):
            (found,) = [p for p in spec["paths"][path]["get"]["parameters"] if p["name"] == name]
            return found["schema"]
        culture = param("/v1/wallets/{user_id}", "culture")
        good = ("", "fr", "fr-FR", "fr_fr", "zh-Hant-TW", "es-419")
        assert all(self.valid(spec, culture, v) for v in good)
        assert not any(self.valid(spec, culture, v) for v in ("french", "fr-", "f", "fr-FR-x", "é"))
        user_id = param("/preview/api/wallet", "user_id")
        assert self.valid(spec, user_id, " member-1 ") and not self.valid(spec, user_id, "")
        assert not self.valid(spec, user_id, "...") and not self.valid(spec, user_id, "a b")
        assert self.valid(spec, param("/preview", "user_id"), "")

    def test_trigger_bodies_need_exactly_one_id_and_one_identifier_per_recipient(self, spec):
        flat = self.body(spec, "/v1/braze/trigger")
        assert self.valid(spec, flat, {"campaign_id": "c", "external_user_id": "u", "Offer Title": "x"})
        assert not self.valid(spec, flat, {"campaign_id": "c", "canvas_id": "v", "external_user_id": "u"})
        assert not self.valid(spec, flat, {"campaign_id": "c"})  # no audience
        assert not self.valid(spec, flat, {"campaign_id": "c", "broadcast": True, "external_user_id": "u"})
        native = self.body(spec, "/campaigns/trigger/send")
        one = {"campaign_id": "c", "recipients": [{"external_user_id": "u"}]}
        assert self.valid(spec, native, one)
        two_ids = [{"external_user_id": "u", "braze_id": "b"}]
        assert not self.valid(spec, native, {**one, "recipients": two_ids})
        no_prioritization = [{"email": "a@example.com"}]
        assert not self.valid(spec, native, {**one, "recipients": no_prioritization})
        assert not self.valid(spec, native, {**one, "canvas_id": "v"})
        assert not self.valid(spec, native, {**one, "context": {}})  # a campaign reads trigger_properties
        canvas = self.body(spec, "/canvas/trigger/send")
        assert self.valid(spec, canvas, {"canvas_id": "v", "broadcast": True, "context": {"a": 1}})
        assert not self.valid(spec, canvas, {"canvas_id": "v", "broadcast": True, "recipients": [
            {"external_user_id": "u"}]})

    def test_a_201_declares_what_braze_and_we_answer(self, spec, app_for):
        from wallet_proxy.settings import parse

        client = app_for(parse({})).test_client()
        sandbox = {"Authorization": "Basic " + base64.b64encode(b"demo:demo").decode()}
        for path, body in [("/v1/braze/trigger", {"campaign_id": "c", "external_user_id": "u"}),
                           ("/campaigns/trigger/send",
                            {"campaign_id": "c", "recipients": [{"external_user_id": "u"}]})]:
            answer = spec["paths"][path]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
            assert {"dispatch_id", "message", "notice"} <= set(answer["properties"])
            reply = client.post(path, json=body, headers=sandbox)
            assert reply.status_code == 201 and self.valid(spec, answer, reply.get_json()), reply.get_json()
            examples = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["examples"]
            schema = self.body(spec, path)
            assert examples and all(self.valid(spec, schema, e["value"]) for e in examples.values())
