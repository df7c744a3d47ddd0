"""Example: sign every captioned video dropped into a folder.

Put ``talk.mp4`` and ``talk.srt`` (or ``talk.vtt``) into the folder; ``talk.signed.mp4`` appears
next to them.  A pair is (re)processed when its output is missing or older than the video or
the captions; files still being copied (size changing between two looks) are left for the next
scan.  A pair that fails is reported and skipped -- no partial output is written -- and retried
only when one of its files changes.

    python -m integrations.watch_folder incoming/                      # in-process renderer
    python -m integrations.watch_folder incoming/ --server http://gpu-box:8000 --signer anna
    python -m integrations.watch_folder incoming/ --once               # one scan, then exit

With ``--server`` each cue is rendered by the HTTP service (:class:`ServiceRenderer`), so
this machine only decodes, composites and encodes.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np

from integrations.captions import CAPTION_SUFFIXES, load_captions
from integrations.cli import RendererLoader
from integrations.track import SignRenderer, render_pip

if TYPE_CHECKING:
    from integrations.client import SignClient

logger = logging.getLogger("integrations.watch_folder")

OUTPUT_SUFFIX = ".signed.mp4"


class ServiceRenderer:
    """:class:`~integrations.track.SignRenderer` backed by the HTTP service.

    The service has no "rest pose" endpoint, so the idle frame is the first frame of a clip
    (clips start from the rest pose) rendered once at start-up, which also fixes ``fps`` and
    ``size``.
    """

    def __init__(
        self, client: SignClient, signer: str, language: str = "de", probe: str = "ja"
    ) -> None:
        self.client = client
        self.signer = signer
        frames, self.fps = self._decode(client.sign(probe, language=language, signer=signer))
        self._rest = frames[0]
        self.size = self._rest.shape[:2]

    def render(self, text: str, language: str) -> Iterator[np.ndarray]:
        frames, _ = self._decode(self.client.sign(text, language=language, signer=self.signer))
        yield frames

    def idle(self, num_frames: int) -> np.ndarray:
        return np.repeat(self._rest[None], num_frames, axis=0)

    @staticmethod
    def _decode(data: bytes) -> tuple[np.ndarray, float]:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            return np.stack(frames), float(stream.average_rate or 25)


def pending_pairs(folder: Path, failed: dict[Path, float]) -> list[tuple[Path, Path]]:
    """(video, captions) pairs whose output is missing or stale, oldest first."""
    pairs = []
    for video in sorted(folder.glob("*.mp4")):
        if video.name.endswith(OUTPUT_SUFFIX) or video.name.startswith("."):
            continue
        captions = next(
            (video.with_suffix(s) for s in CAPTION_SUFFIXES if video.with_suffix(s).is_file()),
            None,
        )
        if captions is None:
            continue
        newest = max(video.stat().st_mtime, captions.stat().st_mtime)
        out = output_path(video)
        if out.exists() and out.stat().st_mtime >= newest:
            continue
        if failed.get(video) == newest:
            continue  # failed before and unchanged since
        pairs.append((video, captions))
    return pairs


def output_path(video: Path) -> Path:
    return video.with_name(video.stem + OUTPUT_SUFFIX)


def process_once(folder: Path, renderer: SignRenderer, failed: dict[Path, float]) -> int:
    """One scan: sign every ready pair; returns how many outputs were written."""
    done = 0
    for video, captions in pending_pairs(folder, failed):
        sizes = (video.stat().st_size, captions.stat().st_size)
        time.sleep(0.5)
        if sizes != (video.stat().st_size, captions.stat().st_size):
            continue  # still being copied in
        try:
            render_pip(video, load_captions(captions), renderer, output_path(video), progress=False)
        except (OSError, ValueError, RuntimeError) as exc:
            failed[video] = max(video.stat().st_mtime, captions.stat().st_mtime)
            logger.error("%s: %s", video.name, exc)
            continue
        logger.info("%s -> %s", video.name, output_path(video).name)
        done += 1
    return done


def main(load_renderer: RendererLoader, argv: list[str] | None = None) -> int:
    """Watch a folder; without ``--server``, cues are signed by ``load_renderer``'s renderer
    (handed in, so the package never imports the service)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--server", help="base URL of the sign service (default: in-process)")
    parser.add_argument("--signer", default="default")
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between scans")
    parser.add_argument("--once", action="store_true", help="scan once and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.server:
        from integrations.client import SignClient

        renderer: SignRenderer = ServiceRenderer(SignClient(args.server), args.signer)
    else:
        renderer = load_renderer(args.signer, args.models_dir)
    failed: dict[Path, float] = {}
    while True:
        process_once(args.folder, renderer, failed)
        if args.once:
            return 1 if failed else 0
        time.sleep(args.interval)


if __name__ == "__main__":
    # The program, not the package, brings the two together: the in-process renderer is the
    # service's own (loading torch and the models only when no --server is given).
    def in_process(signer: str, models_dir: Path) -> SignRenderer:
        from slp_pipeline.synthesize import caption_renderer

        return caption_renderer(signer, models_dir)

    sys.exit(main(in_process))
