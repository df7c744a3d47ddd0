"""The Ray Serve graph -- the one place where the pipeline's deployments are bound together.

    HTTP --> SignAPI (FastAPI ingress: validation, signers, encoding)
               |--stream--> Text2Pose   (Text2PoseStage: text -> canonical pose chunks)
               '--chunks--> Renderer    (HeatmapStage + RendererStage: pose chunk -> frames)

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
"""

# No ``from __future__ import annotations`` here: @serve.ingress ships the FastAPI app to the
# replicas by value, where string annotations (e.g. ``Request``) could no longer be resolved.
import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import ray
import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle, DeploymentResponse

from pgmm.pose.sequence import PoseSequence
from slp_pipeline.config import PipelineConfig, pipeline_config
from slp_pipeline.signers import InputError, Signer, SignerRegistry
from slp_pipeline.stages import (
    MEDIA_TYPES,
    DrivingChunk,
    EncodeStage,
    FrameRateConverter,
    HeatmapStage,
    RendererStage,
    Text2PoseStage,
    check_request_text,
    upload_pose_estimator,
)

RENDER_WINDOW = 3  # chunks of one request in flight at once: overlaps rendering with encoding
RETRY_AFTER_S = 2
ADMITTED_WAIT_S = 60  # how long a later chunk of an admitted request waits for queue room
RESUBMIT_AFTER_S = 0.05
logger = logging.getLogger("ray.serve")

