"""Settings: names and defaults of the SPEC, all-or-nothing groups, sandbox, clear errors."""
from __future__ import annotations

import subprocess
import sys

import pytest

from wallet_proxy.settings import SANDBOX_CONNECT_URL, ConfigError, Settings, parse

CONNECT = {"SESSIONM_CONNECT_URL": "https://connect.example", "SESSIONM_CONNECT_AUTH": "abc",
           "SESSIONM_RETAILER_ID": "r1"}


class TestCaches:
    def test_cultures_are_normalised_and_the_default_always_allowed(self):
        s = parse({**CONNECT, "WALLET_PROXY_CULTURES": " fr_fr, DE ,en-us,,fr-FR"})
        assert s.cultures == ("en-US", "fr-FR", "de")

    def test_the_cache_budget_is_split_between_the_caches_in_bytes(self):
        from wallet_proxy.services import cache_budgets

        budgets = cache_budgets(parse({**CONNECT, "WALLET_PROXY_CACHE_MB": "100"}))
        assert sum(budgets.values()) <= 100 * 2**20 and min(budgets.values()) > 0


class TestDefaults:
    def test_spec_defaults(self):
        s = parse({**CONNECT, "WALLET_PROXY_CLIENTS": "a:b"})
        assert (s.cache_ttl, s.stale_ttl, s.cache_mb, s.deadline, s.upstream_timeout) == (60, 300, 256,
                                                                                        1.8, 1.5)
        assert s.cultures is None
        assert (s.breaker_failures, s.breaker_cooldown, s.upstream_concurrency) == (5, 10, 64)
        assert s.client_rate is None and s.redis_url is None and s.signing_key is None
        assert not s.sandbox and s.connect_configured and not s.core_configured and not s.braze_configured

    def test_no_upstream_settings_is_sandbox_with_demo_client(self):
        s = parse({})
        assert s.sandbox and s.connect_url == SANDBOX_CONNECT_URL
        assert [(c.name, c.secret) for c in s.clients] == [("demo", "demo")]

    def test_sandbox_keeps_configured_clients(self):
        assert [c.name for c in parse({"WALLET_PROXY_CLIENTS": "x:y"}).clients] == ["x"]

    @pytest.mark.parametrize("auth, header", [("abc", "Basic abc"), ("Basic abc", "Basic abc"),
                                              ("basic abc", "basic abc")])
    def test_connect_auth_with_or_without_basic(self, auth, header):
        assert parse({**CONNECT, "SESSIONM_CONNECT_AUTH": auth}).connect_authorization == header


class TestProblems:
    def test_half_configured_group_names_what_is_missing(self):
        with pytest.raises(ConfigError) as err:
            parse({"SESSIONM_CONNECT_URL": "https://c", "BRAZE_API_KEY": "topsecret-key"})
        message = str(err.value)
        assert "SESSIONM_CONNECT_AUTH" in message and "SESSIONM_RETAILER_ID" in message
        assert "BRAZE_REST_URL" in message
        assert "topsecret-key" not in message

    @pytest.mark.parametrize("name, value", [
        ("WALLET_PROXY_CACHE_TTL", "soon"), ("WALLET_PROXY_CACHE_MB", "0"), ("WALLET_PROXY_CACHE_SIZE", "100000"),
        ("WALLET_PROXY_CULTURES", "fr,not a tag"), ("WALLET_PROXY_DEADLINE", "0"),
        ("WALLET_PROXY_UPSTREAM_CONCURRENCY", "1.5"), ("WALLET_PROXY_REDIS_URL", "http://x"),
        ("SESSIONM_CONNECT_URL", "ftp://x"),
    ])
    def test_bad_values_are_named(self, name, value):
        with pytest.raises(ConfigError, match=name):
            parse({**CONNECT, name: value})

    @pytest.mark.parametrize("clients, fragment", [("nosecret", "entry 1"), ("a:b:root", "unknown scope"),
                                                    ("a:b,:c", "entry 2")])
    def test_bad_clients_never_echo_secrets(self, clients, fragment):
        with pytest.raises(ConfigError) as err:
            parse({"WALLET_PROXY_CLIENTS": clients})
        assert fragment in str(err.value)
        assert ":b" not in str(err.value)

    def test_scopes_are_parsed(self):
        (client,) = parse({"WALLET_PROXY_CLIENTS": "braze:s3:wallet+tags"}).clients
        assert client.scopes == {"wallet", "tags"}
        assert "s3" not in repr(client)


def test_dotenv_file_is_read_and_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("WALLET_PROXY_CACHE_TTL=30\nWALLET_PROXY_STALE_TTL=5\n")
    s = Settings.from_env({"WALLET_PROXY_STALE_TTL": "7"}, dotenv_path=str(env_file))
    assert (s.cache_ttl, s.stale_ttl) == (30, 7)


def test_half_configured_service_refuses_to_start(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "SESSIONM_CONNECT_URL": "https://c.example"}
    done = subprocess.run([sys.executable, "-m", "wallet_proxy.cli", "serve", "--port", "1"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "SESSIONM_CONNECT_AUTH" in done.stderr and "SESSIONM_RETAILER_ID" in done.stderr


class TestSandboxMustBeAskedFor:
    """The production entry reads settings with implicit_sandbox=False (wsgi.py, gunicorn.conf.py)."""

    def test_production_reading_refuses_no_upstream_and_names_the_settings(self):
        with pytest.raises(ConfigError) as err:
            parse({}, implicit_sandbox=False)
        for name in ("SESSIONM_CONNECT_URL", "SESSIONM_CORE_URL", "BRAZE_REST_URL", "WALLET_PROXY_SANDBOX=1"):
            assert name in str(err.value)

    def test_explicit_sandbox_is_accepted_by_the_production_reading(self):
        assert parse({"WALLET_PROXY_SANDBOX": "1"}, implicit_sandbox=False).sandbox

    def test_development_reading_keeps_the_no_config_sandbox(self):
        assert parse({}).sandbox

    @pytest.mark.parametrize("implicit", [True, False])
    def test_sandbox_beside_upstream_settings_is_refused(self, implicit):
        with pytest.raises(ConfigError, match="refused together with upstream settings"):
            parse({**CONNECT, "WALLET_PROXY_SANDBOX": "1"}, implicit_sandbox=implicit)

    def test_sandbox_zero_is_off_and_garbage_is_named(self):
        assert not parse({**CONNECT, "WALLET_PROXY_SANDBOX": "0"}).sandbox
        with pytest.raises(ConfigError, match="WALLET_PROXY_SANDBOX must be 1 or 0"):
            parse({"WALLET_PROXY_SANDBOX": "maybe"})


def test_short_client_secrets_are_warned_about_at_start_by_name_only(capsys):
    from wallet_proxy import create_app

    capsys.readouterr()
    create_app(parse({**CONNECT,
                      "WALLET_PROXY_CLIENTS": "braze:short-one,ops:a-long-enough-secret-42:admin"}))
    err = capsys.readouterr().err
    assert "shorter than 16 characters" in err and "braze" in err
    assert "short-one" not in err and "ops" not in err.split("shorter than")[1].split("\n")[0]
