"""The Ray Serve graph -- the one place where the pipeline's deployments are bound together.

    HTTP --> SignAPI (FastAPI ingress: validation, signers, encoding)
               |--stream--> Text2Pose   (Text2PoseStage: text -> canonical pose chunks)
               '--chunks--> Renderer    (retarget_to + a stages.Renderer: pose chunk -> frames)

Each deployment is a thin class around Ray-free stages from :mod:`slp_pipeline.stages`; the
deployment options (replicas, CPUs/GPUs, queue limits) live in ``configs/serve/*.yaml``.

Why it is cut this way:

* Poses, not heatmaps, travel to the renderer: a 16-frame chunk is ~25 KB of keypoints but
  ~10 MB of 256-px heatmaps, so the heatmaps are drawn next to the model that reads them.
* The Renderer batches frame chunks of concurrent requests into one forward pass
  (``@serve.batch``) and multiplexes on the signer (``@serve.multiplexed``) so each replica
  keeps the encoded source image of its recent signers instead of re-encoding it per chunk.
* ``max_queued_requests`` bounds every queue: when the renderers are saturated a request gets
  ``503`` with ``Retry-After`` at once instead of waiting unboundedly; once admitted (its first
  chunk rendered), its later chunks wait for room rather than fail. A replica that dies
  mid-request (OOM, crash) gives that request the same 503 -- Serve starts a new replica, so a
  retry succeeds -- except for a stream already under way, which can only be cut off.
* Encoding stays in the ingress because an mp4 muxer is per-request state; it runs in a thread
  so the event loop keeps serving other requests.
* A caller's mistake found in an inner deployment (text2pose refusing a sentence) comes back as
  a :class:`Refusal` value, not an exception: Serve logs every exception leaving a replica as a
  failed request with its traceback, and a 4xx is one INFO line here.

Security (see :mod:`slp_pipeline.auth`): signer writes need an API key (a FastAPI security
dependency, so ``/docs`` shows it), ``/v1/sign`` and ``/v1/animate`` optionally; uploads are
refused by their ``Content-Length`` before any byte is read, capped while a chunked body is
read, and accepted as their declared media types only (``image/png``/``image/jpeg`` for a
signer, :data:`DRIVING_MEDIA_TYPES` for a driving clip) -- which also stops a cross-site
``text/plain`` form post; browsers of other origins get no CORS grant unless ``cors_origins``
lists them; Ray itself listens on 127.0.0.1 only (:mod:`slp_pipeline.local_ray`).
"""

# No ``from __future__ import annotations`` here: @serve.ingress ships the FastAPI app to the
# replicas by value, where string annotations (e.g. ``Request``) could no longer be resolved.
import asyncio
import dataclasses
import importlib.util
import io
import logging
import os
import re
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, cast

import numpy as np
import ray
import torch
from fastapi import FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from PIL import Image
from pydantic import BaseModel, Field
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle, DeploymentResponse, DeploymentResponseGenerator
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from pgmm.console import quiet_native_logs
from pgmm.pose.sequence import PoseSequence
from slp_pipeline.auth import ApiKeys, check_exposure
from slp_pipeline.config import PipelineConfig, pipeline_config
from slp_pipeline.local_ray import init_local_ray, is_loopback_ip
from slp_pipeline.signers import (
    MAX_UPLOAD_BYTES,
    UPLOAD_MEDIA_TYPES,
    InputError,
    Signer,
    SignerRegistry,
    UnsupportedMediaType,
    UploadError,
    UploadTooLarge,
    check_name,
    shown,
)
from slp_pipeline.stages import (
    MEDIA_TYPES,
    CheckedRequest,
    EncodeStage,
    Text2PoseStage,
    check_renderer,
    check_request,
    in_groups,
    load_renderer,
    retarget_to,
    upload_pose_estimator,
)
from slp_pipeline.stages import Renderer as FrameRenderer
from slp_pipeline.synthesize import MAX_DRIVING_SECONDS, driving_motion, in_chunks
from text2pose.timeline import GlossTimeline

RENDER_WINDOW = 3  # chunks of one request in flight at once: overlaps rendering with encoding
RETRY_AFTER_S = 2
BUSY = "the service is busy or restarting a replica; retry shortly"
ADMITTED_WAIT_S = 60  # how long a later chunk of an admitted request waits for queue room
RESUBMIT_AFTER_S = 0.05
T = TypeVar("T")
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
logger = logging.getLogger("ray.serve")
# A driving clip for /v1/animate, by its Content-Type: the suffix its file is decoded by. Videos
# are labelled by MediaPipe (the optional 'real' extra); pose files are read as they are. The
# pose types are this service's names (pose-format registers none), distinct from
# application/octet-stream so that a wrongly labelled video gets a 415, not a pose-file error.
DRIVING_MEDIA_TYPES = {
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "video/quicktime": ".mov",
    "application/x-pose": ".pose",
    "application/x-npz": ".npz",
}
# The body is held in the ingress's memory while the clip is decoded: 64 MB is two minutes of
# 720p video at ~4 Mbit/s; the renderers draw at 128-256 px, so a larger clip gains nothing.
MAX_DRIVING_UPLOAD_BYTES = 64 * 10**6

