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
# # The Hessian engine on M1
#
# A short tour of `hesslib.hessian` on the paper's MNIST model M1 (small
# batch, from the results store): the top five eigenvalues of the weight
# Hessian with the residuals that certify them, its trace with a standard
# error, its spectral density, and the extreme eigenvalues of one test
# image's input Hessian. Every call here is the one the other pages use.
#
# The residual of an eigenpair is $\|Hv - \lambda v\| / |\lambda|$, computed
# with one more Hessian product, not estimated from the solver's recurrence;
# a solve is "converged" only when every wanted pair's residual is below the
# tolerance. When it is not, the solver warns and says what to change.

# %% tags=["parameters"]
profile = "cpu"  # "smoke", "cpu" or "paper" (see the Reproducing page)
device = "auto"  # "auto", "cpu" or "cuda"
seed = 0  # seed of the run, the Hessian subset and the random probes
data_dir = None  # None: the folder in $HESSLIB_DATA
store_dir = None  # None: the folder in $HESSLIB_STORE, else ./.store
top_k = 5  # top eigenvalues wanted
tol = 1e-4  # relative residual of each of them (the paper's)
trace_rtol = 0.05  # Hutchinson stops at this relative standard error...
trace_probes = 100  # ...or after this many probes (then it warns)
slq_runs, slq_steps = 2, 40  # spectral density: start vectors, Lanczos steps
sample_index = 0  # the test image whose input Hessian is solved

# %% tags=["hide-cell"]
# Validate the parameters and load the data and the trained M1.
import torch
from myst_nb import glue

from hesslib.data import balanced_subset
from hesslib.experiments import (
    profile_spec,
    profile_splits,
    resolve_device,
    run_training,
)
from hesslib.profiles import get_profile
from hesslib.store import Store

settings, dev = get_profile(profile), resolve_device(device)
assert top_k >= 1 and 0 < tol < 1 and 0 < trace_rtol < 1, (top_k, tol, trace_rtol)
train_split, test_split = profile_splits(settings, "mnist", root=data_dir, device=dev)
assert 0 <= sample_index < len(test_split), sample_index
batch = settings.batch_sizes["M1"][0]
run = run_training(profile_spec(settings, "M1", batch, train_size=len(train_split),
                                seed=seed),
                   splits=(train_split, test_split), device=dev, store=Store(store_dir))
model = run.model
samples = min(settings.hessian_samples["M1"], len(train_split))
hess = balanced_subset(train_split, samples, seed=seed)
glue("profile", profile, display=False)
glue("batch", f"{batch:,}", display=False)
glue("samples", f"{samples:,}", display=False)
glue("test_acc", f"{run.final.test_accuracy:.2%}", display=False)

# %% [markdown]
# M1 trained at batch {glue:text}`batch` in the {glue:text}`profile` profile
# (test accuracy {glue:text}`test_acc`); its Hessian is that of the mean
# cross-entropy over {glue:text}`samples` class-balanced training images.
#
# ## The operator
#
# `WeightHessian` turns a model, a loss and data into a linear operator: it
# never forms the matrix, it multiplies vectors by it. The data are taken in
# batches weighted by their size (an uneven last batch is exact) and the
# model is evaluated in eval mode, its own mode restored afterwards. Two
# products of the same vector are compared when it is built: if they differ
# beyond round-off (dropout, train-mode BatchNorm), it refuses.

# %%
import torch.nn.functional as F

from hesslib.hessian import WeightHessian

hessian = WeightHessian(model, F.cross_entropy, (hess.x, hess.y))
print(f"{hessian.size:,} parameters, {hessian.dtype}, on {hessian.device}")

# %% [markdown]
# ## The top eigenvalues and their residuals
#
# Lanczos with full reorthogonalization, stopped when every one of the top
# {glue:text}`top_k` pairs has relative residual at most `tol`.

# %%
from hesslib.hessian import lanczos

