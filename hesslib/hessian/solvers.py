"""Eigenvalue, trace and spectral-density solvers for symmetric linear operators.

The solvers know nothing of models or data: they consume a
:class:`~hesslib.hessian.operators.LinearOperator` (or a dense symmetric tensor,
wrapped by :func:`~hesslib.hessian.operators.as_operator`) and count its
products.

Vocabulary used throughout:

* the **relative residual** of an approximate eigenpair ``(lam, v)`` with
  ``||v|| = 1`` is ``||H v - lam v|| / max(|lam|, ZERO_FLOOR * rho)``, where
  ``rho`` is the largest magnitude among the current eigenvalue estimates and
  ``ZERO_FLOOR = 1e-3``. The floor only matters for eigenvalues below
  ``1e-3 * rho``, such as the zero eigenvalues of the input Hessian of a ReLU
  network, which round-off keeps from ever reaching a small ``/ |lam|``;
  for those the residual is certified relative to ``1e-3 * rho``.
* every reported residual is a **true** one, computed from real products
  ``H v``, never from a recurrence estimate.

Randomness comes from a ``generator`` argument; without one, a generator
seeded with :data:`DEFAULT_SEED` is used so that a call is reproducible.
Random vectors are drawn on the CPU and moved to the operator's device, so the
same seed gives the same vectors on every device.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from hesslib.hessian.operators import LinearOperator, as_operator

__all__ = [
    "BatchExtremesResult",
    "ConvergenceWarning",
    "DensityResult",
    "EigenResult",
    "TraceResult",
    "batched_lanczos",
    "hutchinson",
    "hutchpp",
    "lanczos",
    "power_iteration",
    "spectral_density",
]

Which = Literal["largest", "smallest", "both"]

ZERO_FLOOR = 1e-3  # residuals of eigenvalues below 1e-3 * rho are judged vs that
DEFAULT_SEED = 0  # a call without a generator must still be reproducible
DEFAULT_TOL = 1e-4  # the relative accuracy of the paper's Fig. 1
DEFAULT_POWER_MAX_ITER = 1000  # power iteration converges linearly: allow many
DEFAULT_LANCZOS_MAX_ITER = 200  # basis size cap: memory at most 2 * n * max_iter
MIN_TRACE_SAMPLES = 10  # a standard error from fewer samples is itself too noisy
DENSITY_PAD = 5.0  # grid margin in sigmas: Gaussian mass beyond 5 sigma < 1e-6
DEFAULT_SIGMA_FRACTION = 0.01  # default smoothing: 1% of the spectral width
# true residuals are computed once the Lanczos estimate is within 10 x tol, a
# margin for the round-off by which the estimate can undershoot the true value
ESTIMATE_SLACK = 10.0
# When every pair's Lanczos estimate is below tol but a true residual stays
# above it for this many products, the products' own round-off (e.g. float32
# products of a tiny input Hessian) is the floor: more products cannot help.
STALL_PRODUCTS = 10
REORTH_PASSES = 2  # "twice is enough" for Gram-Schmidt (Kahan-Parlett)
# basis vectors allocated at first, doubled when full: a top-1 run stays small,
# and growing costs one copy of the basis per doubling
INITIAL_BASIS_COLUMNS = 16


class ConvergenceWarning(UserWarning):
    """A solver stopped before reaching the requested tolerance."""


@dataclass(frozen=True)
class EigenResult:
    """Eigenpairs of a symmetric operator.

    Attributes:
        eigenvalues: ``[k]``; order documented by the solver that made them.
        eigenvectors: ``[n, k]``, orthonormal columns, column ``i`` pairs with
            ``eigenvalues[i]``. For a ``WeightHessian`` use its ``unflatten``
            to get a column shaped like the parameters.
        residuals: ``[k]`` true relative residuals (see module docstring).
        num_products: operator-vector products the solver used.
        converged: whether every residual is at most the tolerance.
        num_iterations: power iterations (summed over pairs) or Krylov size.

    """

    eigenvalues: Tensor
    eigenvectors: Tensor
    residuals: Tensor
    num_products: int
    converged: bool
    num_iterations: int


@dataclass(frozen=True)
class BatchExtremesResult:
    """Extreme eigenvalues of ``B`` independent operators solved together.

    Attributes:
        top: ``[B]`` largest eigenvalue of each operator, or ``None``.
        bottom: ``[B]`` smallest eigenvalue of each operator, or ``None``.
        top_residuals: ``[B]`` true relative residuals of ``top`` (or ``None``).
        bottom_residuals: ``[B]`` true relative residuals of ``bottom``.
        top_vectors: ``[B, n]`` unit eigenvectors of ``top`` (or ``None``).
        bottom_vectors: ``[B, n]`` unit eigenvectors of ``bottom`` (or ``None``).
        num_products: batched products used (each one serves all ``B``).
        converged: ``[B]`` bool, whether each operator's wanted residuals
            are at most the tolerance.

    """

    top: Tensor | None
    bottom: Tensor | None
    top_residuals: Tensor | None
    bottom_residuals: Tensor | None
    top_vectors: Tensor | None
    bottom_vectors: Tensor | None
    num_products: int
    converged: Tensor


@dataclass(frozen=True)
class TraceResult:
    """A stochastic trace estimate.

    Attributes:
        estimate: the estimate of ``tr(H)``.
        std_error: its standard error (sample standard deviation of the
            per-vector terms over the square root of their number).
        num_samples: random probe vectors used.
        num_products: operator-vector products used.
        converged: whether the relative standard error target was met
            (always ``True`` for fixed-budget estimators).

    """

    estimate: float
    std_error: float
    num_samples: int
    num_products: int
    converged: bool


@dataclass(frozen=True)
class DensityResult:
    """A smoothed spectral density from stochastic Lanczos quadrature.

    Attributes:
        grid: ``[P]`` points where the density is evaluated.
        density: ``[P]`` smoothed density; integrates to one over the real
            line (to about 1e-6 over ``grid``).
        nodes: ``[R, m]`` Ritz values of each of the ``R`` runs.
        weights: ``[R, m]`` quadrature weights; each row sums to one.
        sigma: the standard deviation of the Gaussian smoothing kernel.
        num_products: operator-vector products used.

    """

    grid: Tensor
    density: Tensor
    nodes: Tensor
    weights: Tensor
    sigma: float
    num_products: int


# --------------------------------------------------------------------------
# small helpers


def _generator(generator: torch.Generator | None) -> torch.Generator:
    if generator is not None:
        return generator
    return torch.Generator().manual_seed(DEFAULT_SEED)


def _randn(shape, gen, dtype, device) -> Tensor:
    return torch.randn(shape, generator=gen, dtype=dtype).to(device)


def _rademacher(shape, gen, dtype, device) -> Tensor:
    signs = torch.randint(0, 2, shape, generator=gen).to(dtype) * 2 - 1
    return signs.to(device)


def _breakdown_rtol(dtype: torch.dtype) -> float:
    """Return the relative norm below which a new Krylov direction is noise."""
    return torch.finfo(dtype).eps ** 0.5


def _check_tol(tol: float) -> None:
    if not 0 < tol < 1:
        raise ValueError(f"tol must be in (0, 1), got {tol!r}; 1e-4 is typical")


def _check_max_iter(max_iter: int) -> None:
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}")


def _check_k(k: int, n: int, which: str = "largest") -> None:
    need = 2 * k if which == "both" else k
    if not isinstance(k, int) or k < 1 or need > n:
        raise ValueError(
            f"k={k!r} eigenpairs (which={which!r}) need 1 <= k and "
            f"{'2k' if which == 'both' else 'k'} <= n = {n}; lower k"
        )


def _warn_krylov_unconverged(name: str, rel: Tensor, tol: float, max_iter: int,
                             n: int, kry: _Krylov) -> None:
    """The warning of a Lanczos solve that stalled or ran out of vectors."""
    budget = (f"{kry.dim} products" if kry.stalled
              else f"max_iter={max_iter} products, n={n}")
    _warn_unconverged(name, rel.max().item(), tol, budget, kry.stalled)


def _warn_unconverged(
    name: str, worst: float, tol: float, budget: str, stalled: bool = False
) -> None:
    if stalled:
        warnings.warn(
            f"{name} stalled after {budget}: the true relative residual stays at "
            f"{worst:.2e} > tol={tol:.1e} while the Lanczos recurrence says it is "
            f"below tol, so the products' round-off is the floor; compute them "
            f"in float64 (e.g. model.double() and double inputs) or loosen tol",
            ConvergenceWarning,
            stacklevel=3,
        )
        return
    warnings.warn(
        f"{name} stopped at its budget ({budget}) with worst relative residual "
        f"{worst:.2e} > tol={tol:.1e}; raise max_iter or loosen tol",
        ConvergenceWarning,
        stacklevel=3,
    )


def _norm(x: Tensor) -> Tensor:
    """Norms of the rows of ``x``, accumulated in float64, in ``x``'s dtype."""
    return _norm64(x).to(x.dtype)