# Defined before the ingress class: @serve.ingress serialises the FastAPI app (and the globals
# its routes use) when the class is decorated.
INDEX_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pgmm-slp</title>
<link rel="icon" href="data:,">
<style>body{font-family:sans-serif;max-width:42rem;margin:2rem auto}textarea{width:100%}
video{width:100%;background:#222;margin-top:1rem}</style></head>
<body><h1>Text to sign language</h1>
<textarea id="text" rows="3">am tag regnet es im norden</textarea>
<p><select id="language"><option value="de">Deutsch (DGS)</option>
<option value="zh">中文 (CSL)</option></select>
<select id="signer"></select> <button id="go">Sign</button> <span id="status"></span></p>
<video id="video" controls autoplay muted></video>
<p><a href="/docs">API docs</a></p>
<script>
const $ = (id) => document.getElementById(id);
fetch("/v1/signers").then((r) => r.json()).then((d) => {
  for (const s of d.signers) $("signer").add(new Option(s.name, s.name));
});
$("go").onclick = async () => {
  $("status").textContent = "rendering...";
  const body = {text: $("text").value, language: $("language").value, signer: $("signer").value};
  const r = await fetch("/v1/sign", {method: "POST", headers: {"Content-Type": "application/json"},
                                     body: JSON.stringify(body)});
  if (!r.ok) { $("status").textContent = (await r.json()).error || r.statusText; return; }
  $("video").src = URL.createObjectURL(await r.blob());
  $("status").textContent = "";
};
</script></body></html>
"""


api = FastAPI(
    title="pgmm-slp",
    version="1",
    description="Sign language production: text -> text2pose -> PGMM renderer -> video.",
)


class SignRequest(BaseModel):
    text: str = Field(description="sentence to sign", examples=["am tag regnet es im norden"])
    language: str = Field("de", description="language of the text (de or zh)")
    signer: str = Field("default", description="name of a registered signer")
    renderer: str | None = Field(None, description="renderer name; default from the config")
    fps: float | None = Field(None, description="output frame rate; default that of text2pose")
    format: Literal["mp4", "frames-zip", "pose-json"] = "mp4"
    stream: bool = Field(False, description="mp4 only: stream fragmented mp4 as it renders")


class Unavailable(Exception):
    """A deployment behind the ingress shed the request or lost its replica: retry shortly."""


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


def _error(exc: BaseException) -> JSONResponse:
    """One JSON error shape for everything; errors raised in another replica arrive wrapped in
    a ``RayTaskError`` whose text holds a traceback, so the original message is unwrapped."""
    cause = exc.cause if isinstance(exc, RayTaskError) and exc.cause is not None else exc
    if isinstance(cause, InputError):
        return JSONResponse({"error": str(cause)}, status_code=cause.status)
    if isinstance(cause, Unavailable):
        logger.warning("request shed: %s", cause)
        return JSONResponse(
            {"error": "the service is busy or restarting a replica; retry shortly"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    logger.error("request failed: %s", exc, exc_info=exc)
    return JSONResponse({"error": f"internal error ({type(cause).__name__})"}, status_code=500)


@api.exception_handler(InputError)
@api.exception_handler(RayTaskError)
@api.exception_handler(Unavailable)
async def _handle_error(request: Request, exc: Exception) -> JSONResponse:
    return _error(exc)


@api.exception_handler(RequestValidationError)
async def _handle_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's schema errors, in the same ``{"error": ...}`` shape as ours."""
    where = "; ".join(
        f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors()
    )
    return JSONResponse({"error": where}, status_code=422)


# --------------------------------------------------------------------------- Text2Pose
@serve.deployment(ray_actor_options={"num_cpus": 0.2})
class Text2Pose:
    """text -> canonical pose chunks, streamed to the caller as they are generated."""

    def __init__(self, config: PipelineConfig) -> None:
        torch.set_num_threads(config.torch_threads)
        self.stage = Text2PoseStage.load(
            config.text2pose, config.text2pose_loader, config.max_text_chars, config.chunk_frames
        )

    def generate(self, text: str, language: str) -> Iterator[PoseSequence]:
        yield from self.stage.stream(text, language)


# --------------------------------------------------------------------------- Renderer
@dataclass
class _SignerCache:
    """A signer and its per-renderer source encodings, cached per replica (multiplexing)."""

    signer: Signer
    states: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Job:
    renderer: str
    state: Any
    driving: DrivingChunk


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=8)
class Renderer:
    """Canonical pose chunk + signer -> uint8 frames, batched across requests."""

    def __init__(self, config: PipelineConfig) -> None:
        torch.set_num_threads(config.torch_threads)
        self.registry = SignerRegistry(config.signers_dir, seed_builtins=False)
        self.heatmaps = HeatmapStage(config.heatmap_sigma)
        self.stages = {
            name: RendererStage.load(name, spec, config.device, config.skeleton_size)
            for name, spec in config.renderers.items()
        }
        self.render_batch.set_max_batch_size(config.max_batch_size)
        self.render_batch.set_batch_wait_timeout_s(config.batch_wait_timeout_s)

    @serve.multiplexed(max_num_models_per_replica=8)
    async def signer(self, key: str) -> _SignerCache:
        """Load a signer by its content key (``name@digest``); a changed signer is a new key."""
        person = await asyncio.to_thread(self.registry.get, key.partition("@")[0])
        if person.key != key:
            raise InputError(f"signer {person.name!r} changed during the request; retry")
        return _SignerCache(person)

    async def render(self, renderer: str, chunk: PoseSequence) -> np.ndarray:
        cache = await self.signer(serve.get_multiplexed_model_id())
        stage = self.stages[renderer]
        size = stage.heatmap_size
        if renderer not in cache.states:
            source = self.heatmaps.source_heatmaps(cache.signer, size) if size else None
            cache.states[renderer] = await asyncio.to_thread(
                stage.encode_signer, cache.signer, source
            )
        driving = self.heatmaps.drive(chunk, cache.signer, size)
        return await self.render_batch(_Job(renderer, cache.states[renderer], driving))

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.02)
    async def render_batch(self, jobs: list[_Job]) -> list[np.ndarray]:
        return await asyncio.to_thread(self._render_jobs, jobs)

    def _render_jobs(self, jobs: list[_Job]) -> list[np.ndarray]:
        out: list[np.ndarray] = [np.empty(0)] * len(jobs)
        for name in {j.renderer for j in jobs}:
            idx = [i for i, j in enumerate(jobs) if j.renderer == name]
            frames = self.stages[name].render(
                [jobs[i].state for i in idx], [jobs[i].driving for i in idx]
            )
            for i, f in zip(idx, frames, strict=True):
                out[i] = f
        return out


