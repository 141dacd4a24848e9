"""The service as `wsgi:app` builds it, but with SessionM Connect called through requests (the
transport of the low-volume clients) instead of upstream/fast.py: constructed with its own session,
for bench/cpu_per_miss.py to measure the transport choice in the same run. Not for production."""
from wallet_proxy import create_app
from wallet_proxy.settings import Settings
from wallet_proxy.upstream.transport import make_session

_settings = Settings.from_env(implicit_sandbox=False)
app = create_app(_settings, session=make_session(_settings.upstream_concurrency))
