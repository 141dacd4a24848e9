"""The Dockerfile, done without Docker: its instructions replayed in a fresh folder standing for `/`.

ENV, COPY, WORKDIR and RUN of both stages run as the image build would (the RUN lines as `sh -c`
scripts, the venv created by them from scratch and filled from requirements.lock with its hashes
checked, the container paths moved under a temporary root; `COPY --from=build` copies a path onto
itself there). Two RUN lines are checked but not run, since they would change this machine: the
user creation (the CMD then runs as that uid when the test runs as root) and the removal of the base
image's pip from /usr/local. What this does not exercise: the `python:*-slim` base image itself (this
machine's Python builds the venv) and `docker build`'s own parsing (hadolint checks the file,
`make lint-deploy`).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from configparser import ConfigParser
from pathlib import Path

import pytest
import requests

from tests.conftest import CLIENTS, OFFERS_PATH, ROOT, fixture_json, free_port
from tests.fakes import Reply
from wallet_proxy import __version__

DOCKERFILE = ROOT / "Dockerfile"
OK = fixture_json("get_user_offers.ok.json")
TEST_TOOLS = {"pytest", "hypothesis", "schemathesis", "playwright", "openapi-spec-validator",
              "check-jsonschema", "kubernetes-validate", "pytest-timeout"}


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        if not current and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        current += raw
        word, _, rest = current.strip().partition(" ")
        lines.append((word.upper(), rest.strip()))
        current = ""
    return lines


def one(name: str) -> str:
    found = [args for word, args in instructions() if word == name]
    assert len(found) == 1, f"one {name} expected, found {found}"
    return found[0]


def procfile_web() -> list[str]:
    line = next(l for l in (ROOT / "Procfile").read_text().splitlines() if l.startswith("web:"))
    return line.split(":", 1)[1].split()


def stages() -> list[str]:
    return [args for word, args in instructions() if word == "FROM"]


def test_slim_python_base_pinned_by_digest_two_stages_non_root_user_and_the_procfile_line():
    build, runtime = stages()
    image = runtime
    assert build == f"{image} AS build", "both stages on one base: the venv's interpreter is the base's"
    assert re.fullmatch(r"python:3\.1[1-9](\.\d+)?-slim(-\w+)?@sha256:[0-9a-f]{64}", image), image
    copied = [args for word, args in instructions() if word == "COPY" and args.startswith("--from=")]
    assert copied == ["--from=build /opt/wallet-proxy /opt/wallet-proxy", "--from=build /app /app"]
    user = one("USER").split(":")[0]
    assert user not in ("root", "0") and int(user) >= 1000
    assert json.loads(one("CMD")) == procfile_web()
    useradd = next(args for word, args in instructions() if word == "RUN" and "useradd" in args)
    assert f"--uid {user}" in useradd and "nologin" in useradd


def test_dependencies_come_from_the_lock_before_the_sources_and_labels_say_what_it_is():
    steps = instructions()
    lock_install = next(i for i, (word, args) in enumerate(steps) if word == "RUN" and "requirements.lock" in args)
    assert "--require-hashes" in steps[lock_install][1]
    sources = next(i for i, (word, args) in enumerate(steps) if word == "COPY" and "wallet_proxy" in args)
    assert lock_install < sources, "a change to the sources would reinstall every dependency"
    labels = dict(shlex.split(item)[0].split("=", 1) for word, args in steps if word == "LABEL"
                  for item in re.findall(r'\S+="[^"]*"', args))
    for name in ("title", "version", "revision", "licenses", "base.name", "base.digest"):
        assert f"org.opencontainers.image.{name}" in labels, name
    (version,) = {args.split("=", 1)[1] for word, args in steps if word == "ARG" and args.startswith("VERSION=")}
    assert version == __version__


def test_healthcheck_probes_healthz():
    options, _, command = one("HEALTHCHECK").partition("CMD ")
    assert "--interval" in options and "--timeout" in options
    assert "/healthz" in json.loads(command)[-1]


def test_the_build_context_leaves_out_secrets_and_the_venv():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".venv", ".git", "tests"} <= set(ignored)


def world_reachable(path: Path) -> bool:
    """Every folder above `path` can be entered, and `path` run, by any user."""
    path = path.resolve()
    return all(p.stat().st_mode & 0o001 for p in [path, *path.parents])


def shared_python() -> tuple[str, bool]:
    """A Python (3.11+, with venv and ensurepip) that the image's user can run too, if there is one."""
    for candidate in (getattr(sys, "_base_executable", sys.executable), "/usr/local/bin/python3",
                      "/usr/bin/python3"):
        if not (candidate and os.path.exists(candidate) and world_reachable(Path(candidate))):
            continue
        probe = "import sys, venv, ensurepip; assert sys.version_info >= (3, 11)"
        check = subprocess.run([candidate, "-c", probe], capture_output=True)
        if check.returncode == 0:
            return candidate, True
    return getattr(sys, "_base_executable", sys.executable), False


