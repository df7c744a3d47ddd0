"""ONNX export of the PGMM renderer, as two graphs that mirror how serving runs the model.

* ``<name>.source.onnx`` -- :meth:`PGMM.encode_source` without the heatmaps: the per-signer
  work (E_I feature pyramid, source keypoints), run once per signer and cached.
* ``<name>.onnx`` -- :meth:`PGMM.animate`: the cached source state plus a batch of driving
  heatmaps in, frames out. This is the per-frame cost, so it is the graph worth optimising.

Splitting them keeps the per-frame graph free of the source encoder (a third of the work at
batch 1). Both use the dynamo exporter (``torch.onnx.export(dynamo=True)``) at opset >= 18:
the TorchScript exporter cannot trace the shape arithmetic of the dense-motion branch
(``round()`` of a traced size), and opset 17's ``Resize`` has no ``antialias``. The TPS fit's
``torch.linalg.solve`` has no ONNX operator; :func:`pgmm.models.tps.solve_unrolled` replaces it
while exporting.

Names are shared between the graphs: the source graph's outputs are exactly the animate
graph's ``source_*`` inputs, so :class:`OnnxRenderer` passes one to the other by name.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pgmm.models.pgmm import PGMM, SourceState

#: The dynamo exporter implements opset 18+; lower targets fail on the antialiased Resize.
MIN_OPSET = 18
KEYPOINTS = "source_keypoints"


def feature_names(model: PGMM) -> list[str]:
    """Names of the E_I pyramid levels, finest first."""
    return [f"source_feature_{i}" for i in range(model.config.num_down_blocks + 1)]


def source_graph_path(path: str | Path) -> Path:
    """Where the source graph of the animate graph at ``path`` lives."""
    path = Path(path)
    return path.with_name(path.stem + ".source.onnx")


class SourceGraph(nn.Module):
    """source image -> (source keypoints, E_I features...)."""

    def __init__(self, model: PGMM) -> None:
        super().__init__()
        self.model = model

    def forward(self, source: torch.Tensor) -> tuple[torch.Tensor, ...]:
        state = self.model.encode_source(source)
        return (state.kp_source, *state.features)


class AnimateGraph(nn.Module):
    """(source, keypoints, source heatmaps, driving heatmaps, features...) -> frames."""

    def __init__(self, model: PGMM) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        source: torch.Tensor,
        source_keypoints: torch.Tensor,
        source_heatmaps: torch.Tensor,
        driving_heatmaps: torch.Tensor,
        features: list[torch.Tensor],
    ) -> torch.Tensor:
        state = SourceState(source, features, source_keypoints, source_heatmaps)
        return self.model.animate(state, driving_heatmaps)


def example_inputs(
    model: PGMM, frames: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ``(source, source heatmaps, driving heatmaps)`` of the model's sizes."""
    size = model.config.image_size
    maps = size // model.config.heatmap_stride
    gen = torch.Generator().manual_seed(seed)
    channels = model.config.num_keypoints
    return (
        torch.rand(1, 3, size, size, generator=gen),
        torch.rand(1, channels, maps, maps, generator=gen),
        torch.rand(frames, channels, maps, maps, generator=gen),
    )


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Hide the exporter's harmless noise: "torchvision is not installed" (we use none of its
    ops), a FutureWarning from torch's own pytree code, and its failure to name the frame axis
    of a list input (:func:`_name_frame_axis` does that)."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=".*dynamic axes will not be renamed")
            yield
    finally:
        logger.setLevel(level)


EXPORT_MODULES = ("onnx", "onnxscript", "onnxruntime")


def export_extra_problem() -> str | None:
    """Why ONNX export cannot run here, or ``None`` when it can.

    Importing is the only honest check: the modules can be installed yet broken, e.g. onnx
    needs protobuf >= 6 while mediapipe 0.10.21 (the ``real`` extra) pins protobuf < 5, so the
    two extras need separate environments.
    """
    for name in EXPORT_MODULES:
        try:
            __import__(name)
        except ImportError as e:
            return (
                f"the export extra is unusable ({name}: {e}); install it with "
                "pip install -e '.[export]' in an environment without the 'real' extra"
            )
    return None