top = lanczos(hessian, top_k, tol=tol, max_iter=settings.max_iter,
              generator=torch.Generator().manual_seed(seed))
print(f"{top.num_products} products, converged: {top.converged}")

# %% [markdown]
# The residuals are not the solver's word for it: one more product
# recomputes the first pair's residual from scratch, and the two agree.

# %%
v1, lambda_1 = top.eigenvectors[:, 0], top.eigenvalues[0]
recomputed = (hessian.matvec(v1) - lambda_1 * v1).norm() / lambda_1.abs()
torch.testing.assert_close(recomputed.double(), top.residuals[0].double(),
                           rtol=1e-2, atol=1e-7)
assert (top.eigenvalues[:-1] >= top.eigenvalues[1:]).all()  # descending
assert torch.isfinite(top.residuals).all() and (top.residuals >= 0).all()
glue("top_k", f"{top_k}", display=False)
glue("top_products", f"{top.num_products}", display=False)
glue("top_converged", "all converged" if top.converged else "NOT all converged",
     display=False)

# %% tags=["hide-input"]
from IPython.display import Markdown, display

from hesslib.book import markdown_table

rows = [{"i": i + 1, "eigenvalue": value, "relative residual": residual}
        for i, (value, residual) in enumerate(zip(top.eigenvalues.tolist(),
                                                   top.residuals.tolist()))]
display(Markdown(markdown_table(rows, formats={"eigenvalue": ".5g",
                                               "relative residual": ".1e"})))

# %% [markdown]
# The top {glue:text}`top_k` eigenvalues of M1's weight Hessian after
# {glue:text}`top_products` products ({glue:text}`top_converged` at the
# tolerance).
#
# ## The trace, with its standard error
#
# Hutchinson's estimator averages $z^T H z$ over random $\pm 1$ vectors $z$;
# it stops when its standard error falls below `trace_rtol` of the estimate.
# Hutch++ spends a third of the same number of products on a sketch of the
# dominant eigenspace, whose trace it takes exactly, and estimates only the
# rest at random, which lowers the error when a few eigenvalues dominate.

# %%
from hesslib.hessian import hutchinson, hutchpp

trace = hutchinson(hessian, rtol=trace_rtol, max_samples=trace_probes,
                   generator=torch.Generator().manual_seed(seed))
trace_pp = hutchpp(hessian, num_products=max(trace.num_products, 3),
                   generator=torch.Generator().manual_seed(seed))
for result in (trace, trace_pp):
    assert torch.isfinite(torch.tensor(result.estimate)), result
    assert result.std_error >= 0, result
print(f"Hutchinson: {trace.estimate:.5g} +- {trace.std_error:.2g} "
      f"({trace.num_products} products, converged: {trace.converged})")
print(f"Hutch++:    {trace_pp.estimate:.5g} +- {trace_pp.std_error:.2g} "
      f"({trace_pp.num_products} products)")
glue("trace", f"{trace.estimate:.4g}", display=False)
glue("trace_se", f"{trace.std_error:.2g}", display=False)
glue("trace_n", f"{trace.num_products}", display=False)
glue("tracepp", f"{trace_pp.estimate:.4g}", display=False)
glue("tracepp_se", f"{trace_pp.std_error:.2g}", display=False)

# %% [markdown]
# Hutchinson: tr(H) = {glue:text}`trace` $\pm$ {glue:text}`trace_se` (one
# standard error, {glue:text}`trace_n` products); Hutch++ with the same
# budget: {glue:text}`tracepp` $\pm$ {glue:text}`tracepp_se`.
#
# ## The spectral density
#
# Stochastic Lanczos quadrature: each of `slq_runs` random start vectors
# gives `slq_steps` Ritz values and weights; the density is their average,
# each node smoothed by a Gaussian (its width is printed below, and set by
# the `sigma` argument of `spectral_density`).

# %%
from hesslib.hessian import spectral_density

density = spectral_density(hessian, num_runs=slq_runs, num_steps=slq_steps,
                           generator=torch.Generator().manual_seed(seed))
