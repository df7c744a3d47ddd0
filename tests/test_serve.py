"""The Ray Serve graph end to end over HTTP, with tiny random models and a text2pose double.

One module-scoped fixture starts Ray + Serve (configs/serve/cpu.yaml with its model paths
swapped for tiny models, see ``tiny_serve``, plus an API key and one allowed CORS origin) and
always shuts both down.
"""

from __future__ import annotations

import http.client
import io
import json
import select
import socket
import time
import zipfile
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from urllib.parse import quote

import av
import numpy as np
import psutil
import pytest
import ray
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from t2p_double import MAX_FRAMES, REJECTED
from tiny_serve import running_graph, tiny_serve_config

from integrations.client import SignClient
from pgmm.pose.sequence import PoseSequence
from pgmm.video import read_video

TEXT = "am tag regnet es im norden"  # 6 words -> 40 frames (MAX_FRAMES) in 3 chunks


API_KEY = "test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
PNG = {"Content-Type": "image/png"}
ALLOWED_ORIGIN = "https://signs.example.org"


@pytest.fixture(scope="module")
def serve_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def server(serve_root: Path) -> Iterator[str]:
    settings = {"api_keys": [API_KEY], "cors_origins": [ALLOWED_ORIGIN]}
    with running_graph(*tiny_serve_config(serve_root, **settings)) as url:
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


def test_page_files_are_served_with_a_same_origin_policy(server: str) -> None:
    for path, kind in [("/", "text/html"), ("/web/app.js", "text/javascript"),
                       ("/web/style.css", "text/css")]:  # fmt: skip
        r = requests.get(f"{server}{path}", timeout=10)
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
        assert "default-src 'self'" in r.headers["content-security-policy"]
    r = requests.get(f"{server}/web/serve_app.py", timeout=10)
    assert r.status_code == 404 and "error" in r.json()


def test_glosses_endpoint_and_the_pose_json_field(server: str) -> None:
    """The route, its errors and the field; the double has no gloss plan, so its timeline is
    untimed and empty -- the values are checked on the real model in test_gloss_timeline.py."""
    r = requests.post(f"{server}/v1/glosses", json={"text": TEXT, "fps": 12.5}, timeout=120)
    assert r.status_code == 200, r.text
    untimed = {"frames": 0, "timed": False, "sentences": [], "glosses": []}
    assert r.json() == {"fps": 12.5, **untimed}
    for body, message in [({"text": " "}, "empty"), ({"text": TEXT, "language": "fr"}, "language"),
                          ({"text": TEXT, "fps": 1000}, "fps must be")]:  # fmt: skip
        r = requests.post(f"{server}/v1/glosses", json=body, timeout=60)
        assert r.status_code == 422 and message in r.json()["error"]
    doc = _sign(server, format="pose-json").json()
    assert doc["glosses"] == {"fps": 25, **untimed}
    with SignClient(server) as client:
        assert client.glosses(TEXT, fps=12.5) == {"fps": 12.5, **untimed}
    schema = requests.get(f"{server}/openapi.json", timeout=10).json()
    ok = schema["paths"]["/v1/glosses"]["post"]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"]["$ref"].endswith("/GlossTiming")
    timed = schema["components"]["schemas"]["TimedGloss"]["properties"]
    assert set(timed) == {"gloss", "sentence", "start", "end"}


