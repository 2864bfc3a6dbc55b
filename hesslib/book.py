"""Executing the book's pages: jupytext sources run by papermill.

Each page is a jupytext percent-format file in ``notebooks/``. Executing it
converts it to a notebook, runs it with papermill (with the profile and any
other parameters injected), hides the injected-parameters cell in the HTML,
and writes the executed notebook where ``book/_toc.yml`` expects it.

A failing cell stops the page with the cell's error; nothing is written
for that page (the output is written to a temporary file and renamed).
The widgets' state is saved in the executed notebook, so that the HTML shows
them without a kernel.

Pages run in book order, except the introduction (``00_*``), whose scoreboard
is filled from the verdicts of the other pages: :func:`execution_order` puts
it last. The build records each page's wall time in the results store
(:func:`record_timing`), and the Reproducing page reads them back
(:func:`load_timings`) with the environment (:func:`environment_record`).
"""

from __future__ import annotations

import datetime
import html
import logging
import os
import platform
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hesslib.profiles import Profile
    from hesslib.store import Store

__all__ = [
    "HIDDEN_TAG",
    "INTRO_PREFIX",
    "TIMING_KIND",
    "PageRun",
    "environment_record",
    "execute_page",
    "execution_order",
    "html_table",
    "load_timings",
    "markdown_table",
    "page_sources",
    "profile_rows",
    "record_timing",
]

logger = logging.getLogger(__name__)

HIDDEN_TAG = "hide-cell"  # Jupyter Book collapses cells with this tag
_INJECTED_TAG = "injected-parameters"  # papermill's tag for its cell
INTRO_PREFIX = "00_"  # the introduction: executed after every other page
TIMING_KIND = "timing"  # store kind of the pages' wall times
_VERSIONED = ("torch", "numpy", "matplotlib", "ipywidgets", "jupyter-book",
              "myst-nb", "papermill", "jupytext")


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


def execution_order(sources: Iterable[Path]) -> list[Path]:
    """``sources`` in the order to execute them: the introduction last.

    Example:
        >>> [p.name for p in execution_order([Path("00_intro.py"),
        ...                                    Path("01_a.py")])]
        ['01_a.py', '00_intro.py']

    """
    ordered = sorted(sources, key=lambda p: p.name)
    return ([p for p in ordered if not p.name.startswith(INTRO_PREFIX)]
            + [p for p in ordered if p.name.startswith(INTRO_PREFIX)])


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
            store_widget_state=True,  # the HTML renders widgets from it
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


def html_table(
    rows: Sequence[Mapping[str, Any]],
    *,
    links: Mapping[str, Mapping[str, str]] | None = None,
) -> str:
    """An HTML table of ``rows``, some cells as links.

    Args:
        rows: One mapping per row; the first row's keys are the columns.
        links: Per column, a map from a cell's text to the link's target;
            cells not in it stay plain text.

    Example:
        >>> html_table([{"page": "01_a"}], links={"page": {"01_a": "01_a.html"}})
        ... # doctest: +ELLIPSIS
        '...<td><a href="01_a.html">01_a</a></td>...'

    """
    if not rows:
        raise ValueError("html_table needs at least one row")
    links = links or {}
    columns = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for column in columns:
            value = str(row[column])
            text = html.escape(value)
            target = links.get(column, {}).get(value)
            if target:
                text = f'<a href="{html.escape(target, quote=True)}">{text}</a>'
            cells.append(f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table class="table"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def profile_rows(profiles: Iterable[Profile]) -> list[dict[str, str]]:
    """One row per profile: its sizes, for the Reproducing page's table."""
    rows = []
    for profile in profiles:
        sizes = ", ".join(f"{name} {_size(n)}"
                          for name, n in profile.train_size.items())
        batches = ", ".join(str(b) for b in profile.batch_sizes.get("M1", ()))
        rows.append({"profile": profile.name, "training samples": sizes,
                     "epochs": str(profile.epochs), "M1 batch sizes": batches,
                     "seeds": str(len(profile.seeds)),
                     "lr scaling": profile.lr_scaling})
    return rows


def _size(n: int | None) -> str:
    return "all" if n is None else f"{n:,}"


def record_timing(store: Store, run: PageRun, profile: str) -> None:
    """Put a page's wall time into ``store`` (kind ``"timing"``).

    One entry per page and profile; a later build replaces it.
    """
    config = {"page": run.source.stem, "profile": profile}
    store.remove(TIMING_KIND, store.key(TIMING_KIND, config))
    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    store.put_json(TIMING_KIND, config, {
        "page": run.source.stem, "profile": profile,
        "seconds": float(run.seconds), "finished": when,
    })


def load_timings(store: Store, *, profile: str | None = None) -> list[dict]:
    """The recorded wall times (of one ``profile``), by page name."""
    found = []
    for info in store.list(TIMING_KIND):
        if profile is None or info.config.get("profile") == profile:
            data = store.get_json(TIMING_KIND, info.config)
            if data is not None:
                found.append(data)
    return sorted(found, key=lambda d: (d["page"], d["profile"]))


def environment_record(device: str = "cpu") -> dict[str, str]:
    """What this book was built with: python, packages, device, git revision.

    Args:
        device: The device the pages computed on, e.g. ``"cpu"``.

    """
    from hesslib import __version__
    from hesslib.store import _code_revision

    record = {"python": platform.python_version(),
              "platform": platform.platform(terse=True),
              "device": device, "hesslib": __version__,
              "git revision": _code_revision()}
    for name in _VERSIONED:
        try:
            record[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            record[name] = "absent"
    if device.startswith("cuda"):
        import torch

        record["gpu"] = torch.cuda.get_device_name()
    return record
