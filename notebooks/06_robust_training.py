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
# # Robust training finds flatter minima
#
# The paper's claim C4: training with adversarial examples keeps the
# optimizer in regions of smaller Hessian spectrum, also at large batch.
# Its Fig. 5 draws the loss along the straight line between an originally
# trained model, $M_{ORI}$, and a robustly trained one, $M_{ADV}$, started
# from the same weights, and its table lists both models' top eigenvalue,
# test accuracy and accuracy under attack. This page redoes both for the
# residual network C3 on CIFAR-10.
#
# Robust training is the authors' scheme: in every chunk of 128 samples, a
# random 20% is replaced by FGSM examples of size 0.005 on [0, 1] pixels,
# computed in eval mode (`robust="fgsm_mix"` with the library's defaults).
# Everything else (optimizer, schedule, epochs, data) is as for plain
# training, so the two runs of a pair differ only in the adversarial mix.

# %% tags=["parameters"]
profile = "cpu"  # "smoke", "cpu" or "paper" (see the Reproducing page)
device = "auto"  # "auto", "cpu" or "cuda"
seed = 0  # seed of the shared initial weights and the batch order
data_dir = None  # None: the folder in $HESSLIB_DATA
store_dir = None  # None: the folder in $HESSLIB_STORE, else ./.store
model = "C3"  # the paper's Fig. 5 model
large_batch = None  # also the largest batch? None: yes, except in smoke
attack_eps = [0.002, 0.005, 0.01]  # FGSM sizes of the table, [0, 1] pixels
alphas = [-0.5, 1.5, 21]  # Fig. 5 line: first, last position and points
bn_buffers = "interpolate"  # BatchNorm statistics on the line: or "a"
max_ratio = 1.0  # C4: robust lambda_1(theta) at most this times plain

# %% tags=["hide-cell"]
# Validate the parameters and resolve the profile.
import torch
from IPython.display import Markdown, display
from myst_nb import glue

from hesslib.book import markdown_table
from hesslib.experiments import (
    profile_spec,
    profile_splits,
    resolve_device,
    run_training,
)
from hesslib.models import MODEL_DATA
from hesslib.profiles import get_profile
from hesslib.store import Store

settings, dev, store = get_profile(profile), resolve_device(device), Store(store_dir)
assert model in MODEL_DATA and bn_buffers in ("interpolate", "a"), (model, bn_buffers)
assert max_ratio > 0 and alphas[0] < 0 < 1 < alphas[1] and alphas[2] >= 3, alphas
large_batch = profile != "smoke" if large_batch is None else large_batch
positions = torch.linspace(alphas[0], alphas[1], alphas[2], dtype=torch.float64)
glue("profile", profile, display=False)
glue("model", model, display=False)

# %% [markdown]
# This page was built with the {glue:text}`profile` profile (its sizes are on
# the Reproducing page). It deviates from the paper in the profile's sizes
# and, where the paper is silent, in these choices, all parameters: the
# attack of the table is FGSM at the sizes in `attack_eps`; on the line
# between the two models the BatchNorm running statistics are interpolated
# with the weights (`bn_buffers="interpolate"`: the end points are then
# exactly the two trained models); the line is drawn on the profile's
# landscape subset of the training data and on as many test images. The
# `smoke` profile skips the large batch to stay within seconds.

# %%
print(settings.description)

# %% [markdown]
# ## The runs
#
# Per batch size, a plain and a robust run from the same seed, hence the same
# initial weights and batch order. Runs come from the results store when a
# page (or an earlier build) trained them already.

# %%
splits = profile_splits(settings, MODEL_DATA[model], root=data_dir, device=dev)
train_split, test_split = splits
listed = settings.batch_sizes[model]
batches = sorted({settings.resolve_batch(b, len(train_split))
                  for b in (listed[0], listed[-1] if large_batch else listed[0])})
runs = {}
for batch in batches:
    for robust in ("none", "fgsm_mix"):
        spec = profile_spec(settings, model, batch, train_size=len(train_split),
                            seed=seed, robust=robust)
        runs[batch, robust] = run_training(spec, splits=splits, device=dev,
                                           store=store)
        how = "loaded" if runs[batch, robust].from_store else "trained"
        print(f"batch {batch:,}, robust={robust}: {how} {runs[batch, robust].key}")

# %%
import math

for (batch, robust), run in runs.items():
    assert run.spec.config.seed == seed and run.spec.config.robust == robust
    assert all(math.isfinite(r.train_loss) for r in run.history), (batch, robust)
    assert run.history[-1].epoch == settings.epochs