# The page (``GET /`` and ``/web/*``): static files of the package, read once here -- before
# the ingress class, because @serve.ingress serialises the app and the globals its routes use.
# A fixed table rather than a folder route: no path from a request ever reaches the file system.
WEB_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "sign-api.js": "text/javascript; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
WEB_FILES = {
    name: (resources.files("slp_pipeline") / "web" / name).read_bytes() for name in WEB_TYPES
}
# The page needs nothing from another origin; the policy makes that a rule the browser enforces.
WEB_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
    "media-src 'self' blob:; style-src 'self'; script-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


api = FastAPI(
    title="pgmm-slp",
    version="1",
    description="Sign language production: text -> text2pose -> PGMM renderer -> video. "
    "Adding or deleting a signer needs an API key (`Authorization: Bearer KEY`); "
    "`/v1/sign` needs one only where the server is configured so.",
)
_bearer = HTTPBearer(
    auto_error=False,  # a missing key is our 401 in the {"error": ...} shape
    scheme_name="apiKey",
    description="a key from the server's SLP_API_KEY or its config's api_keys",
)


class GlossRequest(BaseModel):
    text: str = Field(description="sentence to sign", examples=["am tag regnet es im norden"])
    language: str = Field("de", description="language of the text (de or zh)")
    fps: float | None = Field(None, description="output frame rate; default that of text2pose")


class SignRequest(GlossRequest):
    signer: str = Field("default", description="name of a registered signer")
    renderer: str | None = Field(None, description="renderer name; default from the config")
    format: Literal["mp4", "frames-zip", "pose-json", "pose"] = Field(
        "mp4", description="pose: the poses as a pose-format .pose file"
    )
    stream: bool = Field(False, description="mp4 only: stream fragmented mp4 as it renders")


class TimedGloss(BaseModel):
    gloss: str
    sentence: int = Field(description="index of the sentence of the text it signs")
    start: int = Field(description="first output frame in which the sign is performed")
    end: int = Field(description="the frame after its last (the transition into it is before)")


class GlossTiming(BaseModel):
    """What the text was understood as: the gloss sequence and where each sign is in the
    output video (frames at ``fps``; seconds are ``frame / fps``)."""

    fps: float
    frames: int = Field(description="frames of the whole output; 0 when not timed")
    timed: bool = Field(
        description="false where the gloss-to-pose model learns the length only while it "
        "decodes (then glosses is empty and sentences holds the glosses) or the text-to-pose "
        "model reports no glosses at all (then both are empty)"
    )
    sentences: list[list[str]] = Field(description="the glosses of each sentence")
    glosses: list[TimedGloss]

    @classmethod
    def of(cls, timeline: GlossTimeline) -> "GlossTiming":
        return cls(
            fps=timeline.fps,
            frames=timeline.frames,
            timed=timeline.timed,
            sentences=timeline.glosses,
            glosses=[TimedGloss(**dataclasses.asdict(s)) for s in timeline.spans],
        )


class ServiceInfo(BaseModel):
    """What a client (the page) needs to offer valid choices."""

    languages: list[str]
    renderers: list[str]
    default_renderer: str
    max_text_chars: int
    min_fps: float
    max_fps: float
    sign_requires_key: bool
    uploads: bool = Field(description="whether signer uploads are possible (a pose estimator)")
    max_upload_bytes: int
    video_driving: bool = Field(
        description="whether /v1/animate takes videos (MediaPipe installed); pose files always"
    )
    max_driving_bytes: int
    max_driving_seconds: float


class Unavailable(Exception):
    """A deployment behind the ingress shed the request or lost its replica: retry shortly."""


@dataclass(frozen=True)
class Refusal:
    """A caller's error crossing a deployment boundary as a value (see the module docstring)."""

    message: str
    status: int

    @classmethod
    def of(cls, error: InputError) -> "Refusal":
        return cls(str(error), error.status)

    @staticmethod
    def unwrap(answer: "T | Refusal") -> T:
        """Another deployment's answer, or the caller's error that it stands for, raised."""
        if not isinstance(answer, Refusal):
            return answer
        error = InputError(answer.message)
        error.status = answer.status
        raise error


