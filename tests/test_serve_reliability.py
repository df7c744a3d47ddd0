"""Reliability of the Ray Serve graph: sustained load, a renderer replica killed mid-run, and
memory over a minute-long stream.

A module of its own, with its own single module-scoped fixture starting Ray + Serve, because
it raises the text2pose double's frame cap (for a 1500-frame stream) and kills a replica --
neither of which the tests of ``test_serve`` should see. Memory is the resident set (RSS) of
the replica processes, read from ``/proc``, so these tests run on Linux only.
"""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import av
import pytest
import requests
from tiny_serve import replica_pids, rss_mib, running_graph, tiny_serve_config

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads RSS from /proc")

STREAM_FRAMES = 1500  # 60 s of video at 25 fps
LONG_TEXT = " ".join("abcdefghij"[i % 10] for i in range(188))  # 188 words x 8 -> 1500 frames
WORDS = ["regen", "sonne", "wind", "schnee", "nebel"]  # one word: 8 frames, one render chunk
SIGNERS = ["default", "synth-11"]
RENDERERS = ["full", "tpsmm"]
CLIENTS = 20
REQUESTS = 200
WARMUP_REQUESTS = 60
REQUEST_TIMEOUT_S = 60  # far above any healthy answer here: a request this slow has hung
DEPLOYMENTS = ("SignAPI", "Text2Pose", "Renderer")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("serve")
    with running_graph(*tiny_serve_config(root, max_frames=STREAM_FRAMES)) as url:
        yield url


@dataclass
class Outcome:
    """What a client saw: an HTTP status, or ``None`` with the error when there was none."""

    status: int | None
    content_type: str = ""
    retry_after: str | None = None
    body: bytes = b""
    error: str = ""

    @property
    def well_formed(self) -> bool:
        """A video, or a JSON 503 that says when to retry -- the only answers load may get."""
        if self.status == 200:
            return self.content_type == "video/mp4" and self.body[4:8] == b"ftyp"
        return (
            self.status == 503
            and self.content_type == "application/json"
            and bool(self.retry_after)
            and b'"error"' in self.body
        )


def _request(url: str, i: int) -> Outcome:
    body = {
        "text": WORDS[i % len(WORDS)],
        "signer": SIGNERS[i % len(SIGNERS)],
        "renderer": RENDERERS[i // len(SIGNERS) % len(RENDERERS)],
    }
    try:
        r = requests.post(f"{url}/v1/sign", json=body, timeout=REQUEST_TIMEOUT_S)
    except requests.RequestException as e:
        return Outcome(None, error=repr(e))
    return Outcome(
        r.status_code, r.headers.get("content-type", ""), r.headers.get("Retry-After"), r.content
    )


def _replica_rss() -> dict[str, float]:
    """MiB per deployment (each runs one replica here)."""
    out = {}
    for name in DEPLOYMENTS:
        [pid] = replica_pids(name)
        out[name] = rss_mib(pid)
    return out


def test_load_is_answered_in_full_without_memory_growth(server: str) -> None:
    """200 requests from 20 concurrent clients: each answered with a video or a JSON 503 +
    Retry-After, none lost, and the replicas' memory flat after a warm-up.

    Growth bounds, from measurements on the 2-core dev machine: after the warm-up, the 200
    requests grew SignAPI by 2-10 MiB, Text2Pose by < 1 MiB and the Renderer by 54-99 MiB.
    The Renderer's growth is its allocator's high-water mark rising as new batch compositions
    (1-4 chunks, two models) allocate transient activations -- one 4-chunk forward pass
    allocates ~200 MiB -- and it levels off: in longer runs it stayed within 1 MiB per 60
    requests after ~250 requests. So the bounds catch a leak of >= 0.16 MiB per request in
    the ingress or Text2Pose and >= 0.8 MiB in the Renderer (e.g. keeping each batch's
    activations or the signer state per request); smaller leaks need longer runs than a unit
    test can afford.
    """
    with ThreadPoolExecutor(CLIENTS) as pool:
        # The warm-up takes each replica near its high-water mark: allocator arenas of the
        # worker threads, batch-sized activations, the signer caches.
        warmup = list(pool.map(partial(_request, server), range(WARMUP_REQUESTS)))
        before = _replica_rss()
        outcomes = list(pool.map(partial(_request, server), range(REQUESTS)))
        after = _replica_rss()

    assert all(o.well_formed for o in warmup)
    assert len(outcomes) == REQUESTS  # none lost
    bad = [(o.status, o.content_type, o.body[:200], o.error) for o in outcomes if not o.well_formed]
    assert not bad, bad
    assert sum(o.status == 200 for o in outcomes) >= REQUESTS // 2  # shedding is the exception
    growth = {name: after[name] - before[name] for name in DEPLOYMENTS}
    assert growth["SignAPI"] < 32 and growth["Text2Pose"] < 32, (before, after)
    assert growth["Renderer"] < 160, (before, after)


def _stream(
    url: str,
    text: str,
    renderer: str,
    on_chunk: Callable[[bytes], None] = lambda chunk: None,
) -> tuple[bytes, requests.RequestException | None]:
    """Read a streamed mp4 to its end; returns the bytes received and the error that cut it."""
    body = {"text": text, "stream": True, "renderer": renderer}
    data = bytearray()
    try:
        with requests.post(
            f"{url}/v1/sign", json=body, stream=True, timeout=REQUEST_TIMEOUT_S
        ) as r:
            if not r.ok:
                _ = r.content  # read the JSON error before the connection closes
                r.raise_for_status()
            for chunk in r.iter_content(chunk_size=None):
                data.extend(chunk)
                on_chunk(chunk)
    except requests.RequestException as e:
        return bytes(data), e
    return bytes(data), None


def test_admitted_streams_are_never_cut_under_load(server: str) -> None:
    """12 concurrent 3-chunk streams keep up to 36 chunks in flight, more than the Renderer
    admits (8 ongoing + 16 queued): each stream is shed at its start (a JSON 503) or played
    to its end -- a full queue met by a later chunk must not cut a stream that has begun."""
    text = "a b c d e"  # 5 words: 40 frames in 3 chunks

    def one(i: int) -> tuple[bytes, requests.RequestException | None]:
        return _stream(server, text, RENDERERS[i % 2])

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, range(12)))
    for data, error in results:
        if error is not None:
            assert isinstance(error, requests.HTTPError), error  # an answer, not a cut stream
            answer = error.response
            assert answer.status_code == 503 and "error" in answer.json(), answer.text
            assert answer.headers.get("Retry-After"), answer.headers
        else:
            with av.open(io.BytesIO(data)) as container:
                assert sum(1 for p in container.demux(video=0) if p.size) == 40


