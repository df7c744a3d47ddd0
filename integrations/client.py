"""Small client for the sign-language HTTP service (``slp serve``): sync and async.

Endpoints: ``POST /v1/sign`` (JSON ``{text, language, signer, renderer?, fps?, format,
stream?}`` -> mp4 / zip / JSON / .pose bytes), ``POST /v1/glosses`` (``{text, language, fps?}``
-> the glosses and each sign's frames, without rendering), ``GET /v1/signers``,
``POST /v1/signers?name=NAME`` (the raw PNG/JPEG photo, ``Content-Type: image/png`` or
``image/jpeg``), ``DELETE /v1/signers/NAME``, ``GET /healthz``.

``api_key`` is sent as ``Authorization: Bearer KEY`` with every request: a service that has
keys (``SLP_API_KEY``) requires one to add or delete signers, and for ``/v1/sign`` too where
it sets ``sign_requires_key``.

Why a client at all, when it is "just HTTP":

* the service answers ``503`` with ``Retry-After`` when its renderers are saturated (it never
  queues unboundedly), so every caller needs the same polite retry loop;
* errors arrive as JSON (``{"error": ...}`` from our service, ``{"detail": ...}`` from plain
  FastAPI); :class:`SignAPIError` carries the status and that message instead of a bare
  ``HTTPStatusError``;
* videos can be long, so :meth:`SignClient.sign_to_file` streams the body to disk (asking the
  server to stream fragmented mp4 as it renders) and writes atomically, like the rest of the
  project.

Only ``httpx`` is needed (``pip install 'pgmm-slp[client]'``); nothing else of the project is
imported, so the module can be copied into other code bases.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO, Generic, TypeVar
from urllib.parse import quote

try:
    import httpx
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("integrations.client needs httpx: pip install 'pgmm-slp[client]'") from exc

__all__ = ["AsyncSignClient", "SignAPIError", "SignClient", "retry_delay"]

RETRY_STATUSES = frozenset({429, 503})
"""Statuses that mean "busy, come back later": retried, honouring ``Retry-After``."""

#: The httpx client class a client wraps (blocking or asyncio).
HttpT = TypeVar("HttpT", httpx.Client, httpx.AsyncClient)
_CHUNK = 1 << 16
#: Leading bytes of the image types the service accepts for a signer photo.
_IMAGE_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg"}


class SignAPIError(RuntimeError):
    """The service answered with an error status; ``detail`` is its explanation."""

    def __init__(self, status: int, detail: str, url: str = "") -> None:
        super().__init__(f"HTTP {status}{f' from {url}' if url else ''}: {detail}")
        self.status = status
        self.detail = detail


def retry_delay(response: httpx.Response, attempt: int, backoff: float, max_delay: float) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based).

    ``Retry-After`` (seconds or an HTTP date) wins when present; otherwise exponential backoff
    ``backoff * 2**attempt``.  Capped at ``max_delay`` so a confused server cannot park the
    caller for hours.
    """
    header = response.headers.get("Retry-After")
    delay = backoff * 2**attempt
    if header is not None:
        try:
            delay = float(header)
        except ValueError:
            with suppress(TypeError, ValueError):  # unparsable: keep the backoff
                delay = email.utils.parsedate_to_datetime(header).timestamp() - time.time()
    return min(max(delay, 0.0), max_delay)


def _payload(text: str, language: str, fps: float | None, **options: Any) -> dict[str, Any]:
    """A JSON request body; what is ``None`` or ``False`` is left out (the service's default)."""
    fields = {"text": text, "language": language, "fps": fps, **options}
    return {k: v for k, v in fields.items() if v is not None and v is not False}


def _error(response: httpx.Response) -> SignAPIError:
    """Build the exception from an error response whose body has been read."""
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail", body.get("error")) if isinstance(body, dict) else None
    if detail is None:
        detail = response.text.strip() or response.reason_phrase
    # str(): FastAPI's validation errors are a list of dicts
    return SignAPIError(response.status_code, str(detail), str(response.request.url))