# %% [markdown]
# ## Their numbers
#
# For each model: test accuracy, $\lambda_1(\theta)$ (the top eigenvalue of
# the weight Hessian of the mean training loss, on the profile's Hessian
# subset, by Lanczos to a relative residual of 1e-4), $\lambda_1(x)$ (the
# mean over test images of each image's top input-Hessian eigenvalue) and
# accuracy under FGSM. Measurements are cached in the store.

# %%
from hesslib.analysis import measure

found = {key: measure(run.model, train_split, test_split,
                      test_accuracy=run.final.test_accuracy,
                      hessian_samples=settings.hessian_samples[model],
                      input_samples=settings.input_hessian_samples,
                      attack_samples=settings.attack_samples, attack_eps=attack_eps,
                      seed=seed, store=store, run_key=run.key,
                      max_iter=settings.max_iter)
         for key, run in runs.items()}

# %%
for key, m in found.items():
    assert math.isfinite(m.weight_top) and m.weight_residual >= 0, key
    assert math.isfinite(m.input_top_mean) and m.input_converged > 0.5, key
    assert all(0 <= a <= 1 for a in m.attack_accuracy), key
unconverged = [key for key, m in found.items() if m.weight_residual > 1e-4]
print("lambda_1(theta) solves above the relative residual 1e-4 (stopped at "
      f"the profile's {settings.max_iter} vectors, or where float32 round-off "
      "stalled them):", unconverged or "none")

# %% tags=["hide-input"]
names = {"none": "M_ORI (plain)", "fgsm_mix": "M_ADV (robust)"}
rows = [{"batch": f"{batch:,}", "model": names[robust],
         "test accuracy": m.test_accuracy, "lambda_1(theta)": m.weight_top,
         "lambda_1(x)": m.input_top_mean,
         **{f"FGSM {e:g}": a for e, a in zip(m.attack_eps, m.attack_accuracy)}}
        for (batch, robust), m in found.items()]
display(Markdown(markdown_table(rows, formats={
    "test accuracy": ".2%", "lambda_1(theta)": ".3g", "lambda_1(x)": ".3g",
    **{f"FGSM {e:g}": ".1%" for e in attack_eps}})))

# %% [markdown]
# ## The line between $M_{ORI}$ and $M_{ADV}$ (Fig. 5)
#
# The mean cross-entropy at
# $\theta(\alpha) = (1 - \alpha)\,\theta_{ORI} + \alpha\,\theta_{ADV}$, for
# $\alpha$ beyond both ends, with `hesslib.landscape.interpolate`. The
# BatchNorm statistics move with the weights; outside $[0, 1]$ an
# interpolated variance can turn negative, where the loss is then undefined
# and the curve has a gap.

# %%
import warnings

from hesslib.data import balanced_subset
from hesslib.landscape import interpolate

n_line = settings.landscape_samples
line_data = {"training": balanced_subset(train_split, n_line, seed=seed),
             "test": balanced_subset(test_split, n_line, seed=seed)}
curves = {}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", RuntimeWarning)
    for batch in batches:
        for part, data in line_data.items():
            curves[batch, part] = interpolate(
                runs[batch, "none"].model, runs[batch, "fgsm_mix"].model,
                positions, data.x, data.y, buffers=bn_buffers)
print(f"{len(caught)} positions with a negative interpolated variance")

# %%
for curve in curves.values():
    assert torch.isfinite(curve.loss[(curve.alphas >= 0) & (curve.alphas <= 1)]).all()
    assert curve.n_samples == n_line, curve.n_samples

# %% tags=["hide-input"]
import hesslib.plotting as hp

colors = hp.batch_colors(batches)
# One loss range for every frame of the slider (the extrapolated ends may be
# NaN where an interpolated BatchNorm variance turns negative).
finite = torch.cat([c.loss[torch.isfinite(c.loss)] for c in curves.values()])
loss_range = (0.8 * finite.min().item(), 1.25 * finite.max().item())


def plot_line(upto):
    """Loss and accuracy along the line, up to position index ``upto``."""
    fig, axes = hp.page_figure(2)
    for (batch, part), curve in curves.items():
        style = "-" if part == "training" else "--"
        a = curve.alphas[:upto + 1]
        axes[0].plot(a, curve.loss[:upto + 1], style, color=colors[batch],
                     label=f"{hp.batch_label(batch)}, {part}")
        axes[1].plot(a, curve.accuracy[:upto + 1], style, color=colors[batch])
    for ax, field in zip(axes, ("loss", "accuracy")):
        ax.axvline(0, color="k", lw=0.6)
        ax.axvline(1, color="k", lw=0.6)
        ax.set(xlabel=r"$\alpha$ ($0$: $M_{ORI}$, $1$: $M_{ADV}$)", ylabel=field,
               xlim=(alphas[0], alphas[1]))
    axes[0].set(yscale="log", ylim=loss_range)
    axes[1].set_ylim(0, 1)
    axes[0].legend(fontsize=7)
    return fig


