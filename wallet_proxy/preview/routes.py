"""GET /preview: the marketers' page (wallet cards, Liquid paths, raw payload, Liquid playground).

Sign-in is either the browser's Basic prompt (any `preview` or `admin` client of WALLET_PROXY_CLIENTS)
or a form that sets a signed, HttpOnly, SameSite=Strict session cookie naming a server-side session
(session.py: logout ends it there; the form's failures are throttled with every other door's,
web/admission.py). Every POST carries a CSRF token,
even with Basic auth (browsers resend cached Basic credentials on cross-site requests). Pages are
served with a Content-Security-Policy that allows no inline script; Jinja escapes every SessionM
string. The wallet comes from the same service path as GET /v1/wallets/<user_id>.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import json
import secrets
from datetime import datetime, timezone
from urllib.parse import quote, urlsplit

from flask import Blueprint, Response, g, jsonify, redirect, render_template, request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from ..errors import ApiError, AuthThrottled, Forbidden, InvalidRequest, NotConfigured, RateLimited, Unauthorized
from ..ids import check_user_id, normalise_culture
from ..wallet.service import HIT, MISS, cache_status
from ..wallet.view import empty_wallet, flatten
from ..upstream.transport import basic_authorization
from ..web.auth import signing_keys
from ..web.http import client_address, deadline, require, state
from .isolate import IsolatedPlayground, PlaygroundBusy
from .session import MAX_TEMPLATE_CHARS, SESSION_MAX_AGE, PreviewParts, Sessions
from .liquid import TemplateProblem

bp = Blueprint("preview", __name__)

SESSION_COOKIE = "wallet_proxy_preview"
LOGIN_CSRF_COOKIE = "wallet_proxy_preview_login"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SAMPLE_TEMPLATE = """{% if wallet.ok != true %}{% abort_message('wallet unavailable') %}{% endif %}
Hi {{${first_name} | default: 'there'}}, you have {{wallet.available_points}} points.
{% for offer in wallet.offers limit:3 %}
- {{offer.title}}: expires in {{offer.expires_in_days}} days ({{offer.expires_at | date: '%b %d'}})
{% endfor %}"""


class TemplateInvalid(InvalidRequest):
    """The marketer's template does not parse or render; details say where and why."""

    status, code, message = 422, "template_error", "the template did not render"


def _mac(key: bytes, *parts: str) -> str:
    return hmac.new(key, "\x00".join(parts).encode(), hashlib.sha256).hexdigest()


def _parts() -> PreviewParts:
    return state().preview


def _key() -> bytes:
    return _parts().key


def sessions() -> Sessions:
    """The app's server-side preview sessions (in Redis when configured)."""
    return _parts().sessions


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(_key(), salt="wallet-proxy-preview-session")


def playground() -> IsolatedPlayground:
    """The app's Liquid playground, started on first use."""
    return _parts().playground


def _session_client():
    """The client of a live session cookie, with the session id; (None, None) otherwise."""
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return None, None
    try:
        data = _serializer().loads(raw, max_age=SESSION_MAX_AGE)
    except BadSignature:
        return None, None
    if not isinstance(data, dict):
        return None, None
    for client in state().settings.clients:
        # the fingerprint ties the session to the secret: rotating a secret ends its sessions
        if (client.name == data.get("name") and "preview" in client.scopes
                and _same(_mac(_key(), "fp", client.secret), str(data.get("fp", "")))):
            sid = str(data.get("sid", ""))
            # signed is not enough: the session must still exist on the server (logout ends it)
            return (client, sid) if sessions().alive(sid, client.name) else (None, None)
    return None, None


def _same(expected: str, sent: str) -> bool:
    """Constant-time comparison that takes any text: compare_digest refuses non-ASCII str."""
    return hmac.compare_digest(expected.encode(), sent.encode("utf-8", "surrogatepass"))


def _principal() -> str:
    return g.preview_principal


def csrf_token() -> str:
    """The CSRF token of the signed-in principal (session id, or client name under Basic auth)."""
    return _mac(_key(), "csrf", _principal())


def _check_csrf() -> None:
    sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token") or ""
    if not _same(csrf_token(), sent):
        raise Forbidden("missing or wrong CSRF token: reload the page")
    _check_origin()


