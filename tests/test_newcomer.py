"""A newcomer's path: every setting documented, one version, the licence, runtime-only `make run`, CI."""
from __future__ import annotations

import ast
import configparser
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from wallet_proxy import __version__, create_app
from wallet_proxy.settings import parse

# Where the service reads its environment: the package, the WSGI entry and gunicorn's config.
CODE = sorted((ROOT / "wallet_proxy").rglob("*.py")) + [ROOT / "wsgi.py", ROOT / "gunicorn.conf.py"]
ENV_NAME = re.compile(r"^(WALLET_PROXY|SESSIONM|BRAZE)_[A-Z0-9_]+$")
# Read by gunicorn itself (not by our code), and part of how the service is run.
READ_BY_GUNICORN = {"FORWARDED_ALLOW_IPS"}
# prometheus_client's legacy lower-case spelling of PROMETHEUS_MULTIPROC_DIR (documented under that name).
ALIASES = {"prometheus_multiproc_dir"}


def _env_calls(tree: ast.AST):
    """String arguments of os.environ.get/[...]/setdefault and os.getenv: variables read by name.

    (A WSGI `environ` is a request, not the process environment: only `os.` counts.)
    """
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            text = ast.unparse(func)
            if text in ("os.getenv", "os.environ.get", "os.environ.setdefault"):
                yield node.args[0].value
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
            if isinstance(node.slice, ast.Constant):
                yield node.slice.value


def variables_read() -> set[str]:
    """Every environment variable the code reads: env lookups by name, and the settings' names."""
    names = set(READ_BY_GUNICORN)
    for path in CODE:
        tree = ast.parse(path.read_text(), str(path))
        names.update(v for v in _env_calls(tree) if isinstance(v, str))
        names.update(node.value for node in ast.walk(tree)
                     if isinstance(node, ast.Constant) and isinstance(node.value, str)
                     and ENV_NAME.match(node.value))
    return names - ALIASES


def env_example_names() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, re.M))


def readme_settings_names() -> set[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split(" | ")[0])}


def test_the_scan_finds_what_the_code_reads():
    # The scan itself must see the settings, the gunicorn knobs and the serve command's HOST.
    found = variables_read()
    assert {"SESSIONM_CONNECT_URL", "WALLET_PROXY_DEADLINE", "WEB_CONCURRENCY",
            "WALLET_PROXY_WORKER_CONNECTIONS", "PORT", "HOST", "PROMETHEUS_MULTIPROC_DIR"} <= found


def test_every_variable_the_code_reads_is_in_env_example():
    missing = sorted(variables_read() - env_example_names())
    assert not missing, f"add {missing} to .env.example (with its default) and the README Settings table"


def test_every_variable_the_code_reads_is_in_the_readme_settings_table():
    missing = sorted(variables_read() - readme_settings_names())
    assert not missing, f"add {missing} to the README Settings table (and .env.example)"


def test_env_example_names_nothing_the_readme_does_not_explain():
    unexplained = sorted(env_example_names() - readme_settings_names())
    assert not unexplained, f".env.example lists {unexplained}, which the README Settings table lacks"


def test_env_example_as_a_dotenv_file_is_a_valid_configuration(tmp_path):
    # Copied to .env unchanged it must not break a start: everything in it is commented out or valid.
    from dotenv import dotenv_values

    values = {k: v for k, v in dotenv_values(ROOT / ".env.example").items() if v is not None}
    parse(values)


def test_one_version_in_package_metadata_openapi_and_index():
    from importlib.metadata import version

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["metadata"]["version"] == "attr: wallet_proxy.version.__version__"
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)
    assert version("wallet-proxy") == __version__, "reinstall (make install): metadata is stale"
    app = create_app(parse({"WALLET_PROXY_CLIENTS": "t:secret-secret-secret"}))
    client = app.test_client()
    assert client.get("/openapi.json").get_json()["info"]["version"] == __version__
    assert client.get("/").get_json()["version"] == __version__


