"""DELETE /v1/wallets/<user_id> (the purge), and the URL rule of the GET, which wallet/handler.py serves."""
from __future__ import annotations

from flask import Blueprint, Response, request

from ..errors import Internal
from ..ids import check_user_id
from ..web.http import deadline, require, state
from ..web.admission import resolve_seed_id as resolve_user
from .handler import ROUTE, parse_query

bp = Blueprint("wallets", __name__)


@bp.get(ROUTE)
@require("wallet", "connect")
def get_wallet(user_id: str):
    """A user's flattened wallet (Braze Connected Content).

    Declared here for the URL map (the OpenAPI document, `Allow` on a 405); every GET and HEAD of this
    rule is answered before Flask by `wallet_proxy.wallet.handler.WalletGet`, which create_app puts
    in front of the app, so this view is never reached.
    """
    raise Internal("the wallet read is served by wallet/handler.py, in front of Flask")


@bp.delete(ROUTE)
@require("admin", "connect")
def forget_wallet(user_id: str):
    """Forget every cached culture of a user, so the next read goes to SessionM."""
    check_user_id(user_id)
    values = parse_query(request.environ.get("QUERY_STRING", "")).values
    services = state()
    services.wallets.forget(resolve_user(services, user_id, values["id_type"], deadline()))
    return Response(status=204)
