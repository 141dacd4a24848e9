"""`make mutate`: a mutation run over the core modules, each mutant against its module's own fast tests.

For every module in CORE this copies the package and the tests into a scratch folder, points mutmut
(https://github.com/boxed/mutmut) at that one file and its own test files, runs it, and counts the
verdicts. The table goes to docs/mutation.md. Not part of `make test`: it takes minutes per module.

    .venv/bin/python scripts/mutate.py                 # every core module
    .venv/bin/python scripts/mutate.py view breaker    # some of them
    .venv/bin/python scripts/mutate.py --survivors view  # also print each survivor's diff

Verdicts: killed (a test failed), survived (every selected test passed: a behaviour nothing pins
down, or an equivalent mutant), no tests (no selected test reaches the mutated function), timeout.
Equivalent and message-wording survivors are listed in EQUIVALENT with the reason; the score is
killed / (mutants - no-tests - listed equivalents).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name -> (file to mutate, its own fast test files)
CORE = {
    "view": ("wallet_proxy/wallet/view.py", ["tests/test_view.py", "tests/test_view_rules.py"]),
    "payload": ("wallet_proxy/wallet/payload.py", ["tests/test_view.py", "tests/test_payload.py"]),
    "breaker": ("wallet_proxy/upstream/breaker.py", ["tests/test_breaker.py"]),
    "service": ("wallet_proxy/wallet/service.py", ["tests/test_slots.py", "tests/test_flights.py",
                                                  "tests/test_admission.py", "tests/test_wallet_service.py"]),
    "auth": ("wallet_proxy/web/auth.py", ["tests/test_auth.py"]),
    "sends-plan": ("wallet_proxy/sends/plan.py", ["tests/test_trigger_plan.py"]),
    "idempotency": ("wallet_proxy/sends/idempotency.py", ["tests/test_idempotency.py"]),
    "journal": ("wallet_proxy/bulk/journal.py", ["tests/test_journal.py"]),
}

# Survivors that no test can or should kill, by mutant name prefix -> reason. Kept short and argued.
EQUIVALENT: dict[str, str] = {}

_LINE = re.compile(r"^\s*(\S+): (killed|survived|no tests|timeout|suspicious|skipped|not checked|segfault)")


def run_one(name: str, target: str, tests: list[str], survivors: bool, keep: str | None = None) -> dict:
    existing = [t for t in tests if (ROOT / t).exists()]
    if not (ROOT / target).exists() or not existing:
        return {"name": name, "target": target, "missing": True}
    with tempfile.TemporaryDirectory(prefix=f"mutate-{name}-") as tmp:
        work = Path(keep) / name if keep else Path(tmp)
        if keep:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
        shutil.copytree(ROOT / "wallet_proxy", work / "wallet_proxy",
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "tests", work / "tests",
                        ignore=shutil.ignore_patterns("__pycache__", "node_modules"))
        config = (ROOT / "setup.cfg").read_text().split("\n[mutmut]")[0]
        config += ("\n[mutmut]\nsource_paths = wallet_proxy\n"
                   f"only_mutate = {target}\n"
                   "pytest_add_cli_args_test_selection =\n" + "".join(f"    {t}\n" for t in existing) +
                   "pytest_add_cli_args = -p no:cacheprovider -q -x\n")
        (work / "setup.cfg").write_text(config)
        mutmut = [sys.executable, "-m", "mutmut"]
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", HYPOTHESIS_PROFILE="mutate", CI="true")
        subprocess.run(mutmut + ["run", "--max-children", str(os.cpu_count() or 2)], cwd=work, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        listing = subprocess.run(mutmut + ["results", "--all", "true"], cwd=work, env=env,
                                 capture_output=True, text=True).stdout
        counts: dict[str, int] = {}
        survived, equivalent = [], []
        for line in listing.splitlines():
            match = _LINE.match(line)
            if not match:
                continue
            mutant, verdict = match.groups()
            if verdict == "survived":
                reason = next((why for prefix, why in EQUIVALENT.items() if mutant.startswith(prefix)), None)
                if reason:
                    equivalent.append(mutant)
                    verdict = "equivalent"
                else:
                    survived.append(mutant)
            counts[verdict] = counts.get(verdict, 0) + 1
        if survivors:
            for mutant in survived:
                print(subprocess.run(mutmut + ["show", mutant], cwd=work, env=env,
                                     capture_output=True, text=True).stdout)
    total = sum(counts.values())
    judged = total - counts.get("no tests", 0) - counts.get("equivalent", 0)
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    return {"name": name, "target": target, "tests": existing, "counts": counts, "total": total,
            "score": killed / judged if judged else 0.0, "survived": survived}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help=f"some of: {', '.join(CORE)}")
    parser.add_argument("--survivors", action="store_true", help="print each surviving mutant's diff")
    parser.add_argument("--out", default=str(ROOT / "docs" / "mutation.md"))
    parser.add_argument("--keep", metavar="DIR", help="keep each module's mutmut folder under DIR "
                        "(then `cd DIR/MODULE && mutmut show NAME` shows a survivor)")
    args = parser.parse_args()
    names = args.modules or list(CORE)
    rows = []
    for name in names:
        target, tests = CORE[name]
        started = dt.datetime.now()
        row = run_one(name, target, tests, args.survivors, args.keep)
        row["seconds"] = (dt.datetime.now() - started).total_seconds()
        rows.append(row)
        if row.get("missing"):
            print(f"{name}: {target} or its tests are missing", flush=True)
        else:
            print(f"{name}: {row['score']:.0%} killed of {row['total']} mutants {row['counts']} "
                  f"({row['seconds']:.0f} s)", flush=True)
    lines = ["# Mutation score of the core modules", "",
             f"`make mutate` (scripts/mutate.py, mutmut), {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC. "
             "Each module's mutants run against its own fast tests only.", "",
             "| module | file | mutants | killed | survived | no tests | equivalent | score |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        if row.get("missing"):
            lines.append(f"| {row['name']} | `{row['target']}` | — | — | — | — | — | missing |")
            continue
        c = row["counts"]
        lines.append(f"| {row['name']} | `{row['target']}` | {row['total']} | "
                     f"{c.get('killed', 0) + c.get('timeout', 0)} | {c.get('survived', 0)} | "
                     f"{c.get('no tests', 0)} | {c.get('equivalent', 0)} | {row['score']:.0%} |")
    lines += ["", "Score = killed / (mutants − no tests − equivalent). Survivors per module:", ""]
    for row in rows:
        if row.get("survived"):
            lines.append(f"- **{row['name']}**: " + ", ".join(f"`{m.rsplit('.', 1)[-1]}`" for m in row["survived"]))
    if EQUIVALENT:
        lines += ["", "Equivalent mutants (excluded, with the reason):", ""]
        lines += [f"- `{prefix}`: {why}" for prefix, why in EQUIVALENT.items()]
    if len(names) == len(CORE):
        Path(args.out).write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
