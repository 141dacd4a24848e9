"""`make mutate`: a mutation run over the core modules, each mutant against its module's own fast tests.

For every module in CORE this copies the package and the tests into a scratch folder, points mutmut
(https://github.com/boxed/mutmut) at that one file and its own test files, runs it, and counts the
verdicts. The table goes to docs/mutation.md. Not part of `make test`: it takes minutes per module.

    .venv/bin/python scripts/mutate.py                 # every core module
    .venv/bin/python scripts/mutate.py view breaker    # some of them
    .venv/bin/python scripts/mutate.py --survivors view  # also print each survivor's diff

Verdicts: killed (a test failed), survived (every selected test passed: a behaviour nothing pins
down, or an equivalent mutant), no tests (no selected test reaches the mutated function), timeout.
Message-wording survivors (a string literal with a space rewritten) are counted apart; equivalent
ones are listed in EQUIVALENT with the reason; the score is killed / (mutants - wording - no tests -
equivalents).
"""
from __future__ import annotations

import argparse
import io
import json
import tokenize
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
    "view": ("wallet_proxy/wallet/view.py", ["tests/test_view.py", "tests/test_view_rules.py",
                                             "tests/test_view_body.py"]),
    "payload": ("wallet_proxy/wallet/payload.py", ["tests/test_view.py", "tests/test_payload.py",
                                                   "tests/test_payload_fast.py"]),
    "breaker": ("wallet_proxy/upstream/breaker.py", ["tests/test_breaker.py"]),
    "service": ("wallet_proxy/wallet/service.py", ["tests/test_slots.py", "tests/test_flights.py",
                                                  "tests/test_admission.py", "tests/test_wallet_calls.py",
                                                  "tests/test_wallet_service.py", "tests/test_lag.py"]),
    "auth": ("wallet_proxy/web/auth.py", ["tests/test_auth.py"]),
    "sends-plan": ("wallet_proxy/sends/plan.py", ["tests/test_trigger_plan.py"]),
    "idempotency": ("wallet_proxy/sends/idempotency.py", ["tests/test_idempotency.py"]),
    "journal": ("wallet_proxy/bulk/journal.py", ["tests/test_journal.py"]),
}


def _each(function: str, texts: tuple[str, ...], reason: str) -> list[tuple[str, str, str]]:
    """EQUIVALENT entries for several mutants of one function that share a reason."""
    return [(function, text, reason) for text in texts]


