"""Flow 2: Braze segments -> SessionM tags (webhook relay)."""