spacing = (density.grid[1] - density.grid[0]).item()
mass = (density.density.sum() * spacing).item()
assert abs(mass - 1) < 1e-2, mass  # a density: integrates to one
torch.testing.assert_close(density.weights.sum(dim=1).double(),
                           torch.ones(slq_runs, dtype=torch.float64))
print(f"smoothing sigma {density.sigma:.3g}, {density.num_products} products")

# %% tags=["hide-input"]
import hesslib.plotting as hp


def plot_density():
    """SLQ density (log scale) with the Lanczos top eigenvalues marked."""
    fig, ax = hp.page_figure(1)
    ax.semilogy(density.grid.cpu(), density.density.cpu().clamp_min(1e-8))
    for value in top.eigenvalues.tolist():
        ax.axvline(value, color="0.6", lw=0.8, ls=":")
    ax.set(xlabel=r"eigenvalue of $\nabla^2_\theta L$", ylabel="density (log scale)")
    return fig


with hp.figure_style():
    hp.glue_figure("fig_density", plot_density())

# %% [markdown]
# ```{glue:figure} fig_density
# :name: fig-engine-density
#
# Spectral density of M1's weight Hessian by stochastic Lanczos quadrature
# (log scale, Gaussian smoothing); dotted lines: the top eigenvalues found by
# Lanczos above. Most of the mass sits near zero; a few outliers carry the
# curvature.
# ```
#
# ## One image's input Hessian
#
# The Hessian of the loss with respect to the 784 pixels of one test image.
# `InputHessian` serves a whole batch of images with one product (their
# Hessians are the diagonal blocks); here the batch is one image, and its
# largest and smallest eigenvalues are solved together. A confidently
# classified image has a tiny input Hessian whose float32 products carry
# relative errors far above 1e-4, so the model and the image are copied to
# float64 first: for one image that costs next to nothing.

# %%
import copy

from hesslib.hessian import InputHessian

x = test_split.x[sample_index : sample_index + 1].double()
y = test_split.y[sample_index : sample_index + 1]
model64 = copy.deepcopy(model).double()
input_hessian = InputHessian(model64, F.cross_entropy, x, y)
ends = input_hessian.extremes(which="both", tol=tol, max_iter=200,
                              generator=torch.Generator(dev).manual_seed(seed))
highest, lowest = ends.top.item(), ends.bottom.item()
assert highest >= lowest and all(map(torch.isfinite, (ends.top, ends.bottom)))
print(f"label {y.item()}: highest {highest:.4g} "
      f"(residual {ends.top_residuals.item():.1e}), "
      f"lowest {lowest:.3g} (residual {ends.bottom_residuals.item():.1e}), "
      f"{ends.num_products} products")
glue("in_label", f"{y.item()}", display=False)
glue("in_high", f"{highest:.4g}", display=False)
glue("in_low", f"{lowest:.2g}", display=False)
glue("in_ratio", f"{lowest / highest:.1e}", display=False)

# %% [markdown]
# For this test image (label {glue:text}`in_label`), the largest
# input-Hessian eigenvalue is {glue:text}`in_high` and the smallest
# {glue:text}`in_low`, a ratio of {glue:text}`in_ratio`. M1 is piecewise
# linear (ReLU) and its last layer is a softmax, so the input Hessian is
# $J^T (\operatorname{diag}(p) - pp^T) J$, positive semi-definite: its
# lowest eigenvalue is zero up to round-off. The page on the saddle-free
# inner loop turns this into the paper's Theorem 1.
#
# ## What else
#
# `power_iteration` (deflated, for comparison), `lanczos(which="smallest")`
# and `which="both"`, warm starts (`init=`), parameter subsets
# (`WeightHessian(..., params=...)`) and the products by `torch.func`
# (`method="forward_over_reverse"`) are in the API reference; the Pitfalls
# page says what the residuals and the tolerances mean.
