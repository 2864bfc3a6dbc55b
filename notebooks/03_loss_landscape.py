# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The loss landscape along the top eigenvectors
#
# An eigenvalue is a curvature; what does it look like? The paper's Figs. 2
# and 3 draw the training loss of C1 on CIFAR-10 around the trained weights
# theta: along the dominant eigenvector v1 of the Hessian,
# `eps -> L(theta + eps v1)`, and over the plane of the two dominant
# eigenvectors, `(eps1, eps2) -> L(theta + eps1 v1 + eps2 v2)`. If the large
# batch ends in a sharper region, its loss rises faster along v1. This page
# draws both, for the smallest and the largest batch of the profile, against
# random directions of the same norm.
#
# Choices the paper leaves open, made here and kept as parameters: the range
# of eps (`radius`), the same for both models because v1 has unit norm in
# both, so eps is a Euclidean distance in weight space; the random
# directions are Gaussian, rescaled to the norm of v1 (one global factor,
# `normalization="global"`: a random unit direction, along which the
# curvature is on average the mean eigenvalue of the Hessian, against the
# largest along v1). BatchNorm's running statistics are buffers, not
# weights: they are not perturbed.

# %% tags=["parameters"]
profile = "cpu"  # "smoke", "cpu" or "paper" (see the Reproducing page)
device = "auto"  # "auto", "cpu" or "cuda"
seed = 0  # seed of the trained runs, the subset, the solves and directions
data_dir = None  # None: the folder in $HESSLIB_DATA
store_dir = None  # None: the folder in $HESSLIB_STORE, else ./.store
model = "C1"  # the paper's Figs. 2 and 3
radius = 0.5  # eps runs over [-radius, radius] (not stated in the paper)
points = None  # None: the profile's grid points per axis
samples = None  # None: the profile's landscape samples
tol = 1e-4  # relative residual of v1 and v2
max_iter = 200  # most Lanczos vectors
min_sharpness_ratio = 2.0  # C1: least lambda_1 ratio, largest / smallest batch

# %% tags=["hide-cell"]
# Validate the parameters and resolve the profile's defaults.
import math

from IPython.display import display
from myst_nb import glue

from hesslib.experiments import profile_spec, profile_splits, resolve_device
from hesslib.models import MODEL_DATA
from hesslib.profiles import get_profile

settings = get_profile(profile)
dev = resolve_device(device)
points = points or settings.landscape_points
samples = samples or settings.landscape_samples
assert model in MODEL_DATA and radius > 0 and points >= 2 and samples >= 1

# %% [markdown]
# ## The trained models
#
# The runs of the smallest and the largest batch of the profile (shared with
# the other pages through the results store).

# %%
from hesslib.experiments import run_training
from hesslib.store import Store

store = Store(store_dir)
splits = profile_splits(settings, MODEL_DATA[model], root=data_dir, device=dev)
sizes = sorted({settings.resolve_batch(b, len(splits[0]))
                for b in settings.batch_sizes[model]})
ends = (sizes[0], sizes[-1])
runs = {b: run_training(profile_spec(settings, model, b, train_size=len(splits[0]),
                                     seed=seed), splits=splits, device=dev,
                        store=store) for b in ends}

# %%
print(settings.description)
print(f"Landscapes of {model} on {min(samples, len(splits[0])):,} training samples,"
      f" {points} x {points} points over eps in [-{radius}, {radius}].")

# %% [markdown]
# ## The sweeps
#
# For each model: v1 and v2 by Lanczos, then the loss on the lines and the
# planes (cached in the store). The sweeps evaluate perturbed copies of the
# weights; the model's own parameters and BatchNorm buffers must come out
# exactly as they went in (asserted, bit for bit).

# %%
from hesslib.analysis import landscape_summary, state_copy, state_unchanged

scapes = {}
for batch, run in runs.items():
    before = state_copy(run.model)
    scapes[batch] = landscape_summary(
        run.model, splits[0], samples=samples, points=points, radius=radius,
        tol=tol, max_iter=max_iter, seed=seed, store=store, run_key=run.key)
    assert state_unchanged(run.model, before), f"the sweep moved batch {batch}"

# %%
for batch, s in scapes.items():
    values = s["line_v1"] + s["line_random"] + sum(s["surface_v"], [])
    assert all(map(math.isfinite, values + sum(s["surface_random"], []))), batch
    assert all(r >= 0 for r in s["residuals"]), (batch, s["residuals"])
    if points % 2:  # eps = 0 is on the grid: every sweep passes through theta
        mid = points // 2
        assert math.isclose(s["line_v1"][mid], s["line_random"][mid], rel_tol=1e-9)
        assert math.isclose(s["surface_v"][mid][mid], s["line_v1"][mid],
                            rel_tol=1e-9)

# %% tags=["hide-input"]
print("relative residuals of v1, v2:", {b: [f"{r:.1e}" for r in s["residuals"]]
                                       for b, s in scapes.items()}, f"(tol {tol:g})")

# %% [markdown]
# ## Along v1 and along a random direction
#
# {numref}`fig-landscape-line` is the paper's Fig. 2: the loss rises much
# faster along v1 than along a random direction, and faster for the large
# batch (red) than for the small one (blue).

# %% tags=["hide-input"]
import numpy as np

import hesslib.plotting as hp

colors = hp.batch_colors(ends)


