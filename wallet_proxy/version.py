"""The one version number: setup.cfg reads it, OpenAPI's `info.version` and `GET /` show it."""

__version__ = "0.2.0"
