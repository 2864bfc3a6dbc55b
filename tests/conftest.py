"""Shared fixtures: the real data folder and small real splits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _data_folder() -> Path | None:
    env = os.environ.get("HESSLIB_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for folder in candidates:
        if (folder / "mnist.npz").is_file():
            return folder
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder of real data sets (``$HESSLIB_DATA`` or ``../shared/data``)."""
    folder = _data_folder()
    if folder is None:
        pytest.skip("no data folder: set HESSLIB_DATA to one holding mnist.npz")
    return folder


@pytest.fixture(scope="session")
def mnist(data_dir):
    from hesslib.data import load

    return load("mnist", root=data_dir)
