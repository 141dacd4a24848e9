"""The `wallet-proxy` command: serve (development), tags import, prewarm."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from .settings import ConfigError, Settings

log = logging.getLogger("wallet_proxy")


def _serve(args) -> int:
    from werkzeug.serving import run_simple

    from . import create_app

    app = create_app(Settings.from_env())
    settings = app.extensions["wallet_proxy"].settings
    if settings.sandbox:
        names = ", ".join(f"{c.name}:{c.secret}" if c.name == "demo" else c.name for c in settings.clients)
        log.warning("SANDBOX MODE: no SessionM/Braze settings, answering from built-in simulators; "
                    "clients: %s", names)
        print(f"\n  wallet-proxy (sandbox) on http://{args.host}:{args.port}/\n"
              f"  try: curl -u demo:demo http://{args.host}:{args.port}/v1/wallets/anyone\n", flush=True)
    run_simple(args.host, args.port, app, threaded=True, use_reloader=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="wallet-proxy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the service (development server; production uses the Procfile)")
    serve.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    serve.set_defaults(func=_serve)
    return parser


def main(argv=None) -> int:
    """Entry point of the console script."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"wallet-proxy: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
