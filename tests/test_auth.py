"""Inbound credentials and wallet signatures."""
from __future__ import annotations

import base64

import pytest

from wallet_proxy.errors import BadSignature, Forbidden, Unauthorized
from wallet_proxy.settings import Client, parse
from wallet_proxy.web.auth import Authenticator, _credentials, check_signature, sign, signing_keys


def basic(name, secret):
    return "Basic " + base64.b64encode(f"{name}:{secret}".encode()).decode()


@pytest.fixture
def auth():
    return Authenticator(parse({"WALLET_PROXY_CLIENTS": "braze:one:wallet,ops:two:admin+tags"}).clients)


def test_sign_matches_brazes_documented_hmac_sha256_hex():
    # Braze's advanced-filters page: {{'hey' | hmac_sha256_hex: 'secret_key'}}
    assert sign("secret_key", "hey") == "8df897f8da3d7992fe57c8dbc6f27578cfbf2dcc4d0fbb4000b8c924841d508e"


def test_signature_check():
    check_signature(None, "u", None)  # signing off: anything goes
    check_signature("k", "u", sign("k", "u").upper())
    for sig in (None, "", "zz", sign("k", "v")):
        with pytest.raises(BadSignature):
            check_signature("k", "u", sig)


def test_basic_and_bearer(auth):
    assert auth.authenticate(basic("braze", "one"), "wallet").name == "braze"
    assert auth.authenticate("Bearer one", "wallet").name == "braze"
    assert auth.authenticate("bearer two", "tags").name == "ops"


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer three", basic("braze", "two"),
                                    basic("ops", "one"), "Basic not-base64!", "Basic " +
                                    base64.b64encode(b"no-colon").decode(), "Token one"])
def test_rejected(auth, header):
    with pytest.raises(Unauthorized):
        auth.authenticate(header, "wallet")


def test_scope(auth):
    with pytest.raises(Forbidden):
        auth.authenticate("Bearer one", "admin")


def test_no_clients_says_why():
    with pytest.raises(Unauthorized, match="WALLET_PROXY_CLIENTS"):
        Authenticator(()).authenticate("Bearer x", "wallet")