@contextmanager
def _retryable_as_unavailable() -> Iterator[None]:
    """Wrap every wait on another deployment.

    Serve installs its own handlers for ``BackPressureError`` and ``DeploymentUnavailableError``
    in the ingress app, replacing ours, and answers plain-text 503s without ``Retry-After``; a
    replica killed mid-request raises ``RayActorError``, which would be a plain-text 500. As
    :class:`Unavailable` all three get our JSON 503 with ``Retry-After``.
    """
    try:
        yield
    except (BackPressureError, DeploymentUnavailableError, RayActorError) as e:
        raise Unavailable(str(e)) from e


def _binary_body(media_types: Iterable[str]) -> dict[str, Any]:
    """OpenAPI for an endpoint whose body is the raw file (an image, a driving clip): FastAPI
    cannot infer it, as the handler reads ``request.stream()`` itself to cap the size."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {"requestBody": {"required": True, "content": {t: binary for t in media_types}}}


def _one_line(text: str) -> str:
    """Control characters escaped: a caller's path (``/v1/signers/a%0Ab``) cannot split a log
    line or forge one."""
    return CONTROL_CHARS.sub(lambda m: repr(m.group())[1:-1], text)


def _refused(request: Request, status: int, message: str, headers: Any = None) -> JSONResponse:
    """A 4xx: one INFO line (a caller's mistake is not a server fault), the JSON shape."""
    # scope["path"]: request.url.path went through urlsplit, which silently drops "\n" and "\t"
    where = _one_line(f"{request.method} {request.scope.get('path', '')[:100]}")
    logger.info("%s -> %d: %s", where, status, _one_line(message))
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _error(request: Request, exc: BaseException) -> JSONResponse:
    """One JSON error shape for everything; errors raised in another replica arrive wrapped in
    a ``RayTaskError`` whose text holds a traceback, so the original message is unwrapped."""
    cause = exc.cause if isinstance(exc, RayTaskError) and exc.cause is not None else exc
    if isinstance(cause, InputError):
        return _refused(request, cause.status, str(cause), getattr(cause, "headers", None))
    if isinstance(cause, Unavailable):
        logger.warning("request shed: %s", cause)
        return JSONResponse({"error": BUSY}, 503, headers={"Retry-After": str(RETRY_AFTER_S)})
    logger.error("request failed: %s", exc, exc_info=exc)
    return JSONResponse({"error": f"internal error ({type(cause).__name__})"}, status_code=500)


@api.exception_handler(Exception)  # the last resort: a JSON 500, not Starlette's plain text
@api.exception_handler(InputError)
@api.exception_handler(RayTaskError)
@api.exception_handler(Unavailable)
async def _handle_error(request: Request, exc: Exception) -> JSONResponse:
    return _error(request, exc)


@api.exception_handler(HTTPException)
async def _handle_http(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's own answers (unknown route 404, wrong method 405, unparsable body 400)."""
    return _refused(request, exc.status_code, str(exc.detail), exc.headers)


@api.exception_handler(RequestValidationError)
async def _handle_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's schema errors, in the same ``{"error": ...}`` shape as ours."""
    parts = []
    for e in exc.errors():
        if e.get("type") == "json_invalid":  # its loc is a byte offset, not a field
            parts.append("the body is not valid JSON")
            continue
        loc = [str(p) for p in e.get("loc", ())]
        parts.append(f"{'.'.join(loc[1:]) or (loc[0] if loc else 'request')}: {e['msg']}")
    return _refused(request, 422, "; ".join(dict.fromkeys(parts)))


BearerKey = Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]


def _ingress() -> "SignAPI":
    """The ingress replica serving this request. The app is a module-level object frozen when
    the class is decorated, so per-deployment settings (keys, CORS) are read from the replica;
    Serve injects ``self`` into the routes the same way."""
    return cast("SignAPI", serve.get_replica_context().servable_object)


async def _write_access(credentials: BearerKey) -> None:
    """Signer upload/delete: an API key, unless the (loopback-only) service runs without."""
    _ingress().keys.check(credentials.credentials if credentials else None, write=True)


async def _sign_access(credentials: BearerKey) -> None:
    """``/v1/sign``: a key only where ``sign_requires_key`` is set."""
    _ingress().keys.check(credentials.credentials if credentials else None, write=False)


class _JSONCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, with its refused preflights (plain-text 400s) in the JSON shape."""

    def preflight_response(self, request_headers: Any) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        headers = {
            k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")
        }
        return JSONResponse(
            {"error": bytes(response.body).decode()}, response.status_code, headers=headers
        )


class _ConfiguredCORS:
    """CORS as the config says: no grant at all by default (browsers then keep other sites'
    pages from reading answers or sending non-simple requests), else Starlette's middleware
    for ``cors_origins``, built at the replica's first request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.inner: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan events come before the replica context exists
            await self.app(scope, receive, send)
            return
        if self.inner is None:
            origins = _ingress().config.cors_origins
            self.inner = self.app
            if origins:
                self.inner = _JSONCORSMiddleware(
                    self.app,
                    allow_origins=origins,
                    allow_methods=["GET", "POST", "DELETE"],
                    allow_headers=["Authorization", "Content-Type"],
                    expose_headers=["Retry-After"],
                )
        await self.inner(scope, receive, send)


api.add_middleware(_ConfiguredCORS)


def _web_file(name: str) -> Response:
    if name not in WEB_FILES:
        raise HTTPException(404, "Not Found")
    return Response(WEB_FILES[name], media_type=WEB_TYPES[name], headers=WEB_HEADERS)


def _media_type(request: Request) -> str:
    """The request's Content-Type without parameters, lower case ('' when none)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _read_upload(
    request: Request,
    media_types: Collection[str] = UPLOAD_MEDIA_TYPES,
    max_bytes: int = MAX_UPLOAD_BYTES,
    what: str = "image",
) -> bytes:
    """The body of an upload (an ``image`` unless ``what`` says otherwise), refused by type and
    by size before it fills memory: by its declared ``Content-Length`` before any byte is read,
    and while a chunked body streams. An empty body is refused too."""
    media_type = _media_type(request)
    if media_type not in media_types:
        raise UnsupportedMediaType(
            f"Content-Type {shown(media_type) if media_type else '(none)'} is not accepted; "
            f"send the {what} bytes as the body with Content-Type {' or '.join(media_types)}"
        )
    limit = f"the limit is {max_bytes / 1e6:.0f} MB"
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdigit():
        raise UploadError("Content-Length is not a number")
    if declared is not None and int(declared) > max_bytes:
        raise UploadTooLarge(f"the body is {int(declared) / 1e6:.1f} MB; {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise UploadTooLarge(f"the body is larger than {max_bytes / 1e6:.0f} MB; {limit}")
    if not body:
        raise UploadError(f"the body is empty; send the {what} bytes as the body")
    return bytes(body)


async def _each(items: list[PoseSequence]) -> AsyncIterator[PoseSequence]:
    """A list as the async stream :meth:`SignAPI._frames` takes (what Text2Pose would send)."""
    for item in items:
        yield item


# --------------------------------------------------------------------------- Text2Pose
@serve.deployment(ray_actor_options={"num_cpus": 0.2})
class Text2Pose:
    """text -> canonical pose chunks, streamed to the caller as they are generated."""

    def __init__(self, config: PipelineConfig) -> None:
        torch.set_num_threads(config.torch_threads)
        config = config.localized()  # models_uri: this node's copies (docs/cluster.md)
        # No small first chunk here (first_chunk_frames is for slp synthesize / caption): under
        # load every extra chunk is another batched Renderer call, and with 4-frame first
        # chunks tests/test_serve_reliability.py's 200 one-word requests got 22 answers of
        # 200 instead of >= 100 (the rest shed with 503).
        self.stage = Text2PoseStage.load(
            config.text2pose, config.text2pose_loader, config.chunk_frames
        )

    def generate(
        self, text: str, language: str, fps: float | None
    ) -> Iterator[PoseSequence | Refusal]:
        try:
            yield from self.stage.stream(text, language, fps)
        except InputError as e:
            yield Refusal.of(e)

    def timeline(self, text: str, language: str, fps: float | None) -> GlossTimeline | Refusal:
        try:
            return self.stage.timeline(text, language, fps)
        except InputError as e:
            return Refusal.of(e)


# --------------------------------------------------------------------------- Renderer
@dataclass
class _SignerCache:
    """A signer and its per-renderer states, cached per replica (multiplexing)."""

    signer: Signer
    states: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Job:
    renderer: str
    state: Any  # what that renderer's prepare() returned for the signer
    pose: PoseSequence  # on the signer's body


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=8)
class Renderer:
    """Canonical pose chunk + signer -> uint8 frames, batched across requests."""

    def __init__(self, config: PipelineConfig) -> None:
        torch.set_num_threads(config.torch_threads)
        config = config.localized()  # models_uri: this node's copies (docs/cluster.md)
        self.registry = SignerRegistry(config.signers_dir, seed_builtins=False)
        self.renderers: dict[str, FrameRenderer[Any]] = {
            name: load_renderer(
                name,
                spec,
                config.device,
                config.precision,
                config.skeleton_size,
                config.compile,
                # The graph renders whole chunks (no short first chunk), batched up to
                # max_batch_size of them: one compiled length, longer batches are cut into it.
                (config.chunk_frames,),
            )
            for name, spec in config.renderers.items()
        }
        # Ray's annotations of @serve.batch omit the setters it adds to the method.
        self.render_batch.set_max_batch_size(config.max_batch_size)  # type: ignore[attr-defined]
        self.render_batch.set_batch_wait_timeout_s(config.batch_wait_timeout_s)  # type: ignore[attr-defined]

    @serve.multiplexed(max_num_models_per_replica=8)
    async def signer(self, key: str) -> _SignerCache:
        """Load a signer by its content key (``name@digest``): the version the request started
        with, even if it was deleted or replaced since (see :mod:`slp_pipeline.signers`)."""
        return _SignerCache(await asyncio.to_thread(self.registry.get_version, key))

    async def render(self, renderer: str, chunk: PoseSequence) -> np.ndarray | Refusal:
        try:
            cache = await self.signer(serve.get_multiplexed_model_id())
        except InputError as e:
            return Refusal.of(e)
        if renderer not in cache.states:
            prepare = self.renderers[renderer].prepare
            cache.states[renderer] = await asyncio.to_thread(prepare, cache.signer)
        pose = retarget_to(chunk, cache.signer)
        return await self.render_batch(_Job(renderer, cache.states[renderer], pose))

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.02)
    async def render_batch(self, jobs: list[_Job]) -> list[np.ndarray]:
        return await asyncio.to_thread(
            in_groups,
            [j.renderer for j in jobs],
            lambda idx: self.renderers[jobs[idx[0]].renderer].render(
                [jobs[i].state for i in idx], [jobs[i].pose for i in idx]
            ),
        )


# --------------------------------------------------------------------------- ingress
def _render(handle: DeploymentHandle, renderer: str, chunk: PoseSequence) -> DeploymentResponse:
    """Submit one chunk to the Renderer (a unary call: Ray types ``remote()`` as either kind)."""
    return cast(DeploymentResponse, handle.render.remote(renderer, chunk))


@serve.deployment(ray_actor_options={"num_cpus": 0.2}, max_ongoing_requests=32)
@serve.ingress(api)
class SignAPI:
    """HTTP front: checks requests, owns the signer registry, encodes the output."""

    def __init__(
        self,
        text2pose: DeploymentHandle,
        renderer: DeploymentHandle,
        config: PipelineConfig,
        keys: ApiKeys,
    ) -> None:
        torch.set_num_threads(config.torch_threads)
        self.text2pose = text2pose
        self.renderer = renderer
        self.config = config
        self.keys = keys
        self.registry = SignerRegistry(
            config.signers_dir, seed_builtins=False, max_signers=config.max_signers
        )
        local = config.localized()  # models_uri: this node's copies (docs/cluster.md)
        self.estimator = upload_pose_estimator(config.upload_poses, local.pose_estimator)
        self.labels_videos = importlib.util.find_spec("mediapipe") is not None
        # Decoding a driving video (MediaPipe, frame by frame) holds a worker thread for a long
        # time: one clip at a time per replica, so /v1/sign's encoding threads are never all taken.
        self.decoding = asyncio.Semaphore(1)
        self.encode = EncodeStage()

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/", include_in_schema=False)
    async def index(self) -> Response:
        return _web_file("index.html")

    @api.get("/web/{name}", include_in_schema=False)
    async def web(self, name: str) -> Response:
        """The page's script and style sheet."""
        return _web_file(name)

    @api.get("/v1/info")
    async def info(self) -> ServiceInfo:
        """Languages, renderers and limits of this service."""
        limits = ("default_renderer", "max_text_chars", "min_fps", "max_fps")
        return ServiceInfo(
            **{name: getattr(self.config, name) for name in limits},
            languages=sorted(self.config.text2pose),
            renderers=sorted(self.config.renderers),
            sign_requires_key=self.keys.enabled and self.keys.sign_requires_key,
            uploads=self.estimator is not None,
            max_upload_bytes=MAX_UPLOAD_BYTES,
            video_driving=self.labels_videos,
            max_driving_bytes=MAX_DRIVING_UPLOAD_BYTES,
            max_driving_seconds=MAX_DRIVING_SECONDS,
        )

    @api.get("/v1/signers")
    async def list_signers(self) -> dict[str, Any]:
        return {"signers": await asyncio.to_thread(self.registry.list)}

    @api.get(
        "/v1/signers/{name}/image",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}, 404: {"description": "unknown signer"}},
    )
    async def signer_image(self, name: str) -> Response:
        """The signer's stored image (square, the crop renders start from), as PNG."""
        png = await asyncio.to_thread(self._image_png, name)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})

    def _image_png(self, name: str) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(self.registry.get(name).image).save(buf, format="PNG")
        return buf.getvalue()

    @api.post(
        "/v1/signers",
        status_code=201,
        dependencies=[Security(_write_access)],
        openapi_extra=_binary_body(UPLOAD_MEDIA_TYPES),
        responses={
            401: {"description": "no valid API key"},
            409: {"description": "the name is taken, or the registry is full (max_signers)"},
            413: {"description": f"body over {MAX_UPLOAD_BYTES} bytes"},
            415: {"description": "Content-Type is not image/png or image/jpeg"},
        },
    )
    async def add_signer(
        self, request: Request, name: str = Query(description="name of the new signer")
    ) -> dict[str, Any]:
        """Add a signer from one PNG/JPEG image sent as the raw request body."""
        check_name(name)
        data = await _read_upload(request)
        person = await asyncio.to_thread(self._add, name, data)
        return {"name": person.name, **person.meta}

    def _add(self, name: str, data: bytes) -> Signer:
        with quiet_native_logs():  # MediaPipe's C++ chatter would fill the replica's log
            return self.registry.add(name, data, self.estimator)

    @api.delete(
        "/v1/signers/{name}",
        dependencies=[Security(_write_access)],
        responses={401: {"description": "no valid API key"}},
    )
    async def delete_signer(self, name: str) -> dict[str, str]:
        """Delete a signer; renders already under way with it still finish."""
        await asyncio.to_thread(self.registry.delete, name)
        return {"deleted": name}

    @api.post(
        "/v1/sign",
        dependencies=[Security(_sign_access)],
        responses={
            200: {"content": {t: {} for t in MEDIA_TYPES.values()}},
            401: {"description": "no valid API key (only where sign_requires_key is set)"},
            503: {"description": "renderers saturated; see Retry-After"},
        },
    )
    async def sign(self, req: SignRequest) -> Response:
        """Sign ``text``: an mp4 (or a zip of PNG frames, or the poses as JSON, with the glosses
        and their frames of ``/v1/glosses`` under ``glosses``)."""
        job = check_request(self.config, req.text, req.language, req.renderer, req.fps)
        if req.stream and req.format != "mp4":
            raise InputError("stream=true is only available for format mp4")
        person = await asyncio.to_thread(self.registry.get, req.signer)
        poses = self._poses(job.text, job.language, job.fps)
        first = await anext(poses)  # text errors surface here, before any response starts
        if req.format == "mp4":
            frames = self._frames(first, poses, person, job.renderer)
            return await self._mp4(frames, req.fps or first.fps, req.stream)
        encode: Callable[[Iterator[Any]], bytes] = self.encode.frames_zip
        if req.format == "frames-zip":
            items: list[Any] = [f async for f in self._frames(first, poses, person, job.renderer)]
        else:
            items = [retarget_to(first, person)] + [retarget_to(c, person) async for c in poses]
            encode = self.encode.pose_file
        if req.format == "pose-json":
            timing = GlossTiming.of(await self._timeline(job)).model_dump()
            encode = partial(self.encode.pose_json, signer=person.name, glosses=timing)
        data = await asyncio.to_thread(encode, iter(items))
        return Response(data, media_type=MEDIA_TYPES[req.format])

    @api.post(
        "/v1/animate",
        dependencies=[Security(_sign_access)],
        openapi_extra=_binary_body(DRIVING_MEDIA_TYPES),
        responses={
            200: {"content": {MEDIA_TYPES["mp4"]: {}}},
            400: {"description": "an empty body or a bad Content-Length"},
            401: {"description": "no valid API key (only where sign_requires_key is set)"},
            404: {"description": "unknown signer"},
            413: {"description": f"body over {MAX_DRIVING_UPLOAD_BYTES} bytes"},
            415: {"description": "Content-Type not one of the driving clip types"},
            422: {"description": "bad renderer or fps; clip unreadable, too long, no person"},
            503: {"description": "renderers saturated; see Retry-After"},
        },
    )
    async def animate(
        self,
        request: Request,
        signer: str = Query("default", description="name of a registered signer"),
        renderer: str | None = Query(None, description="renderer name; default from the config"),
        fps: float | None = Query(None, description="output frame rate; default the clip's"),
        max_seconds: float = Query(
            MAX_DRIVING_SECONDS, gt=0, le=MAX_DRIVING_SECONDS, description="longest clip taken"
        ),
        stream: bool = Query(False, description="stream fragmented mp4 as it renders"),
    ) -> Response:
        """The paper's inference setting: ``signer`` performs the motion of a driving clip sent
        as the raw body -- a video (labelled by MediaPipe here) or a ``.pose``/``.npz`` pose
        file -- as an mp4 with one frame per driving frame (resampled to ``fps`` if asked).
        The same poses as ``slp animate`` (:func:`~slp_pipeline.synthesize.driving_motion`),
        rendered by the Renderer deployment like a sentence's."""
        name = check_renderer(self.config, renderer)
        person = await asyncio.to_thread(self.registry.get, signer)
        if _media_type(request).startswith("video/") and not self.labels_videos:
            raise UnsupportedMediaType(
                "this server cannot label videos (MediaPipe is not installed); send the "
                "driving poses as application/x-pose or application/x-npz"
            )
        data = await _read_upload(
            request, DRIVING_MEDIA_TYPES, MAX_DRIVING_UPLOAD_BYTES, "driving clip"
        )
        suffix = DRIVING_MEDIA_TYPES[_media_type(request)]
        async with self.decoding:
            poses = await asyncio.to_thread(self._driving, data, suffix, fps, max_seconds)
        first, *rest = in_chunks(poses, self.config.chunk_frames)
        frames = self._frames(first, _each(rest), person, name)
        return await self._mp4(frames, poses.fps, stream)

    def _driving(
        self, data: bytes, suffix: str, fps: float | None, max_seconds: float
    ) -> PoseSequence:
        """An uploaded clip's canonical poses, decoded from a private temporary file. Every
        failure to read it is the caller's (a 422) and names "the driving clip", not the
        server's temporary path."""
        with tempfile.TemporaryDirectory(prefix="slp-animate-") as folder:
            path = Path(folder) / f"driving{suffix}"
            path.write_bytes(data)
            try:
                with quiet_native_logs():  # MediaPipe's C++ chatter would fill the log
                    return driving_motion(self.config, path, fps, max_seconds, progress=False)
            except ValueError as e:  # VideoError, PoseFormatError, NoPersonError, too long
                raise InputError(str(e).replace(str(path), "the driving clip")) from e

    async def _mp4(self, frames: AsyncIterator[np.ndarray], fps: float, stream: bool) -> Response:
        """Rendered frames as one mp4, or (``stream``) as fragmented mp4 sent as they come."""
        media = MEDIA_TYPES["mp4"]
        if stream:
            head = await anext(frames)  # a saturated renderer still answers 503, not a cut stream
            return StreamingResponse(self._encoded(frames, fps, head), media_type=media)
        data = b"".join([part async for part in self._encoded(frames, fps)])
        return Response(data, media_type=media)

    @api.post(
        "/v1/glosses",
        dependencies=[Security(_sign_access)],
        responses={
            401: {"description": "no valid API key (only where sign_requires_key is set)"},
            503: {"description": "text2pose busy; see Retry-After"},
        },
    )
    async def glosses(self, req: GlossRequest) -> GlossTiming:
        """The glosses ``text`` is signed with and the frames of each sign, as ``/v1/sign``
        renders the same text, language and fps -- without rendering (a client shows them
        before the video arrives, highlights the sign being played, and knows the frame count
        for a progress bar)."""
        job = check_request(self.config, req.text, req.language, None, req.fps)
        return GlossTiming.of(await self._timeline(job))

    async def _timeline(self, job: CheckedRequest) -> GlossTimeline:
        with _retryable_as_unavailable():
            answer = await self.text2pose.timeline.remote(job.text, job.language, job.fps)
        return Refusal.unwrap(answer)

    async def _poses(self, text: str, language: str, fps: float | None) -> AsyncIterator:
        """Canonical pose chunks from Text2Pose, resampled there to ``fps`` if asked."""
        with _retryable_as_unavailable():
            stream = cast(
                DeploymentResponseGenerator,
                self.text2pose.options(stream=True).generate.remote(text, language, fps),
            )
            async for chunk in stream:
                yield Refusal.unwrap(chunk)

    async def _frames(
        self, first: PoseSequence, rest: AsyncIterator, person: Signer, renderer: str
    ) -> AsyncIterator[np.ndarray]:
        """Rendered frame chunks in order, with up to ``RENDER_WINDOW`` chunks in flight.

        The Renderer's queue limit admits or sheds a request at its first chunk. A later chunk
        of an admitted request that meets a full queue is resubmitted instead of failing the
        request, which under load would cut streams off mid-video and waste the chunks
        already rendered.
        """
        handle = self.renderer.options(multiplexed_model_id=person.key)
        pending: deque[tuple[PoseSequence, DeploymentResponse]] = deque()
        pending.append((first, _render(handle, renderer, first)))
        try:
            with _retryable_as_unavailable():
                async for chunk in rest:
                    pending.append((chunk, _render(handle, renderer, chunk)))
                    if len(pending) >= RENDER_WINDOW:
                        yield await self._rendered(handle, renderer, first, *pending.popleft())
                while pending:
                    yield await self._rendered(handle, renderer, first, *pending.popleft())
        finally:
            for _, response in pending:  # client gone or an error: stop the leftover work
                # cancel() re-raises the error of a chunk that already failed (e.g. shed with
                # the one that ends this request), which would replace the error in flight.
                with suppress(Exception):
                    response.cancel()

    @staticmethod
    async def _rendered(
        handle: DeploymentHandle,
        renderer: str,
        first: PoseSequence,
        chunk: PoseSequence,
        response: DeploymentResponse,
    ) -> np.ndarray:
        """The frames of one chunk; after the ``first`` (the request is admitted), waits out a
        full queue (up to ``ADMITTED_WAIT_S``) by resubmitting the chunk."""
        deadline = time.monotonic() + ADMITTED_WAIT_S
        while True:
            try:
                return Refusal.unwrap(await response)
            except BackPressureError:
                if chunk is first or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(RESUBMIT_AFTER_S)
            response = _render(handle, renderer, chunk)

    async def _encoded(
        self, frames: AsyncIterator[np.ndarray], fps: float, head: np.ndarray | None = None
    ) -> AsyncIterator[bytes]:
        """The mp4's bytes as they become final: fragmented mp4 when the first frames come
        apart (``head``, a stream), else a regular one, whole at the end."""
        encoder = self.encode.mp4(fps, fragmented=head is not None)
        try:
            if head is not None:
                yield await asyncio.to_thread(encoder.write, head)
            async for chunk in frames:
                data = await asyncio.to_thread(encoder.write, chunk)
                if data:
                    yield data
            yield await asyncio.to_thread(encoder.close)
        except BaseException:
            encoder.abort()
            raise