def _norm64(x: Tensor, dim: int = -1) -> Tensor:
    """Float64 norms along ``dim``.

    Float32 accumulation over the millions of entries of a network's
    parameter vector is not accurate enough: on C1 (1.8 M parameters) the
    float32 norm of a Ritz vector was off by 2e-4, which put its Rayleigh
    quotient off by 4e-4 relative.
    """
    return torch.linalg.vector_norm(x, dim=dim, dtype=torch.float64)


def _dot(a: Tensor, b: Tensor) -> float:
    """``a . b`` of two ``[n]`` vectors, accumulated in float64."""
    return torch.dot(a.double(), b.double()).item()


def _project(basis: Tensor, x: Tensor) -> Tensor:
    """Coefficients ``basis x``: ``[B, m]`` from rows ``[B, m, n]`` and ``[B, n]``."""
    return torch.bmm(basis, x[..., None])[..., 0]


def _combine(basis: Tensor, coef: Tensor) -> Tensor:
    """The combination ``basis^T coef``: ``[B, n]`` from ``[B, m, n]``, ``[B, m]``."""
    return torch.bmm(basis.transpose(1, 2), coef[..., None])[..., 0]


def _orthogonalize(x: Tensor, basis: Tensor, coef: Tensor | None = None) -> Tensor:
    """Remove the components along ``basis`` from the rows of ``x``.

    Classical Gram-Schmidt, twice ("twice is enough", Kahan-Parlett): each
    pass reads the basis twice, which is what a Krylov step costs beyond its
    product on a large model, so the basis is stored as contiguous rows.

    Args:
        x: ``[B, n]`` vectors.
        basis: ``[B, m, n]`` orthonormal rows (``m`` may be zero).
        coef: ``[B, m]`` the first pass's coefficients ``basis x`` when the
            caller already has them (a Krylov step computes them for ``T``).

    """
    if basis.shape[1] == 0:
        return x
    for _ in range(REORTH_PASSES):
        coef = _project(basis, x) if coef is None else coef
        x = x - _combine(basis, coef)
        coef = None
    return x


def _orthonormalize(x: Tensor, basis: Tensor) -> tuple[Tensor, Tensor]:
    """Remove ``basis`` components from the rows of ``x`` and normalize.

    Args:
        x: ``[B, n]`` vectors.
        basis: ``[B, m, n]`` orthonormal rows (``m`` may be zero).

    Returns:
        ``(unit, norm)``: ``[B, n]`` normalized vectors and ``[B]`` the norms
        after orthogonalization (before normalization).

    """
    x = _orthogonalize(x, basis)
    norm = _norm(x)
    return x / norm.clamp_min(torch.finfo(x.dtype).tiny)[:, None], norm


