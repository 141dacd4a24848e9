"""The game day's counts, goals, timeline table and plot (a hand-written SVG: no plotting library)."""
from __future__ import annotations

import collections
import html
from pathlib import Path

BUCKET = 5  # seconds per row of the timeline table


def pct(values, share):
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(share * len(values)))]


def in_windows(t: float, windows) -> bool:
    return any(start <= t <= end for start, end in windows)


def evaluate(load, sessionm: dict, braze: dict, facts: dict) -> tuple[list, dict]:
    """(goals, figures): goals are (name, figure, goal text, met)."""
    renders = load.renders
    blank = [r for r in renders if not r["ok"]]
    exhausted = [r for r in blank if r["gave_up"] == "retries exhausted"]
    stale = sum(1 for r in renders if r["stale"])
    first = [a for a in load.attempts if a[4] == "render" and a[3]]
    refused_first = [a for a in first if a[2].startswith("503")]

    # SessionM calls per distinct user, for users whose renders began outside every fault window
    # (the window plus 3 s after it).
    windows = [(start - 1, end + 3) for start, end, _ in facts["events"]]
    calls_by_user = collections.Counter()
    for t, user, _status in sessionm["connect_calls"]:
        if user and user.startswith("gd-u-"):
            calls_by_user[user] += 1
    calm = [u for u, t in facts["first_seen"].items() if not in_windows(t, windows)]
    per_user = sum(calls_by_user[u] for u in calm) / max(1, len(calm))

    # Refusals after SessionM recovered: the last breaker refusal of a first attempt after recovery.
    recovered = facts["recovered"]
    t0 = facts["t0"]
    breaker = [a[0] for a in first if a[2] == "503 breaker_open"]
    after = [t for t in breaker if recovered <= t <= recovered + 20]
    refusals_outlast = (max(after) - recovered) if after else 0.0
    hang = next(((s, e) for s, e, label in facts["events"] if label == "SessionM hung"), None)
    probes = 0.0
    if hang:
        start, end = hang[0] + 2, hang[1]
        calls = sum(1 for t, _user, _ in sessionm["connect_calls"] if start <= t - t0 <= end)
        probes = calls / max(0.1, end - start)
    processes = 4 + 1  # two instances x WEB_CONCURRENCY=2, and the attribute sync's own process

    failover = facts["failover"]
    probe_user = failover.get("probe_user")
    sf_calls = None
    if probe_user:
        sf_calls = sum(1 for _, user, _ in sessionm["connect_calls"] if user == probe_user)

    sent = braze["sent"]
    twice = sorted(m["message"] for m in load.messages if sent.get(m["message"], 0) > 1)
    lost = sorted(m["message"] for m in load.messages
                  if sent.get(m["message"], 0) == 0 and str(m["final"]).startswith("2"))
    unknown = [m for m in load.messages
               if sent.get(m["message"], 0) == 0 and not str(m["final"]).startswith("2")]

    tags = sessionm["tags"]
    rows = facts["args"]["rows"]
    counts = {f"gd-t-{n}": (tags.get(f"gd-t-{n}", {}).get("gd-counter") or {}).get("count", 0)
              for n in range(rows)}
    tag_twice = [u for u, c in counts.items() if c > 1]
    tag_lost = [u for u, c in counts.items() if c == 0 and u not in facts["tags_rejects"]]
    tag_reported = [u for u, c in counts.items() if c == 0 and u in facts["tags_rejects"]]

    profiles = braze["profiles"]
    wrong = []
    for user, (points, offers) in facts["expected_profiles"].items():
        profile = profiles.get(user) or {}
        synced = (profile.get("sessionm_available_points"), profile.get("sessionm_offer_count"))
        if synced != (points, offers):
            wrong.append(user)
    unchecked = rows - len(facts["expected_profiles"])

    reasons = collections.Counter(a[2] for a in load.attempts if not a[2].startswith("2"))
    goals = [
        ("blank renders (no success after Braze's retries, or a non-retryable status)", len(blank), "0",
         len(blank) == 0),
        ("renders that never succeeded after 5 retries", len(exhausted), "0", len(exhausted) == 0),
        ("SessionM calls per distinct user, outside the fault windows", round(per_user, 3), "<= 1.05",
         per_user <= 1.05),
        ("SessionM calls for 20 concurrent reads of one user, 2 s after the failover",
         sf_calls, "1", sf_calls == 1),
        ("seconds breaker refusals outlasted SessionM's recovery", round(refusals_outlast, 2), "<= 2",
         refusals_outlast <= 2),
        ("SessionM calls per second per process while it hung (probes)", round(probes / processes, 2),
         "about 1 (<= 1.5)", probes / processes <= 1.5),
        ("triggered messages sent twice to Braze", len(twice), "0", not twice),
        ("triggered messages never sent, reported as sent to their caller", len(lost), "0", not lost),
        ("tag rows counted twice", len(tag_twice), "0", not tag_twice),
        ("tag rows lost (not counted, not in the rejects)", len(tag_lost), "0", not tag_lost),
        ("attribute profiles wrong after the run", len(wrong), "0", not wrong),
    ]
    figures = {
        "renders": len(renders), "stale": stale, "first": len(first), "refused_first": len(refused_first),
        "probes_per_s": round(probes, 2), "unknown_messages": len(unknown),
        "unknown_finals": collections.Counter(str(m["final"]) for m in unknown),
        "messages": len(load.messages), "tag_reported": len(tag_reported), "unchecked_profiles": unchecked,
        "reasons": reasons, "calm_users": len(calm), "sf_statuses": failover.get("probe_statuses"),
        "twice": twice[:5], "lost": lost[:5], "wrong": wrong[:5],
    }
    return goals, figures


