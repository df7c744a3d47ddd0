"""``POST /v1/animate`` end to end over HTTP: a driving clip's motion on a registered signer.

One module-scoped fixture starts Ray + Serve with the tiny graph of ``tiny_serve`` (random
renderers at 64 px, the skeleton at 256 px). Driving clips are small ``.npz``/``.pose`` files
made here; an mp4 is labelled by MediaPipe only in the no-person case (a 10-frame blank clip,
about a second) and in the slow test with a real signer's video.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
import requests
from tiny_serve import running_graph, tiny_serve_config

from pgmm.pose.layout import WB
from pgmm.pose.sequence import PoseSequence
from pgmm.video import VideoWriter, probe, read_video
from slp_pipeline.config import PipelineConfig
from slp_pipeline.synthesize import Synthesizer

NPZ = {"Content-Type": "application/x-npz"}
POSE = {"Content-Type": "application/x-pose"}
MP4 = {"Content-Type": "video/mp4"}
FRAMES = 30  # two render chunks of 16 frames, the second one short


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, PipelineConfig]]:
    serve_config, config = tiny_serve_config(tmp_path_factory.mktemp("serve"))
    with running_graph(serve_config, config) as url:
        yield url, config


@pytest.fixture(scope="module")
def server(graph: tuple[str, PipelineConfig]) -> str:
    return graph[0]


def _driving(frames: int = FRAMES, scale: float = 1.0) -> PoseSequence:
    """Two shoulders held still and a right wrist circling in front of them, at 25 fps
    (``scale`` 0: every point at the origin, a body with no shoulders to measure)."""
    data = np.zeros((frames, 133, 3), np.float32)
    data[:, WB["left_shoulder"]] = (0.6, 0.5, 1.0)
    data[:, WB["right_shoulder"]] = (0.4, 0.5, 1.0)
    angle = np.linspace(0, 2 * np.pi, frames)
    data[:, WB["right_wrist"], 0] = 0.45 + 0.1 * np.cos(angle)
    data[:, WB["right_wrist"], 1] = 0.6 + 0.1 * np.sin(angle)
    data[:, WB["right_wrist"], 2] = 1.0
    data[..., :2] *= scale
    return PoseSequence(data, 25.0, "wholebody133", 256, 256)


def _file_bytes(seq: PoseSequence, tmp_path: Path, suffix: str) -> bytes:
    path = tmp_path / f"driving{suffix}"
    (seq.save_pose if suffix == ".pose" else seq.save)(path)
    return path.read_bytes()


def _blank_mp4(tmp_path: Path, frames: int) -> bytes:
    """A grey clip with nobody in it, at 25 fps."""
    path = tmp_path / "blank.mp4"
    with VideoWriter(path, fps=25) as writer:
        writer.write(np.full((frames, 64, 64, 3), 128, np.uint8))
    return path.read_bytes()


def _animate(
    server: str, data: bytes, headers: dict[str, str], timeout: float = 180, **params: Any
) -> requests.Response:
    return requests.post(
        f"{server}/v1/animate", data=data, headers=headers, params=params, timeout=timeout
    )


def _decode(data: bytes, tmp_path: Path) -> tuple[np.ndarray, float]:
    path = tmp_path / "out.mp4"
    path.write_bytes(data)
    return read_video(path)


def test_a_pose_file_drives_the_signer_frame_for_frame(server: str, tmp_path: Path) -> None:
    """One output frame per driving frame at the clip's rate, and the drawn figure moves."""
    r = _animate(server, _file_bytes(_driving(), tmp_path, ".npz"), NPZ)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "video/mp4"
    frames, fps = _decode(r.content, tmp_path)
    assert frames.shape == (FRAMES, 64, 64, 3) and fps == 25
    r = _animate(server, _file_bytes(_driving(), tmp_path, ".pose"), POSE, renderer="skeleton")
    assert r.status_code == 200, r.text
    frames, fps = _decode(r.content, tmp_path)
    assert frames.shape == (FRAMES, 256, 256, 3) and fps == 25
    assert np.abs(frames[1:].astype(int) - frames[:-1]).mean(axis=(1, 2, 3)).min() > 0.01


def test_the_same_frames_as_slp_animate(graph: tuple[str, PipelineConfig], tmp_path: Path) -> None:
    """The endpoint and the command share the path from clip to frames: the skeleton drawn
    for a signer at 12.5 fps is the same picture (up to the two encoders' rounding)."""
    server, config = graph
    npz = tmp_path / "driving.npz"
    _driving().save(npz)
    params = {"renderer": "skeleton", "signer": "synth-11", "fps": 12.5}
    r = _animate(server, npz.read_bytes(), NPZ, **params)
    assert r.status_code == 200, r.text
    served, fps = _decode(r.content, tmp_path)
    out = Synthesizer(config).animate(npz, tmp_path / "cli.mp4", progress=False, **params)
    local, local_fps = read_video(out)
    assert fps == local_fps == 12.5 and abs(len(served) - FRAMES / 2) <= 1
    assert served.shape == local.shape
    assert np.abs(served.astype(int) - local).mean() < 2.0


def test_streams_fragmented_mp4(server: str, tmp_path: Path) -> None:
    data = _file_bytes(_driving(), tmp_path, ".npz")
    url = f"{server}/v1/animate"
    with requests.post(url, data=data, headers=NPZ, params={"stream": "true"}, stream=True,
                       timeout=180) as r:  # fmt: skip
        assert r.status_code == 200, r.text
        chunks = [c for c in r.iter_content(chunk_size=None) if c]
    assert len(chunks) >= 2  # bytes arrived before the whole video was rendered
    frames, _ = _decode(b"".join(chunks), tmp_path)
    assert len(frames) == FRAMES


