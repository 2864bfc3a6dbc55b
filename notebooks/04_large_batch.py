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
# # Large batches: sharper, and not at saddle points
#
# Two claims of the paper are judged here. **C1**: as the batch grows, test
# accuracy drops and lambda_1(theta), the top eigenvalue of the weight
# Hessian, grows. **C2**: large-batch training does not stall at saddle
# points but in regions of high curvature. The evidence is the paper's
# Fig. 4 (lambda_1(theta) and the gradient norm over the epochs of M1, at a
# small and a large batch, with and without robust training) and its main
# table: per model and batch size, test accuracy, lambda_1(theta),
# lambda_1(x) and accuracy under FGSM.
#
# Choices the paper leaves open, made here and kept as parameters:
# lambda_1(theta) during training is tracked on the profile's Hessian
# samples to a relative residual `track_tol` (coarser than the final
# measurements' 1e-4: it only has to follow a trend), each solve warm-started
# from the previous epoch's eigenvector. lambda_1(x) is the mean over test
# samples of each sample's own top input-Hessian eigenvalue. The FGSM radii
# (`fgsm_eps`, L-infinity on pixels in [0, 1]) are ours, larger for MNIST,
# whose models are much harder to fool. Robust training is the authors'
# scheme: 20% of every chunk of 128 replaced by FGSM examples of size 0.005.

# %% tags=["parameters"]
profile = "cpu"  # "smoke", "cpu" or "paper" (see the Reproducing page)
device = "auto"  # "auto", "cpu" or "cuda"
seed = 0  # seed of the trained runs, the subsets and random starts
data_dir = None  # None: the folder in $HESSLIB_DATA
store_dir = None  # None: the folder in $HESSLIB_STORE, else ./.store
models = ("M1", "C1", "C2", "C3")  # the table's models
fgsm_eps = {"mnist": (0.05, 0.1), "cifar10": (0.01, 0.02)}  # FGSM radii
tol = 1e-4  # relative residual of lambda_1(theta) and lambda_1(x)
track_model = "M1"  # the model of Fig. 4
track_tol = 1e-3  # relative residual of lambda_1(theta) tracked per epoch
track_max_iter = 100  # most products per tracked solve
num_smallest, smallest_tol = 3, 1e-3  # lowest eigenvalues (as on page 02)
smallest_max_iter = None  # None: 3 times the profile's num_eigenvalues
c2_models = ("M1", "C1")  # the large-batch models C2 is judged on
min_sharpness_ratio = 2.0  # C1: least lambda_1 ratio, largest / batch 128
c1_min_models = None  # C1: models that must hold (None: all)
max_grad_ratio = 0.5  # C2: largest gradient norm, last / first epoch
max_negative_ratio = 0.1  # C2: largest |lambda_min| / lambda_max

# %% tags=["hide-cell"]
# Validate the parameters and resolve the profile's defaults.
import math

from IPython.display import Markdown, display
from myst_nb import glue

from hesslib.book import markdown_table
from hesslib.experiments import profile_spec, profile_splits, resolve_device
from hesslib.models import MODEL_DATA
from hesslib.profiles import get_profile

settings = get_profile(profile)
dev = resolve_device(device)
smallest_max_iter = smallest_max_iter or 3 * settings.num_eigenvalues
assert set(models) <= set(MODEL_DATA) and track_model in models
assert set(c2_models) <= set(models) and 0 < tol < 1 and 0 < track_tol < 1
assert all(MODEL_DATA[m] in fgsm_eps for m in models), fgsm_eps

# %% [markdown]
# ## The trained models
#
# Every batch size of the profile for every model, each run trained once and
# shared with the other pages through the results store.

# %%
from hesslib.experiments import run_training
from hesslib.store import Store

store, splits, runs = Store(store_dir), {}, {}
for name in models:
    splits[name] = profile_splits(settings, MODEL_DATA[name], root=data_dir,
                                  device=dev)
    n_train = len(splits[name][0])
    for batch in sorted({settings.resolve_batch(b, n_train)
                         for b in settings.batch_sizes[name]}):
        spec = profile_spec(settings, name, batch, train_size=n_train, seed=seed)
        runs[name, batch] = run_training(spec, splits=splits[name], device=dev,
                                         store=store)

# %%
print(settings.description)
for (name, batch), run in runs.items():
    how = "loaded from the store" if run.from_store else "trained"
    print(f"{name} batch {batch:,}: run {run.key} {how}")

# %% [markdown]
# ## lambda_1(theta) during training (Fig. 4)
#
# The smallest and the largest batch of {glue:text}`track_model`, trained
# again with lambda_1(theta) computed after every epoch, plainly and with
# robust training. These runs are stored apart from the untracked ones (the
# tracker is part of their key), but the tracker draws none of training's
# random numbers, so the weights are the same.

