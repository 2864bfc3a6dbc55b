"""Executing the book's pages: jupytext sources run by papermill.

Each page is a jupytext percent-format file in ``notebooks/``. Executing it
converts it to a notebook, runs it with papermill (with the profile and any
other parameters injected), hides the injected-parameters cell in the HTML,
and writes the executed notebook where ``book/_toc.yml`` expects it.

A failing cell stops the page with the cell's error; nothing is written
for that page (the output is written to a temporary file and renamed).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "HIDDEN_TAG",
    "PageRun",
    "execute_page",
    "markdown_table",
    "page_sources",
]

logger = logging.getLogger(__name__)

HIDDEN_TAG = "hide-cell"  # Jupyter Book collapses cells with this tag
_INJECTED_TAG = "injected-parameters"  # papermill's tag for its cell


@dataclass(frozen=True)
class PageRun:
    """How one page was executed."""

    source: Path
    output: Path
    parameters: dict[str, Any]
    seconds: float


def page_sources(folder: str | os.PathLike) -> list[Path]:
    """The page sources of ``folder`` in book order (by file name)."""
    return sorted(Path(folder).glob("[0-9][0-9]_*.py"))


def execute_page(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    parameters: Mapping[str, Any] | None = None,
    kernel_name: str = "python3",
    cwd: str | os.PathLike | None = None,
    progress: bool = False,
) -> PageRun:
    """Execute one jupytext page with papermill and write the notebook.

    Args:
        source: The page's ``.py`` (percent format) file.
        output: Where the executed ``.ipynb`` goes.
        parameters: Values injected after the page's ``parameters`` cell.
        kernel_name: Jupyter kernel to run the page in.
        cwd: Working directory of the kernel (default: the source's folder).
        progress: Show papermill's progress bar over cells.

    Returns:
        What was run and how long it took.

    Raises:
        papermill.PapermillExecutionError: A cell failed.

    """
    import jupytext
    import nbformat
    import papermill

    source, output = Path(source), Path(output)
    notebook = jupytext.read(source)
    parameters = dict(parameters or {})
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        staged = Path(scratch) / source.with_suffix(".ipynb").name
        nbformat.write(notebook, staged)
        executed = Path(scratch) / "executed.ipynb"
        start = time.perf_counter()
        papermill.execute_notebook(
            str(staged), str(executed), parameters=parameters,
            kernel_name=kernel_name, cwd=str(cwd or source.parent),
            progress_bar=progress, log_output=False,
        )
        seconds = time.perf_counter() - start
        result = nbformat.read(executed, as_version=4)
    _hide_injected_cell(result)
    _atomic_write_notebook(result, output)
    logger.info("executed %s in %.1f s", source.name, seconds)
    return PageRun(source, output, parameters, seconds)


def _hide_injected_cell(notebook: Any) -> None:
    for cell in notebook.cells:
        tags = cell.metadata.setdefault("tags", [])
        if _INJECTED_TAG in tags and HIDDEN_TAG not in tags:
            tags.append(HIDDEN_TAG)


def _atomic_write_notebook(notebook: Any, path: Path) -> None:
    import nbformat

    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, suffix=".ipynb.tmp", delete=False, encoding="utf-8"
    ) as handle:
        nbformat.write(notebook, handle)
    os.replace(handle.name, path)


def markdown_table(
    rows: list[Mapping[str, Any]], *, formats: Mapping[str, str] | None = None
) -> str:
    """A Markdown table of ``rows`` (dicts sharing their keys, in order).

    Args:
        rows: One mapping per row; the first row's keys are the columns.
        formats: Format specs per column, e.g. ``{"accuracy": ".2%"}``.

    Example:
        >>> print(markdown_table([{"batch": 128, "acc": 0.98}],
        ...                      formats={"acc": ".1%"}))
        | batch | acc |
        | ---: | ---: |
        | 128 | 98.0% |

    """
    if not rows:
        raise ValueError("markdown_table needs at least one row")
    formats = formats or {}
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |",
             "| " + " | ".join("---:" for _ in columns) + " |"]
    for row in rows:
        cells = [format(row[c], formats.get(c, "")) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
