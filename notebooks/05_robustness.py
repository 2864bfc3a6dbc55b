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
# # Sharp means fragile
#
# The paper's claim **C3**: models at points of large Hessian spectrum are
# less robust. Trained with a large batch, they lose more accuracy under
# adversarial perturbation, and the top eigenvalue of the Hessian of the
# loss with respect to the input, lambda_1(x), is larger. This page attacks
# the models of page 04 (the same stored runs and measurements) with FGSM
# and PGD at several radii and sets their accuracy under attack beside the
# batch size and beside lambda_1(x).
#
# Attacks: untargeted, L-infinity, on pixels in [0, 1] (normalization lives
# inside the models), in eval mode. FGSM is one signed-gradient step of size
# eps; PGD takes `pgd_steps` steps of size 2.5 eps / steps from a random
# start in the ball. The radii (`curve_eps`, and `judge_eps` for the
# verdict) are our choice: the paper's are not known. PGD runs on a subset
# of the attacked samples (`pgd_samples`) to bound its cost.

# %% tags=["parameters"]
profile = "cpu"  # "smoke", "cpu" or "paper" (see the Reproducing page)
device = "auto"  # "auto", "cpu" or "cuda"
seed = 0  # seed of the trained runs, the subsets and PGD's random starts
data_dir = None  # None: the folder in $HESSLIB_DATA
store_dir = None  # None: the folder in $HESSLIB_STORE, else ./.store
models = ("M1", "C1", "C2", "C3")  # the models of page 04
fgsm_eps = {"mnist": (0.05, 0.1), "cifar10": (0.01, 0.02)}  # as on page 04
tol = 1e-4  # relative residual of the eigen solves (as on page 04)
curve_eps = {"mnist": (0.02, 0.05, 0.1, 0.2),
             "cifar10": (0.002, 0.005, 0.01, 0.02)}  # radii of the curves