with hp.figure_style():
    hp.glue_figure("fig_line", plot_line(len(positions) - 1))
    frames = [hp.figure_png(plot_line(i)) for i in range(len(positions))]

# %% [markdown]
# ```{glue:figure} fig_line
# :name: fig-robust-line
#
# Fig. 5 for C3 on CIFAR-10: cross-entropy loss (left, log scale) and
# accuracy (right) along the line from the plainly trained $M_{ORI}$
# ($\alpha = 0$) to the robustly trained $M_{ADV}$ ($\alpha = 1$) of the same
# initial weights, on training (solid) and test (dashed) images; batch 128 in
# blue, the largest batch in red.
# ```
#
# The same line, walked position by position (the frames are precomputed,
# so the slider works in the HTML without a kernel):

# %% tags=["hide-input"]
hp.frames_slider(frames, [f"alpha = {a:.2f}" for a in positions.tolist()],
                 description="alpha")

# %% [markdown]
# ## Sharpness at the end of training
#
# The paper's Fig. 4 draws, dotted, $\lambda_1(\theta)$ over the epochs of
# robust training. The tracked per-epoch runs belong to the large-batch page
# and are not available to this page yet; instead,
# {numref}`fig-robust-sharpness` shows $\lambda_1(\theta)$ of the plain and
# the robust C3 at the end of training, per batch size.

# %% tags=["hide-input"]
def plot_sharpness():
    """lambda_1(theta) of plain and robust runs per batch size."""
    fig, axes = hp.page_figure(2)
    for i, (field, label) in enumerate((("weight_top", "lambda_max"),
                                        ("input_top_mean", "lambda_max_input"))):
        for j, robust in enumerate(("none", "fgsm_mix")):
            values = [getattr(found[b, robust], field) for b in batches]
            axes[i].bar([k + 0.4 * j for k in range(len(batches))], values, 0.4,
                        label=names[robust], hatch="" if j == 0 else "//",
                        color=[colors[b] for b in batches], edgecolor="k")
        axes[i].set(xticks=[k + 0.2 for k in range(len(batches))],
                    xticklabels=[hp.batch_label(b) for b in batches],
                    ylabel=hp.AXIS_LABELS[label])
    axes[0].legend()
    return fig


with hp.figure_style():
    hp.glue_figure("fig_sharpness", plot_sharpness())

# %% [markdown]
# ```{glue:figure} fig_sharpness
# :name: fig-robust-sharpness
#
# Top eigenvalue of the weight Hessian, $\lambda_1(\theta)$ (left), and mean
# top eigenvalue of the input Hessian, $\lambda_1(x)$ (right), of C3 after
# plain (plain bars) and robust (hatched) training, per batch size.
# ```

# %%
small = min(batches)
glue("small_batch", f"{small:,}", display=False)
glue("plain_top", f"{found[small, 'none'].weight_top:.3g}", display=False)
glue("robust_top", f"{found[small, 'fgsm_mix'].weight_top:.3g}", display=False)
glue("plain_acc", f"{found[small, 'none'].test_accuracy:.2%}", display=False)
glue("robust_acc", f"{found[small, 'fgsm_mix'].test_accuracy:.2%}", display=False)
glue("max_ratio", f"{max_ratio:g}", display=False)

# %% [markdown]
# ## Summary
#
# At batch {glue:text}`small_batch`, plain training ends with
# $\lambda_1(\theta) =$ {glue:text}`plain_top` and test accuracy
# {glue:text}`plain_acc`; robust training from the same weights ends with
# $\lambda_1(\theta) =$ {glue:text}`robust_top` and test accuracy
# {glue:text}`robust_acc`. The table above gives the other batch size and the
# accuracy under attack.
#
# ## Verdict on C4
#
# The claim holds when, at every batch size of this page, the robust run's
# $\lambda_1(\theta)$ is at most {glue:text}`max_ratio` times the plain run's
# (the ratio fixed in the parameters before the runs).

# %%
from hesslib.verdicts import judge_robust_flatter, store_verdict

verdict = judge_robust_flatter(
    {b: found[b, "none"].weight_top for b in batches},
    {b: found[b, "fgsm_mix"].weight_top for b in batches},
    max_ratio=max_ratio, page="06_robust_training", profile=profile)
store_verdict(verdict, store)
display(verdict)
