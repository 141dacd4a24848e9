"""The Liquid playground: Braze syntax and filters, limits, and errors that say where and why."""
from __future__ import annotations

import time

import pytest

from tests.conftest import NOW
from wallet_proxy.preview.liquid import Playground, TemplateProblem, braze_syntax

WALLET = {
    "ok": True, "stale": False, "user_id": "u-1", "available_points": 1250, "offer_count": 2,
    "offers": [
        {"title": "Free <b>coffee</b>", "expires_at": "2026-12-31T23:59:59Z", "expires_in_days": 33,
         "group_name": "All Offers"},
        {"title": "10% off", "expires_at": "2026-12-01T23:59:59Z", "expires_in_days": 3,
         "group_name": "Weekly Deals"},
    ],
}


@pytest.fixture
def play():
    return Playground(clock=lambda: NOW)


def render(play, source, **data):
    data.setdefault("wallet", WALLET)
    return play.render(source, data)


class TestBrazeSyntax:
    def test_dollar_names_become_variables_inside_markup_only(self):
        source = "Hi {{${first_name} | default: 'you'}} ${not_markup} {% if ${x} %}{% endif %}"
        expected = "Hi {{first_name | default: 'you'}} ${not_markup} {% if x %}{% endif %}"
        assert braze_syntax(source) == expected

    def test_dollar_names_render(self, play):
        assert render(play, "{{${user_id}}}/{{${first_name} | default: 'friend'}}", user_id="u-9").output == \
            "u-9/friend"

    def test_wallet_paths_render(self, play):
        out = render(play, "{{wallet.offers[0].title}}|{{wallet.offers.size}}|"
                           "{{wallet.offers[1].group_name}}")
        assert out.output == "Free <b>coffee</b>|2|Weekly Deals"

    def test_loop_over_offers(self, play):
        out = render(play, "{% for o in wallet.offers %}{{o.expires_in_days}};{% endfor %}")
        assert out.output == "33;3;"

    def test_connected_content_block_binds_the_saved_name(self, play):
        source = ("{% connected_content https://w.example/v1/wallets/{{${user_id}}}?culture={{${language}}} "
                  ":basic_auth wallet_proxy :save w2 :no_cache :retry %}{{w2.available_points}}")
        assert render(play, source, user_id="u-1", language="en").output == "1250"

    def test_abort_message_reports_the_reason(self, play):
        source = "{% if wallet.ok != true %}{% abort_message('wallet unavailable') %}{% endif %}hello"
        assert render(play, source).aborted is None
        failed = render(play, source, wallet={"ok": False})
        assert failed.aborted == "wallet unavailable"
        assert failed.output == ""


class TestFilters:
    # expected values from Braze's "Advanced filters" documentation
    @pytest.mark.parametrize("source, expected", [
        ("{{'hey' | md5}}", "6057f13c496ecf7fd777ceb9e79ae285"),
        ("{{'hey' | sha1}}", "7f550a9f4c44173a37664d938f1355f0f92a47a7"),
        ("{{'hey' | sha2}}", "fa690b82061edfd2852629aeba8a8977b57e40fcb77d1a7a28b26cba62591204"),
        ("{{'blah' | base64_encode}}", "YmxhaA=="),
        ("{{'hey' | hmac_sha1_hex: 'secret_key'}}", "2a3969bed25bfeefb00aca4063eb9590b4df8f0e"),
        ("{{'hey' | hmac_sha1_base64: 'secret_key'}}", "KjlpvtJb/u+wCspAY+uVkLTfjw4="),
        ("{{'hey' | hmac_sha256_hex: 'secret_key'}}",
         "8df897f8da3d7992fe57c8dbc6f27578cfbf2dcc4d0fbb4000b8c924841d508e"),
        ("{{'hey' | hmac_sha256_base64: 'secret_key'}}", "jfiX+No9eZL+V8jbxvJ1eM+/LcxND7tAALjJJIQdUI4="),
        ("{{'hey<>hi' | url_escape}}", "hey%3C%3Ehi"),
        ("{{'hey<&>hi' | url_param_escape}}", "hey%3C%26%3Ehi"),
        ("{{'google search' | url_encode}}", "google+search"),
        ("{{123456 | number_with_delimiter}}", "123,456"),
        ("{{'12\"3' | json_escape}}", '12\\"3'),
        ("{{wallet | property_accessor: 'user_id'}}", "u-1"),
        ("{{nothing | default: 'fallback'}}", "fallback"),
        ("{{wallet.offers | size}}", "2"),
        ("{{wallet.offers[0].expires_at | date: '%b %d, %Y'}}", "Dec 31, 2026"),
        ("{{'now' | date: '%Y-%m-%d %H:%M'}}", "2026-11-28 10:00"),
        ("{{'now' | time_zone: 'America/New_York' | date: '%H:%M'}}", "05:00"),
        ("{{1795000000 | date: '%Y'}}", "2026"),
    ])
    def test_braze_filters(self, play, source, expected):
        assert render(play, source).output == expected

    def test_sig_matches_the_service_signature(self, play):
        from wallet_proxy.web.auth import sign

        out = render(play, "{{${user_id} | hmac_sha256_hex: 'k3y'}}", user_id="u-1").output
        assert out == sign("k3y", "u-1")