class Replay:
    """Replays the Dockerfile under `root`: container path /x becomes root/x."""

    def __init__(self, root: Path):
        self.root = root
        self.env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8"}
        self.cwd = root
        self.user = None
        self.output = ""
        # Container paths this Dockerfile makes or uses: moved under root wherever they appear.
        self.paths = sorted({m for word, args in instructions() if word in ("COPY", "WORKDIR", "ENV", "RUN")
                             for m in re.findall(r"(?<![\w/.$])(/(?:opt|app|tmp|srv)(?:/[\w.-]+)*)", args)},
                            key=len, reverse=True)
        # `python` in a RUN line is the image's interpreter (/usr/local/bin/python, usable by any
        # user); here, a Python 3.11+ with venv that any user can run, else the one running the tests.
        self.python, self.shared_python = shared_python()
        shim = root / ".shim"
        shim.mkdir()
        (shim / "python").symlink_to(self.python)
        self.env["PATH"] = f"{shim}:{self.env['PATH']}"

    def rebase(self, text: str) -> str:
        for path in self.paths:
            text = re.sub(rf"(?<![\w/.]){re.escape(path)}(?=/|\s|:|$|\"|')", str(self.root) + path, text)
        return text

    def expand(self, value: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: self.env.get(m.group(1), ""), value)

    def run(self) -> None:
        for word, args in instructions():
            getattr(self, f"do_{word.lower()}", lambda _args: None)(args)

    def do_env(self, args: str) -> None:
        for item in shlex.split(args):
            name, _, value = item.partition("=")
            self.env[name] = self.expand(self.rebase(value))

    def do_workdir(self, args: str) -> None:
        self.cwd = Path(self.rebase(args))
        self.cwd.mkdir(parents=True, exist_ok=True)

    def _copy(self, args: str) -> None:
        *sources, dest = shlex.split(args)
        target = Path(self.rebase(dest)) if dest.startswith("/") else self.cwd / dest
        if dest.endswith("/") or len(sources) > 1:
            target.mkdir(parents=True, exist_ok=True)
        for source in sources:
            src = ROOT / source
            into_folder = target.is_dir() and (dest.endswith("/") or len(sources) > 1)
            into = target / src.name if into_folder else target
            if src.is_dir():
                shutil.copytree(src, into, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, into)

    def do_copy(self, args: str) -> None:
        if args.startswith("--from="):  # from the build stage, which ran in this same root
            _stage, source, dest = shlex.split(args)
            assert source == dest, "a path of the build stage, copied to the same place"
            assert Path(self.rebase(source)).exists(), source
            return
        self._copy(args)

    def do_run(self, args: str) -> None:
        if "useradd" in args:  # would add a user to this machine: checked above, replaced by setuid below
            self.user = int(one("USER").split(":")[0])
            return
        if "/usr/local/" in args:  # the base image's pip: would remove this machine's; checked instead
            assert re.fullmatch(r"rm -rf( /usr/local/(lib/python3\.\d+/site-packages/pip(-\*)?|bin/pip[\d.]*))+",
                                " ".join(args.split())), args
            return
        env = dict(self.env)
        # pip's cache (under $HOME) changes where wheels come from, not what is installed.
        env.pop("PIP_NO_CACHE_DIR", None)
        env["HOME"] = os.environ.get("HOME", "/root")
        result = subprocess.run(["sh", "-c", self.rebase(args)], cwd=self.cwd, env=env, capture_output=True,
                                text=True, timeout=600)
        self.output += result.stdout + result.stderr
        assert result.returncode == 0, f"RUN {args}\n{result.stdout}\n{result.stderr}"


