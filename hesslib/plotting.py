"""The book's one figure style.

Use :func:`figure_style` as a context manager around plotting code; it sets
page-width sizes and fonts without touching the global ``rcParams`` outside
the block; :func:`page_figure` makes a page-wide figure of panels in it.
Colors for batch sizes come from :func:`batch_colors`: the smallest batch is
always blue and the largest always red, on every page.

Every figure of the book is captioned and numbered: a page glues the figure
(``myst_nb.glue(name, fig, display=False)``) and places it with a
``{glue:figure}`` directive whose body is the caption. Axes are labelled with
the book's vocabulary (:data:`AXIS_LABELS`).

Interactive figures must work in the static HTML, without a kernel:
:func:`frames_slider` shows precomputed images selected by a slider, all
driven by widget state that the built page embeds.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "AXIS_LABELS",
    "LARGE_BATCH_COLOR",
    "PAGE_WIDTH",
    "SMALL_BATCH_COLOR",
    "batch_colors",
    "batch_label",
    "figure_png",
    "figure_style",
    "frames_slider",
    "glue_figure",
    "page_figure",
]

PAGE_WIDTH = 7.0  # inches: the width of the book's text column
PANEL_ASPECT = 0.4  # height / width of a row of panels at page width
SMALL_BATCH_COLOR = "#1f77b4"
LARGE_BATCH_COLOR = "#d62728"
_MIDDLE_COLORS = ("#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")

_STYLE = {
    "figure.figsize": (PAGE_WIDTH, PAGE_WIDTH * PANEL_ASPECT),
    "figure.dpi": 110,
    "savefig.dpi": 110,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.constrained_layout.use": True,
}


@contextlib.contextmanager
def figure_style() -> Iterator[None]:
    """Apply the book's figure style inside a ``with`` block."""
    import matplotlib.pyplot as plt

    with plt.rc_context(_STYLE):
        yield


def batch_colors(batch_sizes: Sequence[int]) -> dict[int, str]:
    """One color per batch size: smallest blue, largest red, others between.

    Example:
        >>> batch_colors([128, 20000, 1024])[128]
        '#1f77b4'

    """
    ordered = sorted(set(batch_sizes))
    colors = {ordered[0]: SMALL_BATCH_COLOR}
    if len(ordered) > 1:
        colors[ordered[-1]] = LARGE_BATCH_COLOR
    for index, size in enumerate(ordered[1:-1]):
        colors[size] = _MIDDLE_COLORS[index % len(_MIDDLE_COLORS)]
    return colors


AXIS_LABELS: dict[str, str] = {
    "epoch": "epoch",
    "train_loss": "training loss",
    "test_loss": "test loss",
    "test_accuracy": "test accuracy",
    "grad_norm": "gradient norm",
    "lambda_max": r"$\lambda_1(\theta)$",
    "lambda_max_input": r"$\lambda_1(x)$",
    "eps": r"perturbation size $\epsilon$",
}
"""One vocabulary for axes, the same as in the prose and the code."""


def batch_label(batch_size: int) -> str:
    """The legend label of a batch size.

    Example:
        >>> batch_label(20000)
        'B = 20,000'

    """
    return f"B = {batch_size:,}"


def page_figure(ncols: int = 1, *, rows: int = 1, aspect: float = PANEL_ASPECT
                ) -> tuple[Figure, Any]:
    """A page-wide figure of ``rows`` x ``ncols`` panels (call in the style).

    Args:
        ncols: Panels per row.
        rows: Rows of panels.
        aspect: Height of one row over the page width.

    Returns:
        The figure and its axes, as ``plt.subplots`` returns them.

    Raises:
        ValueError: ``ncols`` or ``rows`` is below 1.

    """
    import matplotlib.pyplot as plt

    if ncols < 1 or rows < 1:
        raise ValueError(
            f"page_figure got ncols={ncols}, rows={rows}; both must be >= 1"
        )
    size = (PAGE_WIDTH, PAGE_WIDTH * aspect * rows)
    return plt.subplots(rows, ncols, figsize=size)


def figure_png(figure: Figure, *, close: bool = True) -> bytes:
    """The PNG bytes of ``figure`` at the style's resolution; closes it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    if close:
        plt.close(figure)
    return buffer.getvalue()


def glue_figure(name: str, figure: Figure) -> None:
    """Glue ``figure`` under ``name`` for a ``{glue:figure}`` directive; close it.

    Closing it keeps the inline backend from showing it a second time, at
    the end of the cell, without its caption.
    """
    import matplotlib.pyplot as plt
    from myst_nb import glue

    glue(name, figure, display=False)
    plt.close(figure)


def frames_slider(
    frames: Sequence[bytes], labels: Sequence[str], *, description: str = "frame"
) -> Any:
    """A slider (with a play button) over precomputed PNG images.

    The images are ``ipywidgets.Image`` widgets in a ``Stack``; the slider's
    value is linked to the stack's selected index in the browser
    (``jslink``), so the page's saved widget state alone drives the display:
    it works in the static HTML, with no kernel.

    Args:
        frames: PNG images (e.g. from :func:`figure_png`), one per position.
        labels: One label per frame, shown beside the slider.
        description: The slider's name, e.g. ``"epoch"``.

    Returns:
        An ``ipywidgets.VBox`` to display.

    Raises:
        ValueError: No frames, or not one label per frame.

    """
    import ipywidgets as widgets

    if not frames or len(frames) != len(labels):
        raise ValueError(
            f"frames_slider got {len(frames)} frames and {len(labels)} labels; "
            "pass at least one frame and exactly one label per frame"
        )
    last = len(frames) - 1
    images = [widgets.Image(value=png, format="png",
                            layout=widgets.Layout(width="100%"))
              for png in frames]
    stack = widgets.Stack(images, selected_index=last)
    slider = widgets.IntSlider(value=last, min=0, max=last, description=description,
                               readout=False)
    play = widgets.Play(value=last, min=0, max=last, interval=800,
                        description=f"play {description}")
    names = [widgets.HTML(f"<b>{label}</b>") for label in labels]
    caption = widgets.Stack(names, selected_index=last)
    widgets.jslink((play, "value"), (slider, "value"))
    widgets.jslink((slider, "value"), (stack, "selected_index"))
    widgets.jslink((slider, "value"), (caption, "selected_index"))
    return widgets.VBox([widgets.HBox([play, slider, caption]), stack])
