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
# # hesslib on your own model
#
# The other pages analyze the paper's models. This one shows the same tools
# on a model, a loss and data of your own, in a few calls each: the top
# Hessian eigenvalues, the spectral density, the trace with its standard
# error, the loss landscape along the top eigenvector and the accuracy under
# attack. The example is a small multilayer perceptron written inline with
# `torch.nn.Sequential`, trained here on a real MNIST subset; replace the
# model, the loss and the data by yours and the rest stays the same.
#
# What hesslib expects of them:
#
# - the **model** is an `nn.Module` that maps a batch of inputs to outputs;
#   the Hessian operators evaluate it in eval mode (and restore its mode), so
#   BatchNorm must have running statistics and dropout is off;
# - the **loss** is `loss_fn(outputs, targets)`, the mean over the batch (as
#   `torch.nn.functional.cross_entropy` by default);
# - the **data** are tensors `x` and `y`; attacks assume inputs in $[0, 1]$,
#   so normalization belongs inside the model, as its first layer here.

# %% tags=["parameters"]
profile = "cpu"  # "smoke", "cpu" or "paper"; sets the data sizes below
device = "auto"  # "auto", "cpu" or "cuda"
seed = 0  # seed of the weights, the batch order and the random probes
data_dir = None  # None: the folder in $HESSLIB_DATA
store_dir = None  # unused here: nothing of this page is stored
hidden = 128  # width of the example's hidden layer
epochs = 3  # training epochs of the example
hessian_samples = None  # training samples of the Hessian; None: the profile's M1
top_k = 5  # top eigenvalues wanted
trace_rtol = 0.05  # Hutchinson: stop at this relative standard error...
trace_probes = 100  # ...or after this many probes
attack_eps = [0.0, 0.02, 0.05, 0.1]  # L-infinity sizes, [0, 1] pixels

# %% tags=["hide-cell"]
# Validate the parameters and load the data.
from IPython.display import Markdown, display
from myst_nb import glue

from hesslib.book import markdown_table
from hesslib.data import balanced_subset
from hesslib.experiments import profile_splits, resolve_device
from hesslib.profiles import get_profile

settings, dev = get_profile(profile), resolve_device(device)
assert hidden >= 1 and epochs >= 1 and top_k >= 1 and 0 < trace_rtol < 1
train_split, test_split = profile_splits(settings, "mnist", root=data_dir, device=dev)
hessian_samples = hessian_samples or settings.hessian_samples["M1"]
hess = balanced_subset(train_split, min(hessian_samples, len(train_split)), seed=seed)
glue("profile", profile, display=False)
glue("n_train", f"{len(train_split):,}", display=False)
glue("n_hess", f"{len(hess):,}", display=False)

# %% [markdown]
# Built with the {glue:text}`profile` profile: the example trains on
# {glue:text}`n_train` MNIST images and takes its Hessian over
# {glue:text}`n_hess` of them.
#
# ## 1. Your model, loss and data
#
# Any `nn.Module`. Here: normalization, one hidden ReLU layer, ten outputs.

# %%
import torch
import torch.nn.functional as F
from torch import nn

from hesslib.models import Normalize

torch.manual_seed(seed)
model = nn.Sequential(Normalize((0.1307,), (0.3081,)), nn.Flatten(),
                      nn.Linear(28 * 28, hidden), nn.ReLU(), nn.Linear(hidden, 10))
model = model.to(dev)
loss_fn = F.cross_entropy

# %% [markdown]
# Training it is your business; the example uses the book's SGD loop.

# %%
from hesslib.train import TrainConfig, train

history = train(model, train_split, test_split,
                TrainConfig(epochs=epochs, seed=seed)).history
model.eval()
glue("test_acc", f"{history[-1].test_accuracy:.2%}", display=False)
print(f"test accuracy after {epochs} epochs: {history[-1].test_accuracy:.2%}")

# %% [markdown]
# ## 2. The Hessian as an operator
#
# `WeightHessian` wraps the model, the loss and the data into a linear
# operator whose products are Hessian-vector products by double
# back-propagation; the Hessian is never formed. Every solver takes it.

# %%
from hesslib.hessian import WeightHessian, hutchinson, lanczos, spectral_density

hessian = WeightHessian(model, loss_fn, (hess.x, hess.y))
top = lanczos(hessian, top_k, tol=1e-4, generator=torch.Generator().manual_seed(seed))
print(f"{hessian.size:,} parameters; top eigenvalues {top.eigenvalues.tolist()}")
print(f"residuals {top.residuals.max():.1e}, {top.num_products} products")

# %%
assert top.converged and (top.residuals <= 1e-4).all(), top.residuals
assert (top.eigenvalues[:-1] >= top.eigenvalues[1:]).all()  # descending

# %%
trace = hutchinson(hessian, rtol=trace_rtol, max_samples=trace_probes,
                   generator=torch.Generator().manual_seed(seed))
density = spectral_density(hessian, num_runs=4, num_steps=40,
                           generator=torch.Generator().manual_seed(seed))
