"""The locks: every install (`make run`, `make test`, the Dockerfile) takes exact versions with hashes.

`make lock` regenerates them with pip-compile; these checks keep them in step with setup.cfg without
reaching an index: each requirement there is met by the lock's pin, the test lock holds the runtime
lock's very versions, and every pin carries hashes (pip's --require-hashes refuses anything else).
"""
from __future__ import annotations

import re
from configparser import ConfigParser

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import ROOT

PIN = re.compile(r"^([A-Za-z0-9][\w.-]*)==(\S+)((?:\s*\\\n\s*--hash=sha256:[0-9a-f]{64})*)", re.M)


def pins(name: str) -> dict[str, tuple[Version, int]]:
    """{package: (version, number of hashes)} of a lock file."""
    text = (ROOT / name).read_text()
    return {canonicalize_name(p): (Version(v), hashes.count("--hash=")) for p, v, hashes in PIN.findall(text)}


def requirements(section: str, key: str) -> list[Requirement]:
    cfg = ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return [Requirement(line) for line in cfg[section][key].strip().splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_every_runtime_requirement_is_pinned_within_its_range():
    locked = pins("requirements.lock")
    for req in requirements("options", "install_requires"):
        name = canonicalize_name(req.name)
        assert name in locked, f"{req.name} is not in requirements.lock: run `make lock`"
        assert req.specifier.contains(locked[name][0], prereleases=True), (
            f"requirements.lock pins {req.name} {locked[name][0]}, outside setup.cfg's {req.specifier}")


def test_the_test_lock_adds_the_test_extra_to_the_very_runtime_versions():
    runtime, dev = pins("requirements.lock"), pins("requirements-dev.lock")
    assert {name: version for name, (version, _) in runtime.items()} == {
        name: dev[name][0] for name in runtime if name in dev}, "the suite would test other versions than run"
    assert set(runtime) <= set(dev)
    for req in requirements("options.extras_require", "test"):
        name = canonicalize_name(req.name)
        assert name in dev and req.specifier.contains(dev[name][0], prereleases=True), req


def test_every_pin_has_hashes_and_builds_need_nothing_unlocked():
    for lock in ("requirements.lock", "requirements-dev.lock", "requirements-lint.lock"):
        locked = pins(lock)
        text = (ROOT / lock).read_text()
        assert len(locked) == text.count("=="), f"{lock}: a line the check did not read"
        assert all(hashes >= 1 for _, hashes in locked.values()), lock
    # `pip install --no-build-isolation -e .` (Makefile, Dockerfile) builds with the lock's own tools
    assert {"setuptools", "wheel"} <= set(pins("requirements.lock"))


def test_every_install_checks_the_hashes():
    makefile = (ROOT / "Makefile").read_text()
    for lock in ("requirements.lock", "requirements-dev.lock", "requirements-lint.lock"):
        assert f"install -q --require-hashes --no-deps -r {lock}" in makefile or (
            f"$(PIP_INSTALL) --require-hashes --no-deps -r {lock}" in makefile), lock
    assert "lock:" in makefile and "pip-compile" in makefile
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes --no-deps -r /tmp/src/requirements.lock" in dockerfile
    assert "make lock" in (ROOT / "README.md").read_text()
