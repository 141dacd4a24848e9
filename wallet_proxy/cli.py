"""The `wallet-proxy` command: serve (development), tags import, attributes sync, prewarm.

`serve` is the one development entry that falls back to the built-in simulators when nothing is
configured (and says so); every other command refuses to run on them unless WALLET_PROXY_SANDBOX=1.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from .ids import EXTERNAL, ID_TYPES
from .settings import ConfigError, Settings

log = logging.getLogger("wallet_proxy")


def _serve(args) -> int:
    from werkzeug.serving import make_server

    from . import create_app

    app = create_app(Settings.from_env())
    settings = app.extensions["wallet_proxy"].settings
    try:  # bind first: the banner below promises a port that is really ours
        server = make_server(args.host, args.port, app, threaded=True)
    except (OSError, SystemExit) as exc:  # werkzeug exits when the port is taken
        print(f"wallet-proxy serve: cannot listen on {args.host}:{args.port} "
              f"({getattr(exc, 'strerror', None) or 'address in use'}): choose another with --port",
              file=sys.stderr, flush=True)
        return 2
    url = f"http://{args.host}:{server.port}"
    demo = any((c.name, c.secret) == ("demo", "demo") for c in settings.clients)
    mode = "sandbox" if settings.sandbox else "live"
    try_it = (f"  try: curl -u demo:demo {url}/v1/wallets/anyone\n" if demo
              else "  sign in with a client of WALLET_PROXY_CLIENTS\n")
    print(f"\n  wallet-proxy ({mode}) on {url}/\n{try_it}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _ttl(text: str) -> int:
    """--ttl of tags import: the webhook's ttl rule (tags/rules.py)."""
    from .tags.rules import parse_ttl

    value, problem = parse_ttl(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


def _bulk_services(args, label: str):
    """Settings and services for a bulk job: no Flask app, a connection pool sized to --concurrency."""
    from . import services
    from .upstream import transport as upstream

    settings = command_settings()
    if settings.sandbox:
        log.warning("%s: WALLET_PROXY_SANDBOX=1: using the built-in simulators, nothing reaches SessionM "
                    "or Braze", label)
    return settings, services.build(settings, session=upstream.make_session(args.concurrency))


def command_settings() -> Settings:
    """The settings of every command but `serve`: like the production entry, never the built-in
    simulators unless WALLET_PROXY_SANDBOX=1 asks for them (ConfigError naming the missing settings:
    exit 2). Made-up wallets written to a state file would later hide real values."""
    return Settings.from_env(implicit_sandbox=False)


def _install_sigterm() -> None:
    """Let SIGTERM stop a bulk job as Ctrl-C does: calls in flight finish and are journalled."""
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def _run_bulk(job, args, label: str, verb: str) -> int:
    from .bulk.rows import FileError

    _install_sigterm()
    try:
        summary = job()
    except FileError as exc:
        _say(f"wallet-proxy {label}: {exc}")
        return 2
    except KeyboardInterrupt:
        print(f"wallet-proxy {label}: interrupted before any row was sent", file=sys.stderr)
        return 130
    _say(summary.text(f"{label} {args.file}", verb), sys.stdout)
    if summary.by_reason:
        _say("rejected by reason: " + ", ".join(f"{k}: {v}" for k, v in sorted(summary.by_reason.items())),
             sys.stdout)
    if summary.fatal:
        _say(f"wallet-proxy {label}: stopped: {summary.fatal}; fix it and run again"
             + (" with --resume" if label in RESUMABLE else ""))
        return 2
    if summary.interrupted:
        if label in RESUMABLE:
            _say(f"wallet-proxy {label}: resume with: wallet-proxy {label} {args.file} --resume")
        return 130
    return 1 if summary.rejected else 0


RESUMABLE = ("tags import", "attributes sync")


def _retry(args):
    from .bulk.runner import RetryPolicy

    return RetryPolicy(attempts=args.max_attempts, base=args.backoff)


def _tags_import(args) -> int:
    from .bulk.jobs import import_tags

    def job():
        settings, built = _bulk_services(args, "tags import")
        if built.core is None:
            raise ConfigError("tags import needs SESSIONM_CORE_URL, SESSIONM_CORE_API_KEY and "
                              "SESSIONM_CORE_API_SECRET")
        return import_tags(args.file, built.core, user_column=args.user_column, tags=args.tag, ttl=args.ttl,
                           concurrency=args.concurrency, rate=args.rate, rejects=args.rejects,
                           resume=args.resume, timeout=args.timeout, retry=_retry(args),
                           interval=args.progress_interval)

    return _run_bulk(job, args, "tags import", "tagged")


def _prewarm(args) -> int:
    from .bulk.jobs import prewarm
    from .errors import UpstreamUnavailable
    from .ids import normalise_culture
    from .wallet.stores import Entry

    try:
        cultures = [normalise_culture(c) for c in args.culture]
    except ValueError as exc:
        _say(f"wallet-proxy prewarm: --culture: {exc}")
        return 2

    def job():
        settings, built = _bulk_services(args, "prewarm")
        if not settings.redis_url:
            raise ConfigError("prewarm fills the shared cache, so it needs WALLET_PROXY_REDIS_URL (each "
                              "process has its own in-memory cache otherwise: prewarming it would be lost)")
        if built.connect is None:
            raise ConfigError("prewarm needs the SessionM Connect settings (SESSIONM_CONNECT_URL, "
                              "SESSIONM_CONNECT_AUTH, SESSIONM_RETAILER_ID)")
        clock, store = built.clock, built.store

        def fetch(user_id: str, culture: str) -> None:
            wallet = built.connect.get_user_offers(user_id, culture, args.timeout)
            store.put(user_id, culture, Entry(wallet, clock(), args.ttl))
            if not store.healthy():
                # The store fell back to this process's memory: nothing was shared, so retry the row.
                raise UpstreamUnavailable("the shared cache (Redis) is unreachable", retry_after=1)

        return prewarm(args.file, fetch, cultures=cultures, user_column=args.user_column,
                       concurrency=args.concurrency, rate=args.rate, rejects=args.rejects, retry=_retry(args),
                       interval=args.progress_interval)

    return _run_bulk(job, args, "prewarm", "prewarmed")


def _attributes_sync(args) -> int:
    from . import services
    from .sync.job import default_state, sync_attributes
    from .sync.state import FileState, RedisState

    def job():
        settings, built = _bulk_services(args, "attributes sync")
        if built.connect is None or not settings.braze_configured:
            raise ConfigError("attributes sync needs the SessionM Connect settings and BRAZE_REST_URL, "
                              "BRAZE_API_KEY")
        if args.id_type == EXTERNAL and built.external_ids is None:
            raise ConfigError("--id-type external needs the SessionM Core settings")
        # Redis when configured: the route and every run share what Braze last accepted.
        state = RedisState(built.redis) if built.redis is not None and not args.state else FileState(
            args.state or default_state(args.file))
        sync = services.build_attribute_sync(settings, built.session, built.redis, built.wallets, built.clock,
                                             state=state, max_attempts=args.max_attempts,
                                             backoff_base=args.backoff, timeout=args.timeout)
        try:
            return sync_attributes(args.file, sync, resolve=built.external_ids.resolve if built.external_ids
                                   else None, user_column=args.user_column, id_type=args.id_type,
                                   concurrency=args.concurrency, rate=args.rate, rejects=args.rejects,
                                   resume=args.resume, timeout=args.timeout, retry=_retry(args),
                                   interval=args.progress_interval)
        finally:
            state.close()

    return _run_bulk(job, args, "attributes sync", "synced")


def _bulk_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE.csv", help="Braze segment export, or user_id,tags,ttl rows")
    parser.add_argument("--user-column", help="column holding the SessionM user id (default: user_id)")
    parser.add_argument("--concurrency", type=_positive(int), default=8, help="calls in flight (default 8)")
    parser.add_argument("--rate", type=_positive(float), default=50.0,
                        help="most calls per second, retries included (default 50)")
    parser.add_argument("--rejects", help="CSV of rejected rows (default: FILE.rejects.csv)")
    parser.add_argument("--max-attempts", type=_positive(int), default=8,
                        help="tries per row on 429/5xx/timeouts before it is rejected (default 8)")
    parser.add_argument("--backoff", type=_positive(float), default=0.5,
                        help="first retry delay in seconds, doubled each time, with jitter (default 0.5)")
    parser.add_argument("--timeout", type=_positive(float), default=10.0,
                        help="seconds for one SessionM call (default 10)")
    parser.add_argument("--progress-interval", type=_positive(float), default=10.0,
                        help="seconds between progress lines when not on a terminal (default 10)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="wallet-proxy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the service (development server; production uses the Procfile)")
    serve.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    serve.set_defaults(func=_serve)

    tags = sub.add_parser("tags", help="SessionM tags")
    tags_sub = tags.add_subparsers(dest="tags_command", required=True)
    importer = tags_sub.add_parser("import", help="add SessionM tags to every user of a CSV (Braze segment "
                                                  "export or user_id,tags,ttl rows)")
    _bulk_options(importer)
    importer.add_argument("--tag", action="append", default=[], metavar="TAG",
                          help="tag to add to every row (repeatable; added to a tags column's)")
    importer.add_argument("--ttl", type=_ttl,
                          help="seconds the tags last, for rows without a ttl of their own")
    importer.add_argument("--resume", action="store_true",
                          help="finish an interrupted run from its journal (FILE.csv.journal)")
    importer.set_defaults(func=_tags_import)

    attributes = sub.add_parser("attributes", help="SessionM loyalty data as Braze profile attributes")
    attributes_sub = attributes.add_subparsers(dest="attributes_command", required=True)
    syncer = attributes_sub.add_parser("sync", help="write sessionm_* attributes of every user of a CSV to "
                                                    "their Braze profile, sending only what changed")
    _bulk_options(syncer)
    for action in syncer._actions:  # workers wait for their batch of 75: fewer could not fill one
        if action.dest == "concurrency":
            action.default = 150
            action.help = "rows in flight (default 150: two /users/track calls of 75 can fill)"
    syncer.add_argument("--id-type", choices=ID_TYPES, default="seed",
                        help="seed: the column holds SessionM user ids; external: customer external ids "
                             "(resolved through SessionM Core). The Braze profile is the id in the file")
    syncer.add_argument("--state", help="file remembering what Braze last accepted per profile (default: "
                                        "wallet-proxy-attributes.state beside FILE.csv; Redis when "
                                        "WALLET_PROXY_REDIS_URL is set)")
    syncer.add_argument("--resume", action="store_true",
                        help="finish an interrupted run from its journal (FILE.csv.journal)")
    syncer.set_defaults(func=_attributes_sync)

    warm = sub.add_parser("prewarm", help="fill the shared (Redis) wallet cache before a large send")
    _bulk_options(warm)
    warm.add_argument("--culture", action="append", default=[], metavar="CULTURE",
                      help="culture to fetch for every row (repeatable), besides a 'culture' or 'language' "
                           "column's; normalised as the wallet route's culture= (default en-US)")
    warm.add_argument("--ttl", type=_positive(float),
                      help="seconds the prewarmed wallets stay fresh (default WALLET_PROXY_CACHE_TTL)")
    warm.set_defaults(func=_prewarm)
    return parser


def main(argv=None) -> int:
    """Entry point of the console script."""
    setup_logging()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        _say(f"wallet-proxy: {exc}")
        return 2


def setup_logging() -> None:
    """The command's log lines on stderr, control characters escaped."""
    handler = logging.StreamHandler()
    handler.setFormatter(_PrintableFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


class _PrintableFormatter(logging.Formatter):
    """The command's log lines (a traceback's too) with control characters escaped, like every other line."""

    def format(self, record: logging.LogRecord) -> str:
        from .bulk.rows import printable

        return "\n".join(printable(line) for line in super().format(record).split("\n"))


def _say(line: str, stream=None) -> None:
    """Print one line for the operator, its control characters escaped (file names and texts from
    files or upstreams must not run terminal escapes)."""
    from .bulk.rows import printable

    print(printable(line), file=stream or sys.stderr, flush=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
