"""Loyalty attributes into Braze profiles: the route, the change set and what was last synced."""
