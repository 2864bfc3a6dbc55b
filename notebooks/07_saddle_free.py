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
# # The attack problem has no saddle points (Theorem 1)
#
# An adversary looks for the input near a test image that maximizes the
# loss. The paper's Theorem 1 (its claim C5) says that for a ReLU network
# this inner problem is saddle-free almost everywhere: as a function of the
# input, the loss has no direction of negative curvature. This page states
# the result, sketches why it holds, and checks it numerically on trained
# models of this book: along real attack paths, on a smooth-activation twin
# where it should fail, and against the weight Hessian, which has no such
# property.

# %% tags=["parameters"]
profile = "cpu"  # "smoke", "cpu" or "paper" (see the Reproducing page)
device = "auto"  # "auto", "cpu" or "cuda"
seed = 0  # seed of the trained runs, the attacked samples and the solvers
data_dir = None  # None: the folder in $HESSLIB_DATA
store_dir = None  # None: the folder in $HESSLIB_STORE, else ./.store
relu_models = ["M1", "C1"]  # trained ReLU models (batch 128, from the store)
smooth_activation = "tanh"  # activation of the smooth twin of M1
twin_train_size = 2_000  # MNIST samples the twin is trained on (in the page)
twin_epochs = 2  # epochs of the twin's training
path_samples = 8  # test samples attacked per model
pgd_steps = 10  # PGD steps: each path has pgd_steps + 1 points
pgd_eps = {"mnist": 0.1, "cifar10": 0.03}  # L-infinity radius, [0, 1] pixels
eig_tol = 1e-6  # relative residual of the input-Hessian eigenvalues...
eig_max_iter = 60  # ...or this many batched Lanczos products per path point
weight_samples = 256  # training samples of the weight Hessian (contrast)
relu_floor = -1e-6  # C5: least lambda_min / lambda_max that counts as zero
smooth_ceiling = -1e-3  # C5: the twin's ratio must fall below this
max_gauss_newton_error = 1e-10  # C5: Gauss-Newton identity, float64

# %% tags=["hide-cell"]
# Validate the parameters, resolve the profile and open the store.
import copy

from IPython.display import Markdown, display
from myst_nb import glue

from hesslib.book import markdown_table
from hesslib.data import balanced_subset
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
assert "M1" in relu_models and set(relu_models) <= set(MODEL_DATA), relu_models
assert relu_floor <= 0 and smooth_ceiling < relu_floor, (relu_floor, smooth_ceiling)
assert path_samples >= 1 and pgd_steps >= 1, (path_samples, pgd_steps)
glue("profile", profile, display=False)
glue("relu_floor", f"{relu_floor:g}", display=False)
glue("smooth_ceiling", f"{smooth_ceiling:g}", display=False)
glue("activation", smooth_activation, display=False)

# %% [markdown]
# This page was built with the {glue:text}`profile` profile.
#
# ## The statement
#
# **Assumption.** The loss $J(\theta, x, y)$ of the network is twice
# differentiable with respect to the input $x$.
#
# **Theorem 1** (Yao et al.). Under it, the loss of a network built of
# affine layers (fully connected, convolutional), ReLU, max-pooling and
# BatchNorm in eval mode is a saddle-free function of $x$ almost everywhere.
#
# **Why.** Each of these layers is piecewise affine in its input. Their
# composition is piecewise affine too: the input space splits into regions,
# finitely many in any bounded set, and inside each the logits are an
# affine map, $z(x) = W x + b$ with $J = \partial z / \partial x = W$. The
# region boundaries have measure zero, which is where "almost everywhere"
# comes from (and where the assumption fails). Inside a region the
# cross-entropy $\ell(x) = -z_y + \log \sum_c e^{z_c}$ has gradient
# $J^T (p - e_y)$ with $p = \operatorname{softmax}(z)$, and since $J$ does
# not change with $x$ there,
#
# $$
# H_x = \nabla_x^2 \ell = J^T \left(\operatorname{diag}(p) - p p^T\right) J .
# $$
#
# For any vector $u$, with $w = J u$,
# $u^T H_x u = \sum_c p_c w_c^2 - \big(\sum_c p_c w_c\big)^2 \ge 0$: the
# variance of $w$ under $p$. So $H_x$ is positive semi-definite, and a point
# where the gradient vanishes cannot be a saddle. Its rank is at most the
# number of classes minus one (the middle matrix annihilates the all-ones
# vector), so most of its eigenvalues are exactly zero; the only curvature
# comes from the softmax.
#
# A smooth activation (tanh, GELU) breaks the argument: $J$ then changes
# with $x$ and $H_x$ gains the term $\sum_c (p_c - [c = y])\, \nabla_x^2 z_c$,
# which can be indefinite. The weight Hessian gets the same kind of term
# even for ReLU networks, because the logits are not affine in the weights
# (products of weights of successive layers): it does have negative
# eigenvalues.

