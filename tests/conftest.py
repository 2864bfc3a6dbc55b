"""Shared fixtures: the real data folder and small real splits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# The tests' problems are tiny: one thread avoids oversubscribing the CPU, which
# made them about 10 times slower on 2 shared cores. Pages run in their own
# kernels and keep torch's default.
torch.set_num_threads(1)

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


@pytest.fixture(scope="session")
def smoke_book(data_dir, tmp_path_factory):
    """The whole book built once per session in the smoke profile.

    ``scripts/build_book.py`` executes every page (the introduction last)
    into a temporary folder with its own results store, and builds the HTML
    there. The page tests and the browser test share this one build.
    ``HESSLIB_BUILT_BOOK=DIR`` uses a book already built in ``DIR`` (its HTML
    in ``DIR/_build/html``) instead, e.g. to run the browser test on a
    ``cpu`` build: ``HESSLIB_BUILT_BOOK=. pytest tests/test_browser.py``.
    """
    import subprocess
    import sys

    built = os.environ.get("HESSLIB_BUILT_BOOK")
    if built:
        if not (Path(built) / "_build" / "html" / "index.html").is_file():
            pytest.fail(f"HESSLIB_BUILT_BOOK={built!r} holds no _build/html/index.html;"
                        " build the book there first (make book)")
        return Path(built).resolve()
    out = tmp_path_factory.mktemp("smoke_book")
    env = {**os.environ, "HESSLIB_DATA": str(data_dir)}
    command = [sys.executable, str(REPO / "scripts" / "build_book.py"),
               "--profile", "smoke", "--out", str(out), "--store", str(out / "store")]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=1200)
    (out / "build.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        pytest.fail(f"the smoke build failed (log in {out / 'build.log'}):\n"
                    + (done.stdout + done.stderr)[-4000:])
    return out