def _check_origin() -> None:
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        expected = urlsplit(request.host_url)
        given = urlsplit(origin)
        if (given.scheme, given.netloc) != (expected.scheme, expected.netloc):
            raise Forbidden("cross-origin request refused")


def signed_in(api: bool):
    """Decorate a view: a Basic/Bearer `preview` client or a session; pages show the login form instead."""

    def decorate(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            if request.headers.get("Authorization"):
                def with_principal(*a, **kw):
                    g.preview_principal = "basic:" + g.client.name
                    g.preview_via = "basic"
                    return view(*a, **kw)
                return require("preview")(with_principal)(*args, **kwargs)
            client, sid = _session_client()
            if client is None:
                if api:
                    raise Unauthorized()
                response = login_page(status=401)
                if request.args.get("login") == "basic":
                    # ask for the browser's own prompt; cancelling it still leaves the form
                    response.headers["WWW-Authenticate"] = 'Basic realm="wallet-proxy", charset="UTF-8"'
                return response
            g.client = client
            g.preview_principal = "session:" + sid
            g.preview_via = "session"
            return view(*args, **kwargs)

        wrapped.required_scope = "preview"
        return wrapped

    return decorate


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-store"
    return response


# --- sign in / out


def login_page(error: str | None = None, status: int = 200) -> Response:
    """The sign-in form, with a fresh login CSRF nonce in a cookie and its MAC in the form."""
    nonce = secrets.token_urlsafe(24)
    body = render_template("preview_login.html", error=error, login_csrf=_mac(_key(), "login", nonce),
                           sandbox=state().settings.sandbox)
    response = Response(body, status=status, mimetype="text/html")
    response.set_cookie(LOGIN_CSRF_COOKIE, nonce, max_age=1800, path="/preview", httponly=True,
                        samesite="Strict", secure=request.is_secure)
    return response


@bp.get("/preview/login")
def login_form():
    """Show the sign-in form."""
    return login_page()


@bp.post("/preview/login")
def login():
    """Check name and secret against WALLET_PROXY_CLIENTS (preview scope) and start a session."""
    nonce = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not nonce or not _same(_mac(_key(), "login", nonce), request.form.get("csrf_token", "")):
        return login_page("The form expired. Please sign in again.", status=403)
    _check_origin()
    name, secret = request.form.get("name", ""), request.form.get("secret", "")
    try:  # the one admission of every door: the form's failures count with Basic's and Bearer's
        client = state().gate.admit(basic_authorization(name, secret), "preview", client_address())
    except AuthThrottled as exc:  # refused before the secret is even compared
        retry = exc.retry_after_header()
        response = login_page(f"Too many failed sign-ins. Try again in {retry} seconds.", status=429)
        response.headers["Retry-After"] = retry
        return response
    except Unauthorized:
        return login_page("Wrong name or secret.", status=401)
    except Forbidden:
        return login_page("This sign-in may not open the preview: ask whoever runs wallet-proxy for one "
                          "with the preview scope.", status=403)
    token = _serializer().dumps({"name": client.name, "fp": _mac(_key(), "fp", client.secret),
                                 "sid": sessions().start(client.name)})
    response = redirect("/preview", code=303)
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_MAX_AGE, path="/preview", httponly=True,
                        samesite="Strict", secure=request.is_secure)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/preview")
    return response


@bp.post("/preview/logout")
@signed_in(api=False)
def logout():
    """End the session, on the server too: a copy of the cookie stops working."""
    _check_csrf()
    if g.preview_via == "session":
        sessions().end(g.preview_principal.split(":", 1)[1])
    response = redirect("/preview/login", code=303)
    response.delete_cookie(SESSION_COOKIE, path="/preview")
    return response


# --- the wallet as the page shows it


def _culture(raw: str | None) -> str:
    try:
        return normalise_culture(raw)
    except ValueError as exc:
        raise InvalidRequest(f"culture: {exc}", details={"culture": [str(exc)]}) from exc


def _user_id(raw: str | None) -> str:
    user_id = (raw or "").strip()
    if not user_id:
        raise InvalidRequest("user_id: enter a SessionM user id", details={"user_id": ["missing"]})
    check_user_id(user_id)
    return user_id


