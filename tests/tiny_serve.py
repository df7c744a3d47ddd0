"""The serving graph with tiny random models and the text2pose double, for the test modules.

Each serving test module starts Ray + Serve once, in one module-scoped fixture; this helper is
what those fixtures share: tiny PGMM checkpoints, a pose estimator and double "text2pose"
folders, written once, and ``configs/serve/cpu.yaml`` with its model paths swapped for them.
"""

from __future__ import annotations

import copy
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import t2p_double
from ray import cloudpickle
from standins import tiny_pipeline
from t2p_double import SETTINGS_FILE, FakeTextToPose

from slp_pipeline.config import PipelineConfig, load_serve_config

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_serve_config(
    root: Path, max_frames: int | None = None, **settings: Any
) -> tuple[dict[str, Any], PipelineConfig]:
    """Write the tiny models under ``root``; return the serve config dict and its pipeline
    settings. ``max_frames`` raises the text2pose double's cap on frames per sentence;
    ``settings`` replace pipeline settings (``api_keys``, ``cors_origins``, ...).
    The Renderer runs one replica: a second would only compete for a 2-core machine's CPUs."""
    serve_config = copy.deepcopy(load_serve_config(REPO / "configs/serve/cpu.yaml"))
    serve_config["http_options"] = {"host": "127.0.0.1", "port": free_port()}
    for d in serve_config["applications"][0]["deployments"]:
        if d["name"] == "Renderer":
            d["autoscaling_config"]["max_replicas"] = 1
    config = tiny_pipeline(root, serve_config)
    config.text2pose_loader = FakeTextToPose.from_pretrained
    for name, value in settings.items():
        setattr(config, name, value)
    if max_frames:
        for lang in config.text2pose:
            settings = {"max_frames": max_frames}
            (root / "t2p" / lang / SETTINGS_FILE).write_text(json.dumps(settings))
    return serve_config, config


@contextmanager
def running_graph(serve_config: dict[str, Any], config: PipelineConfig) -> Iterator[str]:
    """Ray + Serve with the graph deployed (Ray started by the app: on loopback, see
    :mod:`slp_pipeline.local_ray`), yielding its base URL; both always shut down."""
    import ray
    from ray import serve

    from slp_pipeline.serve_app import run_from_config

    # The double lives in tests/, which replicas cannot import: ship it by value.
    cloudpickle.register_pickle_by_value(t2p_double)
    os.environ["RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"] = "60"
    try:
        run_from_config(serve_config, config)
        http = serve_config["http_options"]
        yield f"http://{http['host']}:{http['port']}"
    finally:
        serve.shutdown()
        ray.shutdown()
        cloudpickle.unregister_pickle_by_value(t2p_double)


def replica_pids(deployment: str, app: str = "slp") -> list[int]:
    """Pids of a deployment's live replicas, found by the process title Ray gives its workers
    (``ray::ServeReplica:<app>:<deployment>[.<method>]``); Ray's state API would need the
    dashboard, which the graph runs without."""
    title = f"ray::ServeReplica:{app}:{deployment}"
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            words = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().split()
        except (OSError, UnicodeDecodeError):  # ended while we looked, or not a Ray worker
            continue
        if words and words[0].split(".")[0] == title:
            pids.append(int(proc.name))
    return pids


def rss_mib(pid: int) -> float:
    """Resident memory of a process (``VmRSS``), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for pid {pid}")