# Survivors that no test can or should kill: module -> [(function, text of the line the mutant writes,
# reason)]. A survivor is equivalent when its name holds `function` (mutmut's names: `x_parse_time`,
# `xǁBreakerǁ__init__`) and its diff's added line holds `text` ("" = any mutant of that function).
# Matched on the diff, not on mutmut's numbers, which shift when the code changes. Kept short and argued.
EQUIVALENT: dict[str, list[tuple[str, str, str]]] = {
    "view": [
        ("xǁCultureFieldǁ_deserialize", "super()._deserialize(value, ",
         "marshmallow's String._deserialize reads only `value`: changing or dropping attr, data or "
         "kwargs changes nothing"),
        ("x_select", 'category_names = ""',
         "the lazy name maps are only read through `or`: None and \"\" are both falsy, so the map is "
         "built on first use either way"),
        ("x_select", 'lstrip("XX-XX")',
         "lstrip takes a set of characters; no sort key (WalletQuery allows only SORT_KEYS) starts "
         "with X, so only the leading - is stripped either way"),
        ("x_select", '(key == "title") or True',
         "the other sort keys are iso() dates (digits, -, :, T, Z); casefold turns T/Z into t/z, which "
         "order the same against each other and against the digits and punctuation"),
        ("x_flatten", "fromtimestamp(fetched_at, None)",
         "a naive local datetime goes back to the same instant through iso()'s astimezone(utc) in any "
         "zone (fromtimestamp sets fold in repeated hours)"),
        ("x_flatten", "fromtimestamp(fetched_at, ))",
         "no tz is the same naive local datetime as tz=None: back to the same instant through iso()"),
        ("x_empty_wallet", 'view: str = "XXflatXX"',
         "the default is only compared with \"sessionm\": any other string gives the flat body"),
        ("x_empty_wallet", 'view: str = "FLAT"',
         "the default is only compared with \"sessionm\": \"FLAT\" gives the flat body too"),
    ],
    "payload": [
        ("x_parse_time", "parsed = datetime.fromisoformat(text.",
         "Python >= 3.11's fromisoformat reads a space (any one character) between date and time, so the "
         "space-to-T rewrite changes no answer (checked on 200,000 generated strings)"),
        ("x_record_count", "count >= 0", "a count of 0 comes back as itself instead of as the 0 for "
         "'no count': the same 0"),
        ("x_number", 'float("INF")', 'float() reads "INF" as "inf": the same infinity'),
        ("x_number", 'float("-INF")', 'float() reads "-INF" as "-inf": the same infinity'),
        *_each("x_text", ("if type(None) is _STR",),
               "the plain-form shortcut skipped: the general path below gives a str (and None) back unchanged"),
        *_each("x_number", ("if type(None) is _INT", "+2**53 < value", "-2 * 53 < value", "value < 2 * 53"),
               "the plain-int shortcut narrowed or skipped: the general path below answers the same int "
               "(integral and under 2**53) or float for every int"),
        *_each("x_flag", ("or type(None) is _BOOL",),
               "the plain-bool shortcut skipped: `value in (0, 1)` then gives bool(True) / bool(False) back"),
        ("x_read_offer", 'get("media", None)',
         "a missing media read as None instead of []: image_uri and media_items read both as no media"),
        ("x_read_offer", 'get("media", )', "as get(\"media\", None): None and [] are both no media"),
        ("x_read_offer", "        media = None", "as get(\"media\", None): None and [] are both no media"),
        ("x_normalise_payload", '_entries(payload, "user_offers", None, errors)',
         "None is as false as False: user_offers stays not nullable"),
        ("x_read_named", "raise ValidationError(None)",
         "a catalogue entry's reasons are never read: the entry is left out either way"),
        ("x_read_named", 'ValidationError({"XXidXX"', "as raise ValidationError(None): reasons never read"),
        ("x_read_named", 'ValidationError({"ID"', "as raise ValidationError(None): reasons never read"),
        ("x_read_named", 'ValidationError({"id": [None]', "as raise ValidationError(None): reasons never read"),
        ("x_read_named", 'ValidationError({"id": ["XX', "as raise ValidationError(None): reasons never read"),
        ("x_read_named", 'ValidationError("XX', "as raise ValidationError(None): reasons never read"),
        ("x_read_named", 'ValidationError("NOT AN OBJECT', "as raise ValidationError(None): reasons never read"),
        ("x_media_items", "if (isinstance(v, str)) or True else v",
         "shared() returns anything but a str unchanged, so calling it on numbers changes nothing"),
        ("x__order", "else (2, 0)", "entries without sort_order all get the same key, above every (0, n): "
         "after the numbered ones in SessionM's order (a stable sort) with any such constant"),
        ("x__order", "else (1, 1)", "the same constant-key argument as (2, 0)"),
    ],

    "auth": [
        ("x_check_signature", '.encode("UTF-8", "surrogatepass")',
         "codec names are case-insensitive: UTF-8 is utf-8"),
        ("x__credentials", '.decode("UTF-8")', "codec names are case-insensitive: UTF-8 is utf-8"),
    ],
    "breaker": [
        ("xǁBreakerǁ__init__", "self._opened_at = ",
         "the initial _opened_at is read only when the state is not closed, and the only way out of "
         "closed is failure(), which sets it first"),
        ("xǁBreakerǁ__init__", "self._probe_out = ",
         "the initial _probe_out is read only in allow() past the closed check, and failure() sets it "
         "to False when it opens the breaker"),
        ("xǁBreakerǁcancel", "self._probe_out = None",
         "_probe_out is only read as a truth value (in allow()): None is False"),
        ("xǁBreakerǁsuccess", "self._probe_out = None",
         "_probe_out is only read as a truth value (in allow()): None is False"),
        ("xǁBreakerǁsuccess", "self._probe_out = True",
         "success() closes the breaker; allow() does not read _probe_out while closed, and failure() "
         "resets it to False when it opens again"),
        ("xǁBreakerǁfailure", "self._probe_out = None",
         "_probe_out is only read as a truth value (in allow()): None is False"),
    ],
    "service": [
        ("xǁFlightǁ__init__", "self.entry: Entry | None =", "a flight's entry is read only once `done` is "
         "set, and finish() writes entry and error before it sets `done`: the initial value is never read"),
        ("xǁFlightǁ__init__", "self.error: ApiError | None =", "as for entry: finish() writes the error "
         "before `done` is set, and wait() reads it only after"),
        ("xǁ_Ticketǁ__init__", "self.granted = None", "`granted` is only tested for truth, where None and "
         "False are alike"),
        ("xǁSlotsǁtake", "if left >= 0:", "at left == 0, Event.wait(0) returns at once without blocking, "
         "as skipping the wait does; the grant is then checked under the lock either way"),
        ("xǁWalletServiceǁget", "ttl = None", "the first `ttl` is read only in the stale-if-error branch, "
         "which needs a cached entry, and with one `ttl` was already set to entry_ttl(entry)"),
        ("xǁWalletServiceǁrefresh", "upstream_timeout + 1.5", "a refresh never waits for a slot, so its "
         "deadline only caps the call at min(upstream_timeout, deadline - now): the upstream timeout "
         "with a margin of 0.5 s or 1.5 s alike"),
        ("xǁWalletServiceǁrefresh", "wait_for_slot=None", "_lead reads wait_for_slot only for truth "
         "(`not`, `if`, `and`), where None is False"),
        ("xǁWalletServiceǁ_lead", "paced=None", "overloaded_error tests `paced` only for truth: None is "
         "False"),
        ("xǁWalletServiceǁ_lead", "deadline if wait_for_slot else 1.0", "a refresh takes a slot only "
         "if one is free: any `until` already past does that, and a monotonic clock is past 1.0 s "
         "(seconds since boot; the tests' clocks start at 1000)"),
        ("xǁWalletServiceǁ_run", "called.append(", "`called` is read only for truth, which is its length: "
         "the value appended is never read"),
        ("xǁWalletServiceǁ_call", '"SESSIONM"', "Metrics.upstream lowercases the upstream's name: the "
         "same label either way"),
        ("xǁWalletServiceǁ__init__", '"bounds_total_time", None)', "the value is read through bool(): "
         "a transport without the attribute is not inline with False or None alike"),
    ],
    "sends-plan": [
        *[entry for cls in ("Properties", "UserAlias") for entry in _each(
            f"xǁ{cls}ǁ_deserialize", ("(value, None, data", "(value, attr, None", "(value, attr, data, )"),
            "a fields.Dict without keys/values fields never reads attr, data or the load options "
            "(marshmallow's Mapping._deserialize returns mapping_type(value))")],
        *_each("x_digest", ("separators=None", "ensure_ascii=None", "ensure_ascii=True", "default=None",
                            "ensure_ascii=False, )", "default=str)", '"XXrouteXX"', '"ROUTE"', '"XXbodyXX"',
                            '"BODY"', '("XX,XX", ":")', '(",", "XX:XX")'),
               "any fixed, uniquely decodable JSON form gives the same equal/unequal answers (bodies are "
               "parsed JSON, so default=str is never called); only the hash's bytes change"),
        *_each("x_dedupe", ("default=None", "sort_keys=True, )"),
               "recipients are parsed JSON (both doors): json.dumps never meets a type it cannot write, so "
               "default=str is never called"),
        ("x_plan_flat", 'recipients = ""', "only tested for truth (`if recipients`, _chunks' "
         "`not recipients`): \"\" and None plan the same bodies"),
        ("x_plan_flat", "in messages or id_field", "when the Braze id has no error the rename maps no key, "
         "and with a plain campaign_id/canvas_id it maps the key to itself: the messages are unchanged"),
        *_each("x_plan_flat", ("digest(None, original)", 'digest("XXflatXX"', 'digest("FLAT"'),
               "the flat door's route label only has to differ from the relay's \"campaign\"/\"canvas\" "
               "(one idempotency key space): any fixed label, None included, does"),
        ("x_plan_native", "digest(None, original)", "a campaign body and a canvas body always differ (each "
         "must hold its own id and not the other's), and null still differs from the flat door's label"),
        *_each("x_plan_native", ('"XXrecipientsXX"}', '"RECIPIENTS"}'),
               "each chunk's body sets its own recipients over the base's (or the request has none): only "
               "the key's place in the JSON object changes"),
    ],
    "journal": [
        *_each("xǁJournalǁ__init__", ("sort_keys=None)", "json.dumps(identity, )", "sort_keys=False)"),
               "the stored identity is only read back with json.loads and compared as a dict (here and in "
               "stored_identity): its key order is never seen"),
        *_each("x_file_identity", ("(handle.read(65536), )", "digest_size=17"),
               "the head digest's length: any fixed size notices the same file changes (a blake2b "
               "collision is out of reach)"),
    ],
    "idempotency": [
        *_each("x__expire_lease", ('"pending"] = ', '"XXpendingXX"', '"PENDING"'),
               "only the replay path keeps this value (a claim's update() overwrites pending): a later begin "
               "finds the same expired lease and expires it again, and owner=None already locks the late "
               "owner out, so no answer changes"),
        ("x__expire_lease", 'record["owner"] = ""', "an owner is a uuid4 hex, never empty: \"\" locks the "
         "late owner out exactly as None does"),
        ("xǁIdempotencyStoreǁ__init__", "wait_timeout: float = 31.0", "the only production constructor "
         "(services.py) passes wait_timeout; the default is never used to serve"),
        ("xǁMemoryIdempotencyǁ__init__", "maxsize: int = 100001", "services.py always passes maxsize "
         "(services.RECORDS, 100,000); the default is never used to serve"),
        ("xǁMemoryIdempotencyǁ__init__", "ttl=self.retention, )", "the cache's timer only decides when "
         "memory is freed: _decide judges expiry by expires_at on the store's clock, and in production "
         "both clocks advance together"),
        ("xǁIdempotencyStoreǁbegin", "self._wait(None", "neither _wait reads the key (a condition wait, a "
         "Redis poll)"),
        ("xǁIdempotencyStoreǁrecord", "self._notify(None", "_notify wakes every waiter; no store reads the "
         "key"),
        *_each("xǁIdempotencyStoreǁ_decide", ('"expires_at", None)', '"expires_at", )', '"expires_at", 1)'),
               "every record this module writes has expires_at (both creation paths set it): the default "
               "is never read"),
        ("xǁIdempotencyStoreǁ_decide", "replay=None", "replay is only tested for truth (engine: "
         "`if claim.replay`): None and False answer the same"),
        ("xǁIdempotencyStoreǁrecord", "update(pending=None", "pending is only tested for truth "
         "(`record.get(\"pending\")`): None and False answer the same"),
        ("xǁIdempotencyStoreǁrecord", "update(pending=False, )", "after done=True the owner writes nothing "
         "more (the engine's last save), and the next claim sets a new owner: a kept owner is never matched"),
        ("xǁRedisIdempotencyǁ_transact", "max(2,", "the record's logical end is expires_at, checked by "
         "_decide; max(1, …) only keeps EX positive, so one more second in Redis changes no answer"),
        *_each("xǁRedisIdempotencyǁ_transact", ("separators=None)", "json.dumps(new, )"),
               "the stored JSON's spacing: json.loads reads both forms back to the same record"),
        *_each("xǁRedisIdempotencyǁ_transact", ("pipeline(transaction=None)", "pipeline(transaction=False)"),
               "a plain client's multi() starts the transaction whatever the flag; only a cluster client "
               "reads it, and tests/test_redis_topologies.py::"
               "test_idempotency_records_swap_atomically_on_a_cluster pins that (a cluster is no fast test)"),
    ],
}
RESULTS = ROOT / "docs" / "mutation"  # one JSON file per module: the table is made from all of them