def test_info_and_signer_images(server: str) -> None:
    info = requests.get(f"{server}/v1/info", timeout=10).json()
    assert info["languages"] == ["de", "zh"] and "skeleton" in info["renderers"]
    assert info["default_renderer"] in info["renderers"] and not info["sign_requires_key"]
    r = requests.get(f"{server}/v1/signers/default/image", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (256, 256)
    r = requests.get(f"{server}/v1/signers/nobody/image", timeout=10)
    assert r.status_code == 404 and "unknown signer" in r.json()["error"]


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
        ({"format": "pose"}, "pose"),
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
    elif check == "pose":
        (tmp_path / "sign.pose").write_bytes(r.content)
        pose = PoseSequence.load_pose(tmp_path / "sign.pose")
        assert pose.data.shape == (MAX_FRAMES, 133, 3) and pose.fps == 25
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
    body = b'{"text": "hallo", "language": "de", "signer": "default", "x": }'
    headers = {"Content-Type": "application/json"}
    r = requests.post(f"{server}/v1/sign", data=body, headers=headers, timeout=10)
    assert r.status_code == 422 and r.json() == {"error": "the body is not valid JSON"}


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

    headers = {**AUTH, **PNG}
    r = requests.post(url, params={"name": "carla"}, data=image, headers=headers, timeout=60)
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "carla" and r.json()["builtin"] is False
    assert "carla" in [s["name"] for s in requests.get(url, timeout=10).json()["signers"]]
    again = requests.post(url, params={"name": "carla"}, data=image, headers=headers, timeout=60)
    assert again.status_code == 409
    assert _sign(server, signer="carla", renderer="full").status_code == 200

    assert requests.delete(f"{url}/carla", headers=AUTH, timeout=10).json() == {"deleted": "carla"}
    assert requests.delete(f"{url}/carla", headers=AUTH, timeout=10).status_code == 404
    assert _sign(server, signer="carla").status_code == 404
    assert requests.delete(f"{url}/default", headers=AUTH, timeout=10).status_code == 403


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
    headers = {**AUTH, **PNG}
    r = requests.post(f"{server}/v1/signers", params=params, data=data, headers=headers, timeout=60)
    assert r.status_code == status, r.text
    assert r.json()["error"]


def test_shed_and_lost_work_becomes_json_503_with_retry_after() -> None:
    """Serve's own handlers would answer these with plain text (and a dead replica with a bare
    500), so the app maps them itself; provoking each over HTTP is covered, as far as it can
    be reliably, by test_serve_reliability."""
    from ray.exceptions import ActorDiedError
    from ray.serve._private.common import DeploymentID
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
    from starlette.requests import Request

    from slp_pipeline.serve_app import Unavailable, _error, _retryable_as_unavailable

    for exc in (
        BackPressureError(num_queued_requests=16, max_queued_requests=16),
        DeploymentUnavailableError(DeploymentID(name="Renderer", app_name="slp")),
        ActorDiedError(),
    ):
        with pytest.raises(Unavailable), _retryable_as_unavailable():
            raise exc
    request = Request({"type": "http", "method": "POST", "path": "/v1/sign", "headers": []})
    response = _error(request, Unavailable("queue full"))
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert b'"error"' in response.body


# ------------------------------------------------------------------ security and error shape
def _signer_folders(serve_root: Path) -> list[str]:
    return sorted(p.name for p in (serve_root / "signers").iterdir())


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-the-key-at-all"}, AUTH])
def test_writes_need_the_api_key(server: str, serve_root: Path, headers: dict) -> None:
    """No key (or a wrong one): 401 for upload and delete, before the name or the body is
    looked at, and nothing changes on disk."""
    before = _signer_folders(serve_root)
    url = f"{server}/v1/signers"
    bad_key = headers != AUTH
    attempts = [
        requests.post(
            url,
            params={"name": "mallory"},
            data=_png_of(server),
            headers={**headers, **PNG},
            timeout=60,
        ),
        requests.post(
            url, data=b"x", headers={**headers, "Content-Type": "text/plain"}, timeout=60
        ),
        requests.delete(f"{url}/synth-11", headers=headers, timeout=10),
        requests.delete(f"{url}/nobody", headers=headers, timeout=10),
    ]
    if bad_key:
        for r in attempts:
            assert r.status_code == 401, r.text
            assert "API key" in r.json()["error"] and r.headers["WWW-Authenticate"] == "Bearer"
        assert _signer_folders(serve_root) == before
    else:  # the key passes: then the request's own checks answer
        assert [r.status_code for r in attempts] == [201, 422, 403, 404]  # 422: no name
        assert requests.delete(f"{url}/mallory", headers=AUTH, timeout=10).status_code == 200


def test_openapi_documents_the_key(server: str) -> None:
    doc = requests.get(f"{server}/openapi.json", timeout=10).json()
    assert doc["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "a key from the server's SLP_API_KEY or its config's api_keys",
    }
    for path, method in [("/v1/signers", "post"), ("/v1/signers/{name}", "delete")]:
        assert doc["paths"][path][method]["security"] == [{"apiKey": []}]
    assert set(doc["paths"]["/v1/signers"]["post"]["requestBody"]["content"]) == {
        "image/png",
        "image/jpeg",
    }


@pytest.mark.parametrize("name", ["default\n", "default%0A", "carla\n"])
def test_names_with_a_trailing_newline_are_refused(
    server: str, serve_root: Path, name: str
) -> None:
    before = _signer_folders(serve_root)
    r = requests.post(
        f"{server}/v1/signers",
        params={"name": name},
        data=_png_of(server),
        headers={**AUTH, **PNG},
        timeout=60,
    )
    assert r.status_code == 422 and "invalid signer name" in r.json()["error"], r.text
    r = requests.delete(f"{server}/v1/signers/default%0A", headers=AUTH, timeout=10)
    assert r.status_code == 422, r.text
    assert _signer_folders(serve_root) == before


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "image/gif"]
)
def test_uploads_must_be_png_or_jpeg(server: str, content_type: str | None) -> None:
    """A cross-site HTML form can only send text/plain, urlencoded or multipart bodies."""
    headers = dict(AUTH) if content_type is None else {**AUTH, "Content-Type": content_type}
    r = requests.post(
        f"{server}/v1/signers",
        params={"name": "formpost"},
        data=_png_of(server),
        headers=headers,
        timeout=60,
    )
    assert r.status_code == 415 and "image/png or image/jpeg" in r.json()["error"], r.text