def wallet_view(user_id: str, culture: str) -> dict:
    """Fetch and flatten a wallet exactly as GET /v1/wallets/<user_id> does, plus how it was served."""
    services = state()
    if not services.settings.connect_configured:
        raise NotConfigured("the connect settings are not configured on this deployment")
    served = services.wallets.get(user_id, culture, deadline())
    now = datetime.fromtimestamp(services.clock(), tz=timezone.utc)
    wallet = flatten(served.entry.wallet, now=now, user_id=user_id, culture=culture,
                     fetched_at=served.entry.fetched_at, stale=served.stale)
    label = {HIT: "cached", MISS: "fresh"}.get(served.status, "stale")
    return {"wallet": wallet, "status": label, "cache_status": cache_status(served),
            "ttl_left": int(served.ttl_left)}


def raw_payload(user_id: str, culture: str) -> dict:
    """SessionM's own answer for this user (for the side-by-side view); errors are reported, not raised."""
    services = state()
    try:
        reply = services.connect.fetch_raw(user_id, culture, services.settings.upstream_timeout)
    except ApiError as exc:
        return {"http_status": None, "error": exc.message, "body": None}
    body = reply.data if reply.data is not None else (reply.text or "")[:4000]
    return {"http_status": reply.status, "error": None, "body": body}


def connected_content_block(base_url: str, signing: bool) -> str:
    """The Braze block for this deployment: its own URL, on_error=empty, basic_auth, save, no_cache and
    the ok guard."""
    url = (f"{base_url.rstrip('/')}/v1/wallets/{{{{custom_attribute.${{sessionm_user_id}}}}}}"
           "?culture={{${language} | url_param_escape}}")
    if signing:  # the key is typed by the marketer in Braze; this page never knows or prints it
        url += "&sig={{custom_attribute.${sessionm_user_id} | hmac_sha256_hex: 'YOUR_SIGNING_KEY'}}"
    # The README's recipe 2: on_error=empty and an abort. Not :retry with the abort, since Braze lets an
    # abort on the same failure cancel the retries (its "Connected Content retries" page).
    return (f"{{% connected_content {url}&on_error=empty :basic_auth wallet_proxy :save wallet "
            ":no_cache %}\n"
            "{% if wallet.ok != true %}{% abort_message('wallet unavailable') %}{% endif %}")


def signing_key_id(setting: str | None) -> str | None:
    """A short fingerprint of the current (first) signing key, so a marketer can tell which key the
    block wants without the page ever printing one."""
    keys = signing_keys(setting)
    if not keys:
        return None
    return hashlib.sha256(b"wallet-proxy signing key id\x00" + keys[0].encode()).hexdigest()[:8]


