"""The book's one figure style.

Use :func:`figure_style` as a context manager around plotting code; it sets
page-width sizes and fonts without touching the global ``rcParams`` outside
the block. Colors for batch sizes come from :func:`batch_colors`: the
smallest batch is always blue and the largest always red, on every page.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

__all__ = [
    "LARGE_BATCH_COLOR",
    "PAGE_WIDTH",
    "SMALL_BATCH_COLOR",
    "batch_colors",
    "figure_style",
]

PAGE_WIDTH = 7.0  # inches: the width of the book's text column
SMALL_BATCH_COLOR = "#1f77b4"
LARGE_BATCH_COLOR = "#d62728"
_MIDDLE_COLORS = ("#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")

_STYLE = {
    "figure.figsize": (PAGE_WIDTH, PAGE_WIDTH * 0.4),
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
