"""The state machine of one chunk of a triggered send (at most 50 recipients, one Braze call).

```
NEW ──> SENDING ──> SENT        Braze answered 2xx with no notice: never resent
   ^        ├─────> NOT_SENT    Braze answered 2xx with a `notice` (canvas paused/archived): resendable
   |        ├─────> FAILED      Braze cannot have acted (4xx, 429/5xx after retries, no connection)
   |        └─────> UNKNOWN     Braze may have acted (timeout after sending; a lease expired mid-call)
   └── NOT_SENT, FAILED: a repeat with the same key sends them again
```

The states are strings on the wire (idempotency records are JSON, in memory or Redis), so the enum
is a `str` enum: a record read back compares equal to its member.
"""
from __future__ import annotations

from enum import Enum


class ChunkState(str, Enum):
    NEW = "new"
    SENDING = "sending"
    SENT = "sent"
    NOT_SENT = "not_sent"
    FAILED = "failed"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value

    @property
    def resendable(self) -> bool:
        """True when Braze cannot have sent this chunk, so a repeat with the same key sends it."""
        return self in (ChunkState.NEW, ChunkState.NOT_SENT, ChunkState.FAILED)


LEASE_EXPIRED = {"status": 504, "code": "outcome_unknown",
                 "message": "an earlier attempt stopped while sending this chunk; it may have been sent, "
                            "so it is not resent"}


def fresh(sizes) -> list[dict]:
    """The chunk records of a plan whose chunks hold `sizes` recipients, none sent yet."""
    return [{"index": i, "recipients": n, "state": ChunkState.NEW.value} for i, n in enumerate(sizes)]


def state_of(chunk: dict) -> ChunkState:
    return ChunkState(chunk["state"])


def resendable(chunks: list[dict]) -> bool:
    """True when a repeat of this record has something to send."""
    return any(state_of(chunk).resendable for chunk in chunks)


def abandon_in_flight(chunks: list[dict], error: dict) -> None:
    """Chunks caught mid-call (their sender died or failed unexpectedly) may have been sent: UNKNOWN."""
    for chunk in chunks:
        if state_of(chunk) is ChunkState.SENDING:
            chunk["state"] = ChunkState.UNKNOWN.value
            chunk["error"] = dict(error)
