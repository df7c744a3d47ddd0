"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's shared real-data folder (``$SLP_SHARED_DATA``, else ``<repo>/../shared/data``).

    Tests that need real data skip rather than fail where it is absent, so the suite still runs
    on a bare checkout.
    """
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    root = Path(os.environ.get("SLP_SHARED_DATA") or default)
    if not root.is_dir():
        pytest.skip(f"shared data not found at {root} (set SLP_SHARED_DATA)")
    return root
