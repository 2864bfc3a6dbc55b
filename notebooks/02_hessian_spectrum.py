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
# # The Hessian spectrum at small and large batch
#
# Does a large batch end in a sharper region of the loss? The paper answers
# with the top eigenvalues of the Hessian of the training loss with respect
# to the weights (its Fig. 1): for C1 on CIFAR-10 and M1 on MNIST, the top 20
# eigenvalues are larger after large-batch training. This page computes
# them for the smallest and the largest batch of the profile, shows how well
# each eigenvalue converged, the whole spectral density beside them, and the
# lowest eigenvalues: how negative the curvature is.
#
# Method: Lanczos with full reorthogonalization (the paper used power
# iteration; both reach the same eigenvalues, Lanczos with far fewer
# Hessian-vector products), stopped when every wanted pair has a true
# relative residual `||Hv - lambda v|| / |lambda|` below the tolerance (the
# paper's 1e-4). The Hessian is that of the mean cross-entropy over a fixed
# class-balanced subset of the training data, in eval mode (BatchNorm is
# then a fixed affine map). The density comes from stochastic Lanczos
# quadrature (SLQ).

# %% tags=["parameters"]
profile = "cpu"  # "smoke", "cpu" or "paper" (see the Reproducing page)
device = "auto"  # "auto", "cpu" or "cuda"
seed = 0  # seed of the trained runs, the Hessian subsets and random starts
data_dir = None  # None: the folder in $HESSLIB_DATA
store_dir = None  # None: the folder in $HESSLIB_STORE, else ./.store
models = ("M1", "C1")  # the paper's Fig. 1
num_eigenvalues = None  # None: the profile's (20 in the paper)
tol = 1e-4  # relative residual of the top eigenvalues (the paper's)
max_iter = None  # None: 10 times the number of top eigenvalues (Lanczos vectors)
num_smallest = 3  # lowest eigenvalues computed
smallest_tol = 1e-3  # their relative residual (the bulk near 0 converges slowly)
smallest_max_iter = None  # None: 3 times the number of top eigenvalues
slq_runs = 2  # SLQ start vectors
slq_steps = None  # None: num_eigenvalues + 10 Lanczos steps per start
min_sharpness_ratio = 2.0  # C1: least lambda_1 ratio, largest / smallest batch

# %% tags=["hide-cell"]
# Validate the parameters and resolve the profile's defaults.
import math

import torch
from IPython.display import Markdown, display
from myst_nb import glue

from hesslib.book import markdown_table
from hesslib.experiments import profile_spec, profile_splits, resolve_device
from hesslib.models import MODEL_DATA
from hesslib.profiles import get_profile

settings = get_profile(profile)
dev = resolve_device(device)
num_eigenvalues = num_eigenvalues or settings.num_eigenvalues
max_iter = max_iter or 10 * num_eigenvalues
smallest_max_iter = smallest_max_iter or 3 * num_eigenvalues
slq_steps = slq_steps or num_eigenvalues + 10
assert set(models) <= set(MODEL_DATA), models
assert 0 < tol < 1 and 0 < smallest_tol < 1 and min_sharpness_ratio > 0

# %% [markdown]
# ## A small case against exact linear algebra
#
# Before trusting the solver on millions of weights: on a tiny ReLU network
# in float64, the Hessian can be formed densely. Its top eigenvalues from
# `torch.linalg.eigvalsh` and from the same Lanczos the page uses below must
# agree.

# %%
from torch import nn

from hesslib.analysis import weight_spectrum
from hesslib.hessian import WeightHessian

gen = torch.Generator().manual_seed(seed)
tiny = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
tiny = tiny.double()
x_tiny = torch.rand(40, 1, 3, 4, generator=gen, dtype=torch.float64)
y_tiny = torch.randint(3, (40,), generator=gen)

# %%
dense = WeightHessian(tiny, torch.nn.functional.cross_entropy,
                      (x_tiny, y_tiny)).to_dense()
exact = torch.linalg.eigvalsh(dense).flip(0)[:5]
approx = weight_spectrum(tiny, x_tiny, y_tiny, k=5, tol=1e-8).eigenvalues
torch.testing.assert_close(approx, exact, rtol=1e-6, atol=1e-10)
glue("exact_error", f"{(approx - exact).abs().max().item():.1e}", display=False)
glue("tiny_params", f"{dense.shape[0]}", display=False)

# %% [markdown]
# On the tiny network ({glue:text}`tiny_params` weights), the top five
# Lanczos eigenvalues match the dense ones to {glue:text}`exact_error`.
#
# ## The trained models
#
# For each model, the runs of the smallest and the largest batch size of the
# profile, trained once and shared with the other pages through the results
# store.

