r"""Theorem 1 of Yao et al. (2018): the loss is saddle-free in the input.

For a network whose logits :math:`z(x)` are piecewise affine in the input
(ReLU, max-pooling, eval-mode BatchNorm, linear and convolutional layers), the
second derivative of :math:`z` vanishes almost everywhere, and the input
Hessian of the cross-entropy loss reduces to the Gauss-Newton form

.. math:: H_x = \nabla_x^2 \ell = J^T \left(\operatorname{diag}(p) - p p^T\right) J,
    \qquad J = \partial z / \partial x, \quad p = \operatorname{softmax}(z),

which is positive semi-definite: the smallest input-Hessian eigenvalue is zero
up to round-off. Smooth activations (tanh, GELU) add the term
:math:`\sum_c (p_c - [c = y]) \nabla_x^2 z_c`, which can be indefinite.

The functions here measure these claims: per-sample extreme eigenvalues of the
input Hessian (iteratively, or densely for small inputs), the Gauss-Newton
identity for one sample, and the smallest eigenvalue along an attack path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import hessian, jacrev

from hesslib.hessian.operators import InputHessian, eval_mode
from hesslib.hessian.solvers import ZERO_FLOOR, BatchExtremesResult

__all__ = [
    "GaussNewtonCheck",
    "PathEigenvalues",
    "gauss_newton_identity",
    "input_hessian_extremes",
    "path_min_eigenvalues",
]

LossFn = Callable[[Tensor, Tensor], Tensor]
DENSE_MAX_DIM = 4096  # a dense per-sample Hessian beyond this is too costly


@dataclass(frozen=True)
class GaussNewtonCheck:
    """The input Hessian of one sample next to its Gauss-Newton form.

    Attributes:
        hessian: ``[d, d]`` input Hessian of the cross-entropy loss.
        gauss_newton: ``[d, d]`` ``J^T (diag(p) - p p^T) J``.
        relative_error: ``||hessian - gauss_newton||_F / ||hessian||_F``.

    """

    hessian: Tensor
    gauss_newton: Tensor
    relative_error: float


@dataclass(frozen=True)
class PathEigenvalues:
    """Extreme input-Hessian eigenvalues along a path of input batches.

    Attributes:
        bottom: ``[T, N]`` smallest eigenvalue per step and sample.
        top: ``[T, N]`` largest eigenvalue per step and sample.
        converged: ``[T, N]`` whether both reached the tolerance.

    """

    bottom: Tensor
    top: Tensor
    converged: Tensor


def _sum_ce(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y, reduction="sum")


def input_hessian_extremes(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    loss_fn: LossFn | None = None,
    method: Literal["iterative", "dense"] = "iterative",
    tol: float = 1e-6,
    max_iter: int = 200,
    init: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> BatchExtremesResult:
    r"""Each sample's largest and smallest input-Hessian eigenvalue.

    The block :math:`H_i = \nabla_{x_i}^2 \ell(f(x_i), y_i)` of every sample,
    with the model in eval mode (modes restored afterwards).

    Args:
        model: the network.
        x: ``[N, *input_shape]`` inputs.
        y: ``[N]`` targets.
        loss_fn: per-batch loss returning the SUM over samples; summed
            cross-entropy by default.
        method: ``"iterative"`` (batched Lanczos through
            :class:`~hesslib.hessian.operators.InputHessian`) or ``"dense"``
            (``torch.func.hessian`` and ``eigh`` per sample, for small inputs).
        tol: relative residual target of the iterative method.
        max_iter: most batched products of the iterative method.
        init: ``[N, *input_shape]`` warm start of the iterative method.
        generator: source of random vectors.

    Returns:
        :class:`~hesslib.hessian.solvers.BatchExtremesResult` with ``top`` and
        ``bottom`` of shape ``[N]``.

    Example:
        >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
        >>> x = torch.randn(2, 3, dtype=torch.float64)
        >>> res = input_hessian_extremes(model, x, torch.tensor([0, 1]))
        >>> bool((res.bottom >= -1e-8 * res.top).all())
        True

    """
    loss_fn = _sum_ce if loss_fn is None else loss_fn
    if method == "dense":
        return _dense_extremes(model, x, y, loss_fn)
    if method != "iterative":
        raise ValueError(f"method must be 'iterative' or 'dense', got {method!r}")
    op = InputHessian(model, loss_fn, x, y, loss_reduction="sum")
    return op.extremes(
        which="both", tol=tol, max_iter=max_iter, init=init, generator=generator
    )


def _dense_extremes(model, x, y, loss_fn) -> BatchExtremesResult:
    d = x[0].numel()
    if d > DENSE_MAX_DIM:
        raise ValueError(
            f"method='dense' forms a {d} x {d} Hessian per sample, above "
            f"DENSE_MAX_DIM={DENSE_MAX_DIM}; use method='iterative'"
        )
    tops, bottoms, res_top, res_bottom, v_top, v_bottom = [], [], [], [], [], []
    with eval_mode(model):
        for xi, yi in zip(x, y, strict=True):
            h = _dense_sample_hessian(model, xi, yi, loss_fn)
            vals, vecs = torch.linalg.eigh(h)
            rel = _dense_residuals(h, vals, vecs)
            tops.append(vals[-1])
            bottoms.append(vals[0])
            res_top.append(rel[-1])
            res_bottom.append(rel[0])
            v_top.append(vecs[:, -1])
            v_bottom.append(vecs[:, 0])
    return BatchExtremesResult(
        top=torch.stack(tops),
        bottom=torch.stack(bottoms),
        top_residuals=torch.stack(res_top).double(),
        bottom_residuals=torch.stack(res_bottom).double(),
        top_vectors=torch.stack(v_top),
        bottom_vectors=torch.stack(v_bottom),
        num_products=0,
        converged=torch.ones(x.shape[0], dtype=torch.bool),
    )


def _dense_sample_hessian(model, xi: Tensor, yi: Tensor, loss_fn) -> Tensor:
    """``[d, d]`` Hessian of ``loss_fn(model(x[None]), y[None])`` in flat ``x``."""
    shape = xi.shape

    def loss(flat: Tensor) -> Tensor:
        return loss_fn(model(flat.view(1, *shape)), yi.view(1))

    return hessian(loss)(xi.detach().reshape(-1))


def _dense_residuals(h: Tensor, vals: Tensor, vecs: Tensor) -> Tensor:
    resid = torch.linalg.vector_norm(h @ vecs - vecs * vals, dim=0)
    floor = ZERO_FLOOR * vals.abs().max()
    return resid / torch.maximum(vals.abs(), floor).clamp_min(torch.finfo(h.dtype).tiny)


def gauss_newton_identity(model: nn.Module, x: Tensor, y: Tensor) -> GaussNewtonCheck:
    r"""Compare one sample's input Hessian with ``J^T (diag(p) - p p^T) J``.

    Both are dense ``[d, d]`` matrices in the flattened input, for the
    cross-entropy loss of the single sample, with the model in eval mode
    (modes restored afterwards). For piecewise-affine networks the relative
    Frobenius error is round-off; for smooth activations it is not.

    Args:
        model: the network; takes a batch ``[1, *input_shape]``.
        x: one sample ``[*input_shape]`` (no batch dimension).
        y: its integer class, a scalar tensor or an int.

    Returns:
        :class:`GaussNewtonCheck`.

    Example:
        >>> model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)).double()
        >>> check = gauss_newton_identity(model, torch.randn(3, dtype=torch.float64), 1)
        >>> check.relative_error < 1e-12
        True

    """
    y = torch.as_tensor(y, device=x.device).reshape(())
    shape = x.shape
    flat = x.detach().reshape(-1)

    def logits(v: Tensor) -> Tensor:
        return model(v.view(1, *shape))[0]

    with eval_mode(model):
        h = _dense_sample_hessian(model, x, y, _sum_ce)
        jac = jacrev(logits)(flat)
        p = torch.softmax(logits(flat).detach(), dim=0)
    middle = torch.diag(p) - torch.outer(p, p)
    gn = jac.T @ middle @ jac
    denom = torch.linalg.matrix_norm(h).clamp_min(torch.finfo(h.dtype).tiny)
    err = (torch.linalg.matrix_norm(h - gn) / denom).item()
    return GaussNewtonCheck(hessian=h, gauss_newton=gn, relative_error=err)


def path_min_eigenvalues(
    model: nn.Module,
    path: Sequence[Tensor],
    y: Tensor,
    *,
    loss_fn: LossFn | None = None,
    method: Literal["iterative", "dense"] = "iterative",
    tol: float = 1e-6,
    max_iter: int = 200,
    generator: torch.Generator | None = None,
) -> PathEigenvalues:
    """Smallest and largest input-Hessian eigenvalue at every step of a path.

    Args:
        model: the network.
        path: ``T`` input batches ``[N, *input_shape]`` (e.g. the iterates of a
            PGD attack, recorded by its callback).
        y: ``[N]`` targets (the true labels of the attacked samples).
        loss_fn: as for :func:`input_hessian_extremes`.
        method: as for :func:`input_hessian_extremes`.
        tol: as for :func:`input_hessian_extremes`.
        max_iter: as for :func:`input_hessian_extremes`.
        generator: source of random vectors.

    Returns:
        :class:`PathEigenvalues` of shape ``[T, N]``.

    """
    if len(path) == 0:
        raise ValueError("path is empty; pass at least one input batch")
    bottoms, tops, flags = [], [], []
    for xs in path:
        res = input_hessian_extremes(
            model,
            xs,
            y,
            loss_fn=loss_fn,
            method=method,
            tol=tol,
            max_iter=max_iter,
            generator=generator,
        )
        bottoms.append(res.bottom)
        tops.append(res.top)
        flags.append(res.converged)
    return PathEigenvalues(
        bottom=torch.stack(bottoms), top=torch.stack(tops), converged=torch.stack(flags)
    )