pgd_steps = 10  # PGD steps
pgd_samples = None  # None: a fifth of the profile's attacked samples
judge_attack = "pgd"  # C3: the attack judged, "fgsm" or "pgd"
judge_eps = {"mnist": 0.1, "cifar10": 0.01}  # C3: the radius judged
c3_min_models = None  # C3: models that must hold (None: all)

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
pgd_samples = pgd_samples or max(1, settings.attack_samples // 5)
assert set(models) <= set(MODEL_DATA) and judge_attack in ("fgsm", "pgd")
assert all(judge_eps[MODEL_DATA[m]] in curve_eps[MODEL_DATA[m]] for m in models)

# %% [markdown]
# ## The models and their measurements
#
# The runs and the measurements (lambda_1(theta), lambda_1(x), FGSM at
# `fgsm_eps`) of page 04, read from the results store (computed here if
# that page has not run with the same parameters).

# %%
from hesslib.analysis import measure
from hesslib.experiments import run_training
from hesslib.store import Store

store, splits, runs = Store(store_dir), {}, {}
for name in models:
    splits[name] = profile_splits(settings, MODEL_DATA[name], root=data_dir,
                                  device=dev)
    for batch in sorted({settings.resolve_batch(b, len(splits[name][0]))
                         for b in settings.batch_sizes[name]}):
        spec = profile_spec(settings, name, batch,
                            train_size=len(splits[name][0]), seed=seed)
        runs[name, batch] = run_training(spec, splits=splits[name], device=dev,
                                         store=store)

# %%
measured = {(name, batch): measure(
    run.model, *splits[name], test_accuracy=run.final.test_accuracy,
    hessian_samples=settings.hessian_samples[name],
    input_samples=settings.input_hessian_samples,
    attack_samples=settings.attack_samples, attack_eps=fgsm_eps[MODEL_DATA[name]],
    tol=tol, seed=seed, store=store, run_key=run.key,
    max_iter=settings.max_iter)
    for (name, batch), run in runs.items()}
print(settings.description)

# %% [markdown]
# ## Accuracy under attack
#
# FGSM on the profile's {glue:text}`attack_samples` attacked test samples,
# PGD on {glue:text}`pgd_samples` of them (class-balanced subsets; cached in
# the store).

# %%
from hesslib.analysis import attack_summary

curves = {}
for (name, batch), run in runs.items():
    for attack, samples in (("fgsm", settings.attack_samples), ("pgd", pgd_samples)):
        curves[name, batch, attack] = attack_summary(
            run.model, splits[name][1], attack=attack,
            eps=curve_eps[MODEL_DATA[name]], samples=samples, steps=pgd_steps,
            seed=seed, store=store, run_key=run.key)
glue("attack_samples", f"{settings.attack_samples:,}", display=False)
glue("pgd_samples", f"{pgd_samples:,}", display=False)

# %%
for key, c in curves.items():
    assert all(0 <= a <= 1 for a in c["accuracy"]), key
    # FGSM at the radii of page 04 on the same samples gives the same numbers
    m = measured[key[:2]]
    for e, a in zip(m.attack_eps, m.attack_accuracy):
        if key[2] == "fgsm" and e in c["eps"]:
            assert math.isclose(c["accuracy"][c["eps"].index(e)], a,
                                abs_tol=1.5 / c["samples"]), (key, e)

# %% tags=["hide-input"]
import numpy as np

import hesslib.plotting as hp


def plot_curves():
    """Accuracy against eps per model: FGSM solid, PGD dashed."""
    fig, axes = hp.page_figure(len(models), aspect=0.32)
    for ax, name in zip(np.atleast_1d(axes), models):
        sizes = sorted(b for m, b in runs if m == name)
        colors = hp.batch_colors(sizes)
        for batch in sizes:
            for attack, style in (("fgsm", "-"), ("pgd", "--")):
                c = curves[name, batch, attack]
                ax.plot([0.0, *c["eps"]], [c["clean_accuracy"], *c["accuracy"]],
                        style, marker="o", ms=2, color=colors[batch],
                        label=f"{hp.batch_label(batch)} {attack.upper()}")
        ax.set(title=name, xlabel=r"$\epsilon$", ylabel="accuracy under attack")
    np.atleast_1d(axes)[0].legend(fontsize=6)
    return fig


with hp.figure_style():
    hp.glue_figure("fig_curves", plot_curves())

# %% [markdown]
# ```{glue:figure} fig_curves
# :name: fig-robustness-curves
#
# Accuracy under L-infinity attack against the radius $\epsilon$ (pixels in
# [0, 1]), per model and batch size (smallest blue, largest red): FGSM
# (solid) and PGD (dashed); $\epsilon = 0$ is the clean accuracy.
# ```
#
# ## Accuracy under attack against lambda_1(x)

# %% tags=["hide-input"]
def plot_versus_input():
    """Accuracy under the judged attack against lambda_1(x), per model."""
    fig, ax = hp.page_figure(1, aspect=0.5)
    for name in models:
        eps = judge_eps[MODEL_DATA[name]]
        mine = sorted(k for k in runs if k[0] == name)
        xs = [measured[k].input_top_mean for k in mine]
        ys = [curves[(*k, judge_attack)]["accuracy"][
            curves[(*k, judge_attack)]["eps"].index(eps)] for k in mine]
        ax.plot(xs, ys, "o-", label=f"{name} ({judge_attack.upper()}, eps {eps:g})")
        for (_, batch), x, y in zip(mine, xs, ys):
            ax.annotate(f"{batch:,}", (x, y), fontsize=6)
    ax.set(xscale="log", xlabel=hp.AXIS_LABELS["lambda_max_input"],
           ylabel="accuracy under attack")
    ax.legend()
    return fig


with hp.figure_style():
    hp.glue_figure("fig_versus_input", plot_versus_input())

# %% [markdown]
# ```{glue:figure} fig_versus_input
# :name: fig-robustness-input
#
# Accuracy under the judged attack (`judge_attack` at `judge_eps`) against
# lambda_1(x), the mean top eigenvalue of the per-sample input Hessian, for
# every batch size (annotated) of every model.
# ```

# %% tags=["hide-input"]
rows = [{"model": name, "batch size": f"{batch:,}",
         "lambda_1(x)": measured[name, batch].input_top_mean,
         "std. error": measured[name, batch].input_top_std_error,
         **{f"{a.upper()} at judged eps": curves[name, batch, a]["accuracy"][
             curves[name, batch, a]["eps"].index(judge_eps[MODEL_DATA[name]])]
            for a in ("fgsm", "pgd")}}
        for name, batch in runs]
display(Markdown(markdown_table(rows, formats={
    "lambda_1(x)": ".3g", "std. error": ".2g", "FGSM at judged eps": ".1%",
    "PGD at judged eps": ".1%"})))

# %%
c3 = {}
for name in models:
    small, large = (f(b for m, b in runs if m == name) for f in (min, max))
    pick = [curves[name, b, judge_attack] for b in (small, large)]
    index = pick[0]["eps"].index(judge_eps[MODEL_DATA[name]])
    c3[name] = {"attacked_small": pick[0]["accuracy"][index],
                "attacked_large": pick[1]["accuracy"][index],
                "input_small": measured[name, small].input_top_mean,
                "input_large": measured[name, large].input_top_mean}
glue("profile", profile, display=False)
glue("attacked", ", ".join(f"{n} {v['attacked_small']:.1%} to {v['attacked_large']:.1%}"
                           for n, v in c3.items()), display=False)

# %% [markdown]
# ## Summary
#
# In the {glue:text}`profile` profile, accuracy under the judged attack from
# the smallest to the largest batch: {glue:text}`attacked`.
#
# ## Verdict on C3
#
# C3 holds when, for `c3_min_models` models (all, by default), the
# largest-batch run has lower accuracy under `judge_attack` at `judge_eps`
# than the smallest-batch run, and a larger lambda_1(x).

# %%
from hesslib.verdicts import judge_robustness, store_verdict

verdict = judge_robustness(c3, min_models=c3_min_models, page="05_robustness",
                           profile=profile)
store_verdict(verdict, store)
display(verdict)