# %%
from hesslib.experiments import run_training
from hesslib.store import Store

store, splits, runs = Store(store_dir), {}, {}
for name in models:
    splits[name] = profile_splits(settings, MODEL_DATA[name], root=data_dir,
                                  device=dev)
    n_train = len(splits[name][0])
    sizes = sorted({settings.resolve_batch(b, n_train)
                    for b in settings.batch_sizes[name]})
    for batch in (sizes[0], sizes[-1]):
        spec = profile_spec(settings, name, batch, train_size=n_train, seed=seed)
        runs[name, batch] = run_training(spec, splits=splits[name], device=dev,
                                         store=store)

# %%
print(settings.description)
used = ", ".join(f"{m}: {settings.hessian_samples[m]:,}" for m in models)
print(f"Hessians on {used} training samples; top {num_eigenvalues} eigenvalues"
      " to relative residual"
      f" {tol:g}, lowest {num_smallest} to {smallest_tol:g}.")

# %% [markdown]
# ## The top eigenvalues
#
# The top {glue:text}`k_top` eigenvalues of each model's weight Hessian
# (cached in the store: a rebuild reads them back).

# %%
from hesslib.analysis import density_summary, spectrum_summary

top, low, density = {}, {}, {}
for (name, batch), run in runs.items():
    common = dict(samples=settings.hessian_samples[name], seed=seed, store=store,
                  run_key=run.key)
    top[name, batch] = spectrum_summary(run.model, splits[name][0],
                                        k=num_eigenvalues, tol=tol,
                                        max_iter=max_iter, **common)
    low[name, batch] = spectrum_summary(
        run.model, splits[name][0], k=num_smallest, which="smallest",
        tol=smallest_tol, max_iter=smallest_max_iter, **common)
    density[name, batch] = density_summary(
        run.model, splits[name][0], num_runs=slq_runs, num_steps=slq_steps,
        **common)

# %%
for key in runs:
    values = top[key]["eigenvalues"] + low[key]["eigenvalues"]
    assert all(map(math.isfinite, values + density[key]["density"])), key
    assert all(r >= 0 for r in top[key]["residuals"] + low[key]["residuals"])
    assert top[key]["eigenvalues"] == sorted(top[key]["eigenvalues"], reverse=True)
    assert low[key]["eigenvalues"][0] <= top[key]["eigenvalues"][-1]
unconverged = [f"{m} B={b:,}" for (m, b), r in top.items() if not r["converged"]]
glue("k_top", f"{num_eigenvalues}", display=False)
glue("unconverged", ", ".join(unconverged) or "none", display=False)

# %% [markdown]
# The solver reports true residuals, whether or not it reached the
# tolerance within `max_iter` vectors. Runs whose top {glue:text}`k_top`
# did not all reach it: {glue:text}`unconverged` (their residuals are in
# {numref}`fig-spectrum-residuals`; a barely trained model has a crowded
# top spectrum that converges slowly).

# %% tags=["hide-input"]
import numpy as np

import hesslib.plotting as hp

batches = sorted({b for _, b in runs})
colors = hp.batch_colors(batches)
ends = {name: sorted(b for m, b in runs if m == name) for name in models}


def plot_top(field, scale):
    """One panel per model: ``field`` of the top eigenpairs by index."""
    fig, axes = hp.page_figure(len(models))
    for ax, name in zip(np.atleast_1d(axes), models):
        for batch in ends[name]:
            values = top[name, batch][field]
            ax.plot(range(1, len(values) + 1), values, "o-", ms=3,
                    color=colors[batch], label=hp.batch_label(batch))
        ax.set(title=name, xlabel="eigenvalue index $i$", yscale=scale,
               ylabel=r"$\lambda_i(\theta)$" if field == "eigenvalues"
               else "relative residual")
        if field == "residuals":
            ax.axhline(tol, color="k", ls="--", lw=0.8, label="tolerance")
        ax.legend()
    return fig


with hp.figure_style():
    hp.glue_figure("fig_top", plot_top("eigenvalues", "log"))
    hp.glue_figure("fig_residuals", plot_top("residuals", "log"))

# %% [markdown]
# ```{glue:figure} fig_top
# :name: fig-spectrum-top
#
# The top eigenvalues of the weight Hessian (log scale) of M1 on MNIST and
# C1 on CIFAR-10, after training at the smallest (blue) and the largest
# (red) batch size of the profile (the paper's Fig. 1).
# ```
#
# ```{glue:figure} fig_residuals
# :name: fig-spectrum-residuals
#
# Convergence evidence: the true relative residual
# $\|Hv_i - \lambda_i v_i\| / |\lambda_i|$ of each eigenpair of
# {numref}`fig-spectrum-top`, against the tolerance (dashed).
# ```

