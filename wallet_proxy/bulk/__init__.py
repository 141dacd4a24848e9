"""Bulk jobs over a CSV of users (tags import, prewarm)."""