def export_onnx(
    model: PGMM, out: str | Path, batch: int | None = None, opset: int = MIN_OPSET
) -> tuple[Path, Path]:
    """Write the animate graph to ``out`` and the source graph next to it.

    ``batch`` fixes the number of frames per call; ``None`` leaves that axis dynamic (the
    export then traces 2 frames: torch.export specialises example sizes 0 and 1).
    Returns ``(animate graph, source graph)``.
    """
    if opset < MIN_OPSET:
        raise ValueError(
            f"opset {opset} is not supported: the exporter starts at {MIN_OPSET}, and opset 17's "
            "Resize cannot express the dense-motion branch's antialiased downsampling"
        )
    if batch is not None and batch < 1:
        raise ValueError(f"--batch must be >= 1, got {batch}")
    problem = export_extra_problem()
    if problem:
        raise ImportError(problem)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    source_out = source_graph_path(out)
    with _quiet_exporter():
        _export_graphs(model, out, source_out, batch, opset)
    return out, source_out


def _export_graphs(model: PGMM, out: Path, source_out: Path, batch: int | None, opset: int) -> None:
    """Both ``torch.onnx.export`` calls; the animate graph is traced on a real source state."""
    source, source_maps, driving = example_inputs(model, batch or 2)
    names = feature_names(model)
    state = model.encode_source(source, source_maps)
    # One self-contained file per graph (weights inside), written by the dynamo exporter.
    export = partial(
        torch.onnx.export, opset_version=opset, dynamo=True, external_data=False, verbose=False
    )
    export(
        SourceGraph(model).eval(),
        (source,),
        str(source_out),
        input_names=["source"],
        output_names=[KEYPOINTS, *names],
    )
    frames_axis = None if batch else {0: torch.export.Dim("frames", min=1)}
    export(
        AnimateGraph(model).eval(),
        (source, state.kp_source, source_maps, driving, state.features),
        str(out),
        input_names=["source", KEYPOINTS, "source_heatmaps", "driving_heatmaps", *names],
        output_names=["frames"],
        dynamic_shapes=(None, None, None, frames_axis, [None] * len(names)),
    )
    if not batch:
        _name_frame_axis(out)


def _name_frame_axis(path: Path) -> None:
    """Call the dynamic frame axis ``frames`` instead of the exporter's ``s<N>``, so the graph
    documents itself in Netron or ``InferenceSession.get_inputs()``."""
    import onnx

    model = onnx.load(str(path))
    traced = next(i for i in model.graph.input if i.name == "driving_heatmaps")
    symbol = traced.type.tensor_type.shape.dim[0].dim_param
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param == symbol:
                dim.dim_param = "frames"
    onnx.save(model, str(path))


class OnnxRenderer:
    """Both graphs in ONNX Runtime (CPU), with the same two calls as :class:`PGMM`."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError("onnxruntime is not installed: pip install -e '.[export]'") from e
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = partial(
            ort.InferenceSession, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.animate_session = session(str(path))
        self.source_session = session(str(source_graph_path(path)))

    def encode_source(
        self, source: np.ndarray, source_heatmaps: np.ndarray
    ) -> dict[str, np.ndarray]:
        """The cached per-signer inputs of :meth:`animate`, by input name."""
        outputs = self.source_session.run(None, {"source": source})
        names = [o.name for o in self.source_session.get_outputs()]
        return {
            "source": source,
            "source_heatmaps": source_heatmaps,
            **dict(zip(names, outputs, strict=True)),
        }

    def animate(self, state: dict[str, np.ndarray], driving_heatmaps: np.ndarray) -> np.ndarray:
        """Frames ``(T, 3, H, W)`` in [0, 1]."""
        return self.animate_session.run(None, {**state, "driving_heatmaps": driving_heatmaps})[0]


def max_difference(model: PGMM, renderer: OnnxRenderer, frames: int, seed: int = 1) -> float:
    """Largest absolute difference between ONNX Runtime's and PyTorch's frames on random
    inputs: the check that the export computes what the model does."""
    source, source_maps, driving = example_inputs(model.cpu().eval(), frames, seed)
    expected = model.animate(model.encode_source(source, source_maps), driving).numpy()
    state = renderer.encode_source(source.numpy(), source_maps.numpy())
    return float(np.abs(renderer.animate(state, driving.numpy()) - expected).max())
