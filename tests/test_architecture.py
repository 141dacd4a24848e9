"""The layout's rules (docs/architecture.md), checked on the source so a change cannot quietly break them.

The direct-import checks below are quick and name the file; import-linter (.importlinter) checks the
same rules and more through chains of imports."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import need

PACKAGE = Path(__file__).resolve().parent.parent / "wallet_proxy"
ROUTE_MODULES = {"wallet_proxy.web.ops"} | {
    f"wallet_proxy.{p.parent.name}.routes" for p in PACKAGE.glob("*/routes.py")}
# Modules that must never import Flask: the clients (the CLI reuses them), and the pure logic.
FLASK_FREE = ["upstream", "bulk", "wallet/service.py", "wallet/payload.py", "wallet/view.py", "wallet/keys.py",
              "wallet/stores.py", "wallet/redis_store.py", "sends/plan.py", "sends/engine.py",
              "sends/idempotency.py", "ids.py", "errors.py", "settings.py", "braze_limits.py"]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{alias.name}" for alias in node.names)
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_the_tree_shows_the_flows():
    for folder in ("wallet", "tags", "sends", "bulk", "preview", "web", "upstream", "sandbox"):
        assert (PACKAGE / folder / "__init__.py").exists(), folder


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_the_app_factory_imports_route_modules(path):
    if path == PACKAGE / "__init__.py":
        return
    wrong = (imports(path) & ROUTE_MODULES) - {module_name(path)}
    assert not wrong, f"{module_name(path)} imports route module(s) {sorted(wrong)}: move the shared helper down"


@pytest.mark.parametrize("where", FLASK_FREE)
def test_clients_and_pure_modules_never_import_flask(where):
    target = PACKAGE / where
    paths = sorted(target.rglob("*.py")) if target.is_dir() else [target]
    assert paths, where
    for path in paths:
        flask = {name for name in imports(path) if name == "flask" or name.startswith(("flask.", "werkzeug"))}
        assert not flask, f"{module_name(path)} imports {sorted(flask)}"


# --- the same rules and more, transitively: import-linter's contracts in .importlinter

LINT = Path(sys.executable).parent / "lint-imports"


def lint(cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    need("lint-imports", LINT.exists(), "pip install -e '.[test]' (import-linter)")
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, check=False)


def test_the_import_contracts_hold_transitively():
    """.importlinter: layers, pure modules free of Flask and requests, Flask-free clients, routes
    imported by the factory only, the platform importing no flow; each known break is a commented
    ignore_imports line (one whose import has gone is a warning in the output: delete it)."""
    done = lint(PACKAGE.parent)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    kept = re.findall(r"^(.+?) KEPT", done.stdout, re.M)
    assert len(kept) == 5, done.stdout


def test_the_linter_sees_an_import_through_a_chain(tmp_path):
    """A pure module that reaches Flask through another module breaks the contract (not direct only)."""
    package = tmp_path / "shop"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "pure.py").write_text("from . import helper\n")
    (package / "helper.py").write_text("import flask\n")
    (tmp_path / ".importlinter").write_text(
        "[importlinter]\nroot_package = shop\ninclude_external_packages = True\n\n"
        "[importlinter:contract:pure]\nname = pure\ntype = forbidden\nsource_modules =\n    shop.pure\n"
        "forbidden_modules =\n    flask\n")
    done = lint(tmp_path, {"PYTHONPATH": str(tmp_path)})
    assert done.returncode != 0 and "shop.pure -> shop.helper" in done.stdout, done.stdout[-2000:]


# --- issue #20 "Done when": one way to call an upstream, one retry loop, one rate-token wait, one id_type
# vocabulary, one throttle, one signature check -- the greps, as AST checks so a new copy fails by name.

def _trees():
    for path in SOURCES:
        yield str(path.relative_to(PACKAGE)), ast.parse(path.read_text())


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


HTTP_VERBS = {"get", "post", "put", "patch", "delete", "head", "request", "send"}


def test_only_the_transport_calls_a_requests_session():
    found = set()
    for where, tree in _trees():
        for node, name in _calls(tree):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in HTTP_VERBS:
                receiver = ast.unparse(func.value)
                if receiver == "requests" or receiver.lower().endswith("session"):
                    found.add(where)
    assert found == {"upstream/transport.py"}, found


# Every sleep in the package, and why it is not a second retry loop or rate-token wait.
SLEEPS = {
    "upstream/retry.py": "THE retry loop (RetryPolicy.run) and THE rate-token wait (wait_for_token)",
    "web/lag.py": "the event-loop lag probe: sleeping an interval is the measurement",
    "wallet/service.py": "Pacer: spaces out 503 refusals under overload; waits on no upstream token",
    "wallet/redis_store.py": "single flight: a follower polls Redis for the leader's entry (no call is retried)",
    "sends/idempotency.py": "a repeat of an Idempotency-Key polls while the first request holds it",
    "sandbox/__init__.py": "the simulators' scripted latency (X-Sandbox-Delay)",
    "web/worker.py": "the gevent worker waits for a client to read its answers (at most the write timeout)",
}


def _sleeps(tree) -> list[ast.Call]:
    return [node for node, name in _calls(tree) if name == "sleep" or name.endswith(".sleep")]


def test_every_sleep_is_the_retry_policy_or_a_listed_non_retry_wait():
    found = {where for where, tree in _trees() if _sleeps(tree)}
    assert "upstream/retry.py" in found
    assert found <= set(SLEEPS), f"a new sleep in {sorted(found - set(SLEEPS))}: use upstream/retry.py's policy"


def test_one_retry_loop_one_rate_token_wait():
    """A loop that both catches an error and sleeps is a retry loop: only RetryPolicy.run is one.

    (The single-flight follower of wallet/redis_store.py polls with growing delay and tolerates Redis
    errors while it waits for ANOTHER process's call: it retries no call of its own.)"""
    retry_loops = []
    for where, tree in _trees():
        for loop in (n for n in ast.walk(tree) if isinstance(n, (ast.While, ast.For))):
            inner = list(ast.walk(loop))
            if any(isinstance(n, ast.Try) and n.handlers for n in inner) and any(
                    isinstance(n, ast.Call) and ast.unparse(n.func).endswith("sleep") for n in inner):
                retry_loops.append(f"{where}:{loop.lineno}")
    places = {entry.split(":")[0] for entry in retry_loops}
    assert places <= {"upstream/retry.py", "wallet/redis_store.py"}, retry_loops
    assert len([e for e in retry_loops if e.startswith("upstream/retry.py")]) == 1, retry_loops
    waits = [where for where, tree in _trees() for node in ast.walk(tree)
             if isinstance(node, ast.FunctionDef) and node.name == "wait_for_token"]
    assert waits == ["upstream/retry.py"], waits


def test_one_id_type_vocabulary():
    """Only ids.py spells the id types out as a set, or compares an id_type with a literal."""
    names = {"seed", "user_id", "external"}
    found = set()
    for where, tree in _trees():
        if where == "ids.py" or where.startswith("sandbox/"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                literals = {e.value for e in node.elts if isinstance(e, ast.Constant)}
                if "seed" in literals and literals & (names - {"seed"}):
                    found.add(f"{where}:{node.lineno}")
            elif isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                if any(isinstance(s, ast.Constant) and s.value in names for s in sides) and any(
                        "id_type" in ast.unparse(s) for s in sides):
                    found.add(f"{where}:{node.lineno}")
    assert not found, sorted(found)


def test_one_throttle_of_failed_sign_ins():
    raised, built = set(), set()
    for where, tree in _trees():
        for node, name in _calls(tree):
            if name.endswith("AuthThrottled"):
                raised.add(where)
            if name.endswith("FailureThrottle"):
                built.add(where)
    assert raised == {"web/admission.py"} and built <= {"web/admission.py"}, (raised, built)
    classes = [where for where, tree in _trees() for node in ast.walk(tree)
               if isinstance(node, ast.ClassDef) and "throttle" in node.name.lower()
               and not node.name.endswith("Throttled")]  # errors.AuthThrottled is the 429 it raises
    assert classes == ["web/admission.py"], classes


# hmac outside web/auth.py, and why none of it is a second wallet-signature check
HMAC_ELSEWHERE = {
    "preview/routes.py": "the preview's CSRF and session-fingerprint MACs",
    "preview/session.py": "the preview session id's digest",
    "preview/liquid.py": "Liquid's hmac_sha256/hmac_sha1 template filters (Braze's)",
}


def test_one_signature_check():
    users = {where for where, tree in _trees() for _, name in _calls(tree) if name.startswith("hmac.")}
    assert users <= {"web/auth.py"} | set(HMAC_ELSEWHERE), users
    callers = {where for where, tree in _trees() for _, name in _calls(tree) if name == "check_signature"}
    assert "web/admission.py" in callers
    assert callers == {"web/admission.py"}, callers  # every door: admission.check_wallet_signature
    defined = [where for where, tree in _trees() for node in ast.walk(tree)
               if isinstance(node, ast.FunctionDef) and node.name in ("check_signature", "check_wallet_signature")]
    assert sorted(defined) == ["web/admission.py", "web/auth.py"], defined
