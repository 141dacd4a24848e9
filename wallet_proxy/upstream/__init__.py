"""Flask-free clients of SessionM Connect, SessionM Core and Braze, and their shared transport."""