# --------------------------------------------------------------------------- building
def build_graph(
    config: PipelineConfig, options: Mapping[str, Mapping[str, Any]] | None = None
) -> serve.Application:
    """Bind the graph. ``options`` maps deployment names to ``.options()`` overrides (the
    ``deployments`` list of a serve config file)."""
    config = config.resolved()
    config.check_models()
    keys = config.key_policy()  # bad keys fail here, before anything starts
    config = dataclasses.replace(config, api_keys=[])  # only digests go to the replicas
    SignerRegistry(config.signers_dir)  # seed built-ins and tidy up before any replica reads
    opts = dict(options or {})
    # The classes are Deployments at runtime; mypy does not apply class decorators.
    text2pose = Text2Pose.options(**opts.pop("Text2Pose", {})).bind(config)  # type: ignore[attr-defined]
    renderer = Renderer.options(**opts.pop("Renderer", {})).bind(config)  # type: ignore[attr-defined]
    ingress = SignAPI.options(**opts.pop("SignAPI", {}))  # type: ignore[attr-defined]
    if opts:
        raise ValueError(f"unknown deployments in the serve config: {sorted(opts)}")
    return ingress.bind(text2pose, renderer, config, keys)


def build_app(args: dict[str, Any]) -> serve.Application:
    """Application builder for ``serve run configs/serve/cpu.yaml`` (``import_path``). Ray's CLI
    starts Ray and the proxy itself: neither the loopback binding of Ray's ports nor the refusal
    to serve without a key on a public address apply there -- ``slp serve`` does both."""
    return build_graph(PipelineConfig.from_dict(args))


