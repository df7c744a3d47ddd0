"""Device and serve-config handling of the commands that are not ``slp serve`` (issue 21).

``slp demo`` reads its serve config the way ``slp serve`` does (fitted to the host before Ray
starts), ``slp eval`` takes ``--device auto`` like the serving stages and refuses an unknown or
absent device in one line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from slp_pipeline.cli import build_parser, main
from slp_pipeline.cli import demo as cli_demo
from slp_pipeline.cli import eval as cli_eval


def test_demo_reads_its_config_like_serve_before_starting_ray(tmp_path: Path) -> None:
    """A config without an application is refused by the serve-config reader, not by Ray."""
    config = tmp_path / "serve.yaml"
    config.write_text("http_options: {port: 8123}\n", encoding="utf-8")
    args = argparse.Namespace(config=config, out=tmp_path / "out", signer="default")
    with pytest.raises(ValueError, match="one entry in 'applications'"):
        cli_demo.run_demo(args)
    with pytest.raises(FileNotFoundError, match="serve config not found"):
        cli_demo.run_demo(argparse.Namespace(config=tmp_path / "missing.yaml"))


def test_eval_device_defaults_to_auto() -> None:
    args = build_parser().parse_args(["eval", "--task", "reconstruction", "--out", "x"])
    assert args.device == "auto"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert cli_eval._device("auto").type == expected
    assert cli_eval._device("cpu") == torch.device("cpu")


def test_eval_refuses_an_unknown_or_absent_device_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device, message in (("gpu", "unknown device 'gpu'"), ("cuda", "no usable CUDA device")):
        code = main(["eval", "--task", "reconstruction", "--checkpoint", str(tmp_path),
                     "--device", device, "--out", str(tmp_path / "out")])  # fmt: skip
        assert code == 2
        assert message in capsys.readouterr().err
