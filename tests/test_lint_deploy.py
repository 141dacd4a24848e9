"""`make lint-deploy` (run by `make test`): what it runs, that its skip list is reviewed, and that its
linters can fail. The linters live in .venv-lint (requirements-lint.lock); `make lint-deploy` installs
it, and with CI=true a missing one fails here instead of skipping.
"""
from __future__ import annotations

import re
import subprocess

import yaml

from tests.conftest import ROOT, need

LINT_BIN = ROOT / ".venv-lint" / "bin"


def lint_tool(name: str) -> str:
    path = LINT_BIN / name
    need(name, path.exists(), "make lint-deploy (installs .venv-lint from requirements-lint.lock)")
    return str(path)


def recipe(target: str) -> list[str]:
    text = (ROOT / "Makefile").read_text()
    body = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", text, re.M)
    assert body, target
    return [line.strip() for line in body.group(1).splitlines()]


def test_make_test_runs_lint_deploy_and_it_runs_every_checker():
    prerequisites = re.search(r"^test:(.*)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    assert "lint-deploy" in prerequisites
    steps = "\n".join(recipe("lint-deploy"))
    for expected in ("hadolint Dockerfile", "yamllint", "--strict -k 1.30", "--strict -k 1.37",
                     "checkov --config-file .checkov.yaml -d deploy/k8s", "checkov --config-file .checkov.yaml -f Dockerfile",
                     "vendor.compose-spec compose.yaml", "nginx_accepts_the_configuration",
                     "promtool check rules", "promtool test rules", "promtool check config"):
        assert expected in steps, expected


def test_every_checkov_skip_gives_its_reason():
    config = yaml.safe_load((ROOT / ".checkov.yaml").read_text())
    lines = (ROOT / ".checkov.yaml").read_text().splitlines()
    assert config["skip-check"]
    for check in config["skip-check"]:
        at = next(i for i, line in enumerate(lines) if line.strip() == f"- {check}")
        reason = []
        for line in reversed(lines[:at]):
            if not line.strip().startswith("#"):
                break
            reason.append(line)
        assert len(" ".join(reason)) > 60, f"{check}: no reason in .checkov.yaml"


def test_hadolint_and_checkov_refuse_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install flask\nCMD python app.py\n")
    hadolint = subprocess.run([lint_tool("hadolint"), str(bad)], capture_output=True, text=True, timeout=60)
    assert hadolint.returncode != 0 and "DL3007" in hadolint.stdout  # `latest`
    checkov = subprocess.run([lint_tool("checkov"), "--config-file", str(ROOT / ".checkov.yaml"), "-f", str(bad)],
                             capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert checkov.returncode != 0 and "CKV_DOCKER_3" in checkov.stdout  # no USER: runs as root