def equivalent_reason(name: str, mutant: str, diff: str) -> str | None:
    """The reason a surviving mutant is equivalent, or None when it is a real survivor."""
    added = [line[1:] for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    function = mutant.rsplit(".", 1)[-1].split("__mutmut_")[0]
    for where, text, why in EQUIVALENT.get(name, []):
        if where == function and (not text or any(text in line for line in added)):
            return why
    return None

def is_wording(diff: str) -> bool:
    """True when a mutant only rewrites human text: a string literal with a space in it (a message).

    Such mutants (`"must be a number"` -> `"XXmust be a numberXX"`, or the message replaced by None)
    change what a person reads, not what the service does; the issue lets them be excluded.
    """
    minus = [line[1:] for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")]
    plus = [line[1:] for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    if len(minus) != 1 or len(plus) != 1:
        return False
    try:
        old, new = _tokens(minus[0]), _tokens(plus[0])
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return False
    if len(old) != len(new):
        return False
    changed = [(a, b) for a, b in zip(old, new) if a != b]
    return bool(changed) and all(a[0] == tokenize.STRING and " " in a[1] for a, _ in changed)


def _tokens(line: str) -> list[tuple[int, str]]:
    """The tokens of one source line, also when it leaves a bracket open (`f("message",`)."""
    tokens = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(line.strip()).readline):
            tokens.append((token.type, token.string))
    except tokenize.TokenError as exc:
        if "EOF in multi-line statement" not in str(exc):
            raise
    return tokens


_LINE = re.compile(r"^\s*(\S+): (killed|survived|no tests|timeout|suspicious|skipped|not checked|segfault)")


def run_one(name: str, target: str, tests: list[str], survivors: bool, keep: str | None = None,
            reuse: bool = False) -> dict:
    """Mutate `target`, run its mutants against `tests`, and count the verdicts (reuse: count a kept run)."""
    existing = [t for t in tests if (ROOT / t).exists()]
    if not (ROOT / target).exists() or not existing:
        return {"name": name, "target": target, "missing": True}
    with tempfile.TemporaryDirectory(prefix=f"mutate-{name}-") as tmp:
        work = Path(keep) / name if keep else Path(tmp)
        mutmut = [sys.executable, "-m", "mutmut"]
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", HYPOTHESIS_PROFILE="mutate", CI="true")
        if not reuse:
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
            subprocess.run(mutmut + ["run", "--max-children", str(os.cpu_count() or 2)], cwd=work, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        listing = subprocess.run(mutmut + ["results", "--all", "true"], cwd=work, env=env,
                                 capture_output=True, text=True).stdout
        counts: dict[str, int] = {}
        survived, equivalent, shown = [], [], []
        for line in listing.splitlines():
            match = _LINE.match(line)
            if not match:
                continue
            mutant, verdict = match.groups()
            if verdict == "survived":
                diff = subprocess.run(mutmut + ["show", mutant], cwd=work, env=env, capture_output=True,
                                      text=True).stdout
                reason = equivalent_reason(name, mutant, diff)
                if reason:
                    equivalent.append(mutant)
                    verdict = "equivalent"
                elif is_wording(diff):
                    verdict = "wording"
                else:
                    survived.append(mutant)
                    shown.append(diff)
            counts[verdict] = counts.get(verdict, 0) + 1
        if survivors:
            print("\n".join(shown))
    total = sum(counts.values())
    judged = total - counts.get("no tests", 0) - counts.get("equivalent", 0) - counts.get("wording", 0)
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    return {"name": name, "target": target, "tests": existing, "counts": counts, "total": total,
            "score": killed / judged if judged else 0.0, "survived": survived}


def table() -> str:
    """docs/mutation.md's table, from the latest result of each module (docs/mutation/NAME.json)."""
    rows = [json.loads((RESULTS / f"{name}.json").read_text()) for name in CORE
            if (RESULTS / f"{name}.json").exists()]
    lines = ["# Mutation score of the core modules", "",
             "Made by `make mutate` (scripts/mutate.py, mutmut) from each module's latest run "
             "(docs/mutation/NAME.json). Each module's mutants run against its own fast tests only.", "",
             "| module | file | measured | mutants | killed | survived | wording | no tests | equivalent | score |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        c = row["counts"]
        lines.append(f"| {row['name']} | `{row['target']}` | {row['measured']} | {row['total']} | "
                     f"{c.get('killed', 0) + c.get('timeout', 0)} | {c.get('survived', 0)} | "
                     f"{c.get('wording', 0)} | {c.get('no tests', 0)} | {c.get('equivalent', 0)} | "
                     f"**{row['score']:.0%}** |")
    lines += ["", "Score = killed / (mutants − wording − no tests − equivalent); a timeout counts as killed, "
              "as mutmut counts it. `wording` mutants only rewrite a message's text; `no tests` mutate code "
              "its own fast tests never reach; `equivalent` ones match EQUIVALENT in scripts/mutate.py, "
              "each with its reason (below).", ""]
    for row in rows:
        if row.get("survived"):
            lines.append(f"- **{row['name']}** survivors: " +
                         ", ".join(f"`{m.rsplit('.', 1)[-1]}`" for m in row["survived"]))
    for row in rows:
        if row.get("equivalents"):
            lines += ["", f"Equivalent in **{row['name']}**:", ""] + [f"- {e}" for e in row["equivalents"]]
    notes = ROOT / "docs" / "mutation-notes.md"
    if notes.exists():
        lines += ["", notes.read_text().rstrip()]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help=f"some of: {', '.join(CORE)}")
    parser.add_argument("--survivors", action="store_true", help="print each surviving mutant's diff")
    parser.add_argument("--out", default=str(ROOT / "docs" / "mutation.md"))
    parser.add_argument("--keep", metavar="DIR", help="keep each module's mutmut folder under DIR "
                        "(then `cd DIR/MODULE && mutmut show NAME` shows a survivor)")
    parser.add_argument("--reuse", action="store_true", help="count the runs kept under --keep DIR again "
                        "(no new mutmut run)")
    parser.add_argument("--table", action="store_true", help="only remake docs/mutation.md from "
                        "docs/mutation/*.json (no mutmut run)")
    args = parser.parse_args()
    if args.table:
        Path(args.out).write_text(table())
        return 0
    import importlib.util

    if importlib.util.find_spec("mutmut") is None:  # else every module would be written down as 0 of 0
        print("mutmut is not installed: .venv/bin/pip install -e '.[mutate]'", file=sys.stderr)
        return 2
    names = args.modules or list(CORE)
    rows = []
    for name in names:
        target, tests = CORE[name]
        started = dt.datetime.now()
        row = run_one(name, target, tests, args.survivors, args.keep, args.reuse)
        row["seconds"] = (dt.datetime.now() - started).total_seconds()
        rows.append(row)
        if row.get("missing"):
            print(f"{name}: {target} or its tests are missing", flush=True)
        else:
            print(f"{name}: {row['score']:.0%} killed of {row['total']} mutants {row['counts']} "
                  f"({row['seconds']:.0f} s)", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for row in rows:
        if not row.get("missing"):
            row["measured"] = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"
            reasons = (f"{f}: {why}" for f, _, why in EQUIVALENT.get(row["name"], []))
            row["equivalents"] = list(dict.fromkeys(reasons))  # one line per reason
            (RESULTS / f"{row['name']}.json").write_text(json.dumps(row, indent=1) + "\n")
    Path(args.out).write_text(table())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
