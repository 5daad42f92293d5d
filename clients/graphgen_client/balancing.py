"""A replica set behind one client: the target naming several servers, health-aware round robin, retries.

* ``address`` may name one server (``host:port``), a DNS name that resolves to several
  (``dns:///graphgen.ns.svc.cluster.local:8001``, a Kubernetes headless Service), or a list
  (``127.0.0.1:8001,127.0.0.1:8002``, turned into gRPC's ``ipv4:``/``ipv6:`` target).
* For a replica set (a list, or a target with a scheme: ``dns:``, ``ipv4:``...) gRPC's
  ``round_robin`` spreads calls over every address, and client-side health checking
  (``healthCheckConfig``) skips a server whose health says NOT_SERVING — one being stopped keeps
  answering for its ``--pre-stop-delay`` while the calls move elsewhere. A plain ``host:port``
  is one server, asked whatever its health says (``graphgen-client health`` and ``models``
  must reach a server whose models all failed to load, to say so).
* Idempotent calls (Classify, ModelInfer, ListModels) that end UNAVAILABLE are sent again after
  a bounded, jittered exponential backoff, within the call's overall timeout.
"""

from __future__ import annotations

import ipaddress
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")
SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": ""},  # the server as a whole (graphgen-server's "")
    }
)
# A restarted replica is dialled again within seconds (gRPC's default backoff grows to 120 s),
# and a DNS name is resolved again at most every second after a connection fails (default 30 s:
# a rolling update replacing pods faster than that would leave only gone addresses).
RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 5000),
    ("grpc.dns_min_time_between_resolutions_ms", 1000),
]


GRPC_PORT = 8001  # graphgen-server's (and Triton's) gRPC port


def with_default_port(address: str, port: int = GRPC_PORT) -> str:
    """``address`` with ``port`` given to each server in it that names none.

    gRPC dials port 443 (HTTPS's) for a bare host: ``--address 127.0.0.1`` would never reach a
    graphgen-server on this machine. Lists, ``dns:``/``ipv4:``/``ipv6:`` targets and bracketed or
    bare IPv6 addresses get it too; other schemes (``unix:``...) have no port."""
    address = address.strip()
    if address.startswith("dns:"):
        rest = address.removeprefix("dns:")
        authority = rest[: rest.find("/", 2) + 1] if rest.startswith("//") else ""  # dns://[authority]/name
        return "dns:" + authority + _with_port(rest[len(authority) :], port)
    for scheme in ("ipv4:", "ipv6:"):
        if address.startswith(scheme):
            return scheme + ",".join(_with_port(part, port) for part in address.removeprefix(scheme).split(","))
    if address.startswith(SCHEMES):
        return address
    return ",".join(_with_port(part.strip(), port) if part.strip() else "" for part in address.split(","))


def _with_port(host: str, port: int) -> str:
    if not host or (host.startswith("[") and "]:" in host):
        return host
    if host.startswith("["):
        return f"{host}:{port}"
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"  # (a bare IPv6 address: its last group is no port)
    except ValueError:
        pass
    return host if ":" in host else f"{host}:{port}"


class TargetError(ValueError):
    """The address names no server gRPC can dial."""


def _split_host_port(address: str) -> tuple[str, str]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise TargetError(f"{address!r}: expected host:port")
    return host.removeprefix("[").removesuffix("]"), port


def is_replica_set(address: str) -> bool:
    """A list of servers, or a target with a scheme (``dns:///name:port`` resolving to several)."""
    address = address.strip()
    return "," in address or address.startswith(SCHEMES)


def channel_options(address: str) -> list[tuple[str, str | int]]:
    """Reconnection settings, and for a replica set health-checked round robin."""
    balancing = [("grpc.service_config", SERVICE_CONFIG)] if is_replica_set(address) else []
    return [*balancing, *RECONNECT_OPTIONS]


def channel_target(address: str) -> str:
    """The gRPC target for ``address``: unchanged unless it lists several ``ip:port`` separated by commas."""
    address = address.strip()
    if "," not in address or address.startswith(SCHEMES):
        return address
    hosts = [_split_host_port(part.strip()) for part in address.split(",") if part.strip()]
    try:
        versions = {ipaddress.ip_address(host).version for host, _ in hosts}
    except ValueError:
        raise TargetError(
            f"{address!r}: a list of servers must give IP addresses (gRPC resolves no list of names); "
            "for names, use one DNS name that resolves to every server (dns:///name:port)"
        ) from None
    if len(versions) > 1:
        raise TargetError(f"{address!r}: IPv4 and IPv6 addresses cannot be mixed in one list")
    if versions == {4}:
        return "ipv4:" + ",".join(f"{host}:{port}" for host, port in hosts)
    return "ipv6:" + ",".join(f"[{host}]:{port}" for host, port in hosts)


@dataclass(frozen=True)
class RetryPolicy:
    """UNAVAILABLE calls are tried up to ``attempts`` times in all; before try n+1 the client waits a
    random time up to min(max_backoff_s, initial_backoff_s * multiplier**(n-1)) ("full jitter", so
    clients refused together do not come back together). ``RetryPolicy(attempts=1)``: no retry."""

    attempts: int = 5
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 1.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if not 0 <= self.initial_backoff_s <= self.max_backoff_s or self.multiplier < 1:
            raise ValueError(f"backoff must grow from initial_backoff_s up to max_backoff_s: {self}")

    def backoff_s(self, retry: int) -> float:
        """The longest wait before retry number ``retry`` (1 for the first)."""
        return min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (retry - 1))


Response = TypeVar("Response")


def call_with_retries(
    send: Callable[[float], Response],
    timeout: float,
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    jitter: Callable[[float], float] = lambda top: random.uniform(0, top),
    on_retry: Callable[[grpc.RpcError], None] | None = None,
) -> Response:
    """``send(time_left)`` until it returns, raises anything but UNAVAILABLE, or attempts or time run out."""
    deadline = time.monotonic() + timeout
    for attempt in range(1, policy.attempts + 1):
        try:
            return send(max(deadline - time.monotonic(), 0.001))
        except grpc.RpcError as error:
            if error.code() is not grpc.StatusCode.UNAVAILABLE or attempt == policy.attempts:
                raise
            wait = jitter(policy.backoff_s(attempt))
            if time.monotonic() + wait >= deadline:
                raise
            if on_retry is not None:
                on_retry(error)
            sleep(wait)
    raise AssertionError("unreachable: the last attempt returns or raises")
