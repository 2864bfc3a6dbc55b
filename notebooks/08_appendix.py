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
# # Appendix: the other models
#
# The paper's appendix repeats its Figs. 1 to 5 for the other architectures
# and data sets, and its claim C6 is that the findings hold across them.
# This page repeats the key quantities for every model of the zoo besides
# C1: per batch size, the top eigenvalue of the weight Hessian
# $\lambda_1(\theta)$ and the test accuracy; the top of the spectrum at the
# smallest and the largest batch; and the accuracy under FGSM. It ends with
# the tables of the architectures and of the training settings, generated
# from the code that ran.

# %% tags=["parameters"]
profile = "cpu"  # "smoke", "cpu" or "paper" (see the Reproducing page)
device = "auto"  # "auto", "cpu" or "cuda"
seed = 0  # seed of the initial weights, batch order and Hessian subsets
data_dir = None  # None: the folder in $HESSLIB_DATA
store_dir = None  # None: the folder in $HESSLIB_STORE, else ./.store
models = ["M1", "C2", "C3", "C4"]  # C1 is on the main pages
top_k = 10  # eigenvalues of the spectra (at most the profile's number)
# FGSM sizes, [0, 1] pixels: page 04's, so that its cached measurements serve
attack_eps = {"mnist": [0.05, 0.1], "cifar10": [0.01, 0.02],
              "cifar100": [0.01, 0.02]}
min_sharpness_ratio = 1.0  # C6: lambda_1 at the largest batch over the smallest
min_fraction = 0.66  # C6: share of the models that ran which must show it

# %% tags=["hide-cell"]
# Validate the parameters and resolve the profile.
import math

import torch
from IPython.display import Markdown, display
from myst_nb import glue

from hesslib.book import markdown_table
from hesslib.data import DataError
from hesslib.experiments import (
    profile_spec,
    profile_splits,
    resolve_device,
    run_training,
)
from hesslib.models import MODEL_DATA
from hesslib.profiles import PROFILES, get_profile
from hesslib.store import Store

settings, dev, store = get_profile(profile), resolve_device(device), Store(store_dir)
assert set(models) <= set(MODEL_DATA) and models, models
assert min_sharpness_ratio > 0 and 0 < min_fraction <= 1, min_fraction
k = min(top_k, settings.num_eigenvalues)
glue("profile", profile, display=False)

# %% [markdown]
# This page was built with the {glue:text}`profile` profile; its sizes (and
# how they deviate from the paper) are on the Reproducing page. Every model
# is trained as on the main pages: the authors' SGD, chunks of 128, the
# profile's batch sizes, one seed. The attack sizes differ per data set
# (MNIST digits survive much larger perturbations); the paper's sizes for
# the appendix are not known.

# %%
print(settings.description)

# %% [markdown]
# ## The runs

# %%
splits, runs, missing = {}, {}, {}
for name in models:
    try:
        splits[name] = profile_splits(settings, MODEL_DATA[name], root=data_dir,
                                      device=dev)
    except DataError as error:
        missing[name] = str(error)
        continue
    n = len(splits[name][0])
    for batch in sorted({settings.resolve_batch(b, n)
                         for b in settings.batch_sizes[name]}):
        spec = profile_spec(settings, name, batch, train_size=n, seed=seed)
        runs[name, batch] = run_training(spec, splits=splits[name], device=dev,
                                         store=store)
ran = [m for m in models if m not in missing]
print(f"ran {ran}; not available: {sorted(missing)}")

# %% tags=["hide-input"]
absent = ", ".join(f"{m} ({MODEL_DATA[m]})" for m in missing)
display(Markdown(
    f"The data of {absent} is not in the data folder, so this page leaves it "
    "out." if missing else "Every model of the zoo ran."))

# %%
for (name, batch), run in runs.items():
    assert all(math.isfinite(r.train_loss) for r in run.history), (name, batch)
    assert run.history[-1].epoch == settings.epochs, (name, batch)

# %% [markdown]
# ## Sharpness, accuracy and robustness per batch size
#
# `hesslib.analysis.measure` gives each run's test accuracy,
# $\lambda_1(\theta)$ (on the profile's Hessian subset, Lanczos to a relative
# residual of 1e-4), $\lambda_1(x)$ and FGSM accuracy; the top-$k$ spectrum
# of the smallest and the largest batch's model comes from
# `hesslib.analysis.weight_spectrum`. Both are cached in the store.

# %%
from hesslib.analysis import cached_json, measure, weight_spectrum
from hesslib.data import balanced_subset

found = {}
for (name, batch), run in runs.items():
    train_split, test_split = splits[name]
    found[name, batch] = measure(
        run.model, train_split, test_split, test_accuracy=run.final.test_accuracy,
        hessian_samples=settings.hessian_samples[name],
        input_samples=settings.input_hessian_samples,
        attack_samples=settings.attack_samples,
        attack_eps=attack_eps[MODEL_DATA[name]], seed=seed, store=store,
        run_key=run.key, max_iter=settings.max_iter)

# %%
spectra = {}
for name in ran:
    sizes = sorted(b for m, b in runs if m == name)
    hess = balanced_subset(splits[name][0], settings.hessian_samples[name], seed=seed)
    for run in (runs[name, sizes[0]], runs[name, sizes[-1]]):
        config = {"run": run.key, "k": k, "samples": len(hess), "seed": seed}
        spectra[name, run.spec.config.batch_size] = cached_json(
            store, "appendix_spectrum", config,
            lambda net=run.model, h=hess: {"eigenvalues": weight_spectrum(
                net, h.x, h.y, k=k, generator=torch.Generator().manual_seed(seed),
            ).eigenvalues.tolist()}, parents=[f"run/{run.key}"])