class TestHeaderForms:
    """What an Authorization header may look like (RFC 9110 section 11.6.2; RFC 7617 Basic, RFC 6750 Bearer)."""

    def b64(self, text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    @pytest.mark.parametrize("scheme", ["Basic", "basic", "BASIC", "bAsIc"])
    def test_the_scheme_is_case_insensitive(self, auth, scheme):
        assert auth.authenticate(f"{scheme} {self.b64('braze:one')}", "wallet").name == "braze"

    @pytest.mark.parametrize("header", ["  Basic {v}", "Basic    {v}", "Basic {v}   ", "\tBasic {v}\t"])
    def test_spaces_around_the_parts(self, auth, header):
        assert auth.authenticate(header.format(v=self.b64("braze:one")), "wallet").name == "braze"

    @pytest.mark.parametrize("scheme", ["Digest", "Token", "Negotiate", "ApiKey", "Basicx", "Bearerx"])
    def test_other_schemes_carrying_valid_credentials_are_refused(self, auth, scheme):
        with pytest.raises(Unauthorized):
            auth.authenticate(f"{scheme} {self.b64('braze:one')}", "wallet")
        with pytest.raises(Unauthorized):
            auth.authenticate(f"{scheme} one", "wallet")

    @pytest.mark.parametrize("value", [
        base64.b64encode(b"ops:two").decode().rstrip("="),               # padding dropped
        base64.b64encode(b"ops:two").decode()[:4] + " " + base64.b64encode(b"ops:two").decode()[4:],
        base64.b64encode(b"ops:two").decode().replace("b", "-"),          # outside the alphabet
        base64.b64encode(b"ops:two").decode() + "#",
    ])
    def test_base64_is_read_strictly(self, auth, value):
        assert auth.authenticate(basic("ops", "two"), "tags").name == "ops"
        with pytest.raises(Unauthorized):
            auth.authenticate(f"Basic {value}", "tags")

    def test_a_secret_may_contain_colons(self):
        auth = Authenticator(parse({"WALLET_PROXY_CLIENTS": "braze:a-b"}).clients)
        assert auth.authenticate(basic("braze", "a-b"), "wallet").name == "braze"
        with pytest.raises(Unauthorized):
            auth.authenticate(basic("braze", "a-b:extra"), "wallet")

    def test_bearer_needs_the_whole_secret(self, auth):
        for header in ("Bearer on", "Bearer one1", "Bearer ONE", "Bearer  one x"):
            with pytest.raises(Unauthorized):
                auth.authenticate(header, "wallet")

    def test_basic_needs_name_and_secret_of_the_same_client(self, auth):
        with pytest.raises(Unauthorized):
            auth.authenticate(basic("braze", "two"), "tags")
        assert auth.authenticate(basic("ops", "two"), "tags").name == "ops"

    def test_an_empty_secret_never_matches(self):
        auth = Authenticator(parse({"WALLET_PROXY_CLIENTS": "braze:one"}).clients)
        for header in (basic("braze", ""), "Bearer ", "Basic " + base64.b64encode(b":").decode()):
            with pytest.raises(Unauthorized):
                auth.authenticate(header, "wallet")


class TestScopes:
    def test_each_scope_is_checked(self):
        auth = Authenticator(parse({"WALLET_PROXY_CLIENTS": "braze:one:wallet,hook:two:tags+trigger"}).clients)
        assert auth.authenticate("Bearer one", "wallet").name == "braze"
        for scope in ("tags", "trigger", "admin"):
            with pytest.raises(Forbidden, match=scope):
                auth.authenticate("Bearer one", scope)
        assert auth.authenticate("Bearer two", "trigger").name == "hook"
        with pytest.raises(Forbidden):
            auth.authenticate("Bearer two", "wallet")

    def test_no_scopes_listed_means_all(self):
        auth = Authenticator(parse({"WALLET_PROXY_CLIENTS": "braze:one"}).clients)
        for scope in ("wallet", "tags", "trigger", "admin"):
            assert auth.authenticate("Bearer one", scope).name == "braze"

    def test_a_wrong_secret_is_401_not_403(self, auth):
        with pytest.raises(Unauthorized):
            auth.authenticate("Bearer nope", "admin")


@pytest.mark.parametrize("sig", [" {s} ", "{S}", "{s}\n"])
def test_signature_forms_braze_may_produce(sig):
    good = sign("k", "user-1")
    check_signature("k", "user-1", sig.format(s=good, S=good.upper()))


@pytest.mark.parametrize("sig", ["{s}0", "{short}", "x" * 64, "é" * 64])
def test_wrong_signatures(sig):
    good = sign("k", "user-1")
    with pytest.raises(BadSignature):
        check_signature("k", "user-1", sig.format(s=good, short=good[:-1]))


class TestKeyRotation:
    """WALLET_PROXY_SIGNING_KEY=new,old: templates signed with either key work during the rotation."""

    @pytest.mark.parametrize("setting, keys", [(None, ()), ("", ()), (" , ,", ()), ("k1", ("k1",)),
                                               ("new, old", ("new", "old")), ("a,,b ,c", ("a", "b", "c"))])
    def test_the_keys_of_the_setting(self, setting, keys):
        assert signing_keys(setting) == keys

    @pytest.mark.parametrize("signed_with", ["new", "mid", "old"])
    def test_a_signature_made_with_any_of_the_keys_is_valid(self, signed_with):
        check_signature("new, mid,old", "user-1", sign(signed_with, "user-1"))

    def test_a_signature_made_with_none_of_the_keys_is_refused(self):
        with pytest.raises(BadSignature):
            check_signature("new,old", "user-1", sign("older", "user-1"))
        with pytest.raises(BadSignature):
            check_signature("new,old", "user-1", sign("new,old", "user-1"))


@pytest.mark.parametrize("sig", ["\udc80" * 64, sign("k", "user-1")[:-1] + "\udcff"])
def test_a_signature_with_undecodable_bytes_is_refused_not_a_crash(sig):
    # a query string's invalid UTF-8 can arrive as lone surrogates; that is a bad signature, not a 500
    with pytest.raises(BadSignature):
        check_signature("k", "user-1", sig)


class TestBasicCredentials:
    """RFC 7617: the user-id ends at the first colon; the password may contain colons."""

    def b64(self, text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    @pytest.mark.parametrize("pair, parsed", [("braze:one", ("braze", "one")),
                                              ("braze:a:b", ("braze", "a:b")), ("braze:", ("braze", "")),
                                              (":one", ("", "one")), ("brazé:sécret", ("brazé", "sécret"))])
    def test_the_pair(self, pair, parsed):
        assert _credentials(f"Basic {self.b64(pair)}") == parsed

    @pytest.mark.parametrize("header", ["Basic " + base64.b64encode(b"no-colon").decode(),
                                        "Basic " + base64.b64encode(b"\xff\xfe:x").decode(), "Basic ", None])
    def test_no_pair_no_credentials(self, header):
        assert _credentials(header) == (None, None)

    def test_a_client_whose_secret_holds_a_colon(self):
        auth = Authenticator([Client("braze", "a:b", frozenset({"wallet"}))])
        assert auth.authenticate(basic("braze", "a:b"), "wallet").name == "braze"
        with pytest.raises(Unauthorized):
            auth.authenticate(basic("braze", "b"), "wallet")