BAD = [  # (case, body, headers, params, status, words in the message)
    ("no type", "npz", {}, {}, 415, "Content-Type (none) is not accepted"),
    ("text", "npz", {"Content-Type": "text/plain"}, {}, 415, "application/x-npz"),
    ("octets", "npz", {"Content-Type": "application/octet-stream"}, {}, 415, "video/mp4"),
    ("empty", "empty", NPZ, {}, 400, "the body is empty"),
    ("signer", "npz", NPZ, {"signer": "nobody"}, 404, "unknown signer 'nobody'"),
    ("renderer", "npz", NPZ, {"renderer": "nope"}, 422, "unknown renderer 'nope'"),
    ("fps", "npz", NPZ, {"fps": 1000}, 422, "fps must be in"),
    ("max 0", "npz", NPZ, {"max_seconds": 0}, 422, "max_seconds"),
    ("max 1h", "npz", NPZ, {"max_seconds": 3600}, 422, "max_seconds"),
    ("bad mp4", "junk", MP4, {}, 422, "the driving clip"),
    ("bad pose", "junk", POSE, {}, 422, "the driving clip: not a readable .pose file"),
    ("bad npz", "junk", NPZ, {}, 422, "the driving clip: not a PoseSequence .npz"),
    ("nobody npz", "nobody", NPZ, {}, 422, "no usable shoulders"),
    ("nobody mp4", "blank", MP4, {}, 422, "MediaPipe found a person in only 0 of 10 frames"),
    ("long npz", "npz", NPZ, {"max_seconds": 1}, 422, "1.2 s of poses is longer than 1 s"),
    ("long mp4", "long", MP4, {"max_seconds": 1}, 422, "2.0 s is longer than the 1 s"),
]


@pytest.mark.parametrize(
    ("body", "headers", "params", "status", "message"),
    [case[1:] for case in BAD],
    ids=[case[0] for case in BAD],
)
def test_bad_requests_get_one_json_error(
    server: str,
    tmp_path: Path,
    body: str,
    headers: dict[str, str],
    params: dict[str, Any],
    status: int,
    message: str,
) -> None:
    """Each refusal: its status, the ``{"error": ...}`` shape, one line that says what is
    wrong, and not the server's temporary path."""
    data = {
        "npz": lambda: _file_bytes(_driving(), tmp_path, ".npz"),
        "nobody": lambda: _file_bytes(_driving(scale=0.0), tmp_path, ".npz"),
        "empty": lambda: b"",
        "junk": lambda: b"not a driving clip at all",
        "blank": lambda: _blank_mp4(tmp_path, 10),
        "long": lambda: _blank_mp4(tmp_path, 50),
    }[body]()
    r = _animate(server, data, headers, **params)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    error = r.json()
    assert set(error) == {"error"} and message in error["error"], error
    assert "\n" not in error["error"] and "/tmp" not in error["error"]


def test_oversized_clip_is_refused_before_its_body_is_read(server: str) -> None:
    """A declared 1 GB body gets 413 although not one byte of it is sent."""
    host, port = server.removeprefix("http://").split(":")
    head = (
        f"POST /v1/animate HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: video/mp4\r\n"
        "Content-Length: 1000000000\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode())
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        assert answer.status == 413
        assert json.loads(answer.read()) == {"error": "the body is 1000.0 MB; the limit is 64 MB"}


def test_info_and_openapi_describe_the_route(server: str) -> None:
    info = requests.get(f"{server}/v1/info", timeout=10).json()
    assert info["video_driving"] and info["max_driving_bytes"] == 64 * 10**6
    assert info["max_driving_seconds"] == 120
    doc = requests.get(f"{server}/openapi.json", timeout=10).json()
    route = doc["paths"]["/v1/animate"]["post"]
    assert set(route["requestBody"]["content"]) == {
        "video/mp4", "video/webm", "video/quicktime", "application/x-pose", "application/x-npz"
    }  # fmt: skip
    assert {p["name"] for p in route["parameters"]} == {
        "signer", "renderer", "fps", "max_seconds", "stream"
    }  # fmt: skip


def test_refusals_are_one_log_line_without_traceback(server: str, tmp_path: Path) -> None:
    """A corrupt clip is refused in the ingress with one INFO line; nothing logs a traceback
    for anything this module sent."""
    assert _animate(server, b"\x00\x01 garbage", MP4).status_code == 422
    logs = Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"
    deadline = time.monotonic() + 30
    while True:
        replica_logs = {p.name: p.read_text(errors="replace") for p in logs.glob("replica_slp_*")}
        ingress = "".join(t for n, t in replica_logs.items() if "SignAPI" in n)
        if "POST /v1/animate -> 422: the driving clip" in ingress or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "POST /v1/animate -> 422: the driving clip" in ingress
    for name, text in replica_logs.items():
        assert "Traceback" not in text and "Request failed" not in text, (name, text[-3000:])


@pytest.mark.slow
def test_a_real_video_is_labelled_and_animated(
    server: str, tmp_path: Path, shared_data: Path
) -> None:
    """The paper's setting end to end: a real signer's mp4 drives a signer over HTTP (107
    frames labelled by MediaPipe in the ingress: over 3 minutes on a loaded 2-core machine)."""
    video = shared_data / "video" / "asl-what-is-your-name" / "what-is-your-name.mp4"
    r = _animate(server, video.read_bytes(), MP4, timeout=900, renderer="skeleton")
    assert r.status_code == 200, r.text
    frames, fps = _decode(r.content, tmp_path)
    info = probe(video)
    assert len(frames) == info.num_frames and fps == pytest.approx(info.fps, abs=0.01)