def test_killed_renderer_replica_is_replaced(server: str) -> None:
    """SIGKILL the Renderer replica while a stream and 20 requests are in flight.

    What happens, and is asserted: requests whose response had not started get a JSON 503 with
    Retry-After (the dead replica surfaces as ``RayActorError``, which the app maps), or a
    video if their frames were rendered before the kill; none hangs. A stream already under
    way is cut off -- its 200 was sent -- so its client sees an incomplete chunked body (an
    error), never a clean but truncated video. Serve starts a new replica; later requests
    succeed.
    """
    [victim] = replica_pids("Renderer")
    first_bytes = threading.Event()
    with ThreadPoolExecutor(CLIENTS + 1) as pool:
        # The tiny PGMM, not the skeleton: its 1500 frames take tens of seconds, so the stream
        # is certainly still being rendered when the replica dies (on a fast machine the
        # skeleton's finished within the half second below).
        stream = pool.submit(_stream, server, LONG_TEXT, "full", lambda chunk: first_bytes.set())
        assert first_bytes.wait(REQUEST_TIMEOUT_S)
        pending = [pool.submit(_request, server, i) for i in range(CLIENTS)]
        time.sleep(0.5)  # let them reach the renderer
        assert not stream.done(), "the stream ended before the kill: the test's premise failed"
        os.kill(victim, signal.SIGKILL)
        outcomes = [f.result() for f in pending]
        _, cut = stream.result()

    summary = [(o.status, o.content_type, o.body[:100], o.error) for o in outcomes]
    assert all(o.well_formed for o in outcomes), summary
    assert isinstance(cut, requests.exceptions.ChunkedEncodingError), cut

    deadline = time.monotonic() + 60
    while (outcome := _request(server, 0)).status != 200 and time.monotonic() < deadline:
        assert outcome.well_formed, (outcome.status, outcome.body[:200], outcome.error)
        time.sleep(1)
    assert outcome.well_formed and outcome.status == 200
    assert replica_pids("Renderer") not in ([], [victim])


def test_minute_long_stream_keeps_memory_flat(server: str) -> None:
    """1500 streamed frames (60 s of video) keep the replicas' RSS flat: neither the ingress nor
    the renderer holds on to frames.

    The skeleton renderer draws 256-px frames, 281 MiB for the whole stream, so keeping them
    anywhere would break the 64 MiB bound four times over (measured spread after the warm-up:
    0-12 MiB). The tiny PGMM's 64-px frames would total only 18 MiB, less than its activations
    swing between two forward passes (~110 MiB), so it would prove nothing here.
    """
    # Warm-up to the replicas' high-water marks: 320 frames through the encoder, thread arenas.
    assert _stream(server, LONG_TEXT[:80], "skeleton")[1] is None
    pids = {name: replica_pids(name)[0] for name in ("SignAPI", "Renderer")}
    samples: dict[str, list[float]] = {name: [] for name in pids}
    last = 0.0

    def sample(chunk: bytes) -> None:
        nonlocal last
        if time.monotonic() - last > 0.2:
            last = time.monotonic()
            for name, pid in pids.items():
                samples[name].append(rss_mib(pid))

    data, error = _stream(server, LONG_TEXT, "skeleton", sample)
    assert error is None
    with av.open(io.BytesIO(data)) as container:
        assert sum(1 for _ in container.decode(video=0)) == STREAM_FRAMES
    assert len(samples["SignAPI"]) >= 10  # sampled throughout, not just at the ends
    for name, rss in samples.items():
        assert max(rss) - min(rss) < 64, (name, rss)