def children(pid: int) -> list[int]:
    """Processes whose parent is `pid`, from /proc (no procps needed)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.fixture(scope="module")
def image():
    """The Dockerfile replayed once for this module (installing the dependencies takes a while)."""
    root = Path(tempfile.mkdtemp(prefix="wallet-proxy-image-"))
    root.chmod(0o755)  # the CMD runs as the image's user, who must reach /opt and /app
    replay = Replay(root)
    replay.run()
    yield replay
    shutil.rmtree(root, ignore_errors=True)


# The first test of the module pays for the install (up to minutes on a loaded machine).
@pytest.mark.timeout(900)
def test_the_image_holds_the_runtime_dependencies_only(image):
    venv = Path(image.env["VIRTUAL_ENV"])
    listed = subprocess.run([str(venv / "bin" / "python"), "-c", "import importlib.metadata as m, json; "
                             "print(json.dumps([d.metadata['Name'] for d in m.distributions()]))"],
                            capture_output=True, text=True, check=True).stdout
    normal = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
    installed = {normal(name) for name in json.loads(listed)}
    cfg = ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    required = {normal(re.split(r"[<>=!~\[ ]", line.strip())[0])
                for line in cfg["options"]["install_requires"].strip().splitlines()}
    assert required <= installed, required - installed
    assert "wallet-proxy" in installed
    assert not installed & TEST_TOOLS, installed & TEST_TOOLS
    assert not installed & {"pip", "setuptools", "wheel"}, "no installer at run time"
    assert installed - {"wallet-proxy"} == locked_names(), "exactly the lock, nothing resolved on the side"
    assert not (image.root / "tmp" / "src").exists(), "the sources are not kept"


@pytest.mark.timeout(900)
def test_the_install_prints_no_setuptools_warning(image):
    warnings = [line for line in image.output.splitlines()
                if re.search(r"Setuptools\w*Warning|BuildBackendWarning|SetuptoolsDeprecation", line)]
    assert not warnings, "\n".join(warnings)


@pytest.mark.timeout(900)
def test_the_cmd_serves_as_the_image_user_and_the_healthcheck_tells(image, sessionm):
    sessionm.on("POST", OFFERS_PATH, Reply(200, OK))
    port = free_port()
    env = dict(image.env, HOME="/nonexistent", PORT=str(port), SESSIONM_CONNECT_URL=sessionm.url,
               SESSIONM_CONNECT_AUTH="Y29ubmVjdDpzZWNyZXQ=", SESSIONM_RETAILER_ID="retailer-1",
               WALLET_PROXY_CLIENTS=CLIENTS)
    demote = None
    as_image_user = os.geteuid() == 0 and image.shared_python
    if as_image_user:
        uid = image.user

        def demote():
            os.setgid(uid)
            os.setuid(uid)

    command = json.loads(one("CMD"))
    proc = subprocess.Popen(command, cwd=image.cwd, env=env, preexec_fn=demote, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    health = json.loads(one("HEALTHCHECK").partition("CMD ")[2])

    def healthcheck() -> int:
        return subprocess.run(health, env=env, cwd=image.cwd, capture_output=True, timeout=10).returncode

    try:
        deadline = time.monotonic() + 30
        while healthcheck() != 0:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the health check never passed"
            time.sleep(0.3)
        answer = requests.get(f"http://127.0.0.1:{port}/v1/wallets/docker-user", auth=("braze", "bz-secret"),
                              headers={"Connection": "close"}, timeout=10)
        assert answer.status_code == 200 and answer.json()["ok"] is True
        if as_image_user:
            workers = children(proc.pid)
            assert workers, "gunicorn has no worker"
            owners = {os.stat(f"/proc/{pid}").st_uid for pid in [proc.pid, *workers]}
            assert owners == {image.user}, owners  # master and workers run as the image's user
    finally:
        proc.send_signal(signal.SIGTERM)  # what `docker stop` sends
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    log = proc.stdout.read()
    assert proc.returncode == 0, log
    assert "Shutting down" in log or "Handling signal: term" in log
    assert healthcheck() != 0  # nothing answers now: the check fails


def locked_names() -> set[str]:
    """The runtime lock's packages, less the build tools the build stage removes."""
    text = (ROOT / "requirements.lock").read_text()
    return {re.sub(r"[-_.]+", "-", m).lower() for m in re.findall(r"^([A-Za-z0-9][\w.-]*)==", text, re.M)} - {
        "pip", "setuptools", "wheel"}


@pytest.mark.timeout(900)
def test_bytecode_is_compiled_at_build_time(image):
    """A read-only root cannot write .pyc files: every worker would compile the package at start."""
    app = image.root / "app"
    package = next((Path(image.env["VIRTUAL_ENV"]) / "lib").glob("python3.*/site-packages/wallet_proxy"))
    for source in [*package.rglob("*.py"), app / "gunicorn.conf.py", app / "wsgi.py"]:
        cached = source.parent / "__pycache__"
        assert list(cached.glob(f"{source.stem}.cpython-3*.pyc")), f"no bytecode for {source}"