# %% tags=["hide-input"]
rows = [{"model": name, "batch size": f"{batch:,}",
         "test accuracy": runs[name, batch].final.test_accuracy,
         "lambda_1": top[name, batch]["eigenvalues"][0],
         f"lambda_{num_eigenvalues}": top[name, batch]["eigenvalues"][-1],
         "lambda_min": low[name, batch]["eigenvalues"][0],
         "lambda_min residual": low[name, batch]["residuals"][0],
         "products": top[name, batch]["products"] + low[name, batch]["products"]}
        for name, batch in runs]
display(Markdown(markdown_table(rows, formats={
    "test accuracy": ".2%", "lambda_1": ".4g", f"lambda_{num_eigenvalues}": ".4g",
    "lambda_min": ".3g", "lambda_min residual": ".1e"})))

# %% [markdown]
# ## The whole spectrum and its negative end
#
# The top eigenvalues are outliers of a spectrum whose bulk sits near zero.
# {numref}`fig-spectrum-density` shows the density of all eigenvalues
# (SLQ with {glue:text}`slq_runs` random starts of {glue:text}`slq_steps`
# steps) with the lowest eigenvalues marked. A weight Hessian of a ReLU
# network does have negative eigenvalues; what matters for the paper's C2
# (page 04) is how small they are beside the top ones.

# %% tags=["hide-input"]
glue("slq_runs", f"{slq_runs}", display=False)
glue("slq_steps", f"{slq_steps}", display=False)


def plot_density():
    """One panel per model: the SLQ density, lowest eigenvalues marked."""
    fig, axes = hp.page_figure(len(models))
    for ax, name in zip(np.atleast_1d(axes), models):
        for batch in ends[name]:
            d = density[name, batch]
            ax.plot(d["grid"], d["density"], color=colors[batch],
                    label=hp.batch_label(batch))
            for value in low[name, batch]["eigenvalues"]:
                ax.axvline(value, color=colors[batch], ls=":", lw=0.8)
        ax.set(title=name, xlabel=r"eigenvalue $\lambda$", ylabel="density",
               yscale="log", ylim=(1e-6, None))
        ax.legend()
    return fig


with hp.figure_style():
    hp.glue_figure("fig_density", plot_density())

# %% [markdown]
# ```{glue:figure} fig_density
# :name: fig-spectrum-density
#
# Spectral density of the weight Hessian (SLQ, Gaussian smoothing of 1% of
# the spectral width, log scale) at the smallest (blue) and the largest (red)
# batch; dotted lines: the lowest eigenvalues from Lanczos.
# ```

# %%
ratios = {name: top[name, ends[name][-1]]["eigenvalues"][0]
          / top[name, ends[name][0]]["eigenvalues"][0] for name in models}
negative = {key: -low[key]["eigenvalues"][0] / top[key]["eigenvalues"][0]
            for key in runs}
glue("ratios", ", ".join(f"{m} {r:.2f}" for m, r in ratios.items()), display=False)
glue("negative", f"{max(negative.values()):.2%}", display=False)
glue("profile", profile, display=False)

# %% [markdown]
# ## Summary
#
# In the {glue:text}`profile` profile, lambda_1(theta) at the largest batch
# over that at the smallest: {glue:text}`ratios`. The most negative
# eigenvalue is at most {glue:text}`negative` of lambda_1 in magnitude
# (a negative value there means no negative eigenvalue was found).
#
# ## Verdict on C1 (sharpness, Fig. 1)
#
# The claim holds on this page when, for every model, lambda_1(theta) at the
# largest batch is at least `min_sharpness_ratio` times that at the smallest
# and the test accuracy is lower. Page 04 judges it on more models and batch
# sizes.

# %%
from hesslib.verdicts import judge_sharpness, store_verdict

evidence = {name: {"small_batch": ends[name][0], "large_batch": ends[name][-1],
                   "lambda_small": top[name, ends[name][0]]["eigenvalues"][0],
                   "lambda_large": top[name, ends[name][-1]]["eigenvalues"][0],
                   "accuracy_small": runs[name, ends[name][0]].final.test_accuracy,
                   "accuracy_large": runs[name, ends[name][-1]].final.test_accuracy}
            for name in models}
verdict = judge_sharpness(evidence, min_sharpness_ratio=min_sharpness_ratio,
                          page="02_hessian_spectrum", profile=profile)
store_verdict(verdict, store)
display(verdict)
