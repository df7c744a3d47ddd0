"""Benchmark: the Ray Serve graph over HTTP -- streaming latency and serving throughput.

Measures, in one run on one machine:

* time to first frame (the first bytes of a ``stream=true`` response) and frames/s for 1, 4
  and 8 concurrent streams;
* throughput (requests/s, frames/s, latency percentiles) with 20 concurrent clients for one
  vs two Renderer replicas and ``@serve.batch`` on vs off (``max_batch_size`` 4 vs 1), with
  the ratios taken between configurations measured side by side.

Models: those of ``configs/serve/cpu.yaml`` when every one of its model folders exists;
otherwise (or with ``--tiny``) tiny random PGMMs at 64 px and a SynthSigner stand-in for
text2pose (tests/standins.py) -- timings then describe the serving machinery, not
the trained models. The output says which, and why.

Clients retry a 503 after ``RETRY_S``, as a polite client would (the config's queue limits
stay in force); retries are counted. Run: ``python bench/serve_latency.py [--tiny]``. Prints a
table and writes ``bench/results/serve_latency.json``.
"""

from __future__ import annotations

import argparse
import copy
import io
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import ray
import requests
import torch
from ray import serve

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(Path(__file__).parent)]  # the stand-ins, common

from common import cpu_name, write_report  # noqa: E402
from standins import tiny_pipeline  # noqa: E402
from tiny_serve import free_port  # noqa: E402

from slp_pipeline.config import PipelineConfig, load_serve_config, pipeline_config  # noqa: E402
from slp_pipeline.serve_app import run_from_config  # noqa: E402

SERVE_CONFIG = REPO / "configs/serve/cpu.yaml"
OUT = Path(__file__).parent / "results" / "serve_latency.json"
SENTENCES = [
    "am tag regnet es im norden",
    "morgen scheint die sonne im süden",
    "in der nacht gibt es nebel an den küsten",
    "am wochenende wird es kälter mit schnee in den bergen",
]
# Throughput requests: one word each (~1 s of video). Every request in flight at a setting's
# deadline is finished and timed, so with 20 clients on a 2-core CPU, 3-word requests made each
# setting take ~2 min (p50 latency 110 s) and `make bench` overran its 15 minutes.
SHORT = ["regen", "sonne", "nebel", "schnee"]
STREAMS = (1, 4, 8)
CLIENTS = 20
RETRY_S = 0.25
TIMEOUT_S = 300


def deploy(serve_config: dict[str, Any], config: PipelineConfig, replicas: int, batch: int) -> None:
    """(Re)deploy with a fixed number of Renderer replicas (no autoscaling: the comparison
    needs both counts for the whole measurement) and the given ``max_batch_size``."""
    sc = copy.deepcopy(serve_config)
    for d in sc["applications"][0]["deployments"]:
        if d["name"] == "Renderer":
            d.pop("autoscaling_config", None)
            d["num_replicas"] = replicas
    config.max_batch_size = batch
    run_from_config(sc, config)


def frame_count(mp4: bytes) -> int:
    """Frames in an mp4 (plain or fragmented), by demuxing only: decoding would take CPU from
    the server being measured."""
    with av.open(io.BytesIO(mp4)) as container:
        return sum(1 for p in container.demux(video=0) if p.size)


@dataclass
class Result:
    seconds: float
    frames: int
    first_byte_s: float | None = None


@dataclass
class Tally:
    results: list[Result] = field(default_factory=list)
    retries: int = 0


def sign(url: str, text: str, stream: bool, tally: Tally) -> Result:
    """One request, retried on 503 until it is served; times from the first attempt."""
    start = time.perf_counter()
    while True:
        body = {"text": text, "language": "de", "stream": stream}
        with requests.post(f"{url}/v1/sign", json=body, stream=stream, timeout=TIMEOUT_S) as r:
            if r.status_code == 503:
                tally.retries += 1
                time.sleep(RETRY_S)
                continue
            r.raise_for_status()
            data, first = bytearray(), None
            for chunk in r.iter_content(chunk_size=None):
                first = first if first is not None else time.perf_counter() - start
                data.extend(chunk)
        result = Result(time.perf_counter() - start, frame_count(bytes(data)), first)
        tally.results.append(result)
        return result


def measure_streams(url: str, concurrent: int) -> dict[str, Any]:
    tally = Tally()
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrent) as pool:
        list(pool.map(lambda i: sign(url, SENTENCES[i % 4], True, tally), range(concurrent)))
    wall = time.perf_counter() - start
    ttff = [r.first_byte_s for r in tally.results]
    return {
        "streams": concurrent,
        "ttff_s_median": round(statistics.median(ttff), 3),
        "ttff_s_max": round(max(ttff), 3),
        "fps_per_stream": round(statistics.median(r.frames / r.seconds for r in tally.results), 1),
        "fps_total": round(sum(r.frames for r in tally.results) / wall, 1),
        "retries": tally.retries,
    }


