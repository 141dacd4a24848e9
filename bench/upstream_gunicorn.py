"""gunicorn settings of the SessionM stand-in (bench/upstream.py).

Its own file, so gunicorn does not pick up the service's ./gunicorn.conf.py (whose start-up checks
and hooks are the service's, not the stand-in's).
"""
worker_class = "gevent"
workers = 1
worker_connections = 10000
control_socket_disable = True