def _raw(server: str, head: str) -> socket.socket:
    """A connection with a request head sent by hand (what requests would not send)."""
    host, port = server.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(head.replace("\n", "\r\n").encode())
    return sock


def _upload_head(server: str, framing: str) -> str:
    host = server.removeprefix("http://")
    return (
        f"POST /v1/signers?name=big HTTP/1.1\nHost: {host}\nAuthorization: Bearer {API_KEY}\n"
        f"Content-Type: image/png\n{framing}\n\n"
    )


def test_oversized_upload_is_refused_before_its_body_is_read(server: str) -> None:
    """A declared 3 GB body gets 413 although not one byte of it is sent: the answer cannot
    have waited for the body (before, the whole body was read into memory first)."""
    with _raw(server, _upload_head(server, "Content-Length: 3000000000")) as sock:
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        assert answer.status == 413
        assert json.loads(answer.read()) == {"error": "the body is 3000.0 MB; the limit is 10 MB"}


def test_chunked_upload_is_cut_off_at_the_cap(server: str) -> None:
    """A chunked body (no Content-Length) is refused once it passes 10 MB while streaming: the
    client cannot push all of its 256 MB (before, all of it was read into memory first).

    Serve's proxy reads a body ahead of the app without backpressure, so more than the cap
    arrives before the refusal: 33-86 MiB over loopback (``scripts/serve_upload_probe.py``)."""
    total, chunk = 256 * 1024 * 1024, b"0" * 256 * 1024
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent, status = 0, None
    with _raw(server, _upload_head(server, "Transfer-Encoding: chunked")) as sock:
        try:
            while sent < total and not select.select([sock], [], [], 0)[0]:
                sock.sendall(frame)
                sent += len(chunk)
            answer = http.client.HTTPResponse(sock)
            answer.begin()
            status = answer.status
        except OSError:  # the server closed the connection in our face: it stopped reading
            pass
    assert sent < total and status in (413, None), (sent, status)


@pytest.mark.parametrize(
    ("method", "path", "data", "status"),
    [
        ("GET", "/no/such/route", None, 404),
        ("PUT", "/v1/sign", None, 405),
        ("POST", "/v1/sign", b'{"text": "\xff\xfe"}', 400),
        ("GET", "/v1/signers/default", None, 405),
    ],
)
def test_routing_and_parsing_errors_have_the_error_shape(
    server: str, method: str, path: str, data: bytes | None, status: int
) -> None:
    headers = {"Content-Type": "application/json"} if data else {}
    r = requests.request(method, f"{server}{path}", data=data, headers=headers, timeout=10)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert list(r.json()) == ["error"] and r.json()["error"]