print(f"trace {trace.estimate:.4g} +- {trace.std_error:.2g} "
      f"({trace.num_samples} probes)")

# %%
assert trace.std_error <= trace_rtol * abs(trace.estimate) or not trace.converged
glue("lambda_1", f"{top.eigenvalues[0]:.4g}", display=False)
glue("trace", f"{trace.estimate:.4g}", display=False)
glue("trace_se", f"{trace.std_error:.2g}", display=False)
glue("trace_n", f"{trace.num_samples}", display=False)

# %% tags=["hide-input"]
import hesslib.plotting as hp


def plot_spectrum():
    """Top eigenvalues and the SLQ density."""
    fig, axes = hp.page_figure(2)
    axes[0].plot(range(1, top_k + 1), top.eigenvalues.cpu(), "o-")
    axes[0].set(xlabel="index $i$", ylabel=r"eigenvalue $\lambda_i(\theta)$")
    axes[1].semilogy(density.grid.cpu(), density.density.cpu().clamp_min(1e-8))
    axes[1].set(xlabel="eigenvalue", ylabel="density (log scale)")
    return fig


with hp.figure_style():
    hp.glue_figure("fig_spectrum", plot_spectrum())

# %% [markdown]
# ```{glue:figure} fig_spectrum
# :name: fig-your-spectrum
#
# The example model's weight Hessian: its top eigenvalues by Lanczos (left)
# and its spectral density by stochastic Lanczos quadrature (right, 4 runs of
# 40 steps, Gaussian smoothing).
# ```
#
# The top eigenvalue is {glue:text}`lambda_1`; Hutchinson's estimator puts
# the trace at {glue:text}`trace` with a standard error of
# {glue:text}`trace_se` after {glue:text}`trace_n` probes: report both, the
# estimate is random.
#
# ## 3. The landscape along the top eigenvector
#
# The loss at $\theta + \epsilon v_1$, next to a random direction of the same
# norm.

# %%
from hesslib.landscape import loss_along_line, random_direction

v1 = top.eigenvectors[:, 0]
eps = torch.linspace(-1.0, 1.0, 21)
along_v1 = loss_along_line(model, v1, eps, hess.x, hess.y)
random = random_direction(model, like=v1, normalization="global",
                          generator=torch.Generator().manual_seed(seed))
along_random = loss_along_line(model, random, eps, hess.x, hess.y)
assert torch.isfinite(along_v1.loss).all() and torch.isfinite(along_random.loss).all()

# %% [markdown]
# ## 4. Robustness
#
# Accuracy under FGSM and PGD (L-infinity) on the test images, per size.

# %%
from hesslib.attacks import robustness_curve

attacked = balanced_subset(test_split, min(settings.attack_samples, len(test_split)),
                           seed=seed)
probes = torch.Generator(dev).manual_seed(seed)
curves = {name: robustness_curve(model, attacked.x, attacked.y, attack_eps,
                                 attack=name, generator=probes)
          for name in ("fgsm", "pgd")}
assert curves["pgd"].accuracy[0] == curves["pgd"].clean_accuracy

# %% tags=["hide-input"]
def plot_landscape_and_attacks():
    """Loss along v1 and a random direction; accuracy under attack."""
    fig, axes = hp.page_figure(2)
    axes[0].plot(eps, along_v1.loss, "o-", ms=3, label="top eigenvector")
    axes[0].plot(eps, along_random.loss, "s--", ms=3, label="random direction")
    axes[0].set(xlabel=r"$\epsilon$", ylabel="training loss", yscale="log")
    axes[0].legend()
    for name, curve in curves.items():
        axes[1].plot(curve.eps, curve.accuracy, "o-", ms=3, label=name.upper())
    axes[1].set(xlabel=hp.AXIS_LABELS["eps"], ylabel="accuracy under attack")
    axes[1].legend()
    return fig


with hp.figure_style():
    hp.glue_figure("fig_landscape", plot_landscape_and_attacks())

# %% [markdown]
# ```{glue:figure} fig_landscape
# :name: fig-your-landscape
#
# Left: training loss of the example model along its top Hessian eigenvector
# and along a random direction of the same norm. Right: its test accuracy
# under FGSM and under 10-step PGD, per perturbation size.
# ```

# %% tags=["hide-input"]
rows = [{"eps": e, **{n.upper(): c.accuracy[i] for n, c in curves.items()}}
        for i, e in enumerate(attack_eps)]
display(Markdown(markdown_table(rows, formats={"eps": "g", "FGSM": ".1%",
                                               "PGD": ".1%"})))

# %% [markdown]
# ## Summary
#
# Five calls analyze any classifier: `WeightHessian` (the operator),
# `lanczos` (top eigenvalues), `spectral_density` and `hutchinson` (the
# density and the trace, with its standard error), `loss_along_line` (the
# landscape) and `robustness_curve` (attacks). The example reached
# {glue:text}`test_acc` test accuracy. The Pitfalls page lists what to watch
# for: model modes, BatchNorm, input ranges and tolerances.