# %%
from hesslib.analysis import tracked_run

track_ends = [b for m, b in runs if m == track_model]
track_ends = (min(track_ends), max(track_ends))
tracked = {(batch, robust): tracked_run(
    settings, track_model, batch, splits=splits[track_model], device=dev,
    store=store, seed=seed, tol=track_tol, max_iter=track_max_iter, robust=robust)
    for batch in track_ends for robust in ("none", "fgsm_mix")}
glue("track_model", track_model, display=False)

# %%
for key, run in tracked.items():
    for record in run.history:
        values = (record.extras["lambda_1"], record.grad_norm)
        assert all(map(math.isfinite, values)), (key, record)
        assert record.extras["lambda_1_residual"] >= 0, (key, record)
unconverged = sum(r.extras["lambda_1_residual"] > track_tol
                  for run in tracked.values() for r in run.history)
glue("track_unconverged", f"{unconverged}", display=False)

# %% tags=["hide-input"]
import hesslib.plotting as hp

colors = hp.batch_colors(track_ends)


def plot_tracked():
    """lambda_1 and gradient norm per epoch; dotted: robust training."""
    fig, axes = hp.page_figure(2)
    for (batch, robust), run in tracked.items():
        style = ":" if robust != "none" else "-"
        label = hp.batch_label(batch) + (", robust" if robust != "none" else "")
        epochs = [r.epoch for r in run.history]
        axes[0].plot(epochs, [r.extras["lambda_1"] for r in run.history], style,
                     marker="o", ms=3, color=colors[batch], label=label)
        axes[1].plot(epochs, [r.grad_norm for r in run.history], style,
                     marker="o", ms=3, color=colors[batch])
    axes[0].set(xlabel="epoch", ylabel=hp.AXIS_LABELS["lambda_max"], yscale="log")
    axes[1].set(xlabel="epoch", ylabel=hp.AXIS_LABELS["grad_norm"], yscale="log")
    axes[0].legend()
    return fig


with hp.figure_style():
    hp.glue_figure("fig_tracked", plot_tracked())

# %% [markdown]
# ```{glue:figure} fig_tracked
# :name: fig-large-batch-tracked
#
# M1 on MNIST (the paper's Fig. 4): the top eigenvalue of the weight Hessian
# (left) and the norm of the full gradient (right, on a fixed training
# subset) after every epoch, at the smallest (blue) and the largest (red)
# batch size; dotted: robust training (20% FGSM examples per chunk).
# ```
#
# Solves that stopped at `track_max_iter` above the tolerance:
# {glue:text}`track_unconverged`.
#
# ## The main table
#
# For every run: test accuracy, lambda_1(theta) on the profile's Hessian
# samples, lambda_1(x) on the profile's test samples and the accuracy under
# FGSM at the two radii of `fgsm_eps` (cached in the store; page 05 reads
# them back).

# %%
from hesslib.analysis import measure

measured = {}
for (name, batch), run in runs.items():
    train_split, test_split = splits[name]
    measured[name, batch] = measure(
        run.model, train_split, test_split, test_accuracy=run.final.test_accuracy,
        hessian_samples=settings.hessian_samples[name],
        input_samples=settings.input_hessian_samples,
        attack_samples=settings.attack_samples,
        attack_eps=fgsm_eps[MODEL_DATA[name]], tol=tol, seed=seed, store=store,
        run_key=run.key, max_iter=settings.max_iter)

# %%
for key, m in measured.items():
    assert all(map(math.isfinite, (m.weight_top, m.input_top_mean))), key
    assert m.weight_residual >= 0, (key, m.weight_residual)
    assert all(0 <= a <= 1 for a in m.attack_accuracy), key
low_converged = min(m.input_converged for m in measured.values())
glue("input_converged", f"{low_converged:.0%}", display=False)
worst = max(m.weight_residual for m in measured.values())
glue("worst_residual", f"{worst:.1e}", display=False)

# %% tags=["hide-input"]
rows = [{"model": name, "batch size": f"{batch:,}",
         "test accuracy": m.test_accuracy, "lambda_1(theta)": m.weight_top,
         "lambda_1(x)": m.input_top_mean,
         "FGSM accuracy": ", ".join(f"{a:.1%} at eps {e:g}" for e, a
                                    in zip(m.attack_eps, m.attack_accuracy))}
        for (name, batch), m in measured.items()]
display(Markdown(markdown_table(rows, formats={
    "test accuracy": ".2%", "lambda_1(theta)": ".4g", "lambda_1(x)": ".3g"})))

# %% [markdown]
# The input-Hessian solves converged for at least
# {glue:text}`input_converged` of the samples of every run; the largest
# relative residual of a lambda_1(theta) is {glue:text}`worst_residual`
# (tolerance `tol`).