def test_unknown_signer_answer_lists_no_names(server: str) -> None:
    r = _sign(server, signer="nobody")
    assert r.status_code == 404 and r.json() == {"error": "unknown signer 'nobody'"}


def test_cors_is_granted_to_configured_origins_only(server: str) -> None:
    def preflight(origin: str) -> requests.Response:
        headers = {
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        }
        return requests.options(f"{server}/v1/signers", headers=headers, timeout=10)

    allowed = preflight(ALLOWED_ORIGIN)
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    other = preflight("https://evil.example")
    assert other.status_code == 400 and other.json() == {"error": "Disallowed CORS origin"}
    assert "access-control-allow-origin" not in other.headers
    listing = requests.get(
        f"{server}/v1/signers", headers={"Origin": "https://evil.example"}, timeout=10
    )
    assert "access-control-allow-origin" not in listing.headers


def test_deleting_a_signer_does_not_break_a_render_under_way(server: str) -> None:
    """The stream asks the Renderer for the signer by content key after the delete; it gets the
    version it started with (kept hidden for a grace period) and plays to its end."""
    url = f"{server}/v1/signers"
    r = requests.post(
        url, params={"name": "eve"}, data=_png_of(server), headers={**AUTH, **PNG}, timeout=60
    )
    assert r.status_code == 201, r.text
    body = {"text": TEXT, "signer": "eve", "stream": True, "renderer": "tpsmm"}
    data = bytearray()
    with requests.post(f"{server}/v1/sign", json=body, stream=True, timeout=120) as r:
        assert r.status_code == 200, r.text
        for chunk in r.iter_content(chunk_size=None):
            if not data:
                assert requests.delete(f"{url}/eve", headers=AUTH, timeout=10).status_code == 200
            data.extend(chunk)
    with av.open(io.BytesIO(bytes(data))) as container:
        assert sum(1 for p in container.demux(video=0) if p.size) == MAX_FRAMES
    assert _sign(server, signer="eve").status_code == 404  # new requests no longer find it


def test_ray_listens_on_loopback_only(server: str) -> None:
    """Every listening socket of this process and the Ray processes it started (GCS, raylet,
    agents, Serve controller, proxy, replicas) is bound to a loopback address."""
    from slp_pipeline.local_ray import is_loopback_ip

    me = psutil.Process()
    found = []
    for proc in [me, *me.children(recursive=True)]:
        with suppress(psutil.Error):
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.append((conn.laddr.ip, conn.laddr.port, proc.name()))
    assert len(found) >= 8, found  # GCS, raylet, agents, proxy, three replicas at least
    assert [f for f in found if not is_loopback_ip(f[0])] == [], found


# ------------------------------------------------------------------ fuzzing
_TOKEN = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
_SIGN_BODY = st.fixed_dictionaries(
    {},
    optional={
        "text": st.sampled_from(["regen", "a b", "", f"hallo {REJECTED}"]) | st.text(max_size=20),
        "language": st.sampled_from(["de", "zh", "fr"]) | _JSON,
        "signer": st.sampled_from(["default", "synth-11", "nobody", "default\n"]) | _JSON,
        "renderer": st.sampled_from(["skeleton", "tpsmm", "vae"]) | _JSON,
        "fps": st.sampled_from([12.5, 25, 0, -1, 1e308]) | _JSON,
        "format": st.sampled_from(["mp4", "pose-json", "frames-zip", "gif"]) | _JSON,
        "stream": st.booleans() | _JSON,
    },
)
_PATHS = (
    st.sampled_from(
        [
            "/",
            "/healthz",
            "/v1/sign",
            "/v1/signers",
            "/openapi.json",
            "/docs",
            "/v1/signers/default",
        ]
    )
    | st.text(max_size=30).map(lambda name: "/v1/signers/" + quote(name, safe=""))
    | _TOKEN.map(lambda p: "/" + quote(p, safe="/"))
)
_HEADER_NAMES = ["Accept", "Accept-Encoding", "Origin", "Cookie", "Referer", "User-Agent", "Range"]


