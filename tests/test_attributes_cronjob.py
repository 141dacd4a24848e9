"""deploy/k8s/attributes-sync-cronjob.yaml: a valid CronJob whose script starts a run, or resumes a killed one.

The script is run for real by /bin/sh with a stand-in `wallet-proxy` on PATH recording its arguments,
and every command line it can produce is parsed by the real CLI parser.
"""
from __future__ import annotations

import os
import re
import subprocess

import yaml

from tests.conftest import ROOT
from wallet_proxy import cli

CRONJOB = ROOT / "deploy" / "k8s" / "attributes-sync-cronjob.yaml"
FIELD = r"(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*"


def load() -> dict:
    return yaml.safe_load(CRONJOB.read_text())


def container(doc: dict) -> dict:
    (only,) = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return only


def test_is_a_batch_v1_cronjob_that_never_overlaps():
    doc = load()
    assert doc["apiVersion"] == "batch/v1" and doc["kind"] == "CronJob"
    fields = doc["spec"]["schedule"].split()
    assert len(fields) == 5 and all(re.fullmatch(FIELD, f) for f in fields), doc["spec"]["schedule"]
    assert doc["spec"]["concurrencyPolicy"] == "Forbid", "two runs would share one journal and state"
    pod = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    assert pod["securityContext"]["runAsNonRoot"] is True
    mounts = {m["mountPath"] for m in container(doc)["volumeMounts"]}
    assert "/data" in mounts, "journal, rejects and state must outlive the pod"
    deployment = yaml.safe_load((CRONJOB.parent / "deployment.yaml").read_text())
    (web,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container(doc)["envFrom"][0]["secretRef"]["name"] in {
        source["secretRef"]["name"] for source in web["envFrom"] if "secretRef" in source}, "the web's Secret"
    assert container(doc)["image"] == web["image"], "the same image as the web pods"


def run_script(tmp_path, journal: bool) -> list:
    data = tmp_path / "data"
    bin_dir = tmp_path / "bin"
    data.mkdir(parents=True)
    bin_dir.mkdir(parents=True)
    (data / "segment.csv").write_text("user_id\nu1\n")
    if journal:
        (data / "segment.csv.journal").write_text("")
    record = tmp_path / "args"
    stub = bin_dir / "wallet-proxy"
    stub.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    stub.chmod(0o755)
    script = container(load())["args"][0].replace("/data", str(data))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    subprocess.run(["/bin/sh", "-c", script], env=env, check=True, timeout=10)
    return record.read_text().split()


def test_the_script_starts_a_run_or_resumes_a_killed_one(tmp_path):
    fresh = run_script(tmp_path / "a", journal=False)
    resumed = run_script(tmp_path / "b", journal=True)
    assert fresh[:3] == ["attributes", "sync", "segment.csv"] and "--resume" not in fresh
    assert resumed[:3] == ["attributes", "sync", "segment.csv"] and "--resume" in resumed
    for argv in (fresh, resumed):
        args = cli.build_parser().parse_args(argv)  # a typo in the manifest fails here
        assert args.func is cli._attributes_sync