def _signer_upload(name: str, image: str | os.PathLike[str] | bytes) -> dict[str, Any]:
    """The request arguments registering signer ``name``: the photo's bytes and a Content-Type
    told from its content (not its file name). The service refuses anything but PNG and JPEG,
    so other bytes fail here, before the upload."""
    data = image if isinstance(image, bytes) else Path(image).read_bytes()
    for signature, content_type in _IMAGE_SIGNATURES.items():
        if data.startswith(signature):
            return {
                "params": {"name": name},
                "content": data,
                "headers": {"Content-Type": content_type},
            }
    what = "the image bytes" if isinstance(image, bytes) else str(image)
    raise ValueError(f"{what}: not a PNG or JPEG image (the only types /v1/signers accepts)")


def _signer_path(name: str) -> str:
    return f"/v1/signers/{quote(name, safe='')}"


@contextmanager
def _atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A file that becomes ``path`` only once the block completes; on any error it is removed
    and an existing ``path`` is left as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.part")
    try:
        with tmp.open("wb") as f:
            yield f
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class _Base(Generic[HttpT]):
    """Settings shared by the sync and async clients (see :class:`SignClient`)."""

    _client_type: type[HttpT]

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        timeout: float = 300.0,
        retries: int = 3,
        backoff: float = 1.0,
        max_delay: float = 30.0,
        api_key: str | None = None,
        http_client: HttpT | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.max_delay = max_delay
        self._auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._owns = http_client is None
        self._http: HttpT = http_client or self._client_type(timeout=timeout)

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def _with_auth(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Request arguments with the API key header added (a caller's headers kept)."""
        return {**kwargs, "headers": {**self._auth, **(kwargs.get("headers") or {})}}


class SignClient(_Base[httpx.Client]):
    """Blocking client.  Pass ``http_client`` to reuse a configured ``httpx.Client`` (proxies,
    a test transport); otherwise one is created and closed with this client. ``api_key`` goes
    with every request as ``Authorization: Bearer KEY``."""

    _client_type = httpx.Client

    def __enter__(self) -> SignClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns:
            self._http.close()

    @contextmanager
    def _request(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A successful streamed response, after retrying busy answers; errors raise."""
        for attempt in range(self.retries + 1):
            with self._http.stream(method, self._url(path), **self._with_auth(kwargs)) as response:
                if response.status_code < 400:
                    yield response
                    return
                response.read()
                if response.status_code not in RETRY_STATUSES or attempt == self.retries:
                    raise _error(response)
                delay = retry_delay(response, attempt, self.backoff, self.max_delay)
            time.sleep(delay)

    def _read(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The whole successful response, read (its ``content`` and ``json()`` work)."""
        with self._request(method, path, **kwargs) as response:
            response.read()
        return response

    def health(self) -> dict[str, Any]:
        """The service's ``/healthz`` answer (``{"status": "ok"}``)."""
        return self._read("GET", "/healthz").json()

    def signers(self) -> list[dict[str, Any]]:
        """Registered signers: ``[{"name": ..., **metadata}, ...]``."""
        return self._read("GET", "/v1/signers").json()["signers"]

    def add_signer(self, name: str, image: str | os.PathLike[str] | bytes) -> dict[str, Any]:
        """Register signer ``name`` from one PNG/JPEG photo (a path or its bytes); returns the
        service's record of it. Needs ``api_key`` where the service has keys."""
        return self._read("POST", "/v1/signers", **_signer_upload(name, image)).json()

    def delete_signer(self, name: str) -> None:
        """Delete signer ``name`` (renders already under way with it still finish)."""
        self._read("DELETE", _signer_path(name))

    def glosses(self, text: str, language: str = "de", fps: float | None = None) -> dict[str, Any]:
        """What ``text`` is signed with: ``{"fps", "frames", "timed", "sentences", "glosses":
        [{"gloss", "sentence", "start", "end"}, ...]}`` (frames at ``fps``), as ``sign`` with
        the same arguments renders it -- without rendering."""
        return self._read("POST", "/v1/glosses", json=_payload(text, language, fps)).json()

    def sign(
        self,
        text: str,
        language: str = "de",
        signer: str = "default",
        format: str = "mp4",
        renderer: str | None = None,
        fps: float | None = None,
    ) -> bytes:
        """Sign ``text``; the whole video (or zip / pose JSON) in memory."""
        body = _payload(text, language, fps, signer=signer, format=format, renderer=renderer)
        return self._read("POST", "/v1/sign", json=body).content

    def sign_to_file(
        self,
        text: str,
        path: str | os.PathLike[str],
        language: str = "de",
        signer: str = "default",
        format: str = "mp4",
        renderer: str | None = None,
        fps: float | None = None,
        stream: bool = True,
    ) -> Path:
        """Sign ``text`` into ``path``, downloading in chunks (constant memory).

        ``stream`` asks the server to send fragmented mp4 while it renders (mp4 only), so the
        download overlaps rendering.  ``path`` appears only once the download is complete.
        """
        path = Path(path)
        mp4_stream = stream and format == "mp4"
        body = _payload(
            text, language, fps, signer=signer, format=format, renderer=renderer, stream=mp4_stream
        )
        with self._request("POST", "/v1/sign", json=body) as response, _atomic_file(path) as f:
            for chunk in response.iter_bytes(_CHUNK):
                f.write(chunk)
        return path


class AsyncSignClient(_Base[httpx.AsyncClient]):
    """The same API as :class:`SignClient`, for asyncio code (e.g. a web backend)."""

    _client_type = httpx.AsyncClient

    async def __aenter__(self) -> AsyncSignClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns:
            await self._http.aclose()

    @asynccontextmanager
    async def _request(
        self, method: str, path: str, **kwargs: Any
    ) -> AsyncIterator[httpx.Response]:
        for attempt in range(self.retries + 1):
            request = self._http.stream(method, self._url(path), **self._with_auth(kwargs))
            async with request as response:
                if response.status_code < 400:
                    yield response
                    return
                await response.aread()
                if response.status_code not in RETRY_STATUSES or attempt == self.retries:
                    raise _error(response)
                delay = retry_delay(response, attempt, self.backoff, self.max_delay)
            await asyncio.sleep(delay)

    async def _read(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async with self._request(method, path, **kwargs) as response:
            await response.aread()
        return response

    async def health(self) -> dict[str, Any]:
        return (await self._read("GET", "/healthz")).json()

    async def signers(self) -> list[dict[str, Any]]:
        return (await self._read("GET", "/v1/signers")).json()["signers"]

    async def add_signer(self, name: str, image: str | os.PathLike[str] | bytes) -> dict[str, Any]:
        return (await self._read("POST", "/v1/signers", **_signer_upload(name, image))).json()

    async def delete_signer(self, name: str) -> None:
        await self._read("DELETE", _signer_path(name))

    async def glosses(
        self, text: str, language: str = "de", fps: float | None = None
    ) -> dict[str, Any]:
        body = _payload(text, language, fps)
        return (await self._read("POST", "/v1/glosses", json=body)).json()

    async def sign(
        self,
        text: str,
        language: str = "de",
        signer: str = "default",
        format: str = "mp4",
        renderer: str | None = None,
        fps: float | None = None,
    ) -> bytes:
        body = _payload(text, language, fps, signer=signer, format=format, renderer=renderer)
        return (await self._read("POST", "/v1/sign", json=body)).content

    async def sign_to_file(
        self,
        text: str,
        path: str | os.PathLike[str],
        language: str = "de",
        signer: str = "default",
        format: str = "mp4",
        renderer: str | None = None,
        fps: float | None = None,
        stream: bool = True,
    ) -> Path:
        path = Path(path)
        mp4_stream = stream and format == "mp4"
        body = _payload(
            text, language, fps, signer=signer, format=format, renderer=renderer, stream=mp4_stream
        )
        # Blocking writes of 64 KiB chunks to a local file are short enough for the loop.
        async with self._request("POST", "/v1/sign", json=body) as response:
            with _atomic_file(path) as f:
                async for chunk in response.aiter_bytes(_CHUNK):
                    f.write(chunk)
        return path