class _Tracked(LinearOperator):
    """Forwards products to ``op`` and advances an opt-in tqdm bar."""

    def __init__(self, op: LinearOperator, desc: str, total: int | None):
        super().__init__(op.size, op.dtype, op.device)
        from tqdm.auto import tqdm

        self.op, self.bar = op, tqdm(total=total, desc=desc, unit="hvp", leave=False)

    def _matmat(self, mat: Tensor) -> Tensor:
        out = self.op.matmat(mat)
        self.bar.update(mat.shape[1])
        return out


def _tracked(op, progress: bool, desc: str, total: int | None) -> LinearOperator:
    op = as_operator(op)
    return _Tracked(op, desc, total) if progress else op


def _untrack(op: LinearOperator) -> None:
    if isinstance(op, _Tracked):
        op.bar.close()


# --------------------------------------------------------------------------
# power iteration


def power_iteration(
    op: LinearOperator | Tensor,
    k: int = 1,
    *,
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_POWER_MAX_ITER,
    init: Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> EigenResult:
    r"""Top-``k`` eigenpairs by magnitude, by power iteration with deflation.

    Pair ``j`` iterates :math:`v \leftarrow P_j H v / \|P_j H v\|` where
    :math:`P_j` projects out the ``j`` eigenvectors already found (deflation by
    orthogonalization), so pair ``j`` converges to the eigenvalue of largest
    magnitude among the rest, with its sign. Each product ``w = H v`` also
    gives the Rayleigh quotient ``lam = v^T w`` and the residual of the
    deflated operator ``||P_j w - lam v||``; a pair stops when that residual,
    relative to ``|lam|``, is at most ``tol`` (not on the change of ``lam``).
    A final Rayleigh-Ritz step on the span of the found vectors, from their
    stored products (no extra product), removes the coupling that inexact
    deflation leaves; the reported residuals are the true ones. Repeated
    eigenvalues are found once per multiplicity. If ``+lam`` and ``-lam`` are
    both extreme the iteration cannot settle: it then warns. A start that is
    an eigenvector converges at once, extreme or not: warm-start it with
    approximate vectors only, or use :func:`lanczos`.

    Args:
        op: symmetric operator of size ``n`` or a dense ``[n, n]`` tensor.
        k: number of eigenpairs.
        tol: relative residual target.
        max_iter: products allowed per eigenpair.
        init: ``[n]`` or ``[n, j]`` (``j <= k``) starting vectors for the first
            pairs (warm start, e.g. last epoch's eigenvectors); others random.
        generator: source of the random starting vectors.
        progress: show a tqdm bar of products.

    Returns:
        :class:`EigenResult`, eigenvalues in the order found, that is by
        decreasing magnitude.

    Example:
        >>> H = torch.diag(torch.tensor([3.0, -5.0, 1.0], dtype=torch.float64))
        >>> res = power_iteration(H, k=2, tol=1e-10)
        >>> [round(x, 6) for x in res.eigenvalues.tolist()]
        [-5.0, 3.0]

    """
    op = _tracked(op, progress, "power iteration", k * max_iter)
    n = op.size
    _check_k(k, n)
    _check_tol(tol)
    _check_max_iter(max_iter)
    gen = _generator(generator)
    starts = _starts(init, n, k, op, gen)
    start_products = op.num_products
    found = torch.empty(0, n, dtype=op.dtype, device=op.device)  # rows
    prods = torch.empty_like(found)
    iters, scale = 0, 0.0
    for j in range(k):
        v, w, used = _power_one(op, starts[:, j], found, tol, max_iter, scale, gen)
        found = torch.cat([found, v[None]])
        prods = torch.cat([prods, w[None]])
        scale = max(scale, abs(_dot(v, w)))
        iters += used
    vals, vecs, residuals = _rayleigh_ritz(found.T, prods.T)
    _untrack(op)
    converged = bool((residuals <= tol).all())
    if not converged:
        budget = f"max_iter={max_iter} products per pair"
        _warn_unconverged("power_iteration", residuals.max().item(), tol, budget)
    return EigenResult(
        eigenvalues=vals,
        eigenvectors=vecs,
        residuals=residuals,
        num_products=op.num_products - start_products,
        converged=converged,
        num_iterations=iters,
    )


def _starts(init, n, k, op, gen, label: str = "k") -> Tensor:
    """Return starting vectors ``[n, k]``: columns of ``init``, then random ones."""
    starts = _randn((n, k), gen, op.dtype, op.device)
    if init is None:
        return starts
    shape = tuple(init.shape)
    init = init[:, None] if init.dim() == 1 else init
    if init.dim() != 2 or init.shape[0] != n or init.shape[1] > k:
        raise ValueError(
            f"init must have shape [n] or [n, j] with n={n}, j <= {label}={k}; "
            f"got {shape}"
        )
    starts[:, : init.shape[1]] = init.to(dtype=op.dtype, device=op.device)
    return starts


def _power_one(op, v, found, tol, max_iter, scale, gen):
    """One deflated power iteration; returns ``(v, H v, products)``.

    Stops when the residual of the deflated operator, ``||P H v - lam v||``
    relative to ``|lam|`` (``P`` projects out ``found``, ``[j, n]`` rows), is
    at most ``tol``.
    """
    floor = _breakdown_rtol(op.dtype)
    tiny = torch.finfo(op.dtype).tiny
    basis = found[None]
    v, _ = _orthonormalize(v[None], basis)
    best = (math.inf, v[0], None)
    used = 0
    while used < max_iter:
        used += 1
        w = op.matvec(v[0])
        lam = _dot(v[0], w)
        nxt, norm = _orthonormalize(w[None], basis)
        rho = max(abs(lam), scale)
        resid = _norm64(nxt[0] * norm - lam * v[0]).item()
        r = resid / max(abs(lam), ZERO_FLOOR * rho, tiny)
        if r < best[0]:
            best = (r, v[0], w)
        if r <= tol:
            break
        if norm.item() <= floor * max(rho, tiny):
            # H has (numerically) nothing left outside the found vectors
            rand = _randn((1, op.size), gen, op.dtype, op.device)
            nxt, _ = _orthonormalize(rand, basis)
        v = nxt
    return best[1], best[2], used


def _rayleigh_ritz(vecs: Tensor, prods: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Rayleigh-Ritz on ``span(vecs)`` from stored products ``prods = H vecs``.

    Removes the coupling between pairs left by inexact deflation. Returns
    eigenvalues by decreasing magnitude, their vectors and true relative
    residuals.
    """
    t = vecs.double().T @ prods.double()
    theta, s = torch.linalg.eigh((t + t.T) / 2)
    order = torch.argsort(theta.abs(), descending=True, stable=True)
    theta, s = theta[order], s[:, order].to(vecs.dtype)
    vecs, prods = vecs @ s, prods @ s
    resid = _norm64(prods - vecs * theta.to(vecs.dtype), dim=0)
    rel = _relative(theta[None], theta[None], resid.double()[None], vecs.dtype)[0]
    return theta.to(vecs.dtype), vecs, rel


# --------------------------------------------------------------------------
# Krylov subspace with Rayleigh-Ritz (Lanczos with full reorthogonalization)


class _Krylov:
    """Orthonormal (block) Krylov bases of ``B`` operators, one vector at a time.

    Keeps ``Q`` (``[B, n, m]``, orthonormal) and ``W = H Q`` (the products), and
    the projection ``T = Q^T H Q`` (``[B, m, m]``, float64). With one start
    vector and full reorthogonalization ``T`` is the Lanczos tridiagonal
    matrix; with ``b`` start vectors the basis is that of block Lanczos, which
    sees eigenvalues of multiplicity up to ``b``. ``T`` is built from the stored
    products, so Ritz residuals ``||W s - theta Q s||`` are true residuals at no
    extra product. Pending directions (the start vectors, then each new
    product) wait in a queue, kept orthogonal to the basis. When one becomes
    dependent (breakdown: the Krylov space is invariant) a random vector
    orthogonal to the basis replaces it, which keeps the basis valid for
    Rayleigh-Ritz. An invariant Krylov space yields exact eigenpairs that need
    not be the extreme ones (a start inside an eigenspace), so a solver must
    not stop on the step of a breakdown (``unsafe``) before the random
    replacement is probed.
    """

    def __init__(self, apply, start: Tensor, gen: torch.Generator, capacity: int,
                 random_from: int | None = None):
        self.apply, self.gen = apply, gen
        start = start[..., None] if start.dim() == 2 else start
        batch, n, _ = start.shape
        self.capacity = min(capacity, n)
        rows = min(self.capacity, INITIAL_BASIS_COLUMNS)
        # basis and products as rows [B, m, n]: each pass over them is a
        # contiguous read (a column layout measured twice as slow on a CPU)
        self._q = start.new_empty(batch, rows, n)
        self._w = torch.empty_like(self._q)
        tshape = (batch, rows, rows)
        self._t = torch.zeros(tshape, dtype=torch.float64, device=start.device)
        self.dim = 0
        self.num_products = 0
        no = torch.zeros(batch, dtype=torch.bool, device=start.device)
        # queue of (direction, its norm when queued, is-a-random-replacement)
        self.queue = [(c, _norm(c), no) for c in start.unbind(-1)]
        self.unsafe = no
        # basis index of the first random vector after given starts (-1: none):
        # random start columns after ``random_from`` given ones, or a random
        # replacement after a breakdown
        first = -1 if random_from is None else random_from
        self.first_random = torch.full((batch,), first, device=start.device)
        self._refresh(added_random=no)

    @property
    def t(self) -> Tensor:
        """The projection ``Q^T H Q``, ``[B, m, m]`` float64 (a view)."""
        return self._t[:, : self.dim, : self.dim]

    def extend(self) -> None:
        """Multiply the next pending direction and add it to the basis."""
        if self.dim >= self.capacity:
            raise RuntimeError("Krylov basis is full")  # solvers stop before this
        raw, _, was_random = self.queue.pop(0)
        p = raw / _norm(raw).clamp_min(torch.finfo(raw.dtype).tiny)[:, None]
        hp = self.apply(p)
        self.num_products += 1
        m = self.dim
        if m == self._q.shape[1]:
            self._grow()
        self._q[:, m] = p
        self._w[:, m] = hp
        self.dim = m + 1
        fresh = was_random & (self.first_random < 0)
        self.first_random = torch.where(fresh, m, self.first_random)
        # T's new column Q^T H p is also the first Gram-Schmidt pass of H p;
        # entries in the operator's dtype, stored and diagonalized in float64
        col = _project(self._q[:, : m + 1], hp)
        self._t[:, : m + 1, m] = col.double()
        self._t[:, m, : m + 1] = col.double()
        self.queue.append((hp, _norm(hp), torch.zeros_like(was_random)))
        self._refresh(added_random=was_random, last_coef=col)

    def _grow(self) -> None:
        """Double the allocated rows (up to the capacity), keeping the basis."""
        old = self._q.shape[1]
        new = min(self.capacity, 2 * old)
        q = self._q.new_empty(self._q.shape[0], new, self._q.shape[2])
        w = torch.empty_like(q)
        t = self._t.new_zeros(self._t.shape[0], new, new)
        q[:, :old], w[:, :old], t[:, :old, :old] = self._q, self._w, self._t
        self._q, self._w, self._t = q, w, t

    def _refresh(self, added_random: Tensor, last_coef: Tensor | None = None) -> None:
        """Orthogonalize the queue against the basis; replace dependent rows.

        ``last_coef`` (``[B, m]``): the basis coefficients of the newest queued
        direction, already computed by :meth:`extend`.
        """
        self.unsafe = torch.zeros_like(self.unsafe)
        if self.dim >= self.capacity:
            return
        tiny = torch.finfo(self._q.dtype).tiny
        basis = self._q[:, : self.dim]
        last = len(self.queue) - 1
        for i, (vec, ref, rand) in enumerate(self.queue):
            vec = _orthogonalize(vec, basis, last_coef if i == last else None)
            broke = _norm(vec) <= _breakdown_rtol(vec.dtype) * ref.clamp_min(tiny)
            if broke.any():
                fresh = _randn(vec.shape, self.gen, vec.dtype, vec.device)
                fresh = _orthogonalize(fresh, basis)
                vec = torch.where(broke[:, None], fresh, vec)
                ref = torch.where(broke, _norm(fresh), ref)
                self.unsafe = self.unsafe | (broke & ~added_random)
            self.queue[i] = (vec, ref, rand | broke)

    def ritz(self) -> tuple[Tensor, Tensor]:
        """Ritz values ``[B, m]`` (ascending) and vectors ``[B, m, m]``, float64."""
        return torch.linalg.eigh(self.t)

    def residual_estimate(self, s: Tensor) -> Tensor | None:
        """Lanczos estimates ``[B, j]`` of the Ritz residuals, or ``None``.

        With one pending direction ``r`` (the last product orthogonalized
        against the basis), ``H Q = Q T + r e_m^T`` up to round-off, so the
        residual of the Ritz pair with vector ``s`` is ``||r|| |s_m|``: O(m k)
        work instead of the O(n m k) of :meth:`pairs`. ``None`` where that
        relation does not hold (block starts, a random replacement pending).
        Solvers only use it to skip computing true residuals that cannot
        pass yet; every reported residual is still a true one.
        """
        if len(self.queue) != 1 or self.dim >= self.capacity:
            return None
        pending, _, was_random = self.queue[0]
        if bool(was_random.any()):
            return None
        last = s[:, self.dim - 1, :].abs()
        return _norm(pending).double()[:, None] * last

    def pairs(self, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Ritz pairs of coefficient columns ``s`` ``[B, m, j]``; see _ritz_rows."""
        return _ritz_rows(self._q[:, : self.dim], self._w[:, : self.dim], s)

    def restart_unsettled(self, k: int, which: Which, tol: float) -> bool:
        """Whether a restart after a breakdown has yet to find its own extremes.

        A start inside an invariant subspace (an eigenvector as warm start)
        breaks down at once into exact but possibly interior eigenpairs; a
        random vector orthogonal to them continues the basis. Where that
        subspace is decoupled from the rest (``Q^T H Q`` block diagonal up to
        round-off), the continuation is a fresh Lanczos run on the rest of
        the space, and its wanted pairs must converge too before the union's
        extremes can be trusted.
        """
        for b, first in enumerate(self.first_random.tolist()):
            if first <= 0:  # no breakdown, or the start itself was random
                continue
            if first >= self.dim:  # the random start is still queued
                return True
            t = self.t[b]
            scale = t.abs().max().item()
            if t[:first, first:].abs().max().item() > _breakdown_rtol(t.dtype) * scale:
                continue  # coupled: not a separate run
            size = self.dim - first
            kk = min(k, size // 2) if which == "both" else min(k, size)
            if kk == 0:
                return True
            _, s = torch.linalg.eigh(t[first:, first:])
            idx = torch.tensor(_wanted(size, kk, which), device=t.device)
            rows = slice(first, self.dim)
            theta, _, resid = _ritz_rows(self._q[b : b + 1, rows],
                                         self._w[b : b + 1, rows], s[None, :, idx])
            all_theta = torch.linalg.eigvalsh(t)[None]
            rel = _relative(theta, all_theta, resid, t.dtype)
            if bool((rel > tol).any()):
                return True
        return False


def _ritz_rows(q: Tensor, w: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Ritz pairs from basis rows ``q`` and their products ``w`` (``[B, m, n]``).

    ``s`` (``[B, m, j]``) holds the pairs' coefficient columns. Returns the
    Rayleigh quotients ``v . Hv / v . v`` (``[B, j]``, float64: the Ritz
    values of ``T``, whose entries are float32 sums over ``n`` terms, can be
    off by more than a large model's residual target, 1e-5 relative on C1,
    when the vectors are not), the Ritz vectors as rows ``[B, j, n]`` and
    their true absolute residuals ``[B, j]``.
    """
    coef = s.transpose(1, 2).to(q.dtype)  # [B, j, m]
    vecs, prods = coef @ q, coef @ w
    dot = torch.float64
    theta = (vecs * prods).sum(-1, dtype=dot) / (vecs * vecs).sum(-1, dtype=dot)
    resid = prods - theta.to(vecs.dtype)[..., None] * vecs
    return theta, vecs, _norm64(resid)


def _wanted(m: int, k: int, which: Which) -> list[int]:
    """Return indices into ascending Ritz values, in the order of the results."""
    top = list(range(m - 1, m - k - 1, -1))
    if which == "largest":
        return top
    if which == "smallest":
        return list(range(k))
    return top + list(range(k - 1, -1, -1))


def _relative(theta: Tensor, all_theta: Tensor, resid: Tensor, dtype) -> Tensor:
    """Relative residuals ``[B, j]`` with the zero floor of the module docstring."""
    rho = all_theta.abs().amax(dim=-1, keepdim=True)
    denom = torch.maximum(theta.abs(), ZERO_FLOOR * rho)
    return resid / denom.clamp_min(torch.finfo(torch.float64).tiny)


def _krylov_solve(apply, start, k, which, tol, max_iter, gen, random_from=None):
    """Grow a Krylov basis until the wanted Ritz pairs have residual <= tol.

    ``random_from``: the start columns from this one on are random (the
    earlier ones given). Returns ``(values [B, j], vectors [B, n, j],
    relres [B, j], krylov)``.
    """
    n = start.shape[1]  # start: [B, n] or [B, n, b]
    capacity = max(min(max_iter, n), 2 * k if which == "both" else k)
    kry = _Krylov(apply, start, gen, capacity, random_from)
    need = 2 * k if which == "both" else k
    kry.stalled, stuck = False, 0
    while True:
        kry.extend()
        if kry.dim < need:
            continue
        theta, s = kry.ritz()
        idx = torch.tensor(_wanted(kry.dim, k, which), device=theta.device)
        sel_theta, sel_s = theta[:, idx], s[:, :, idx]
        estimate = kry.residual_estimate(sel_s)
        rel_estimate = None
        if estimate is not None and not kry.unsafe.any():
            rel_estimate = _relative(sel_theta, theta, estimate, start.dtype)
            if not bool((rel_estimate <= tol * ESTIMATE_SLACK).all()):
                continue  # true residuals (O(n m k)) cannot pass yet
        if kry.unsafe.any() and kry.dim < kry.capacity:
            continue
        sel_theta, rows, resid = kry.pairs(sel_s)
        rel = _relative(sel_theta, theta, resid, start.dtype)
        vecs = rows.transpose(1, 2)
        at_capacity = kry.dim >= kry.capacity
        if at_capacity or (
            bool((rel <= tol).all()) and not kry.restart_unsettled(k, which, tol)
        ):
            return sel_theta, vecs.contiguous(), rel, kry
        # Every pair passes by the recurrence, some fail for real: round-off.
        at_floor = rel_estimate is not None and bool(
            ((rel_estimate <= tol) | (rel <= tol)).all())
        stuck = stuck + 1 if at_floor else 0
        if stuck >= STALL_PRODUCTS:
            kry.stalled = True
            return sel_theta, vecs.contiguous(), rel, kry


def lanczos(
    op: LinearOperator | Tensor,
    k: int = 1,
    *,
    which: Which = "largest",
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_LANCZOS_MAX_ITER,
    block_size: int = 1,
    init: Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> EigenResult:
    r"""Extreme eigenpairs by Lanczos with full reorthogonalization.

    The Krylov basis :math:`Q_m` of :math:`\{v, Hv, \dots, H^{m-1}v\}` is grown
    one product at a time, each new vector orthogonalized twice against all
    previous ones. The Ritz pairs come from the ``m x m`` projection
    :math:`T_m = Q_m^T H Q_m` (tridiagonal; eigendecomposed in float64). The
    basis grows (no restarts) until every wanted pair's true relative residual,
    computed from the stored products :math:`H Q_m` at no extra product, is at
    most ``tol``, or the basis reaches ``max_iter`` vectors (memory: two
    ``[n, m]`` blocks for a basis of ``m`` vectors, grown by doubling). It
    also stops, unconverged and with a warning, when the Lanczos recurrence
    puts every pair below ``tol`` but a true residual has stayed above it for
    ``STALL_PRODUCTS`` products: the products' round-off (float32 products of
    a tiny input Hessian, say) is then the floor, and float64 products are the
    remedy. Norms, dot products and the reported Rayleigh quotients are
    accumulated in float64 (float32 sums over millions of parameters are not
    accurate to 1e-4). On breakdown a
    random orthogonal vector continues the basis, and where the subspace
    found so far is invariant (a warm start at an eigenvector) the solver
    does not stop before that continuation's own wanted pairs have
    converged: an interior eigenpair, exact as it is, cannot pass for an
    extreme one. One start vector sees one
    copy of each repeated eigenvalue, so a multiplicity can be missed when the
    wanted pairs converge first: ``block_size = b`` starts from ``b`` vectors
    (block Lanczos, grown one product at a time) and resolves multiplicities
    up to ``b``, at the price of a slower convergence per product.

    Args:
        op: symmetric operator of size ``n`` or a dense ``[n, n]`` tensor.
        k: number of eigenpairs at each wanted end.
        which: ``"largest"`` (returned descending), ``"smallest"`` (ascending)
            or ``"both"`` (``2k`` values, descending: the ``k`` largest, then
            the ``k`` smallest).
        tol: relative residual target.
        max_iter: most products, that is the largest basis (capped at ``n``).
        block_size: number of start vectors (see above).
        init: ``[n]`` or ``[n, j]`` (``j <= block_size``) starting vectors (warm
            start); the rest random.
        generator: source of the random starting and restart vectors.
        progress: show a tqdm bar of products.

    Returns:
        :class:`EigenResult`.

    Example:
        >>> H = torch.diag(torch.arange(1.0, 7.0, dtype=torch.float64))
        >>> res = lanczos(H, k=2, which="both", tol=1e-8)
        >>> [round(x, 6) for x in res.eigenvalues.tolist()]
        [6.0, 5.0, 2.0, 1.0]

    """
    op = _tracked(op, progress, "lanczos", max_iter)
    n = op.size
    _check_which(which)
    _check_k(k, n, which)
    _check_tol(tol)
    _check_max_iter(max_iter)
    gen = _generator(generator)
    if not isinstance(block_size, int) or not 1 <= block_size <= n:
        raise ValueError(f"block_size must be an int in [1, n={n}], got {block_size!r}")
    start = _starts(init, n, block_size, op, gen, "block_size")
    start_products = op.num_products
    given = 0 if init is None else (1 if init.dim() == 1 else init.shape[1])
    random_from = given if 0 < given < block_size else None

    def apply(x: Tensor) -> Tensor:
        return op.matvec(x[0])[None]

    vals, vecs, rel, kry = _krylov_solve(
        apply, start[None], k, which, tol, max_iter, gen, random_from
    )
    _untrack(op)
    converged = bool((rel <= tol).all())
    if not converged:
        _warn_krylov_unconverged("lanczos", rel, tol, max_iter, n, kry)
    return EigenResult(
        eigenvalues=vals[0].to(op.dtype),
        eigenvectors=vecs[0],
        residuals=rel[0],
        num_products=op.num_products - start_products,
        converged=converged,
        num_iterations=kry.dim,
    )


def _check_which(which: str) -> None:
    if which not in ("largest", "smallest", "both"):
        raise ValueError(
            f"which must be 'largest', 'smallest' or 'both', got {which!r}"
        )


def batched_lanczos(
    matvec: Callable[[Tensor], Tensor],
    shape: tuple[int, int],
    *,
    which: Which = "largest",
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_LANCZOS_MAX_ITER,
    init: Tensor | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> BatchExtremesResult:
    r"""Extreme eigenvalues of ``B`` symmetric ``n x n`` operators at once.

    ``matvec`` maps ``X`` of shape ``[B, n]`` to ``[B, n]`` whose row ``b`` is
    :math:`H_b x_b` (for example one product with a block-diagonal Hessian).
    Each operator gets its own Lanczos basis (as in :func:`lanczos`); all
    advance together by one batched product per step, until every operator's
    wanted pairs have true relative residual at most ``tol`` or the basis
    reaches ``max_iter`` (capped at ``n``). Converged flags are per operator.

    Args:
        matvec: the batched product.
        shape: ``(B, n)``.
        which: ``"largest"`` (fills ``top``), ``"smallest"`` (``bottom``) or
            ``"both"``.
        tol: relative residual target.
        max_iter: most batched products.
        init: ``[B, n]`` starting vectors (warm start); random if ``None``.
        generator: source of random vectors.
        dtype: dtype of the vectors passed to ``matvec``.
        device: device of the vectors passed to ``matvec``.

    Returns:
        :class:`BatchExtremesResult`.

    Example:
        >>> d = torch.tensor([[1.0, 4.0, -2.0], [0.5, 0.25, 3.0]], dtype=torch.float64)
        >>> res = batched_lanczos(lambda x: d * x, (2, 3), which="both", tol=1e-8)
        >>> [round(x, 6) for x in res.top.tolist() + res.bottom.tolist()]
        [4.0, 3.0, -2.0, 0.25]

    """
    _check_which(which)
    batch, n = shape
    _check_k(1, n, which)
    _check_tol(tol)
    _check_max_iter(max_iter)
    gen = _generator(generator)
    start = _randn((batch, n), gen, dtype, device) if init is None else init
    if tuple(start.shape) != (batch, n):
        raise ValueError(f"init must have shape {(batch, n)}, got {tuple(start.shape)}")
    start = start.to(dtype=dtype, device=device)
    vals, vecs, rel, kry = _krylov_solve(matvec, start, 1, which, tol, max_iter, gen)
    converged = (rel <= tol).all(dim=-1)
    if not bool(converged.all()):
        _warn_krylov_unconverged("batched_lanczos", rel, tol, max_iter, n, kry)
    has_top = which != "smallest"
    has_bottom = which != "largest"
    b = -1 if has_bottom else None
    return BatchExtremesResult(
        top=vals[:, 0].to(dtype) if has_top else None,
        bottom=vals[:, b].to(dtype) if has_bottom else None,
        top_residuals=rel[:, 0] if has_top else None,
        bottom_residuals=rel[:, b] if has_bottom else None,
        top_vectors=vecs[:, :, 0] if has_top else None,
        bottom_vectors=vecs[:, :, b] if has_bottom else None,
        num_products=kry.num_products,
        converged=converged,
    )


# --------------------------------------------------------------------------
# traces


def hutchinson(
    op: LinearOperator | Tensor,
    *,
    rtol: float = 1e-2,
    max_samples: int = 1000,
    min_samples: int = MIN_TRACE_SAMPLES,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> TraceResult:
    r"""Trace by Hutchinson's estimator with Rademacher probes.

    :math:`\operatorname{tr}(H) \approx \frac1s \sum_{i=1}^s z_i^T H z_i` with
    :math:`z_i` of independent :math:`\pm 1` entries (unbiased, variance
    :math:`2\|H\|_F^2 - 2\sum_j H_{jj}^2` per probe). Probes are drawn until the
    standard error is at most ``rtol * |estimate|`` (checked from
    ``min_samples`` on) or ``max_samples`` is reached (then a warning).

    Args:
        op: symmetric operator or dense tensor.
        rtol: target relative standard error.
        max_samples: most probes (one product each).
        min_samples: probes before the first stopping test.
        generator: source of the probes.
        progress: show a tqdm bar of products.

    Returns:
        :class:`TraceResult`.

    Example:
        >>> H = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
        >>> hutchinson(H, rtol=0.01).estimate  # exact for a diagonal matrix
        6.0

    """
    op = _tracked(op, progress, "hutchinson", max_samples)
    if not 0 < rtol or min_samples < 2 or max_samples < min_samples:
        raise ValueError(
            f"need rtol > 0 and 2 <= min_samples <= max_samples; got rtol={rtol!r}"
            f", min_samples={min_samples!r}, max_samples={max_samples!r}"
        )
    gen = _generator(generator)
    start_products = op.num_products
    terms: list[float] = []
    converged = False
    while len(terms) < max_samples:
        z = _rademacher((op.size,), gen, op.dtype, op.device)
        terms.append(_dot(z, op.matvec(z)))
        if len(terms) >= min_samples:
            est, se = _mean_se(terms)
            if se <= rtol * abs(est):
                converged = True
                break
    est, se = _mean_se(terms)
    _untrack(op)
    if not converged:
        warnings.warn(
            f"hutchinson used max_samples={max_samples} probes with relative "
            f"standard error {se / max(abs(est), 1e-300):.2e} > rtol={rtol:.1e}; "
            "raise max_samples or loosen rtol",
            ConvergenceWarning,
            stacklevel=2,
        )
    return TraceResult(est, se, len(terms), op.num_products - start_products, converged)


def _mean_se(terms: list[float]) -> tuple[float, float]:
    t = torch.tensor(terms, dtype=torch.float64)
    if t.numel() < 2:
        return t.mean().item(), math.inf
    return t.mean().item(), (t.std() / math.sqrt(t.numel())).item()


def hutchpp(
    op: LinearOperator | Tensor,
    *,
    num_products: int,
    generator: torch.Generator | None = None,
) -> TraceResult:
    r"""Trace by Hutch++ (Meyer, Musco, Musco and Woodruff, 2021).

    With ``s = num_products // 3`` Rademacher sketch vectors ``S``,
    :math:`Q = \operatorname{orth}(HS)` captures the dominant eigenspace, whose
    trace :math:`\operatorname{tr}(Q^T H Q)` is exact; Hutchinson on the
    deflated :math:`(I - QQ^T) H (I - QQ^T)` with the remaining
    ``num_products - 2s`` probes estimates the rest. ``std_error`` is that of
    the Hutchinson part.

    Args:
        op: symmetric operator or dense tensor.
        num_products: total budget of products, at least 3.
        generator: source of the random vectors.

    Returns:
        :class:`TraceResult` (``converged`` is always ``True``: fixed budget).

    Example:
        >>> H = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
        >>> round(hutchpp(H, num_products=9).estimate, 10)
        6.0

    """
    op = as_operator(op)
    if not isinstance(num_products, int) or num_products < 3:
        raise ValueError(f"num_products must be an int >= 3, got {num_products!r}")
    gen = _generator(generator)
    start = op.num_products
    s = min(num_products // 3, op.size)
    g = num_products - 2 * s
    sketch = _rademacher((op.size, s), gen, op.dtype, op.device)
    q, _ = torch.linalg.qr(op.matmat(sketch))
    # the traces' long sums accumulate in float64 (see _norm64)
    exact = (q * op.matmat(q)).sum(dtype=torch.float64).item()
    probes = _rademacher((op.size, g), gen, op.dtype, op.device)
    probes = probes - q @ (q.T @ probes)
    terms = (probes * op.matmat(probes)).sum(dim=0, dtype=torch.float64).tolist()
    est, se = _mean_se(terms)
    return TraceResult(exact + est, se, s + g, op.num_products - start, True)


# --------------------------------------------------------------------------
# spectral density


def spectral_density(
    op: LinearOperator | Tensor,
    *,
    num_runs: int = 10,
    num_steps: int = 80,
    sigma: float | None = None,
    num_points: int = 1000,
    grid: Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> DensityResult:
    r"""Spectral density by stochastic Lanczos quadrature (SLQ).

    For a unit vector :math:`v` (normalized Rademacher), ``m = num_steps``
    Lanczos steps give Ritz values :math:`\theta_j` and weights
    :math:`w_j = (e_1^T s_j)^2` (squared first components of the eigenvectors of
    :math:`T_m`), an ``m``-point Gauss quadrature with
    :math:`\sum_j w_j \theta_j^p = v^T H^p v` for :math:`p < 2m`. Since
    :math:`E[v v^T] = I/n`, averaging over ``R = num_runs`` runs estimates the
    normalized moments :math:`\operatorname{tr}(H^p)/n`. The density is

    .. math:: \phi(t) = \frac1R \sum_{r=1}^R \sum_{j=1}^m w_{rj}\,
        \frac{1}{\sigma\sqrt{2\pi}} e^{-(t-\theta_{rj})^2 / (2\sigma^2)},

    a mixture of unit-mass Gaussians with weights summing to one, so it
    integrates to one; its mean is that of the nodes and its second moment
    exceeds theirs by :math:`\sigma^2`.

    Args:
        op: symmetric operator or dense tensor.
        num_runs: independent starting vectors ``R``.
        num_steps: Lanczos steps per run ``m`` (capped at ``n``).
        sigma: kernel width; default 1% of the spread of the nodes.
        num_points: grid size when ``grid`` is not given; the default grid runs
            from the smallest node minus 5 sigma to the largest plus 5 sigma.
        grid: ``[P]`` evaluation points, overriding the default grid.
        generator: source of the starting vectors.
        progress: show a tqdm bar of products.

    Returns:
        :class:`DensityResult`.

    Example:
        >>> H = torch.diag(torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64))
        >>> res = spectral_density(H, num_runs=2, num_steps=3, sigma=0.1)
        >>> [round(x, 6) + 0.0 for x in res.nodes[0].tolist()]
        [-1.0, 0.0, 2.0]
        >>> round(torch.trapezoid(res.density, res.grid).item(), 4)
        1.0

    """
    op = _tracked(op, progress, "spectral density", num_runs * num_steps)
    if num_runs < 1 or num_steps < 1:
        raise ValueError(
            f"num_runs and num_steps must be >= 1, got {num_runs!r}, {num_steps!r}"
        )
    if sigma is not None and not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    gen = _generator(generator)
    start = op.num_products
    probes = _rademacher((num_runs, op.size), gen, op.dtype, op.device)
    kry = _Krylov(lambda x: op.matmat(x.T).T, probes, gen, num_steps)
    for _ in range(kry.capacity):
        kry.extend()
    _untrack(op)
    nodes, s = kry.ritz()
    weights = s[:, 0, :] ** 2
    sigma = _default_sigma(nodes) if sigma is None else float(sigma)
    if grid is None:
        lo = nodes.min().item() - DENSITY_PAD * sigma
        hi = nodes.max().item() + DENSITY_PAD * sigma
        grid = torch.linspace(lo, hi, num_points, dtype=torch.float64)
    grid = grid.to(dtype=torch.float64, device=nodes.device)
    density = _gaussian_mixture(grid, nodes, weights, sigma)
    return DensityResult(grid, density, nodes, weights, sigma, op.num_products - start)


def _default_sigma(nodes: Tensor) -> float:
    spread = (nodes.max() - nodes.min()).item()
    scale = spread if spread > 0 else max(nodes.abs().max().item(), 1.0)
    return DEFAULT_SIGMA_FRACTION * scale


def _gaussian_mixture(grid: Tensor, nodes: Tensor, weights: Tensor, sigma: float):
    """``[P]`` density: mean over runs of weighted Gaussians at the nodes."""
    z = (grid[:, None, None] - nodes[None]) / sigma
    kernel = torch.exp(-0.5 * z**2) / (sigma * math.sqrt(2 * math.pi))
    return (kernel * weights[None]).sum(dim=-1).mean(dim=-1)
