"""What Braze's REST API accepts, said once (pure: no Flask, no requests).

The sends' planner (sends/plan.py), the Braze client (upstream/braze.py) and the Braze simulator
check against these, each with its public page:

- at most 50 recipients per trigger call --
  https://braze.com/docs/api/endpoints/messaging/send_messages/post_send_triggered_campaigns
- a properties object (`trigger_properties`, `context`, `canvas_entry_properties`) at most 50 KB --
  https://braze.com/docs/api/objects_filters/trigger_properties_object. Measured on the bytes we
  send: `encode` is the one encoder of a trigger body, compact UTF-8 (non-ASCII as UTF-8, never as
  6-byte `\\u` escapes), so what is measured is what Braze receives.
- recipients: exactly one identifier each; a recipient listed twice is sent once with the properties
  of its last occurrence -- https://www.braze.com/docs/api/objects_filters/recipient_object
"""
from __future__ import annotations

from . import jsoncodec

PATHS = {"campaign": "/campaigns/trigger/send", "canvas": "/canvas/trigger/send"}
RECIPIENTS_PER_CALL = 50
MAX_PROPERTIES_BYTES = 50 * 1024
IDENTIFIERS = ("external_user_id", "user_alias", "braze_id", "email")


def encode(body) -> bytes:
    """The bytes of a body as sent to Braze: compact JSON, UTF-8."""
    return jsoncodec.dumps(body)


def properties_problem(value) -> str | None:
    """Why a properties object is over Braze's limit, as sent; None when it fits."""
    size = len(encode(value))
    if size > MAX_PROPERTIES_BYTES:
        return f"is {size} bytes as sent; Braze takes at most {MAX_PROPERTIES_BYTES} (50 KB)"
    return None