# %%
for key, m in found.items():
    assert math.isfinite(m.weight_top) and m.weight_residual >= 0, key
for key, s in spectra.items():
    values = s["eigenvalues"]
    assert len(values) == k and values == sorted(values, reverse=True), key
unconverged = [key for key, m in found.items() if m.weight_residual > 1e-4]
print("lambda_1(theta) solves above the relative residual 1e-4 (stopped at "
      f"the profile's {settings.max_iter} vectors, or where float32 round-off "
      "stalled them):", unconverged or "none")

# %% tags=["hide-input"]
rows = [{"model": name, "batch": f"{batch:,}", "test accuracy": m.test_accuracy,
         "lambda_1(theta)": m.weight_top, "lambda_1(x)": m.input_top_mean,
         **{f"FGSM {i + 1}": f"{a:.1%} at {e:g}" for i, (e, a) in
            enumerate(zip(m.attack_eps, m.attack_accuracy))}}
        for (name, batch), m in found.items()]
display(Markdown(markdown_table(rows, formats={
    "test accuracy": ".2%", "lambda_1(theta)": ".3g", "lambda_1(x)": ".3g"})))

# %% tags=["hide-input"]
import hesslib.plotting as hp


def plot_model(axes, name):
    """One row of panels: lambda_1 and accuracy, spectra, FGSM accuracy."""
    sizes = sorted(b for m, b in runs if m == name)
    axes[0].plot(sizes, [found[name, b].weight_top for b in sizes], "o-", ms=3)
    axes[0].set(xscale="log", xlabel="batch size", ylabel=hp.AXIS_LABELS["lambda_max"],
                title=f"{name} ({MODEL_DATA[name]})", xticks=sizes,
                xticklabels=[f"{b:,}" for b in sizes])
    axes[0].minorticks_off()
    twin = axes[0].twinx()
    twin.plot(sizes, [found[name, b].test_accuracy for b in sizes], "s--", c="gray")
    twin.set_ylabel(hp.AXIS_LABELS["test_accuracy"], color="gray")
    for b, color in zip((sizes[0], sizes[-1]), (hp.SMALL_BATCH_COLOR,
                                                hp.LARGE_BATCH_COLOR)):
        axes[1].semilogy(range(1, k + 1), spectra[name, b]["eigenvalues"], "o-",
                         ms=3, color=color, label=hp.batch_label(b))
        axes[2].plot((0, *found[name, b].attack_eps), (found[name, b].clean_accuracy,
                     *found[name, b].attack_accuracy), "o-", ms=3, color=color)
    axes[1].set(xlabel="index $i$", ylabel=r"$\lambda_i(\theta)$")
    axes[2].set(xlabel=hp.AXIS_LABELS["eps"], ylabel="accuracy under FGSM")
    axes[1].legend()


with hp.figure_style():
    fig, grid = hp.page_figure(3, rows=len(ran), aspect=0.33)
    for row, name in zip(grid.reshape(len(ran), 3), ran):
        plot_model(row, name)
    hp.glue_figure("fig_models", fig)

# %% [markdown]
# ```{glue:figure} fig_models
# :name: fig-appendix-models
#
# One row per model. Left: $\lambda_1(\theta)$ per batch size (line with
# dots) and test accuracy (dashed, gray, right axis). Middle: the top
# eigenvalues of the weight Hessian at the smallest (blue) and the largest
# (red) batch, log scale. Right: accuracy under FGSM per perturbation size.
# ```

# %% [markdown]
# ## The architectures
#
# Made from the models themselves (`hesslib.models.build_model`): the zoo,
# then each model's top-level layers with their output shapes and parameter
# counts (C3's residual blocks are listed as blocks).

# %% tags=["hide-input"]
from hesslib.models import MODELS, build_model
from hesslib.report import INPUT_SHAPES, architecture_rows, model_rows

display(Markdown(markdown_table(model_rows(MODELS), formats={"parameters": ","})))
for name in MODELS:
    display(Markdown(f"**{name}** ({MODEL_DATA[name]})"))
    rows = architecture_rows(build_model(name, seed=seed),
                             INPUT_SHAPES[MODEL_DATA[name]])
    display(Markdown(markdown_table(rows, formats={"parameters": ","})))

# %% [markdown]
# ## The training settings
#
# Per profile and model, from `hesslib.profiles` and the defaults of
# `hesslib.train.TrainConfig` (the authors' optimizer).

# %% tags=["hide-input"]
from hesslib.report import training_rows

for p in PROFILES.values():
    display(Markdown(f"**Profile `{p.name}`**"))
    display(Markdown(markdown_table(training_rows(p, MODELS),
                                    formats={"lr": "g", "momentum": "g"})))

# %%
tops = {}
for name in ran:
    sizes = sorted(b for m, b in runs if m == name)
    tops[name] = (found[name, sizes[0]].weight_top, found[name, sizes[-1]].weight_top)
glue("n_ran", str(len(ran)), display=False)
glue("min_fraction", f"{min_fraction:.0%}", display=False)
glue("min_ratio", f"{min_sharpness_ratio:g}", display=False)

# %% [markdown]
# ## Verdict on C6
#
# Claim C6 is judged on the sharpness part of C1, model by model: a model
# shows it when $\lambda_1(\theta)$ at its largest batch is at least
# {glue:text}`min_ratio` times that at batch 128. The claim holds when at
# least {glue:text}`min_fraction` of the {glue:text}`n_ran` models that ran
# show it. C1 itself is judged on its own page.

# %%
from hesslib.verdicts import judge_generality, store_verdict

verdict = judge_generality(tops, min_sharpness_ratio=min_sharpness_ratio,
                           min_fraction=min_fraction, skipped=sorted(missing),
                           page="08_appendix", profile=profile)
store_verdict(verdict, store)
display(verdict)