def test_changelog_has_an_entry_for_this_version_and_the_first_one():
    text = (ROOT / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## \[?(\d+\.\d+\.\d+)\]?", text, re.M)
    assert headings[0] == __version__, "the newest CHANGELOG entry must be the package's version"
    assert "0.1.0" in headings


def test_license_file_matches_setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["metadata"]["license"] == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "Permission is hereby granted, free of charge" in text


def _make_dry_run(target: str, tmp_path: Path) -> str:
    # A venv that does not exist yet: make prints every step it would take from zero.
    result = subprocess.run(["make", "-n", f"VENV={tmp_path / 'venv'}", target], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_run_installs_runtime_dependencies_only(tmp_path):
    steps = _make_dry_run("run", tmp_path)
    installs = [line for line in steps.splitlines() if "pip install" in line and "--upgrade pip" not in line]
    assert installs and all("[test]" not in line and "requirements-dev.lock" not in line for line in installs), steps
    assert any("--require-hashes" in line and "-r requirements.lock" in line for line in installs), steps
    assert "wallet-proxy serve" in steps
    serve = _make_dry_run("serve-prod", tmp_path)
    assert all("[test]" not in line for line in serve.splitlines()), serve
    assert "gunicorn -c gunicorn.conf.py wsgi:app" in serve


def test_make_test_installs_the_test_tools(tmp_path):
    steps = _make_dry_run("test", tmp_path)
    assert any("pip install" in line and "--require-hashes" in line and "-r requirements-dev.lock" in line
               for line in steps.splitlines()), steps


# The binaries tests start, and the Debian package that carries each.
DEBIAN_PACKAGE = {"redis-server": "redis-server", "redis-sentinel": "redis-sentinel", "chromium": "chromium",
                  "nginx": "nginx", "promtool": "prometheus", "wrk": "wrk", "node": "nodejs npm"}


def test_ci_installs_every_debian_package_the_tests_start():
    started = set()
    for path in sorted((ROOT / "tests").glob("*.py")) + sorted((ROOT / "bench").glob("*.py")):
        started.update(re.findall(r"""shutil\.which\(\s*["']([\w.-]+)["']""", path.read_text()))
    started &= set(DEBIAN_PACKAGE) | {"redis-cli", "npm", "npx"}
    started = {"redis-server" if s == "redis-cli" else "node" if s in ("npm", "npx") else s for s in started}
    assert "redis-server" in started, started  # the scan sees the tests' which() calls
    ci = (ROOT / ".ci" / "run").read_text()
    for binary in sorted(started | {"chromium", "wrk"}):
        line = f"command -v {binary} >/dev/null || need_pkgs+=({DEBIAN_PACKAGE[binary]})"
        assert line in ci, f".ci/run must install {DEBIAN_PACKAGE[binary]} for {binary}: {line!r}"



def test_env_example_has_no_comment_after_a_value():
    # docker --env-file and systemd's EnvironmentFile would read "1  # comment" as the value.
    bad = [line for line in (ROOT / ".env.example").read_text().splitlines()
           if re.match(r"^#?\s*[A-Z][A-Z0-9_]+=.*\s#", line)]
    assert not bad, bad


@pytest.mark.timeout(600)
def test_the_editable_install_make_uses_prints_no_setuptools_warning(tmp_path):
    # What `make run` does on a fresh checkout (dependencies left out: only the build is in question),
    # with pip upgraded as the Makefile does: older pips hide the build backend's warnings.
    pip = str(tmp_path / "venv" / "bin" / "pip")
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True, timeout=120)
    subprocess.run([pip, "install", "-q", "--upgrade", "pip"], check=True, capture_output=True, timeout=300)
    result = subprocess.run([pip, "install", "-q", "--no-deps", "-e", str(ROOT)], capture_output=True, text=True,
                            timeout=500)
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "wallet-proxy" in subprocess.run([pip, "list"], capture_output=True, text=True).stdout
    warnings = [line for line in output.splitlines()
                if re.search(r"Setuptools\w*Warning|BuildBackendWarning|SetuptoolsDeprecation", line)]
    assert not warnings, output