@st.composite
def _http_requests(draw: st.DrawFn) -> dict:
    method = draw(st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD"]))
    path = draw(_PATHS)
    headers = draw(st.dictionaries(st.sampled_from(_HEADER_NAMES), _TOKEN, max_size=2))
    content_type = draw(
        st.none()
        | st.sampled_from(["image/png", "image/jpeg", "application/json", "text/plain"])
        | _TOKEN
    )
    if content_type:
        headers["Content-Type"] = content_type
    auth = draw(
        st.none()
        | st.sampled_from(["Bearer", "Bearer ", "Basic dXNlcjpwdw==", f"Bearer {API_KEY[:-1]}"])
        | _TOKEN.map("Bearer {}".format)
    )
    if auth:
        headers["Authorization"] = auth
    body = draw(
        st.none()
        | st.binary(max_size=2000)
        | _SIGN_BODY.map(lambda d: json.dumps(d).encode())
        | st.just(b"\x89PNG-the-real-one")  # replaced by a valid image below
    )
    params = draw(
        st.dictionaries(
            st.sampled_from(["name", "format"]) | _TOKEN, st.text(max_size=40), max_size=2
        )
    )
    return {"method": method, "path": path, "headers": headers, "body": body, "params": params}


def test_fuzzed_requests_get_2xx_or_json_4xx_and_never_write(server: str, serve_root: Path) -> None:
    """Generated methods, paths, query strings, headers and bodies, none with the API key:
    every answer is a 2xx or a JSON 4xx (never a 5xx), and no signer is ever written."""
    before = _signer_folders(serve_root)
    image = _png_of(server)

    @settings(
        max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(_http_requests())
    def check(req: dict) -> None:
        body = image if req["body"] == b"\x89PNG-the-real-one" else req["body"]
        r = requests.request(
            req["method"],
            f"{server}{req['path']}",
            params=req["params"],
            data=body,
            headers=req["headers"],
            timeout=120,
        )
        assert r.status_code < 500, (r.status_code, r.text[:300])
        writes = req["method"] in ("POST", "DELETE", "PUT", "PATCH")
        if writes and req["path"].startswith("/v1/signers"):
            assert r.status_code >= 400, (r.status_code, r.text[:300])
        if r.status_code >= 400 and req["method"] != "HEAD":
            assert r.headers.get("content-type") == "application/json", r.text[:300]
            assert set(r.json()) == {"error"}, r.text[:300]

    check()
    assert _signer_folders(serve_root) == before


def test_client_errors_are_one_log_line_without_traceback(server: str) -> None:
    """A 4xx -- found by the ingress or by a replica behind it -- is one INFO line in the
    ingress log; no replica logs a traceback for anything this module sent (Serve logs each
    exception that leaves a replica as a failed request, with its traceback)."""
    assert _sign(server, text=f"hallo {REJECTED}").status_code == 422  # refused by Text2Pose
    assert _sign(server, signer="nobody").status_code == 404  # by the ingress
    # The session's log folder; Ray has no public accessor for it.
    logs = Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"
    deadline = time.monotonic() + 30
    while True:
        replica_logs = {p.name: p.read_text(errors="replace") for p in logs.glob("replica_slp_*")}
        ingress = "".join(t for n, t in replica_logs.items() if "SignAPI" in n)
        if "-> 404: unknown signer 'nobody'" in ingress or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "POST /v1/sign -> 422: unsupported text" in ingress
    assert "POST /v1/sign -> 404: unknown signer 'nobody'" in ingress
    # test_names_with_a_trailing_newline_are_refused sent DELETE /v1/signers/default%0A
    assert "DELETE /v1/signers/default\\n -> 422: invalid signer name" in ingress
    for name, text in replica_logs.items():
        assert "Traceback" not in text and "Request failed" not in text, (name, text[-3000:])
