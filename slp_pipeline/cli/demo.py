"""``slp demo``: the main job, end to end through the Ray Serve graph.

Starts the graph of ``configs/serve/cpu.yaml`` on a private local Ray (127.0.0.1, no
dashboard), sends one German and one Chinese sentence over HTTP exactly as a client would, writes
the returned mp4s and shuts everything down again -- so a fresh machine proves in one command that
text → text2pose → heatmaps → PGMM → mp4 works on the shipped models.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from slp_pipeline.config import DEFAULT_CONFIG, load_serve_config

SENTENCES = {
    "de": "Morgen regnet es im Norden, im Süden scheint die Sonne.",
    "zh": "你好，今天天气很好。",
}


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser(
        "demo", help="start the Ray Serve graph and sign a German and a Chinese sentence"
    )
    demo.add_argument("--out", type=Path, default=Path("outputs/demo"))
    demo.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    demo.add_argument("--signer", default="default")
    demo.add_argument("--de", default=SENTENCES["de"], help="the German sentence")
    demo.add_argument("--zh", default=SENTENCES["zh"], help="the Chinese sentence")
    demo.set_defaults(func=run_demo)


def _post(url: str, body: dict, timeout: float = 300) -> bytes:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as e:
        raise ValueError(f"{url} answered {e.code}: {e.read().decode(errors='replace')}") from e


def run_demo(args: argparse.Namespace) -> int:
    # Read and fitted to this host like `slp serve` does (device auto, precision, GPUs per
    # Renderer replica), and before Ray is imported: a bad config costs no seconds.
    serve_config = load_serve_config(args.config)
    import ray
    from ray import serve

    from slp_pipeline.local_ray import init_local_ray
    from slp_pipeline.serve_app import run_from_config

    http = serve_config.get("http_options") or {}
    base = f"http://{http.get('host', '127.0.0.1')}:{http.get('port', 8000)}"
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
    start = time.perf_counter()
    print(f"starting the Ray Serve graph from {args.config} ...", flush=True)
    try:
        # Started here (not in run_from_config) only to keep the replicas' logs off the
        # terminal: the demo prints its own summary; `slp serve` shows the full logs.
        init_local_ray(log_to_driver=False, logging_level=logging.WARNING)
        run_from_config(serve_config)
        print(f"graph up in {time.perf_counter() - start:.0f} s at {base}", flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        for language in ("de", "zh"):
            text = getattr(args, language)
            t0 = time.perf_counter()
            video = _post(
                f"{base}/v1/sign",
                {"text": text, "language": language, "signer": args.signer, "format": "mp4"},
            )
            path = args.out / f"{language}.mp4"
            path.write_bytes(video)
            print(f"[{language}] {text}")
            print(
                f"     video:   {path}  ({len(video) / 1024:.0f} KiB, "
                f"{time.perf_counter() - t0:.1f} s)",
                flush=True,
            )
    finally:
        serve.shutdown()
        ray.shutdown()
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0
