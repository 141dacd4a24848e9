"""One sync: a wallet through the wallet route's cache and single flight -> the attributes that changed
-> Braze `/users/track` -> remembered once Braze accepted. No Flask: the route and the CLI share it."""
from __future__ import annotations

import time
from dataclasses import dataclass

from ..errors import ApiError
from ..ids import DEFAULT_CULTURE
from .attributes import SYNCED_AT, attributes, changes, track_object


class AttributesRefused(ApiError):
    """Braze refused this profile's attributes (skipped it in `errors`, or a 4xx): retrying cannot help."""

    status, code, message = 422, "braze_rejected", "Braze refused the profile's attributes"


@dataclass
class Planned:
    """A profile's attributes now, what changed since its last accepted sync, and the object to send."""

    profile_id: str
    attributes: dict
    changed: dict
    obj: dict | None

    @property
    def changed_names(self) -> list:
        return sorted(self.changed) + ([SYNCED_AT] if self.changed else [])


class AttributeSync:
    """Computes and writes a profile's loyalty attributes, sending only what changed."""

    def __init__(self, wallets, braze, state, *, clock=time.time, culture: str = DEFAULT_CULTURE):
        self.wallets = wallets  # wallet.service.WalletService: the route's cache and single flight
        self.braze = braze  # upstream.braze_users.BrazeUsersClient
        self.state = state  # sync.state.*State
        self.clock = clock
        self.culture = culture

    def current(self, seed_id: str, deadline: float) -> dict:
        """The attributes of a SessionM user's wallet now (cached wallet when fresh, else one call)."""
        served = self.wallets.get(seed_id, self.culture, deadline)
        return attributes(served.entry.wallet, self.clock())

    def plan(self, items: list) -> list:
        """[(profile_id, attributes)] -> [Planned], reading the last accepted values in one go."""
        known = self.state.get_many([profile_id for profile_id, _ in items])
        now = self.clock()
        planned = []
        for profile_id, current in items:
            changed = changes(known.get(profile_id), current)
            planned.append(Planned(profile_id, current, changed,
                                   track_object(profile_id, changed, now) if changed else None))
        return planned

    def write(self, planned: list, deadline: float | None = None) -> dict:
        """Send the changed profiles (at most 75) in one `/users/track` call; remember what Braze accepted.

        Returns {profile_id: reason} for the profiles Braze refused (they are not remembered, so the
        next sync sends them again). Raises the client's ApiError when nothing could be sent.
        """
        sending = [p for p in planned if p.obj is not None]
        if not sending:
            return {}
        result = self.braze.track([p.obj for p in sending], deadline)
        self.state.put_many({sending[i].profile_id: sending[i].attributes for i in result.accepted})
        return {sending[i].profile_id: reason for i, reason in result.rejected.items()}

    def sync_one(self, profile_id: str, seed_id: str, deadline: float, braze_deadline: float) -> Planned:
        """Sync one profile (the route): raise AttributesRefused when Braze refused it."""
        (planned,) = self.plan([(profile_id, self.current(seed_id, deadline))])
        refused = self.write([planned], braze_deadline)
        if profile_id in refused:
            raise AttributesRefused(f"Braze refused the attributes: {refused[profile_id][:200]}")
        return planned