class TestErrors:
    def test_syntax_error_names_line_and_reason(self, play):
        with pytest.raises(TemplateProblem) as caught:
            render(play, "Hello\n{{ wallet.offers[0].title }}\n{% if wallet.ok %}\nno end")
        problem = caught.value
        assert problem.kind == "syntax"
        assert problem.line == 3
        assert "endif" in problem.reason
        assert problem.source_line == "{% if wallet.ok %}"

    def test_empty_filter_is_located(self, play):
        with pytest.raises(TemplateProblem) as caught:
            render(play, "a\n\n{{ wallet.user_id | }}")
        assert (caught.value.kind, caught.value.line) == ("syntax", 3)
        assert caught.value.reason

    def test_unknown_filter_names_it(self, play):
        with pytest.raises(TemplateProblem) as caught:
            render(play, "ok\n{{ wallet.user_id | shout }}")
        assert caught.value.line == 2
        assert "shout" in caught.value.reason

    def test_error_after_braze_syntax_reports_the_original_line(self, play):
        with pytest.raises(TemplateProblem) as caught:
            render(play, "{{${first_name}}}\n{% for x in %}{% endfor %}")
        assert caught.value.line == 2
        assert caught.value.source_line == "{% for x in %}{% endfor %}"

    def test_as_dict_is_json_ready(self, play):
        with pytest.raises(TemplateProblem) as caught:
            render(play, "{% endif %}")
        assert caught.value.as_dict() == {"kind": "syntax", "reason": "unexpected tag 'endif'", "line": 1,
                                          "column": 4, "source_line": "{% endif %}"}


class TestLimits:
    def test_nested_loops_hit_the_iteration_limit(self, play):
        with pytest.raises(TemplateProblem) as caught:
            render(play, "{% for a in (1..1000) %}{% for b in (1..1000) %}x{% endfor %}{% endfor %}")
        assert caught.value.kind == "limit"
        assert "loop" in caught.value.reason

    def test_output_size_is_capped(self):
        play = Playground(max_output=1000)
        with pytest.raises(TemplateProblem) as caught:
            play.render("{% for a in (1..500) %}0123456789{% endfor %}", {})
        assert caught.value.kind == "limit"

    def test_doubling_a_string_stops(self, play):
        with pytest.raises(TemplateProblem) as caught:
            render(play, "{% assign s = 'xxxxxxxx' %}{% for i in (1..64) %}{% assign s = s | append: s %}"
                         "{% endfor %}{{ s | size }}")
        assert caught.value.kind == "limit"

    def test_squaring_a_number_stops(self, play):
        with pytest.raises(TemplateProblem) as caught:
            render(play, "{% assign n = 99999999 %}{% for i in (1..64) %}{% assign n = n | times: n %}"
                         "{% endfor %}{{ n }}")
        assert caught.value.kind == "limit"
        assert "number" in caught.value.reason

    def test_huge_range_cannot_be_joined(self, play):
        started = time.monotonic()
        with pytest.raises(TemplateProblem) as caught:
            render(play, "{{ (1..100000000) | join: ',' }}")
        assert caught.value.kind == "limit"
        assert time.monotonic() - started < 1

    def test_source_size_is_capped(self):
        with pytest.raises(TemplateProblem) as caught:
            Playground(max_source=100).render("x" * 101, {})
        assert caught.value.kind == "limit"
        assert "100 characters" in caught.value.reason

    def test_render_time_is_capped(self):
        ticks = iter(range(1_000_000))
        # a fake monotonic clock: each look at it is 10 ms later, so the 50 ms budget runs out mid-loop
        play = Playground(monotonic=lambda: next(ticks) * 0.01, max_seconds=0.05)
        with pytest.raises(TemplateProblem) as caught:
            play.render("{% for i in (1..100) %}{{ i | plus: 1 }}{% endfor %}", {})
        assert caught.value.kind == "limit"
        assert "too long" in caught.value.reason

    @pytest.mark.parametrize("source", ["{{" * 9_999, "{%" * 9_999, "ok\n{{ " + "${a}" * 4_000])
    def test_unclosed_markup_is_refused_fast(self, play, source):
        # python-liquid's lexer alone takes ~25 s on 20,000 characters of unclosed `{{`
        started = time.monotonic()
        with pytest.raises(TemplateProblem) as caught:
            render(play, source)
        assert time.monotonic() - started < 0.5
        assert caught.value.kind == "syntax" and "never closed" in caught.value.reason
        assert caught.value.line == source.count("\n") + 1

    def test_many_sequential_loops_finish_within_the_real_budget(self, play):
        source = "{% for i in (1..10000) %}{% endfor %}" * 500  # 5M iterations if nothing stopped it
        started = time.monotonic()
        with pytest.raises(TemplateProblem) as caught:
            render(play, source)
        assert caught.value.kind == "limit"
        assert time.monotonic() - started < 2