def run_from_config(
    serve_config: Mapping[str, Any], config: PipelineConfig | None = None, blocking: bool = False
) -> DeploymentHandle:
    """Deploy a serve config file's application on a local Ray (started here if needed).

    ``config`` replaces the file's ``args`` (tests pass tiny models this way). Refuses to serve
    on a non-loopback address without an API key. Ray is started on 127.0.0.1 without its
    dashboard (:func:`slp_pipeline.local_ray.init_local_ray`): this is a single-host service,
    not a cluster head. A Ray started by the caller is used as it is (with a warning if it is
    not on loopback).
    """
    app_cfg = serve_config["applications"][0]
    options = {
        d["name"]: {k: v for k, v in d.items() if k != "name"}
        for d in app_cfg.get("deployments") or []
    }
    http = dict(serve_config.get("http_options") or {})
    config = config or pipeline_config(serve_config)
    check_exposure(str(http.get("host", "127.0.0.1")), config.key_policy())
    graph = build_graph(config, options)  # checks models first
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
    if not ray.is_initialized():
        init_local_ray()
    elif not is_loopback_ip(node_ip := ray.util.get_node_ip_address()):
        logger.warning(
            "Ray was started on %s by the caller: its ports are not loopback-only", node_ip
        )
    serve.start(http_options=http)
    return serve.run(
        graph,
        name=app_cfg.get("name", "slp"),
        route_prefix=app_cfg.get("route_prefix", "/"),
        blocking=blocking,
    )