# %% tags=["hide-input"]
def plot_by_batch():
    """lambda_1(theta) and test accuracy against batch size, per model."""
    fig, axes = hp.page_figure(2)
    for name in models:
        mine = sorted((b, m) for (n, b), m in measured.items() if n == name)
        sizes = [b for b, _ in mine]
        axes[0].plot(sizes, [m.weight_top for _, m in mine], "o-", label=name)
        axes[1].plot(sizes, [m.test_accuracy for _, m in mine], "o-", label=name)
    axes[0].set(xscale="log", yscale="log", xlabel="batch size",
                ylabel=hp.AXIS_LABELS["lambda_max"])
    axes[1].set(xscale="log", xlabel="batch size", ylabel="test accuracy")
    axes[0].legend()
    return fig


with hp.figure_style():
    hp.glue_figure("fig_by_batch", plot_by_batch())

# %% [markdown]
# ```{glue:figure} fig_by_batch
# :name: fig-large-batch-by-batch
#
# lambda_1(theta) (left, log-log) and test accuracy (right) against the
# batch size, per model (M1 on MNIST, C1 to C3 on CIFAR-10).
# ```
#
# ## The negative end of the spectrum (C2)
#
# A saddle point has a small gradient and negative curvature of size
# comparable to the positive. For the largest-batch runs of `c2_models`: the
# gradient norm after the first and the last epoch, and the lowest
# eigenvalue of the weight Hessian (Lanczos, the same computation as page 02,
# read from the store when that page ran with the same parameters).

# %%
from hesslib.analysis import spectrum_summary

c2 = {}
for name in c2_models:
    batch = max(b for m, b in runs if m == name)
    run = runs[name, batch]
    low = spectrum_summary(run.model, splits[name][0], k=num_smallest,
                           which="smallest", tol=smallest_tol,
                           max_iter=smallest_max_iter,
                           samples=settings.hessian_samples[name], seed=seed,
                           store=store, run_key=run.key)
    c2[name] = {"grad_start": run.history[0].grad_norm,
                "grad_end": run.final.grad_norm,
                "lambda_max": measured[name, batch].weight_top,
                "lambda_min": low["eigenvalues"][0],
                "lambda_min_residual": low["residuals"][0]}
display(Markdown(markdown_table([{"model": n, **v} for n, v in c2.items()],
                                formats={k: ".3g" for k in c2[c2_models[0]]})))

# %%
ratios = {name: measured[name, max(b for m, b in runs if m == name)].weight_top
          / measured[name, min(b for m, b in runs if m == name)].weight_top
          for name in models}
glue("ratios", ", ".join(f"{m} {r:.2f}" for m, r in ratios.items()), display=False)
glue("profile", profile, display=False)
glue("negative", ", ".join(f"{n} {max(0, -v['lambda_min']) / v['lambda_max']:.2%}"
                           for n, v in c2.items()), display=False)

# %% [markdown]
# ## Summary
#
# In the {glue:text}`profile` profile, lambda_1(theta) at the largest batch
# over that at the smallest: {glue:text}`ratios`. At the end of large-batch
# training, the most negative eigenvalue found is this fraction of the
# largest: {glue:text}`negative`. Note that Lanczos approaches the lowest
# eigenvalue from above: an unconverged value understates how negative the
# curvature is (its residual is in the table).
#
# ## Verdicts on C1 and C2
#
# **C1** holds when, for `c1_min_models` models (all, by default),
# lambda_1(theta) at the largest batch is at least `min_sharpness_ratio`
# times that at the smallest and the test accuracy is lower. **C2** holds
# when, for every model of `c2_models` at its largest batch, the gradient
# norm after the last epoch is at most `max_grad_ratio` times that after the
# first, and |lambda_min| / lambda_max is at most `max_negative_ratio`.

# %%
from hesslib.verdicts import judge_high_curvature, judge_sharpness, store_verdict

ends = {n: (min(b for m, b in runs if m == n), max(b for m, b in runs if m == n))
        for n in models}
c1 = {n: {"small_batch": s, "large_batch": b,
          "lambda_small": measured[n, s].weight_top,
          "lambda_large": measured[n, b].weight_top,
          "accuracy_small": measured[n, s].test_accuracy,
          "accuracy_large": measured[n, b].test_accuracy}
      for n, (s, b) in ends.items()}
verdicts = [judge_sharpness(c1, min_sharpness_ratio=min_sharpness_ratio,
                            min_models=c1_min_models, page="04_large_batch",
                            profile=profile),
            judge_high_curvature(c2, max_grad_ratio=max_grad_ratio,
                                 max_negative_ratio=max_negative_ratio,
                                 page="04_large_batch", profile=profile)]
for verdict in verdicts:
    store_verdict(verdict, store)
    display(verdict)
