"""Flow 3: SessionM -> Braze triggered sends."""