def liquid_path(parent: str, key) -> str:
    """`wallet` + `offers` -> `wallet.offers`; + 0 -> `wallet.offers[0]`; odd keys are quoted."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    if key.isidentifier():
        return f"{parent}.{key}"
    return f"{parent}[{json.dumps(key)}]"


def tree(value, path: str = "wallet", key: str = "wallet") -> dict:
    """A node of the JSON tree the page draws: key, Liquid path, kind, and children or a JSON value."""
    if isinstance(value, dict):
        children = [tree(v, liquid_path(path, k), k) for k, v in value.items()]
        return {"key": key, "path": path, "kind": "object", "children": children, "size": len(value)}
    if isinstance(value, list):
        children = [tree(v, liquid_path(path, i), str(i)) for i, v in enumerate(value)]
        return {"key": key, "path": path, "kind": "array", "children": children, "size": len(value)}
    kind = "null" if value is None else "bool" if isinstance(value, bool) else \
        "number" if isinstance(value, (int, float)) else "string"
    return {"key": key, "path": path, "kind": kind, "json": json.dumps(value, ensure_ascii=False),
            "children": None}


def lookup(user_id: str, culture: str) -> dict:
    """Everything the page shows for one user: wallet (or its error), raw payload, URLs."""
    result = {"user_id": user_id, "culture": culture, "error": None, "wallet": None, "raw": None}
    try:
        result.update(wallet_view(user_id, culture))
    except ApiError as exc:
        result["error"] = {"status": exc.status, "code": exc.code, "message": exc.message}
    if result["error"] is None or result["error"]["code"] in ("user_not_found", "upstream_error"):
        # a timeout or outage would only fail again; an error answer is worth seeing as SessionM sent it
        result["raw"] = raw_payload(user_id, culture)
    result["api_url"] = (f"{request.host_url.rstrip('/')}/v1/wallets/{quote(user_id, safe='@:+')}"
                         f"?culture={quote(culture)}")
    return result


def _page_context(**extra) -> dict:
    services = state()
    return {"csrf": csrf_token(), "client_name": g.client.name, "via": g.preview_via,
            "sandbox": services.settings.sandbox,
            "block": connected_content_block(request.host_url, bool(services.settings.signing_key)),
            "signing_key_id": signing_key_id(services.settings.signing_key),
            "signing_key_count": len(signing_keys(services.settings.signing_key)),
            "sample_template": SAMPLE_TEMPLATE, **extra}


@bp.get("/preview")
@signed_in(api=False)
def page():
    """The preview page; with `user_id`, the looked-up wallet."""
    user_id = request.args.get("user_id", "").strip()
    culture_raw = request.args.get("culture", "")
    context = {"user_id": user_id, "culture": culture_raw or "en-US", "result": None, "form_error": None}
    status = 200
    if not user_id and culture_raw.strip():  # a culture alone is checked too, as its OpenAPI pattern says
        try:
            _culture(culture_raw)
        except ApiError as exc:
            context["form_error"] = exc.message
            status = exc.status
    if user_id:
        try:
            culture = _culture(culture_raw)
            user_id = _user_id(user_id)
        except ApiError as exc:
            context["form_error"] = exc.message
            status = exc.status
        else:
            result = lookup(user_id, culture)
            context.update(result=result, culture=culture,
                           tree=tree(result["wallet"]) if result["wallet"] else None,
                           raw_json=json.dumps(result["raw"]["body"], indent=2, ensure_ascii=False)
                           if result["raw"] and not isinstance(result["raw"]["body"], str)
                           else (result["raw"] or {}).get("body"))
            if result["error"]:
                status = result["error"]["status"]
    return render_template("preview.html", **_page_context(**context)), status


# --- JSON API used by preview.js


@bp.get("/preview/api/wallet")
@signed_in(api=True)
def api_wallet():
    """The page's data for one user as JSON: flattened wallet, status, raw payload."""
    user_id = _user_id(request.args.get("user_id"))
    culture = _culture(request.args.get("culture"))
    result = lookup(user_id, culture)
    if result["error"]:
        error = ApiError(result["error"]["message"], status=result["error"]["status"])
        error.code = result["error"]["code"]
        raise error
    return jsonify(ok=True, **result,
                   connected_content=connected_content_block(request.host_url,
                                                             bool(state().settings.signing_key)))


@bp.post("/preview/api/render")
@signed_in(api=True)
def api_render():
    """Render a Liquid template against a user's wallet; a bad template is a 422 with line and reason."""
    _check_csrf()
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidRequest("body: send a JSON object {user_id, culture, template}")
    template = body.get("template")
    if not isinstance(template, str):
        raise InvalidRequest("template: must be a string", details={"template": ["not a string"]})
    if len(template) > MAX_TEMPLATE_CHARS:
        raise InvalidRequest(f"template: longer than {MAX_TEMPLATE_CHARS} characters",
                             details={"template": ["too long"]})
    user_id = _user_id(body.get("user_id") if isinstance(body.get("user_id"), str) else None)
    culture = _culture(body.get("culture") if isinstance(body.get("culture"), str) else None)
    wallet_error = None
    try:
        wallet = wallet_view(user_id, culture)["wallet"]
    except ApiError as exc:
        # what Braze's template would see with on_error=empty, so the `ok` guard can be tried
        wallet_error = {"code": exc.code, "message": exc.message}
        wallet = empty_wallet(user_id=user_id, culture=culture, error=wallet_error)
    data = {"wallet": wallet, "user_id": user_id, "language": culture.split("-")[0],
            "custom_attribute": {"sessionm_user_id": user_id}}
    try:
        rendered = playground().render(template, data)
    except TemplateProblem as problem:
        raise TemplateInvalid(f"{problem.kind} error: {problem}", details=problem.as_dict()) from None
    except PlaygroundBusy:
        raise RateLimited("the playground is busy rendering other templates: try again in a moment",
                          retry_after=2) from None
    return jsonify(ok=True, output=rendered.output, aborted=rendered.aborted,
                   elapsed_ms=rendered.elapsed_ms, wallet_error=wallet_error)
