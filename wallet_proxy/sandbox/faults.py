"""The simulators' switchable faults, in one place (see the FAULTS table in wallet_proxy.sandbox)."""
from __future__ import annotations

from flask import jsonify, request

SLOW = 1.0  # seconds the `fault-slow` prefix adds


def latency_for(sim, fault: str | None) -> float:
    """Seconds this call takes: the `fault-slow` delay, else the simulator's configured latency."""
    return SLOW if fault == "fault-slow" else sim.latency


def delay_headers(seconds: float) -> dict:
    """Ask the SandboxAdapter (or bench/upstream.py) to hold the answer this long."""
    return {"X-Sandbox-Delay": str(seconds)} if seconds else {}


def fault_response(fault: str | None, latency: float):
    """A SessionM-shaped answer for a transport-level fault, or None to answer normally.

    `unknown` is left to each simulator: Connect answers it inside HTTP 200, Core with a 404.
    """
    headers = delay_headers(latency)
    if fault == "fault-500":
        return jsonify(status="error", errors={"code": "internal"}), 500, headers
    if fault == "fault-429":
        return jsonify(status="error", errors={"code": "rate_limited"}), 429, {**headers, "Retry-After": "2"}
    if fault == "fault-timeout":
        return jsonify(status="ok", payload={}), 200, delay_headers(30)
    if fault == "fault-garbage":
        return "<html><body>Bad gateway</body></html>", 200, {**headers, "Content-Type": "text/html"}
    if fault == "fault-auth":
        return jsonify(status="error", errors={"code": "unauthorized"}), 401, headers
    return None


def refuse_without_basic(sim, name: str):
    """Count the call; answer 401 unless it carries Basic credentials (as SessionM does)."""
    sim.count(name)
    if not request.headers.get("Authorization", "").startswith("Basic "):
        return jsonify(status="error", errors={"code": "unauthorized", "message": "Basic auth required"}), 401
    return None
