"""Flask-only plumbing: request handling, auth, logs, metrics, OpenAPI, operator routes."""
