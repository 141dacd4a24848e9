"""Inbound credentials (WALLET_PROXY_CLIENTS) and wallet signatures; constant-time throughout."""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging

from ..errors import BadSignature, Forbidden, Unauthorized
from ..ids import EXTERNAL, SEED

log = logging.getLogger(__name__)


def signed_text(user_id: str, id_type: str = SEED) -> str:
    """What a `sig` covers: the id AND its type, so the sig of one person's SessionM id never reads
    the wallet of a customer whose external id is the same text.

    A SessionM (seed) id is signed as itself, as Braze templates have always signed it; an external
    id is signed as `external/<id>` (Braze: `{{ 'external/' | append: ${user_id} | hmac_sha256_hex:
    'KEY' }}`). `/` is outside the id alphabet, so no seed id is ever signed as the same text.
    """
    return f"{EXTERNAL}/{user_id}" if id_type == EXTERNAL else user_id


def sign(key: str, user_id: str, id_type: str = SEED) -> str:
    """SPEC: sig = hex HMAC-SHA256(key, signed text), as Braze's `hmac_sha256_hex` filter makes it."""
    return hmac.new(key.encode(), signed_text(user_id, id_type).encode(), hashlib.sha256).hexdigest()


def signing_keys(setting: str | None) -> tuple[str, ...]:
    """The keys of WALLET_PROXY_SIGNING_KEY: comma-separated for rotation, the first one current."""
    return tuple(k.strip() for k in (setting or "").split(",") if k.strip())


def check_signature(key: str | None, user_id: str, sig: str | None, id_type: str = SEED) -> None:
    """Raise BadSignature unless signing is off or `sig` matches one of the keys (case-insensitive hex).

    `key` is WALLET_PROXY_SIGNING_KEY as set: several comma-separated keys during a rotation, a
    `sig` made with any of them is valid. Every key is compared, so timing says nothing about which.
    """
    keys = signing_keys(key)
    if not keys:
        return
    if not sig:
        raise BadSignature()
    # bytes, not str: compare_digest raises TypeError on non-ASCII text, which would be a 500
    sent = sig.strip().lower().encode("utf-8", "surrogatepass")
    matched = False
    for one in keys:
        matched |= hmac.compare_digest(sign(one, user_id, id_type).encode(), sent)
    if not matched:
        raise BadSignature()


def credentials(header: str | None) -> tuple[str | None, str | None]:
    """Return (name or None, secret) from a Basic or Bearer Authorization header."""
    if not header:
        return None, None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return None, value
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except ValueError:
            # binascii.Error (bad base64) and UnicodeDecodeError are ValueErrors, and so is what
            # b64decode raises for a str holding a non-ASCII character (a latin-1 header byte)
            return None, None
        name, sep, secret = decoded.partition(":")
        return (name, secret) if sep else (None, None)
    return None, None


class Authenticator:
    """Matches a request's credentials against every configured client (for rotation, several)."""

    def __init__(self, clients):
        self.clients = tuple(clients)

    def authenticate(self, header: str | None, scope: str):
        """Return the matching Client for `scope`, or raise Unauthorized / Forbidden (no throttle:
        requests are admitted through web/admission.py's Gate, which counts failures)."""
        name, secret = credentials(header)
        return self.check_scope(self.identify(name, secret), scope)

    def identify(self, name: str | None, secret: str | None):
        """The client whose secret (and name, when given) match; Unauthorized otherwise."""
        if not self.clients:
            raise Unauthorized("no clients are configured (set WALLET_PROXY_CLIENTS)")
        if secret is None:
            raise Unauthorized()
        matched = None
        for client in self.clients:  # compare against all, so timing says nothing about which
            ok = hmac.compare_digest(client.secret.encode(), secret.encode("utf-8", "surrogatepass"))
            if name is not None:
                ok = hmac.compare_digest(client.name.encode(), name.encode("utf-8", "surrogatepass")) & ok
            if ok and matched is None:
                matched = client
        if matched is None:
            raise Unauthorized()
        return matched

    @staticmethod
    def check_scope(client, scope: str):
        """`client` when it has `scope`, else Forbidden."""
        if scope not in client.scopes:
            raise Forbidden(f"client {client.name!r} lacks the {scope!r} scope")
        return client


_credentials = credentials  # the former name
