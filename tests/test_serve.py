"""The Ray Serve graph end to end over HTTP, with tiny random models and a text2pose double.

One module-scoped fixture starts Ray + Serve (configs/serve/cpu.yaml with its model paths
swapped for tiny models, see ``tiny_serve``) and always shuts both down.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from t2p_double import MAX_FRAMES, REJECTED
from tiny_serve import running_graph, tiny_serve_config

from pgmm.video import read_video

TEXT = "am tag regnet es im norden"  # 6 words -> 40 frames (MAX_FRAMES) in 3 chunks


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_graph(*tiny_serve_config(tmp_path_factory.mktemp("serve"))) as url:
        yield url


def _sign(url: str, **body) -> requests.Response:
    return requests.post(f"{url}/v1/sign", json={"text": TEXT, **body}, timeout=120)


def _decode(data: bytes, tmp_path: Path) -> tuple[np.ndarray, float]:
    path = tmp_path / "out.mp4"
    path.write_bytes(data)
    return read_video(path)


def test_health_page_and_openapi(server: str) -> None:
    assert requests.get(f"{server}/healthz", timeout=10).json() == {"status": "ok"}
    page = requests.get(f"{server}/", timeout=10)
    assert page.status_code == 200 and "<video" in page.text
    paths = requests.get(f"{server}/openapi.json", timeout=10).json()["paths"]
    assert {"/v1/sign", "/v1/signers", "/v1/signers/{name}", "/healthz"} <= set(paths)


def test_sign_returns_a_decodable_mp4(server: str, tmp_path: Path) -> None:
    r = _sign(server, language="de", signer="default")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "video/mp4"
    frames, fps = _decode(r.content, tmp_path)
    assert frames.shape == (MAX_FRAMES, 64, 64, 3) and fps == 25


def test_sign_streams_fragmented_mp4(server: str, tmp_path: Path) -> None:
    body = {"text": TEXT, "language": "zh", "signer": "synth-11", "stream": True}
    with requests.post(f"{server}/v1/sign", json=body, stream=True, timeout=120) as r:
        assert r.status_code == 200, r.text
        chunks = [c for c in r.iter_content(chunk_size=None) if c]
    assert len(chunks) >= 2  # bytes arrived before the whole video was rendered
    frames, _ = _decode(b"".join(chunks), tmp_path)
    assert len(frames) == MAX_FRAMES


@pytest.mark.parametrize(
    ("body", "check"),
    [
        ({"renderer": "tpsmm"}, "mp4"),
        ({"renderer": "skeleton"}, "mp4-256"),
        ({"fps": 12.5}, "mp4-half"),
        ({"format": "frames-zip", "renderer": "skeleton"}, "zip"),
        ({"format": "pose-json"}, "json"),
    ],
)
def test_renderers_rates_and_formats(server: str, tmp_path: Path, body: dict, check: str) -> None:
    r = _sign(server, **body)
    assert r.status_code == 200, r.text
    if check == "zip":
        with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
            assert len(zf.namelist()) == MAX_FRAMES
    elif check == "json":
        doc = r.json()
        assert np.asarray(doc["frames"]).shape == (MAX_FRAMES, 133, 3)
        assert doc["signer"] == "default" and doc["width"] == 256
    else:
        frames, fps = _decode(r.content, tmp_path)
        size = 256 if check == "mp4-256" else 64
        count = (MAX_FRAMES - 1) // 2 + 1 if check == "mp4-half" else MAX_FRAMES
        assert frames.shape == (count, size, size, 3)
        assert fps == (12.5 if check == "mp4-half" else 25)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"text": ""}, 422, "empty"),
        ({"text": "x" * 501}, 422, "limit is 500"),
        ({"text": f"hallo {REJECTED}"}, 422, "unsupported text"),  # from the Text2Pose replica
        ({"text": f"hallo {REJECTED}", "stream": True}, 422, "unsupported text"),
        ({"language": "fr"}, 422, "unsupported language"),
        ({"signer": "nobody"}, 404, "unknown signer"),
        ({"signer": "../../etc"}, 422, "invalid signer name"),
        ({"renderer": "vae"}, 422, "unknown renderer"),
        ({"fps": 1000}, 422, "fps must be"),
        ({"format": "gif"}, 422, "format"),
        ({"format": "pose-json", "stream": True}, 422, "only available for format mp4"),
        ({"text": None}, 422, "text"),
    ],
)
def test_bad_requests_get_4xx_json(server: str, body: dict, status: int, message: str) -> None:
    r = _sign(server, **body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_malformed_body_is_422(server: str) -> None:
    r = requests.post(f"{server}/v1/sign", data=b"{not json", timeout=10)
    assert r.status_code == 422 and "error" in r.json()


def _png_of(server: str) -> bytes:
    """A real signer photo stand-in: the built-in signer's image, re-encoded as PNG."""
    doc = _sign(server, format="frames-zip", renderer="skeleton").content
    with zipfile.ZipFile(io.BytesIO(doc)) as zf:
        return zf.read("frame_00000.png")


def test_signer_upload_list_sign_delete(server: str, tmp_path: Path) -> None:
    url = f"{server}/v1/signers"
    names = [s["name"] for s in requests.get(url, timeout=10).json()["signers"]]
    assert {"default", "synth-11"} <= set(names)
    image = _png_of(server)

    r = requests.post(url, params={"name": "carla"}, data=image, timeout=60)
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "carla" and r.json()["builtin"] is False
    assert "carla" in [s["name"] for s in requests.get(url, timeout=10).json()["signers"]]
    assert requests.post(url, params={"name": "carla"}, data=image, timeout=60).status_code == 409
    assert _sign(server, signer="carla", renderer="full").status_code == 200

    assert requests.delete(f"{url}/carla", timeout=10).json() == {"deleted": "carla"}
    assert requests.delete(f"{url}/carla", timeout=10).status_code == 404
    assert _sign(server, signer="carla").status_code == 404
    assert requests.delete(f"{url}/default", timeout=10).status_code == 403


@pytest.mark.parametrize(
    ("params", "data", "status"),
    [
        ({"name": "x1"}, b"definitely not an image", 400),
        ({"name": "x2"}, b"", 400),
        ({"name": "x3"}, b"0" * (10 * 1024 * 1024 + 1), 413),
        ({"name": "Bad Name!"}, b"", 422),
        ({}, b"", 422),  # the name is required
    ],
)
def test_bad_uploads_get_4xx_json(server: str, params: dict, data: bytes, status: int) -> None:
    r = requests.post(f"{server}/v1/signers", params=params, data=data, timeout=60)
    assert r.status_code == status, r.text
    assert r.json()["error"]


def test_shed_and_lost_work_becomes_json_503_with_retry_after() -> None:
    """Serve's own handlers would answer these with plain text (and a dead replica with a bare
    500), so the app maps them itself; provoking each over HTTP is covered, as far as it can
    be reliably, by test_serve_reliability."""
    from ray.exceptions import ActorDiedError
    from ray.serve._private.common import DeploymentID
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    from slp_pipeline.serve_app import Unavailable, _error, _retryable_as_unavailable

    for exc in (
        BackPressureError(num_queued_requests=16, max_queued_requests=16),
        DeploymentUnavailableError(DeploymentID(name="Renderer", app_name="slp")),
        ActorDiedError(),
    ):
        with pytest.raises(Unavailable), _retryable_as_unavailable():
            raise exc
    response = _error(Unavailable("queue full"))
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert b'"error"' in response.body