# %% [markdown]
# ## The models
#
# The ReLU models are the book's trained runs at batch 128 (shared with
# the other pages through the store). The smooth twin is M1 with every ReLU
# replaced by the activation {glue:text}`activation`; the run specification
# of the store has no activation field, so the twin is trained here, briefly,
# with `hesslib.train.train` on a class-balanced MNIST subset (its size and
# epochs are parameters). It only has to be a realistic smooth network, not
# a good one.

# %%
splits = {MODEL_DATA[m]: profile_splits(settings, MODEL_DATA[m], root=data_dir,
                                        device=dev) for m in ("M1", *relu_models)}
runs = {}
for name in relu_models:
    train_split = splits[MODEL_DATA[name]][0]
    spec = profile_spec(settings, name, settings.batch_sizes[name][0],
                        train_size=len(train_split), seed=seed)
    runs[name] = run_training(spec, splits=splits[MODEL_DATA[name]], device=dev,
                              store=store)
    print(f"{name}: run {runs[name].key}, test accuracy "
          f"{runs[name].final.test_accuracy:.2%}")

# %%
from hesslib.models import build_model
from hesslib.train import TrainConfig, train

mnist_train, mnist_test = splits["mnist"]
twin = build_model("M1", seed=seed, activation=smooth_activation).to(dev)
twin_data = balanced_subset(mnist_train, min(twin_train_size, len(mnist_train)),
                            seed=seed)
twin_history = train(twin, twin_data, mnist_test,
                     TrainConfig(epochs=twin_epochs, seed=seed)).history
twin.eval()
print(f"M1 ({smooth_activation}): test accuracy "
      f"{twin_history[-1].test_accuracy:.2%}")

# %% [markdown]
# ## A small case against exact linear algebra
#
# For one MNIST test image ($784$ inputs), the dense input Hessian of the
# trained M1 (by `torch.func.hessian`) next to its Gauss-Newton form
# $J^T(\operatorname{diag}(p) - pp^T)J$, both in float64. For the ReLU
# network they agree to round-off; for the smooth twin they do not.

# %%
from hesslib.theory import gauss_newton_identity

m1_64, twin_64 = copy.deepcopy(runs["M1"].model).double(), copy.deepcopy(twin).double()
x0, y0 = mnist_test.x[0].double(), mnist_test.y[0]
relu_check = gauss_newton_identity(m1_64, x0, y0)
twin_check = gauss_newton_identity(twin_64, x0, y0)
gn_error = relu_check.relative_error
print(f"relative error, ReLU M1: {gn_error:.2e}; "
      f"{smooth_activation} twin: {twin_check.relative_error:.2e}")

# %%
import torch

for check in (relu_check, twin_check):
    assert torch.isfinite(check.hessian).all() and check.hessian.shape == (784, 784)
    assert torch.allclose(check.hessian, check.hessian.T, atol=1e-12)
glue("gn_error", f"{gn_error:.1e}", display=False)
glue("gn_twin", f"{twin_check.relative_error:.1e}", display=False)
dense_eigs = {"M1 (ReLU)": torch.linalg.eigvalsh(relu_check.hessian.detach()),
              f"M1 ({smooth_activation})":
              torch.linalg.eigvalsh(twin_check.hessian.detach())}

