"""Flow 1: the offer wallet at send time (Connected Content)."""
