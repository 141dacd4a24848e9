"""Inbound credentials and wallet signatures."""
from __future__ import annotations

import base64

import pytest

from wallet_proxy.errors import BadSignature, Forbidden, Unauthorized
from wallet_proxy.settings import parse
from wallet_proxy.web.auth import Authenticator, check_signature, sign


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