def timeline(load, sessionm: dict, facts: dict, size: float) -> list[dict]:
    t0 = facts["t0"]
    rows = collections.defaultdict(lambda: {"ok": 0, "refused": 0, "errors": 0, "lat": [], "calls": 0})
    for start, elapsed, outcome, first, kind in load.attempts:
        if kind != "render":
            continue
        row = rows[int(start // size)]
        if outcome == "200":
            row["ok"] += 1
            row["lat"].append(elapsed)
        else:
            row["errors"] += 1
            if first and outcome.startswith("503"):
                row["refused"] += 1
    for t, _user, _status in sessionm["connect_calls"]:
        rows[int((t - t0) // size)]["calls"] += 1
    for t, late in facts.get("lag", ()):
        row = rows[int(t // size)]
        row["lag"] = max(row.get("lag", 0.0), late)
    out = []
    for n in range(min(rows), max(rows) + 1) if rows else []:
        row = rows[n]
        out.append({"t": n * size, "ok": row["ok"] / size, "refused": row["refused"] / size,
                    "errors": row["errors"] / size, "calls": row["calls"] / size,
                    "p50": 1000 * pct(row["lat"], 0.5), "p99": 1000 * pct(row["lat"], 0.99),
                    "lag": 1000 * row.get("lag", 0.0)})
    return out


def svg(series: list[dict], events, path: Path) -> None:
    """Renders ok, first attempts refused, errors and SessionM calls per second, faults shaded."""
    width, height, left, top, bottom = 960, 340, 50, 20, 60
    if not series:
        path.write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
        return
    t_max = max(r["t"] for r in series) + 1
    y_max = max(1.0, *(max(r["ok"], r["refused"], r["errors"], r["calls"]) for r in series)) * 1.1
    x = lambda t: left + (width - left - 10) * t / t_max  # noqa: E731
    y = lambda v: top + (height - top - bottom) * (1 - v / y_max)  # noqa: E731
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
             f"font-family='sans-serif' font-size='11'>", "<rect width='100%' height='100%' fill='white'/>"]
    shades = ["#fde2e2", "#e2ecfd", "#fdf3d8", "#e5f5e0", "#eee2fd", "#fde2f3", "#e0f5f5"]
    for n, (start, end, label) in enumerate(events):
        parts.append(f"<rect x='{x(start):.1f}' y='{top}' width='{max(2, x(end) - x(start)):.1f}' "
                     f"height='{height - top - bottom}' fill='{shades[n % len(shades)]}'><title>"
                     f"{html.escape(label)}</title></rect>")
        parts.append(f"<text x='{x(start):.1f}' y='{height - bottom + 14 + 12 * (n % 3)}'>"
                     f"{html.escape(label)}</text>")
    colors = (("ok", "#2a9d3a"), ("refused", "#d62828"), ("errors", "#f08c00"), ("calls", "#1d4ed8"))
    for name, color in colors:
        points = " ".join(f"{x(r['t']):.1f},{y(r[name]):.1f}" for r in series)
        parts.append(f"<polyline fill='none' stroke='{color}' stroke-width='1.5' points='{points}'/>")
    for step in range(5):
        value = y_max * step / 4
        parts.append(f"<text x='4' y='{y(value) + 4:.1f}'>{value:.0f}</text>")
    legend = [("renders ok/s", "#2a9d3a"), ("first attempts refused/s", "#d62828"),
              ("render errors/s", "#f08c00"), ("SessionM calls/s", "#1d4ed8")]
    for n, (label, color) in enumerate(legend):
        parts.append(f"<text x='{left + 10 + 190 * n}' y='{top - 6}' fill='{color}'>{label}</text>")
    parts.append(f"<text x='{width - 120}' y='{height - 4}'>seconds from the start</text></svg>")
    path.write_text("\n".join(parts))


def write_report(report: Path, load, sessionm: dict, braze: dict, facts: dict) -> bool:
    """Write the markdown report and its SVG beside it; True when a goal was missed."""
    facts["t0"] = load.run.t0
    goals, figures = evaluate(load, sessionm, braze, facts)
    per_second = timeline(load, sessionm, facts, 1)
    plot = report.with_suffix(".svg")
    svg(per_second, facts["events"], plot)
    rows = timeline(load, sessionm, facts, BUCKET)
    args = facts["args"]
    start_load, end_load = facts["load"]
    memory_start, memory_end = facts["memory"]
    lines = [
        "# Game day" + (" (smoke)" if args["smoke"] else ""),
        "",
        "Written by `make gameday` (bench/gameday.py): one scripted run on loopback. "
        "Two instances (the Procfile's line, 2 workers each) behind the shipped nginx configuration; "
        "Redis master + replica + 3 Sentinels; stand-ins for SessionM (150 ms) and Braze in their own "
        "processes.",
        "",
        f"- Machine: {facts['machine']}; load average at the start {start_load[0]:.2f} / "
        f"{start_load[1]:.2f} / {start_load[2]:.2f}, at the end {end_load[0]:.2f} / {end_load[1]:.2f} / "
        f"{end_load[2]:.2f} "
        "(the machine is shared: figures are noisy).",
        f"- Work: {args['users']:,} users x 3 renders at {args['rate']:.0f} renders/s (2 s timeout, up to 5 "
        f"retries, backoff {args['retry_base']:.0f} s doubling to {args['retry_cap']:.0f} s); "
        f"{args['triggers']} messages through `/v1/braze/trigger` and {args['relayed']} through "
        "`/campaigns/trigger/send`, each with an Idempotency-Key, retried after a connection error or "
        f"a 5xx; `tags import` of {args['rows']:,} "
        f"counter rows and `attributes sync` of {args['rows']:,} users. Run length {facts['end']:.0f} s.",
        "",
        "## Goals",
        "",
        "| what | figure | goal | met |",
        "| --- | --- | --- | --- |",
    ]
    for name, figure, goal, met in goals:
        lines.append(f"| {name} | {figure} | {goal} | {'yes' if met else '**NO**'} |")
    reasons = ", ".join(f"{k}: {v}" for k, v in figures["reasons"].most_common()) or "none"
    lines += [
        "",
        "## Other figures",
        "",
        f"- Renders: {figures['renders']:,}; served stale: {figures['stale']:,}; first attempts "
        f"{figures['first']:,}, of which refused (503): {figures['refused_first']:,}.",
        f"- SessionM calls per second while it hung (all processes): {figures['probes_per_s']}; "
        f"users counted for calls per user: {figures['calm_users']:,}.",
        f"- Reads 2 s after the failover (20, through both instances): {figures['sf_statuses']}.",
        f"- Triggered messages: {figures['messages']}; never sent and reported as failed to their caller: "
        f"{figures['unknown_messages']} ({dict(figures['unknown_finals'])}).",
        f"- Tag rows not counted but reported in the rejects (outcome unknown or refused): "
        f"{figures['tag_reported']}; "
        f"command exit codes {facts['jobs']}.",
        f"- Profiles not checked (the wallet could not be read at the end): {figures['unchecked_profiles']}.",
        f"- Worker memory (RSS, MB, both workers of an instance) at the start {memory_start}, at the end "
        f"{memory_end} (A's killed worker and B's workers are new processes).",
        f"- Every non-2xx attempt by reason: {reasons}.",
        f"- nginx's errors: {facts.get('nginx')}.",
        "",
        "## Timeline",
        "",
        f"![timeline]({plot.name})",
        "",
        "| fault | from s | to s |",
        "| --- | --- | --- |",
    ]
    for start, end, label in facts["events"]:
        lines.append(f"| {label} | {start:.1f} | {end:.1f} |")
    lines += ["", f"Per {BUCKET} s (per second averages; latency of successful renders; the last column is "
              "the most this run's own event loop woke up late: an attempt it timed is late by as much, and "
              "past a few hundred ms its `timeout`s are the load generator's, not the service's):", "",
              "| t (s) | faults | renders ok/s | first attempts refused/s | render errors/s | p50 ms "
              "| p99 ms | SessionM calls/s | load generator late, ms |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        active = "; ".join(label for start, end, label in facts["events"]
                           if start < row["t"] + BUCKET and end >= row["t"])
        lines.append(f"| {row['t']:.0f} | {active} | {row['ok']:.0f} | {row['refused']:.1f} "
                     f"| {row['errors']:.1f} | {row['p50']:.0f} | {row['p99']:.0f} | {row['calls']:.1f} "
                     f"| {row['lag']:.0f} |")
    missed = [g for g in goals if not g[3]]
    lines += ["", "## Verdict", "",
              "Every goal met." if not missed else "Missed: " + "; ".join(g[0] for g in missed) + "."]
    late = [late for _, late in facts.get("lag", ())]
    behind = sum(1 for value in late if value > 0.5) / max(1, len(late))
    if missed and behind > 0.05:
        lines += ["", f"Why: the load generator itself fell behind (its loop woke up more than 0.5 s "
                  f"late {100 * behind:.0f} % of the time, at most {max(late):.1f} s): on this machine it "
                  "cannot drive this rate beside the service, and each attempt it timed late counts as a "
                  "`timeout` that Braze's retries then multiply. Run it again with a lower `--rate` (or on a "
                  "machine with more cores) before reading these misses as the service's."]
    if figures["twice"] or figures["lost"] or figures["wrong"]:
        lines.append(f"Examples: twice {figures['twice']}, lost {figures['lost']}, "
                     f"wrong profiles {figures['wrong']}.")
    report.write_text("\n".join(lines) + "\n")
    return bool(missed)

