"""A single-host Ray whose every port listens on 127.0.0.1.

The service is one host, not a cluster head, so nothing of Ray needs to be reachable from the
network. Ray (2.60 here) binds its servers to the node's IP address, and ``ray.init`` turns a
loopback ``_node_ip_address`` into the machine's outward address -- unless Ray clusters are
disabled (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read by every Ray process at import). With
that, GCS, raylet, workers, the dashboard agent and the runtime-env agent all listen on
127.0.0.1. One server is left: each Serve replica opens its inter-deployment gRPC server on
``[::]:0`` with no option to change it; :func:`bind_replica_grpc_to_loopback`, installed as a
worker setup hook, makes it listen on 127.0.0.1 too. ``tests/test_serve.py`` lists the
listening sockets of the running graph, so a Ray upgrade that changes any of this is caught.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

LOOPBACK = "127.0.0.1"
DISABLE_CLUSTERS = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
SETUP_HOOK = "slp_pipeline.local_ray.bind_replica_grpc_to_loopback"


def is_loopback_ip(ip: str) -> bool:
    """127.0.0.0/8, ::1, or an IPv4 loopback address mapped into IPv6 (``::ffff:127.0.0.1``)."""
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def init_local_ray(**options: Any) -> None:
    """``ray.init`` of a new local Ray on 127.0.0.1 without the dashboard; ``options`` are
    passed on (e.g. ``log_to_driver``). Fails, with Ray shut down again, if the node is not on
    loopback after all."""
    os.environ.update(DISABLE_CLUSTERS)  # for the processes Ray starts
    import ray
    from ray._private import ray_constants

    # This process imported Ray before the variable was set (tests, `slp demo`): the constant
    # ray.init consults when it resolves the node address must say the same.
    ray_constants.ENABLE_RAY_CLUSTER = False
    ray.init(
        address="local",
        include_dashboard=False,
        _node_ip_address=LOOPBACK,
        runtime_env={"worker_process_setup_hook": SETUP_HOOK},
        **options,
    )
    node_ip = ray.util.get_node_ip_address()
    if not is_loopback_ip(node_ip):
        ray.shutdown()
        raise RuntimeError(f"Ray started on {node_ip}, not on loopback; its ports would be open")


def bind_replica_grpc_to_loopback() -> None:
    """Worker setup hook: a Serve replica's inter-deployment gRPC server listens on loopback.

    Ray Serve binds it to ``[::]:0``; the wrapper passes any other address through unchanged.
    If a Ray upgrade moves the call, nothing is patched and the socket test reports the port.
    """
    try:
        from ray.serve._private import replica
    except ImportError:  # a worker without Serve
        return
    add_port = getattr(replica, "add_port_to_grpc_server", None)
    if add_port is None or getattr(add_port, "loopback_only", False):
        return

    def loopback_port(server: Any, address: str) -> int:
        host, _, port = address.rpartition(":")
        if host in ("[::]", "0.0.0.0", ""):
            address = f"{LOOPBACK}:{port}"
        return add_port(server, address)

    loopback_port.loopback_only = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = loopback_port
