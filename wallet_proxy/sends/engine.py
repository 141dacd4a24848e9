"""The trigger engine: runs a `Plan` (see plan.py) against Braze, chunk by chunk, at most once.

Each chunk walks the `ChunkState` machine (chunks.py); with an idempotency key the chunk records are
saved before and after each Braze call, so a repeat resends only what Braze cannot have sent.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..errors import ApiError, OutcomeUnknown
from .chunks import ChunkState, abandon_in_flight, fresh, state_of
from .plan import Plan

log = logging.getLogger(__name__)

_CRASHED = {"status": 504, "code": "outcome_unknown",
            "message": "the send failed unexpectedly after it may have reached Braze"}


class BrazeNotSent(ApiError):
    """Braze answered 2xx with a `notice` (canvas paused or archived): nothing was sent."""

    status, code, message = 422, "braze_not_sent", "Braze accepted the call but sent nothing"


@dataclass
class Outcome:
    """The answer of a run: 201 and a body, or the ApiError to raise; `replayed` for a repeat."""

    body: dict | None
    error: ApiError | None
    replayed: bool = False
    dispatch_ids: list = field(default_factory=list)


class TriggerEngine:
    """Runs plans against Braze: chunk by chunk, recorded in the idempotency store when keyed."""

    def __init__(self, braze, store):
        self.braze = braze
        self.store = store

    def run(self, plan: Plan, key: str | None = None, budget: float | None = None) -> Outcome:
        """Send the chunks of `plan` that still need sending; a repeat of a done key sends nothing.

        `budget`: seconds our own retrying of Braze may take, set by whoever waits for the answer (the
        relay door: WALLET_PROXY_RELAY_BUDGET, since a Braze client gives up after about 2 s); None: the
        Braze client's own retry budget.
        """
        chunks = fresh(plan.sizes)
        owner = None
        if key is not None:
            claim = self.store.begin(key, plan.digest, chunks)
            if claim.replay:
                return answer(plan, claim.record["chunks"], replayed=True)
            chunks, owner = claim.record["chunks"], claim.owner

        def save(done=False):
            if key is not None:
                self.store.record(key, owner, chunks, done)

        try:
            self._send(plan, chunks, save, budget)
        finally:
            abandon_in_flight(chunks, _CRASHED)  # an unexpected error mid-call: Braze may have acted
            save(True)
        return answer(plan, chunks, replayed=False)

    def _send(self, plan: Plan, chunks: list[dict], save, budget: float | None = None) -> None:
        deadline = self.braze.deadline(budget)
        stop: ApiError | None = None
        for chunk in chunks:
            if not state_of(chunk).resendable:
                continue
            if stop is not None:
                # Braze is down or unsure: do not hammer it; these chunks stay resendable.
                chunk.update(state=ChunkState.FAILED.value, error={
                    "status": 503, "code": "not_attempted", "retry_after": stop.retry_after or 1,
                    "message": f"not sent: an earlier chunk failed with {stop.code}; repeat to send it"})
                continue
            chunk["state"] = ChunkState.SENDING.value
            for stale in ("error", "notice", "errors", "braze", "dispatch_id"):
                chunk.pop(stale, None)
            try:
                save()  # recorded (durably) before the call, so a crash mid-call leaves it SENDING -> UNKNOWN
            except ApiError as exc:
                # The mark is not durable (Redis unreachable, no replica acknowledged it): Braze is
                # not called, so this chunk stays resendable.
                chunk.update(state=ChunkState.FAILED.value, error=_error(exc))
                raise
            try:
                accepted = self.braze.send(plan.kind, plan.bodies[chunk["index"]], deadline)
            except OutcomeUnknown as exc:
                chunk.update(state=ChunkState.UNKNOWN.value, error=_error(exc))
                stop = exc
            except ApiError as exc:
                chunk.update(state=ChunkState.FAILED.value, error=_error(exc))
                if exc.status >= 500:
                    stop = exc
            else:
                self._accepted(plan, chunk, accepted)
            save()

    @staticmethod
    def _accepted(plan: Plan, chunk: dict, accepted) -> None:
        chunk.update(dispatch_id=accepted.dispatch_id, braze=accepted.answer)
        if accepted.errors:
            chunk["errors"] = list(accepted.errors)
            log.warning("Braze accepted %s chunk %d (dispatch %s) with non-fatal errors: %s", plan.kind,
                        chunk["index"], accepted.dispatch_id, "; ".join(accepted.errors)[:500])
        if accepted.sent:
            chunk["state"] = ChunkState.SENT.value
            return
        # A canvas paused or archived: Braze answers 201 with a notice and sends nothing.
        log.warning("Braze sent nothing for %s chunk %d (dispatch %s): %s", plan.kind, chunk["index"],
                    accepted.dispatch_id, accepted.notice)
        chunk.update(state=ChunkState.NOT_SENT.value, notice=accepted.notice, error={
            "status": BrazeNotSent.status, "code": BrazeNotSent.code,
            "message": f"Braze accepted the call but sent nothing: {accepted.notice}"})


# Braze's headers a relayed 429/5xx carries on (https://www.braze.com/docs/api/api_limits/)
RELAYED_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After")


def _error(exc: ApiError) -> dict:
    error = {"status": exc.status, "code": exc.code, "message": exc.message, "retry_after": exc.retry_after}
    braze_errors = getattr(exc, "braze_errors", None)
    if braze_errors:
        error["braze_errors"] = list(braze_errors)
    reply = getattr(exc, "reply", None)
    if reply is not None:  # Braze's own 429/5xx, for the relay door to answer as Braze gave it
        error["braze_answer"] = {
            "status": reply.status, "body": reply.data if isinstance(reply.data, dict) else None,
            "headers": {name: str(reply.headers[name])[:64] for name in RELAYED_HEADERS
                        if reply.headers.get(name) is not None}}
    return error


def _public(chunk: dict) -> dict:
    item = {"index": chunk["index"], "recipients": chunk["recipients"]}
    if state_of(chunk) is ChunkState.SENT:
        item["dispatch_id"] = chunk["dispatch_id"]
    else:
        error = chunk.get("error") or {"code": "not_attempted", "message": "not sent yet"}
        item["error"] = {"code": error["code"], "message": error["message"]}
    if chunk.get("errors"):
        item["errors"] = chunk["errors"]
    return item


def answer(plan: Plan, chunks: list[dict], replayed: bool) -> Outcome:
    """Turn chunk states into the door's answer: 201 when every chunk was sent, else the worst error.

    The relay door answers as Braze did: one chunk's 201 is Braze's own body (a `notice` included);
    several chunks are merged into one body of Braze's shape.
    """
    public = [_public(chunk) for chunk in chunks]
    dispatch_ids = [c["dispatch_id"] for c in chunks if state_of(c) is ChunkState.SENT]
    errors = [e for c in chunks for e in c.get("errors", ())]
    failed = [c for c in chunks if state_of(c) is not ChunkState.SENT]
    relayed = plan.door == "relay" and all(state_of(c) is ChunkState.NOT_SENT for c in failed)
    if relayed:
        return Outcome(_relay_body(plan, chunks, public, errors), None, replayed, dispatch_ids)
    if not failed:
        body = {"ok": True, "message": "success", "dispatch_id": dispatch_ids[0],
                "dispatch_ids": dispatch_ids, "chunks": public, "duplicates_dropped": plan.duplicates_dropped}
        if errors:
            body["errors"] = errors
        return Outcome(body, None, replayed, dispatch_ids)
    unknown = [c for c in failed if state_of(c) is ChunkState.UNKNOWN]
    server = [c for c in failed if (c.get("error") or {}).get("status", 503) >= 500]
    worst = (unknown or server or failed)[0]
    error = worst.get("error") or {"status": 503, "code": "upstream_unavailable", "message": "not sent"}
    message = error["message"]
    if len(chunks) > 1:
        message = f"{len(failed)} of {len(chunks)} chunks not sent ({len(dispatch_ids)} sent): {message}"
    retry_after = max((c["error"].get("retry_after") or 0 for c in server if c.get("error")), default=0)
    details = {"dispatch_ids": dispatch_ids, "chunks": public, "duplicates_dropped": plan.duplicates_dropped}
    notices = [c["notice"] for c in failed if c.get("notice")]
    if notices:
        details["notice"] = notices[0]
    if errors:
        details["errors"] = errors
    exc = ApiError(message, status=error["status"], retry_after=retry_after or None, details=details)
    exc.code = error["code"] if error["code"] != "not_attempted" else "upstream_unavailable"
    relayed = error.get("braze_answer") if plan.door == "relay" else None
    if relayed:
        # The relay door answers Braze's 429/5xx as Braze gave it: its status, its body's `message` and
        # `errors`, its X-RateLimit-* headers, so the caller's Braze client decides when to come back.
        exc.status = relayed["status"]
        exc.braze_body = relayed.get("body")
        exc.headers = {k: v for k, v in relayed["headers"].items() if k != "Retry-After"}
        exc.retry_after = error.get("retry_after") or exc.retry_after
    exc.braze_errors = [e for c in failed for e in (c.get("error") or {}).get("braze_errors", ())]
    return Outcome(None, exc, replayed, dispatch_ids)


def _relay_body(plan: Plan, chunks: list[dict], public: list, errors: list) -> dict:
    if len(chunks) == 1 and isinstance(chunks[0].get("braze"), dict):
        body = dict(chunks[0]["braze"])  # Braze's answer as Braze gave it...
        # ...with the fields a Braze client reads on every 2xx (a body that reached us without them --
        # empty, a proxy's page -- was relayed as {} and the client failed with KeyError('message'))
        body.setdefault("message", "success")
        body.setdefault("dispatch_id", chunks[0].get("dispatch_id"))
    else:
        ids = [c["dispatch_id"] for c in chunks if c.get("dispatch_id")]
        body = {"dispatch_id": ids[0] if ids else None, "message": "success", "dispatch_ids": ids,
                "chunks": public}
        if errors:
            body["errors"] = errors
        notices = [c["notice"] for c in chunks if c.get("notice")]
        if notices:
            body["notice"] = notices[0]
    if plan.duplicates_dropped:
        body["duplicates_dropped"] = plan.duplicates_dropped
    return body


def dry_run(plan: Plan) -> dict:
    """What a run of `plan` would send, call by call, without sending (200, nothing recorded)."""
    return {"ok": True, "dry_run": True, "kind": plan.kind, "path": plan.path,
            "calls": [{"index": i, "recipients": n, "body": body}
                      for i, (n, body) in enumerate(zip(plan.sizes, plan.bodies))],
            "duplicates_dropped": plan.duplicates_dropped}
