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