def measure_throughput(url: str, seconds: float) -> dict[str, Any]:
    """``CLIENTS`` clients send short whole-mp4 requests back to back for ``seconds``; the
    time includes finishing the requests in flight at the deadline."""
    tally = Tally()
    deadline = time.perf_counter() + seconds

    def client(i: int) -> None:
        k = i
        while time.perf_counter() < deadline:
            sign(url, SHORT[k % len(SHORT)], False, tally)
            k += 1

    start = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(client, range(CLIENTS)))
    wall = time.perf_counter() - start
    lat = sorted(r.seconds for r in tally.results)
    return {
        "requests": len(lat),
        "req_per_s": round(len(lat) / wall, 2),
        "fps": round(sum(r.frames for r in tally.results) / wall, 1),
        "latency_s_p50": round(lat[len(lat) // 2], 2),
        "latency_s_p95": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 2),
        "retries": tally.retries,
    }


def machine(config: PipelineConfig) -> dict[str, Any]:
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "device": config.device,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models even if models/ exists")
    parser.add_argument("--seconds", type=float, default=15, help="per throughput setting")
    args = parser.parse_args()

    serve_config = load_serve_config(SERVE_CONFIG)  # a fresh copy
    port = free_port()
    serve_config["http_options"] = {"host": "127.0.0.1", "port": port}
    url = f"http://127.0.0.1:{port}"
    os.chdir(REPO)  # the config's model paths are relative to the repository
    config = pipeline_config(serve_config)
    try:
        config.resolved().check_models()
        missing = "--tiny given" if args.tiny else ""
    except FileNotFoundError as e:
        missing = str(e)
    tmp = tempfile.TemporaryDirectory(prefix="slp-bench-")
    tiny = bool(missing)
    if tiny:
        config = tiny_pipeline(Path(tmp.name), serve_config)
        models = "TINY random PGMMs (64 px) + SynthSigner text2pose stand-in"
        print(f"not using {SERVE_CONFIG.relative_to(REPO)}'s models: {missing}")
    else:
        models = f"trained models from {SERVE_CONFIG.relative_to(REPO)}"
    print(f"models: {models}", flush=True)
    info = machine(config)
    print(f"machine: {info}", flush=True)

    rows: dict[str, Any] = {"streaming": [], "throughput": []}
    try:
        with tmp:
            deploy(serve_config, config, replicas=1, batch=config.max_batch_size)
            sign(url, SENTENCES[0], True, Tally())  # warm-up: first forward, signer cache
            for n in STREAMS:
                row = measure_streams(url, n)
                rows["streaming"].append(row)
                print(f"streams {row}", flush=True)
            for replicas, batch in ((1, 4), (2, 4), (1, 1), (2, 1)):
                deploy(serve_config, config, replicas, batch)
                with ThreadPoolExecutor(2 * replicas) as pool:  # first forward of each replica
                    list(pool.map(lambda t: sign(url, t, False, Tally()), SHORT[: 2 * replicas]))
                row = {"replicas": replicas, "max_batch_size": batch}
                row.update(measure_throughput(url, args.seconds))
                rows["throughput"].append(row)
                print(f"throughput {row}", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()

    tp = {(r["replicas"], r["max_batch_size"]): r["fps"] for r in rows["throughput"]}
    ratios = {
        "2_vs_1_replicas_batch4": round(tp[2, 4] / tp[1, 4], 2),
        "2_vs_1_replicas_batch1": round(tp[2, 1] / tp[1, 1], 2),
        "batch4_vs_batch1_1_replica": round(tp[1, 4] / tp[1, 1], 2),
        "batch4_vs_batch1_2_replicas": round(tp[2, 4] / tp[2, 1], 2),
    }
    info["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]

    print(f"\nmodels: {models}\n")
    print(f"{'streams':>7} {'TTFF med':>9} {'TTFF max':>9} {'fps/stream':>10} {'fps total':>9}")
    for r in rows["streaming"]:
        print(
            f"{r['streams']:>7} {r['ttff_s_median']:>9} {r['ttff_s_max']:>9} "
            f"{r['fps_per_stream']:>10} {r['fps_total']:>9}"
        )
    print(f"\n{CLIENTS} clients, {args.seconds:.0f} s each")
    print(f"{'replicas':>8} {'batch':>5} {'req/s':>6} {'fps':>6} {'p50':>6} {'p95':>6} {'503s':>5}")
    for r in rows["throughput"]:
        print(
            f"{r['replicas']:>8} {r['max_batch_size']:>5} {r['req_per_s']:>6} {r['fps']:>6} "
            f"{r['latency_s_p50']:>6} {r['latency_s_p95']:>6} {r['retries']:>5}"
        )
    print("\nratios (frames/s):", ratios)
    doc = {"models": models, "tiny": tiny, "machine": info, **rows, "ratios": ratios}
    write_report(OUT, doc)


if __name__ == "__main__":
    main()
