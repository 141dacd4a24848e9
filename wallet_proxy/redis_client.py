"""The one Redis client factory: every feature that shares state (wallet cache, single-flight locks,
purge notices, idempotency records, the Braze rate budget) gets its client from `make_client`.

`WALLET_PROXY_REDIS_URL` takes the forms operators run Redis in:

- `redis://[[user]:password@]host:6379/0`, `rediss://...` (TLS; `?ssl_ca_certs=/path/ca.pem` for a
  private CA), `unix:///path/redis.sock?db=0`: one server (redis-py's own URL syntax);
- `redis+sentinel://[[user]:password@]host:26379[,host:26379]/MASTER_NAME[/db]`: the master that the
  Sentinels name, looked up again whenever a connection to it breaks, so a failover is followed
  (https://redis.io/docs/latest/operate/oss_and_stack/management/sentinel/); the password is the
  master's, the Sentinels themselves are asked without one;
- `redis+cluster://[[user]:password@]host:7000[,host:7001]`: Redis Cluster; every key of one user
  carries the user id as its hash tag (see wallet/keys.py), so the user's commands and scripts touch
  one slot (https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/#hash-tags).

Every client has short socket timeouts, no retries and a bounded pool: Redis is an optimisation of
an answer that must leave within 2 s, so a slow or absent Redis is a fast error the callers turn
into a miss (the cache) or a 503 (purges, idempotency), never a wait.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from urllib.parse import unquote

# A healthy Redis answers in well under a millisecond on a LAN; past this it is treated as down.
SOCKET_TIMEOUT = 0.15
# How long a request may wait for a free pooled connection before treating Redis as unusable.
POOL_WAIT = 0.1
SENTINEL_PORT = 26379
CLUSTER_PORT = 6379
SENTINEL, CLUSTER = "redis+sentinel://", "redis+cluster://"
SCHEMES = ("redis://", "rediss://", "unix://", SENTINEL, CLUSTER)


@dataclass(frozen=True)
class Target:
    """What a `redis+sentinel://` or `redis+cluster://` URL names."""

    kind: str  # "sentinel" or "cluster"
    nodes: tuple  # ((host, port), ...)
    username: str | None = None
    password: str | None = None
    master: str | None = None  # Sentinel: the monitored master's name
    db: int = 0


def check_url(url: str) -> None:
    """Raise ValueError saying what is wrong with a WALLET_PROXY_REDIS_URL (never echoing it)."""
    if not url.startswith(SCHEMES):
        raise ValueError("must start with redis://, rediss://, unix://, redis+sentinel:// or "
                         "redis+cluster://")
    if url.startswith((SENTINEL, CLUSTER)):
        parse_multi(url)


def parse_multi(url: str) -> Target:
    """Parse a `redis+sentinel://` or `redis+cluster://` URL; ValueError names the faulty part."""
    kind = "sentinel" if url.startswith(SENTINEL) else "cluster"
    rest = url[len(SENTINEL if kind == "sentinel" else CLUSTER):]
    if "?" in rest:
        raise ValueError(f"redis+{kind}:// URLs take no ?options")
    netloc, _, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    nodes = tuple(_host_port(part, SENTINEL_PORT if kind == "sentinel" else CLUSTER_PORT)
                  for part in netloc.split(","))
    if kind == "cluster":
        if path.strip("/"):
            raise ValueError("redis+cluster:// URLs take no path: a cluster has one database")
        return Target(kind, nodes, username, password)
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise ValueError("redis+sentinel:// needs the master's name: redis+sentinel://host:26379/MASTER_NAME")
    if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError("redis+sentinel:// path must be /MASTER_NAME or /MASTER_NAME/db (db a number)")
    return Target(kind, nodes, username, password, unquote(parts[0]), int(parts[1]) if len(parts) == 2 else 0)


def _host_port(part: str, default_port: int) -> tuple[str, int]:
    part = part.strip()
    if part.startswith("["):  # [IPv6]:port
        host, _, tail = part[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port = part.partition(":")
    if not host:
        raise ValueError("a host is missing in the host:port list")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError("a port in the host:port list is not a number from 1 to 65535")
    return host, int(port) if port else default_port


def make_client(url: str, concurrency: int):
    """A client for `url`: `redis.Redis` (one server or Sentinel's master) or a RedisCluster proxy.

    The pool is sized above the upstream concurrency (every in-flight request's cache reads share
    it, not only the SessionM calls); a request that finds no free connection waits POOL_WAIT, then
    gets an error that the store turns into a miss.
    """
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    size = max(32, 2 * concurrency)
    # No retries: a failed call is a miss at once. (A pooled connection the server closed, after a
    # restart or a failover, is not an error: redis-py finds it readable at checkout and reconnects.)
    options = dict(socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT,
                   retry=Retry(NoBackoff(), 0), health_check_interval=30)
    if url.startswith(SENTINEL):
        return _sentinel_client(parse_multi(url), size, options)
    if url.startswith(CLUSTER):
        return ClusterClient(parse_multi(url), size)
    pool = redis.BlockingConnectionPool.from_url(url, max_connections=size, timeout=POOL_WAIT, **options)
    return redis.Redis(connection_pool=pool)


def _sentinel_client(target: Target, size: int, options: dict):
    from redis import BlockingConnectionPool
    from redis.sentinel import Sentinel, SentinelConnectionPool

    class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
        """Sentinel's master lookup on a bounded pool (SentinelConnectionPool alone is unbounded)."""

    sentinel = Sentinel(list(target.nodes), sentinel_kwargs={
        "socket_timeout": SOCKET_TIMEOUT, "socket_connect_timeout": SOCKET_TIMEOUT,
        "retry": options["retry"]})
    return sentinel.master_for(target.master, connection_pool_class=BlockingSentinelPool,
                               db=target.db, username=target.username, password=target.password,
                               max_connections=size, timeout=POOL_WAIT, **options)


def errors() -> tuple:
    """The exceptions a Redis call may raise (a cluster's topology errors are not RedisErrors)."""
    from redis.exceptions import RedisClusterException, RedisError

    return (RedisError, RedisClusterException)


class ClusterClient:
    """A RedisCluster built on first use, and rebuilt after a failed start.

    redis-py's RedisCluster reads the cluster's topology in its constructor: built eagerly, a
    cluster that is down while the service starts would stop the service from starting, when a
    Redis outage must only ever cost cache misses. Until the cluster answers, every call raises a
    ConnectionError (a RedisError, handled like any Redis failure).
    """

    def __init__(self, target: Target, size: int):
        self.target = target
        self.size = size
        self._cluster = None
        self._lock = threading.Lock()  # one topology read at a time, not one per waiting request
        try:  # the topology read and the command table cost a few hundred ms: not on a request
            self.cluster()
        except errors():
            pass  # the first use tries again

    def cluster(self):
        """The RedisCluster; raises redis.ConnectionError while the topology cannot be read."""
        if self._cluster is not None:
            return self._cluster
        with self._lock:
            if self._cluster is not None:
                return self._cluster
            import redis
            from redis.backoff import NoBackoff
            from redis.cluster import ClusterNode, RedisCluster
            from redis.retry import Retry

            size = self.size

            class NodePool(redis.BlockingConnectionPool):
                """One bounded pool per node (RedisCluster drops a `timeout` option on the way)."""

                def __init__(self, **kwargs):
                    kwargs.update(timeout=POOL_WAIT, max_connections=size)
                    super().__init__(**kwargs)

            (host, port), others = self.target.nodes[0], self.target.nodes[1:]
            try:
                self._cluster = RedisCluster(
                    url=f"redis://{host}:{port}", startup_nodes=[ClusterNode(h, p) for h, p in others],
                    username=self.target.username, password=self.target.password,
                    connection_pool_class=NodePool, socket_timeout=SOCKET_TIMEOUT,
                    socket_connect_timeout=SOCKET_TIMEOUT, health_check_interval=30,
                    retry=Retry(NoBackoff(), 0))
            except errors() as exc:
                raise redis.ConnectionError(f"Redis Cluster unreachable ({type(exc).__name__})") from exc
            return self._cluster

    def get_encoder(self):
        """The default encoder, without reaching the cluster (Script hashes its text with it)."""
        from redis.connection import Encoder

        return Encoder("utf-8", "strict", False)

    def register_script(self, script):
        from redis.commands.core import Script

        return Script(self, script)

    def __getattr__(self, name):
        return getattr(self.cluster(), name)


def publish(client, channel: str, message: str) -> None:
    """Post `message` on `channel`: PUBLISH, or on a cluster SPUBLISH to the channel's shard.

    A cluster's plain PUBLISH reaches the other nodes' subscribers over the cluster bus, after
    the publisher has its reply; a sharded channel lives on one node, so when SPUBLISH returns
    every subscriber's copy is already queued (https://redis.io/docs/latest/develop/interact/pubsub/
    "Sharded Pub/Sub").
    """
    if isinstance(client, ClusterClient):
        client.cluster().spublish(channel, message)
    else:
        client.publish(channel, message)


def subscribe(client, channel: str):
    """A PubSub subscribed to `channel`, once Redis confirmed it (raises a Redis error otherwise).

    On a cluster it holds one connection to the node serving the channel's slot (SSUBSCRIBE).
    Returns (pubsub, message_type) where message_type is the type of the messages to read.
    """
    if isinstance(client, ClusterClient):
        cluster = client.cluster()
        node = cluster.get_redis_connection(cluster.get_node_from_key(channel))
        pubsub, command, kind = node.pubsub(), "ssubscribe", "smessage"
    else:
        pubsub, command, kind = client.pubsub(), "subscribe", "message"
    try:
        getattr(pubsub, command)(channel)
        # No retry on this connection: a silent reconnect would subscribe again and hide that the
        # messages sent meanwhile were lost; the caller must see the error (and drop its near cache).
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        pubsub.connection.retry = Retry(NoBackoff(), 0)
        confirmed = pubsub.get_message(timeout=SOCKET_TIMEOUT)
        if not confirmed or confirmed["type"] not in (command, command.encode()):
            import redis

            raise redis.TimeoutError("no subscription confirmation in time")
    except BaseException:
        pubsub.reset()
        raise
    return pubsub, kind