# %% tags=["hide-input"]
import hesslib.plotting as hp


def plot_dense(eigs):
    """Sorted eigenvalues of each dense input Hessian, scaled by the largest."""
    fig, ax = hp.page_figure(1)
    for label, values in eigs.items():
        scaled = (values / values.abs().max()).cpu()
        ax.plot(range(1, len(scaled) + 1), scaled.flip(0), ".", ms=3, label=label)
    ax.set(xscale="log", xlabel="eigenvalue index (descending)",
           ylabel=r"$\lambda_i / \max_j |\lambda_j|$")
    ax.set_yscale("symlog", linthresh=1e-9)
    ax.legend()
    return fig


with hp.figure_style():
    hp.glue_figure("fig_dense", plot_dense(dense_eigs))

# %% [markdown]
# ```{glue:figure} fig_dense
# :name: fig-dense-input-hessian
#
# Every eigenvalue of the input Hessian of one MNIST test image (dense,
# float64), divided by the largest in magnitude, for the trained ReLU M1 and
# its smooth twin (symmetric-log scale). The ReLU network's spectrum has a
# handful of positive eigenvalues and zeros to round-off; the twin's has
# negative ones.
# ```
#
# The Gauss-Newton form matches the dense Hessian of the ReLU M1 to a
# relative Frobenius error of {glue:text}`gn_error`; for the twin the error
# is {glue:text}`gn_twin`.
#
# ## Along attack paths
#
# The theorem speaks of every input, and an attacker walks through inputs.
# For a few test images per model, a PGD attack under the L-infinity norm
# records every iterate (`hesslib.attacks.pgd` with a callback); at each,
# `hesslib.theory.path_min_eigenvalues` computes each image's smallest and
# largest input-Hessian eigenvalue by batched Lanczos, in float64, to a
# relative residual of `eig_tol` or at most `eig_max_iter` products. The
# quantity judged is the smallest eigenvalue over the largest, which is
# scale-free. The ReLU models' Hessians have rank at most nine, and Lanczos
# resolves them in a few products; the twin's smallest eigenvalue converges
# slowly, but a Ritz value is never below the smallest eigenvalue, so an
# unconverged negative one still proves a negative eigenvalue.

# %%
from hesslib.attacks import pgd
from hesslib.theory import path_min_eigenvalues

nets = {f"{m} (ReLU)": (copy.deepcopy(r.model).double(), MODEL_DATA[m])
        for m, r in runs.items()}
nets[f"M1 ({smooth_activation})"] = (twin_64, "mnist")
paths = {}
for label, (net, data) in nets.items():
    probe = balanced_subset(splits[data][1], path_samples, seed=seed)
    path = {}  # step -> iterate, filled by the attack's callback
    pgd(net, probe.x.double(), probe.y, pgd_eps[data], steps=pgd_steps,
        callback=path.__setitem__, generator=torch.Generator(dev).manual_seed(seed))
    paths[label] = path_min_eigenvalues(
        net, list(path.values()), probe.y, tol=eig_tol, max_iter=eig_max_iter,
        generator=torch.Generator(dev).manual_seed(seed))

# %%
ratios = {}
for label, eig in paths.items():
    assert eig.bottom.shape == (pgd_steps + 1, path_samples), eig.bottom.shape
    assert torch.isfinite(eig.bottom).all() and (eig.top > 0).all(), label
    ratios[label] = (eig.bottom / eig.top).detach()
    print(f"{label}: converged {eig.converged.double().mean():.0%}, "
          f"min ratio {ratios[label].min():.3g}")