def plot_lines():
    """Loss and accuracy along v1 (solid) and a random direction (dashed)."""
    fig, axes = hp.page_figure(2)
    for batch, s in scapes.items():
        for key, style, what in (("v1", "-", "$v_1$"), ("random", "--", "random")):
            axes[0].plot(s["eps"], s[f"line_{key}"], style, color=colors[batch],
                         label=f"{hp.batch_label(batch)}, {what}")
            axes[1].plot(s["eps"], s[f"accuracy_{key}"], style, color=colors[batch])
    axes[0].set(xlabel=hp.AXIS_LABELS["eps"], ylabel="training loss", yscale="log")
    axes[1].set(xlabel=hp.AXIS_LABELS["eps"], ylabel="training accuracy")
    axes[0].legend()
    return fig


with hp.figure_style():
    hp.glue_figure("fig_line", plot_lines())

# %% [markdown]
# ```{glue:figure} fig_line
# :name: fig-landscape-line
#
# C1 on CIFAR-10: training loss (log scale) and accuracy at
# $\theta + \epsilon d$, with $d = v_1$ the top Hessian eigenvector (solid)
# or a random direction of the same norm (dashed), for the smallest (blue)
# and the largest (red) batch size.
# ```
#
# ## Over the plane of v1 and v2
#
# {numref}`fig-landscape-surface` is the paper's Fig. 3, beside the same
# surface over the plane of two random directions; the contour levels are
# shared by all panels.

# %% tags=["hide-input"]
levels = np.quantile([v for s in scapes.values() for row in s["surface_v"]
                      for v in row], np.linspace(0, 1, 12))
levels = np.unique(levels)


def plot_surfaces(batch):
    """Contours of the loss over the v1-v2 plane and a random plane."""
    fig, axes = hp.page_figure(2, aspect=0.45)
    s = scapes[batch]
    for ax, key, what in zip(axes, ("v", "random"), ("$v_1$, $v_2$", "random")):
        shown = ax.contourf(s["eps"], s["eps"], np.array(s[f"surface_{key}"]).T,
                            levels=levels, cmap="viridis", extend="both")
        ax.set(title=f"{hp.batch_label(batch)}: plane of {what}",
               xlabel=r"$\epsilon_1$", ylabel=r"$\epsilon_2$", aspect="equal")
    fig.colorbar(shown, ax=axes, label="training loss")
    return fig


with hp.figure_style():
    hp.glue_figure("fig_surface_small", plot_surfaces(ends[0]))
    hp.glue_figure("fig_surface_large", plot_surfaces(ends[1]))
    frames = [hp.figure_png(plot_surfaces(b)) for b in ends]

# %% [markdown]
# ```{glue:figure} fig_surface_small
# :name: fig-landscape-surface
#
# Training loss of C1 over the plane $\theta + \epsilon_1 v_1 + \epsilon_2
# v_2$ of the two top Hessian eigenvectors (left) and over the plane of two
# random directions of the same norm (right), at the smallest batch size.
# ```
#
# ```{glue:figure} fig_surface_large
# :name: fig-landscape-surface-large
#
# The same as {numref}`fig-landscape-surface` at the largest batch size, on
# the same contour levels.
# ```
#
# Move the slider to switch between the two models on the same levels (the
# frames are precomputed: this works in the HTML without a kernel).

# %% tags=["hide-input"]
hp.frames_slider(frames, [hp.batch_label(b) for b in ends], description="batch")

# %%
mid = points // 2
rise = {b: s["line_v1"][-1] - s["line_v1"][mid] for b, s in scapes.items()}
rise_random = {b: s["line_random"][-1] - s["line_random"][mid]
               for b, s in scapes.items()}
glue("small_batch", f"{ends[0]:,}", display=False)
glue("large_batch", f"{ends[1]:,}", display=False)
glue("rise_small", f"{rise[ends[0]]:.3g}", display=False)
glue("rise_large", f"{rise[ends[1]]:.3g}", display=False)
glue("rise_random", ", ".join(f"{v:.3g}" for v in rise_random.values()), display=False)
glue("radius", f"{radius:g}", display=False)

# %% [markdown]
# ## Summary
#
# From theta to eps = {glue:text}`radius` along v1, the training loss rises
# by {glue:text}`rise_small` at batch {glue:text}`small_batch` and by
# {glue:text}`rise_large` at batch {glue:text}`large_batch`; along the random
# directions by {glue:text}`rise_random` (small, then large batch).
#
# ## Verdict on C1 (sharpness, Figs. 2 and 3)
#
# The claim holds on this page when lambda_1(theta) of v1 at the largest
# batch is at least `min_sharpness_ratio` times that at the smallest, with a
# lower test accuracy.

# %%
from hesslib.verdicts import judge_sharpness, store_verdict

evidence = {model: {
    "small_batch": ends[0], "large_batch": ends[1],
    "lambda_small": scapes[ends[0]]["eigenvalues"][0],
    "lambda_large": scapes[ends[1]]["eigenvalues"][0],
    "accuracy_small": runs[ends[0]].final.test_accuracy,
    "accuracy_large": runs[ends[1]].final.test_accuracy}}
verdict = judge_sharpness(evidence, min_sharpness_ratio=min_sharpness_ratio,
                          page="03_loss_landscape", profile=profile)
store_verdict(verdict, store)
display(verdict)