# --------------------------------------------------------------------------- ingress
@serve.deployment(ray_actor_options={"num_cpus": 0.2}, max_ongoing_requests=32)
@serve.ingress(api)
class SignAPI:
    """HTTP front: checks requests, owns the signer registry, encodes the output."""

    def __init__(
        self, text2pose: DeploymentHandle, renderer: DeploymentHandle, config: PipelineConfig
    ) -> None:
        torch.set_num_threads(config.torch_threads)
        self.text2pose = text2pose
        self.renderer = renderer
        self.config = config
        self.registry = SignerRegistry(config.signers_dir, seed_builtins=False)
        self.estimator = upload_pose_estimator(config.upload_poses, config.pose_estimator)
        self.heatmaps = HeatmapStage(config.heatmap_sigma)
        self.encode = EncodeStage()

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index(self) -> str:
        return INDEX_HTML

    @api.get("/v1/signers")
    async def list_signers(self) -> dict[str, Any]:
        return {"signers": await asyncio.to_thread(self.registry.list)}

    @api.post("/v1/signers", status_code=201)
    async def add_signer(
        self, request: Request, name: str = Query(description="name of the new signer")
    ) -> dict[str, Any]:
        """Add a signer from one PNG/JPEG image sent as the raw request body."""
        data = await request.body()
        person = await asyncio.to_thread(self.registry.add, name, data, self.estimator)
        return {"name": person.name, **person.meta}

    @api.delete("/v1/signers/{name}")
    async def delete_signer(self, name: str) -> dict[str, str]:
        await asyncio.to_thread(self.registry.delete, name)
        return {"deleted": name}

    @api.post(
        "/v1/sign",
        responses={
            200: {"content": {t: {} for t in MEDIA_TYPES.values()}},
            503: {"description": "renderers saturated; see Retry-After"},
        },
    )
    async def sign(self, req: SignRequest) -> Response:
        """Sign ``text``: an mp4 (or a zip of PNG frames, or the poses as JSON)."""
        cfg = self.config
        text = check_request_text(req.text, req.language, cfg.text2pose, cfg.max_text_chars)
        renderer = req.renderer or cfg.default_renderer
        if renderer not in cfg.renderers:
            raise InputError(f"unknown renderer {renderer!r}; choose from {sorted(cfg.renderers)}")
        if req.fps is not None and not cfg.min_fps <= req.fps <= cfg.max_fps:
            raise InputError(f"fps must be in [{cfg.min_fps}, {cfg.max_fps}], got {req.fps}")
        if req.stream and req.format != "mp4":
            raise InputError("stream=true is only available for format mp4")
        person = await asyncio.to_thread(self.registry.get, req.signer)
        poses = self._poses(text, req.language, req.fps)
        first = await anext(poses)  # text errors surface here, before any response starts
        media = MEDIA_TYPES[req.format]
        if req.format == "pose-json":
            chunks = [self.heatmaps.retarget(first, person)]
            chunks += [self.heatmaps.retarget(c, person) async for c in poses]
            data = await asyncio.to_thread(self.encode.pose_json, iter(chunks), person.name)
            return Response(data, media_type=media)
        frames = self._frames(first, poses, person, renderer)
        if req.format == "frames-zip":
            chunks = [f async for f in frames]
            data = await asyncio.to_thread(self.encode.frames_zip, iter(chunks))
            return Response(data, media_type=media)
        fps = req.fps or first.fps
        if req.stream:
            head = await anext(frames)  # a saturated renderer still answers 503, not a cut stream
            return StreamingResponse(self._mp4_stream(head, frames, fps), media_type=media)
        encoder = self.encode.mp4(fps, fragmented=False)
        try:
            async for chunk in frames:
                await asyncio.to_thread(encoder.write, chunk)
            data = await asyncio.to_thread(encoder.close)
        except BaseException:
            encoder.abort()
            raise
        return Response(data, media_type=media)

    async def _poses(self, text: str, language: str, fps: float | None) -> AsyncIterator:
        """Canonical pose chunks from Text2Pose, resampled to ``fps`` if asked."""
        converter = None
        with _retryable_as_unavailable():
            async for chunk in self.text2pose.options(stream=True).generate.remote(text, language):
                if fps is not None and fps != chunk.fps:
                    converter = converter or FrameRateConverter(chunk.fps, fps)
                    chunk = converter.push(chunk)
                if chunk is not None:
                    yield chunk

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
        pending.append((first, handle.render.remote(renderer, first)))
        admitted = False
        try:
            with _retryable_as_unavailable():
                async for chunk in rest:
                    pending.append((chunk, handle.render.remote(renderer, chunk)))
                    if len(pending) >= RENDER_WINDOW:
                        yield await self._rendered(handle, renderer, *pending.popleft(), admitted)
                        admitted = True
                while pending:
                    yield await self._rendered(handle, renderer, *pending.popleft(), admitted)
                    admitted = True
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
        chunk: PoseSequence,
        response: DeploymentResponse,
        admitted: bool,
    ) -> np.ndarray:
        """The frames of one chunk; for an ``admitted`` request, waits out a full queue (up to
        ``ADMITTED_WAIT_S``) by resubmitting the chunk."""
        deadline = time.monotonic() + ADMITTED_WAIT_S
        while True:
            try:
                return await response
            except BackPressureError:
                if not admitted or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(RESUBMIT_AFTER_S)
            response = handle.render.remote(renderer, chunk)

    async def _mp4_stream(
        self, head: np.ndarray, frames: AsyncIterator[np.ndarray], fps: float
    ) -> AsyncIterator[bytes]:
        encoder = self.encode.mp4(fps, fragmented=True)
        try:
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
    SignerRegistry(config.signers_dir)  # seed the built-in signers before any replica reads
    opts = dict(options or {})
    text2pose = Text2Pose.options(**opts.pop("Text2Pose", {})).bind(config)
    renderer = Renderer.options(**opts.pop("Renderer", {})).bind(config)
    ingress = SignAPI.options(**opts.pop("SignAPI", {}))
    if opts:
        raise ValueError(f"unknown deployments in the serve config: {sorted(opts)}")
    return ingress.bind(text2pose, renderer, config)


def build_app(args: dict[str, Any]) -> serve.Application:
    """Application builder for ``serve run configs/serve/cpu.yaml`` (``import_path``)."""
    return build_graph(PipelineConfig.from_dict(args))


def run_from_config(
    serve_config: Mapping[str, Any], config: PipelineConfig | None = None, blocking: bool = False
) -> DeploymentHandle:
    """Deploy a serve config file's application on a local Ray (started here if needed).

    ``config`` replaces the file's ``args`` (tests pass tiny models this way). Ray is kept on
    127.0.0.1 without its dashboard: this is a single-host service, not a cluster head.
    """
    app_cfg = serve_config["applications"][0]
    options = {
        d["name"]: {k: v for k, v in d.items() if k != "name"}
        for d in app_cfg.get("deployments") or []
    }
    graph = build_graph(config or pipeline_config(serve_config), options)  # checks models first
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
    if not ray.is_initialized():
        ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1")
    serve.start(http_options=serve_config.get("http_options") or {})
    return serve.run(
        graph,
        name=app_cfg.get("name", "slp"),
        route_prefix=app_cfg.get("route_prefix", "/"),
        blocking=blocking,
    )