# %% tags=["hide-input"]
def plot_paths(ratios):
    """min over samples of lambda_min / lambda_max per attack step."""
    fig, ax = hp.page_figure(1)
    for label, r in ratios.items():
        ax.plot(r.min(dim=1).values.cpu(), "o-", ms=3, label=label)
    ax.axhline(relu_floor, color="k", lw=0.8, ls="--", label="ReLU floor")
    ax.axhline(smooth_ceiling, color="k", lw=0.8, ls=":", label="twin ceiling")
    ax.set(xlabel="PGD step",
           ylabel=r"$\min_i\, \lambda_{\min}(H_x) / \lambda_{\max}(H_x)$")
    ax.set_yscale("symlog", linthresh=1e-9)
    ax.legend(fontsize=7)
    return fig


with hp.figure_style():
    hp.glue_figure("fig_paths", plot_paths(ratios))

# %% [markdown]
# ```{glue:figure} fig_paths
# :name: fig-attack-paths
#
# The smallest input-Hessian eigenvalue divided by the largest, at every
# step of PGD attacks (the worst of the attacked images at each step;
# symmetric-log scale, linear within 1e-9 of zero). The ReLU models stay at
# zero up to round-off; the smooth twin goes negative. Dashed: the floor the
# ReLU models must stay above; dotted: the ceiling the twin must fall below.
# ```

# %% [markdown]
# ## The weight Hessian, for contrast
#
# The same trained M1, but the Hessian of the mean training loss with respect
# to its weights, on `weight_samples` training images: its smallest
# eigenvalue is negative, the weights do sit near directions of negative
# curvature even though the inputs never do.

# %%
from hesslib.analysis import weight_spectrum

hess = balanced_subset(mnist_train, min(weight_samples, len(mnist_train)), seed=seed)
weight = weight_spectrum(runs["M1"].model, hess.x, hess.y,
                         which="both", tol=1e-3, max_iter=150,
                         generator=torch.Generator().manual_seed(seed))
w_top, w_bottom = weight.eigenvalues.max().item(), weight.eigenvalues.min().item()
assert torch.isfinite(weight.eigenvalues).all()
glue("w_top", f"{w_top:.3g}", display=False)
glue("w_bottom", f"{w_bottom:.3g}", display=False)
glue("w_ratio", f"{w_bottom / w_top:.2g}", display=False)

# %% [markdown]
# The weight Hessian of M1 has largest eigenvalue {glue:text}`w_top` and
# smallest {glue:text}`w_bottom` (ratio {glue:text}`w_ratio`): negative
# curvature in the weights, none in the inputs.

# %% tags=["hide-input"]
rows = [{"network": label, "PGD eps": pgd_eps[nets[label][1]],
         "mean lambda_max(x)": paths[label].top.mean().item(),
         "min lambda_min(x)": paths[label].bottom.min().item(),
         "min ratio": ratios[label].min().item()} for label in paths]
rows.append({"network": "M1 weights", "PGD eps": float("nan"),
             "mean lambda_max(x)": w_top, "min lambda_min(x)": w_bottom,
             "min ratio": w_bottom / w_top})
display(Markdown(markdown_table(rows, formats={
    "PGD eps": ".3g", "mean lambda_max(x)": ".3g", "min lambda_min(x)": ".2e",
    "min ratio": ".2e"})))

# %% [markdown]
# ## Verdict on C5
#
# The claim holds when, along every path and for every image, the ReLU
# models' smallest-to-largest ratio stays at or above {glue:text}`relu_floor`
# (zero to round-off), the smooth twin's falls below
# {glue:text}`smooth_ceiling`, and the Gauss-Newton identity holds to the
# error fixed in the parameters. On this profile the models and paths are
# few: the theorem is a statement about every input, and this is a sample.

# %%
from hesslib.verdicts import judge_saddle_free, store_verdict

relu_min = {k: ratios[k].min().item() for k in ratios if k.endswith("(ReLU)")}
smooth_min = {k: ratios[k].min().item() for k in ratios if k not in relu_min}
verdict = judge_saddle_free(
    relu_min, smooth_min, gn_error, relu_floor=relu_floor,
    smooth_ceiling=smooth_ceiling, max_gauss_newton_error=max_gauss_newton_error,
    page="07_saddle_free", profile=profile)
store_verdict(verdict, store)
display(verdict)
