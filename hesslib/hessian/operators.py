"""Linear operators: dense matrices, weight Hessians over a data set, input Hessians.

Every solver in :mod:`hesslib.hessian.solvers` consumes the
:class:`LinearOperator` interface: a size ``n``, a dtype, a device, the products
``matvec`` (``[n] -> [n]``) and ``matmat`` (``[n, k] -> [n, k]``), and a counter
``num_products`` of operator-vector products (a ``matmat`` with ``k`` columns
counts ``k``).

Hessian-vector products (hvp) are computed without forming the Hessian, either
forward-over-reverse (a ``torch.func.jvp`` of ``torch.func.grad``) or by double
backward (``torch.autograd.grad`` with ``create_graph=True``); both call the model
through ``torch.func.functional_call`` with detached copies of the parameters,
so the caller's parameters, their ``requires_grad`` and ``.grad`` are untouched.

Two speed measures keep the products exact (see ``benchmarks/README.md``): during
a product every eval-mode BatchNorm layer computes its affine map
``x * scale + shift`` directly (whose double backward is a few products, where
the generic BatchNorm double backward also evaluates the batch-statistics terms),
and :class:`WeightHessian` with double backward keeps the first-order graph of
a small data set between products, so that each further product is a single
backward pass.
"""

from __future__ import annotations

import contextlib
import types
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp

__all__ = [
    "InputHessian",
    "LinearOperator",
    "MatrixOperator",
    "NondeterminismError",
    "WeightHessian",
    "as_operator",
    "eval_mode",
    "flatten_like",
    "unflatten_like",
]

Method = Literal["auto", "forward_over_reverse", "double_backward"]
LossFn = Callable[[Tensor, Tensor], Tensor]
# a kept first-order graph: (sum_b n_b grad_b with its graph, the leaves, N)
_Graph = tuple[tuple[Tensor, ...], tuple[Tensor, ...], int]

DEFAULT_BATCH_SIZE = 128  # the authors' gradient-accumulation chunk (PAPER.md 4)
# Batches whose first-order graph WeightHessian keeps between products: 16 of 128
# samples is 2,048 samples, about 1.5 GB of saved activations for C1 in float32.
DEFAULT_GRAPH_CACHE_BATCHES = 16
DETERMINISM_SEED = 0  # the probe of the determinism check is fixed, not global
SYMMETRY_RTOL = 1e-10  # dense test matrices are symmetric to round-off or wrong


class NondeterminismError(RuntimeError):
    """Two products of the same vector differ: the operator is not a matrix."""


# --------------------------------------------------------------------------
# the interface


class LinearOperator(ABC):
    """A symmetric ``n x n`` linear operator known through its products.

    Subclasses implement :meth:`_matmat`; the public :meth:`matvec` and
    :meth:`matmat` check shapes and count products in :attr:`num_products`.

    Attributes:
        size: the dimension ``n``.
        dtype: dtype of the vectors it accepts and returns.
        device: device of those vectors.
        num_products: operator-vector products computed so far.

    """

    def __init__(self, size: int, dtype: torch.dtype, device: torch.device):
        self.size = int(size)
        self.dtype = dtype
        self.device = torch.device(device)
        self.num_products = 0

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, n)``."""
        return (self.size, self.size)

    @abstractmethod
    def _matmat(self, mat: Tensor) -> Tensor:
        """Return ``H @ mat`` for ``mat`` of shape ``[n, k]``."""

    def matmat(self, mat: Tensor) -> Tensor:
        """Product with a block of vectors.

        Args:
            mat: ``[n, k]`` tensor of this operator's dtype and device.

        Returns:
            ``[n, k]``, the product ``H @ mat``.

        """
        if mat.dim() != 2 or mat.shape[0] != self.size:
            raise ValueError(
                f"matmat expects shape [n, k] with n={self.size}, got "
                f"{tuple(mat.shape)}; use matvec for a single [n] vector"
            )
        out = self._matmat(mat.to(dtype=self.dtype, device=self.device))
        self.num_products += mat.shape[1]
        return out

    def matvec(self, vec: Tensor) -> Tensor:
        """Product with one vector ``[n] -> [n]``."""
        if vec.dim() != 1 or vec.shape[0] != self.size:
            raise ValueError(
                f"matvec expects shape [{self.size}], got {tuple(vec.shape)}; "
                "use matmat for a block [n, k]"
            )
        return self.matmat(vec[:, None])[:, 0]

    def __matmul__(self, other: Tensor) -> Tensor:
        return self.matvec(other) if other.dim() == 1 else self.matmat(other)

    def to_dense(self) -> Tensor:
        """Return the ``[n, n]`` matrix, by ``n`` products (for small tests only)."""
        eye = torch.eye(self.size, dtype=self.dtype, device=self.device)
        return self.matmat(eye)


class MatrixOperator(LinearOperator):
    """A dense symmetric matrix as a :class:`LinearOperator`.

    Args:
        matrix: ``[n, n]`` symmetric (to ``SYMMETRY_RTOL`` of its largest entry).

    Example:
        >>> op = MatrixOperator(torch.eye(2))
        >>> op.matvec(torch.ones(2)).tolist(), op.num_products
        ([1.0, 1.0], 1)

    """

    def __init__(self, matrix: Tensor):
        if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(
                f"MatrixOperator needs a square [n, n] matrix, got shape "
                f"{tuple(matrix.shape)}"
            )
        asym = (matrix - matrix.T).abs().max().item() if matrix.numel() else 0.0
        scale = matrix.abs().max().item() if matrix.numel() else 0.0
        if asym > SYMMETRY_RTOL * scale:
            raise ValueError(
                f"MatrixOperator needs a symmetric matrix; max |A - A^T| = "
                f"{asym:.3e} vs max |A| = {scale:.3e}; symmetrize with (A + A.T) / 2"
            )
        super().__init__(matrix.shape[0], matrix.dtype, matrix.device)
        self.matrix = matrix

    def _matmat(self, mat: Tensor) -> Tensor:
        return self.matrix @ mat


def as_operator(x: LinearOperator | Tensor) -> LinearOperator:
    """Return ``x`` if it is a :class:`LinearOperator`, else wrap a dense matrix."""
    if isinstance(x, LinearOperator):
        return x
    if isinstance(x, Tensor):
        return MatrixOperator(x)
    raise TypeError(
        f"expected a LinearOperator or a dense [n, n] tensor, got {type(x).__name__}"
    )


# --------------------------------------------------------------------------
# flat vectors and parameter lists


def flatten_like(tensors: Sequence[Tensor]) -> Tensor:
    """Concatenate tensors into one flat vector ``[sum of numels]``.

    Example:
        >>> flatten_like([torch.ones(2, 2), torch.zeros(1)]).tolist()
        [1.0, 1.0, 1.0, 1.0, 0.0]

    """
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten_like(vec: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """Split a flat vector into tensors shaped like ``like`` (views of ``vec``).

    Example:
        >>> [t.shape for t in unflatten_like(torch.arange(5.0), [torch.ones(2, 2),
        ...                                                       torch.ones(1)])]
        [torch.Size([2, 2]), torch.Size([1])]

    """
    total = sum(t.numel() for t in like)
    if vec.dim() != 1 or vec.numel() != total:
        raise ValueError(
            f"expected a flat vector of {total} entries, got shape {tuple(vec.shape)}"
        )
    chunks = vec.split([t.numel() for t in like])
    return [c.view_as(t) for c, t in zip(chunks, like, strict=True)]


# --------------------------------------------------------------------------
# Hessian-vector products of a scalar function of several tensors


def _resolve_method(method: str, device: torch.device) -> str:
    """Pick the product method; ``"auto"`` follows a fixed, documented rule."""
    if method == "auto":
        return "forward_over_reverse" if device.type == "cuda" else "double_backward"
    if method not in ("forward_over_reverse", "double_backward"):
        raise ValueError(
            "method must be 'auto', 'forward_over_reverse' or 'double_backward', "
            f"got {method!r}"
        )
    return method


def _hvps(
    fn: Callable[..., Tensor],
    primals: tuple[Tensor, ...],
    tangents: Sequence[tuple[Tensor, ...]],
    method: str,
) -> list[tuple[Tensor, ...]]:
    """Hessian-vector products of the scalar ``fn(*primals)`` with each tangent."""
    if method == "forward_over_reverse":
        gradient = grad(fn, argnums=tuple(range(len(primals))))
        return [jvp(gradient, primals, tuple(t))[1] for t in tangents]
    leaves = tuple(p.detach().requires_grad_(True) for p in primals)
    with torch.enable_grad():
        value = fn(*leaves)
        grads = torch.autograd.grad(value, leaves, create_graph=True)
        out = []
        for t in tangents:
            dot = sum((g * v).sum() for g, v in zip(grads, t, strict=True))
            if not dot.requires_grad:  # the gradient is constant: zero Hessian
                out.append(tuple(torch.zeros_like(p) for p in primals))
                continue
            hv = torch.autograd.grad(dot, leaves, retain_graph=True, allow_unused=True)
            out.append(
                tuple(
                    torch.zeros_like(p) if h is None else h.detach()
                    for h, p in zip(hv, primals, strict=True)
                )
            )
    return out


def _hvps_from_gradient(
    grads: Sequence[Tensor],
    leaves: Sequence[Tensor],
    tangents: Sequence[Sequence[Tensor]],
) -> list[tuple[Tensor, ...]]:
    """Products from a gradient built with ``create_graph=True``, graph kept.

    Each product is one backward pass of ``grads`` with the tangent as its
    ``grad_outputs``; a gradient entry that does not depend on the leaves
    (a constant gradient) contributes zero.
    """
    live = [i for i, g in enumerate(grads) if g.requires_grad]
    out = []
    for t in tangents:
        if not live:
            out.append(tuple(torch.zeros_like(p) for p in leaves))
            continue
        hv = torch.autograd.grad(
            [grads[i] for i in live],
            leaves,
            grad_outputs=[t[i] for i in live],
            retain_graph=True,
            allow_unused=True,
        )
        out.append(
            tuple(
                torch.zeros_like(p) if h is None else h.detach()
                for h, p in zip(hv, leaves, strict=True)
            )
        )
    return out


_AFFINE_BATCHNORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _affine_batchnorm_forward(self: nn.modules.batchnorm._BatchNorm, x: Tensor):
    """Eval-mode BatchNorm as ``x * scale + shift``, per channel (dimension 1)."""
    scale = torch.rsqrt(self.running_var + self.eps)
    if self.weight is not None:
        scale = scale * self.weight
    shift = -self.running_mean * scale
    if self.bias is not None:
        shift = shift + self.bias
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return x * scale.view(shape) + shift.view(shape)


@contextlib.contextmanager
def _affine_batchnorm(model: nn.Module) -> Iterator[None]:
    """Compute eval-mode BatchNorm layers as explicit affine maps, then restore.

    The same function as ``F.batch_norm(..., training=False)``, up to round-off;
    its second derivatives cost a few elementwise products. Only the stock
    BatchNorm classes in eval mode with running statistics are patched (an
    instance attribute ``forward``, removed afterwards); any other layer, or one
    whose ``forward`` is already patched, is left alone.
    """
    patched = []
    try:
        for module in model.modules():
            if (
                type(module) in _AFFINE_BATCHNORM_TYPES
                and not module.training
                and module.running_mean is not None
                and "forward" not in vars(module)
            ):
                module.forward = types.MethodType(_affine_batchnorm_forward, module)
                patched.append(module)
        yield
    finally:
        for module in patched:
            del module.forward


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode; restore each one's own flag afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for module, training in modes:
            module.training = training


def _refuse_batch_statistics(model: nn.Module) -> None:
    """Raise if a normalization layer would use batch statistics in eval mode."""
    for name, module in model.named_modules():
        is_bn = isinstance(module, nn.modules.batchnorm._BatchNorm)
        if is_bn and module.running_mean is None:
            raise ValueError(
                f"BatchNorm layer {name!r} has no running statistics "
                "(track_running_stats=False), so even in eval mode it normalizes "
                "with batch statistics: the loss is then not a mean of per-sample "
                "losses and its Hessian depends on how the data is batched. Use "
                "track_running_stats=True (and train it) or a per-sample norm."
            )


# --------------------------------------------------------------------------
# the weight Hessian over a data set


class _TensorBatches:
    """Re-iterable ``(x, y)`` batches of ``batch_size`` from two tensors."""

    def __init__(self, inputs: Tensor, targets: Tensor, batch_size: int):
        if inputs.shape[0] != targets.shape[0]:
            raise ValueError(
                f"inputs and targets disagree on the number of samples: "
                f"{inputs.shape[0]} vs {targets.shape[0]}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.inputs, self.targets, self.batch_size = inputs, targets, batch_size

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        size = self.batch_size
        pairs = zip(self.inputs.split(size), self.targets.split(size), strict=True)
        return iter(pairs)

    def __len__(self) -> int:
        return -(-self.inputs.shape[0] // self.batch_size)


def _as_batches(data: Any, batch_size: int) -> Iterable[tuple[Any, Any]]:
    if (
        isinstance(data, tuple)
        and len(data) == 2
        and all(isinstance(t, Tensor) for t in data)
    ):
        return _TensorBatches(data[0], data[1], batch_size)
    if isinstance(data, Iterator) or not isinstance(data, Iterable):
        why = "a one-shot iterator" if isinstance(data, Iterator) else "not iterable"
        raise TypeError(
            f"data must be a pair of tensors (inputs, targets) or a re-iterable "
            f"sequence of (x, y) batches such as a list or a DataLoader; got a "
            f"{type(data).__name__}, which is {why}"
        )
    return data


def _select_params(
    model: nn.Module, params: Iterable[Tensor] | None
) -> tuple[list[str], list[Tensor]]:
    named = list(model.named_parameters())
    if params is None:
        chosen = [(n, p) for n, p in named if p.requires_grad]
    else:
        wanted = {id(p) for p in params}
        chosen = [(n, p) for n, p in named if id(p) in wanted]
        if len(chosen) != len(wanted):
            raise ValueError(
                f"{len(wanted) - len(chosen)} of the given params are not parameters "
                "of the model; pass tensors from model.parameters() (e.g. "
                "model.fc.parameters()) themselves, not copies"
            )
    if not chosen:
        raise ValueError("no parameters selected: the model has none requiring grad")
    dtypes = {p.dtype for _, p in chosen}
    if len(dtypes) != 1:
        raise ValueError(f"selected parameters mix dtypes {sorted(map(str, dtypes))}")
    return [n for n, _ in chosen], [p for _, p in chosen]


class WeightHessian(LinearOperator):
    r"""Hessian of the mean loss over a data set with respect to parameters.

    .. math:: H = \nabla_\theta^2 \frac{1}{N} \sum_{i=1}^N \ell(f_\theta(x_i), y_i)
        = \frac{1}{N} \sum_b n_b H_b,

    where :math:`H_b` is the Hessian of ``loss_fn`` on batch ``b`` of
    :math:`n_b` samples (``loss_fn`` must return the batch mean, as
    ``F.cross_entropy`` does), so an uneven last batch is weighted exactly. The
    model is evaluated in eval mode (BatchNorm affine, dropout off); each
    submodule's own train/eval flag is restored after every product, also after
    an exception. Vectors are flat, ``[n]`` with ``n`` the number of selected
    parameter entries, in the order of ``model.named_parameters()``; use
    :meth:`flatten` / :meth:`unflatten` to convert.

    Args:
        model: the network; its parameters are not modified.
        loss_fn: ``loss_fn(model(x), y) -> scalar`` batch mean.
        data: ``(inputs, targets)`` tensors split into batches of
            ``batch_size``, or a re-iterable sequence of ``(x, y)`` batches
            (a list, a DataLoader without augmentation).
        params: a subset of ``model.parameters()`` (e.g. one layer's); all
            parameters that require grad by default.
        batch_size: batch size when ``data`` is a pair of tensors.
        method: ``"forward_over_reverse"``, ``"double_backward"`` or ``"auto"``,
            a fixed rule: double backward on CPU, where it measured 3 to 7 times
            faster on the test models (it reuses one graph for all columns of a
            ``matmat``, and functorch's per-call overhead dominates small
            models); forward-over-reverse on CUDA, where that overhead is hidden
            and it keeps no second graph in memory (not yet measured here).
        check_determinism: compare two products of one random vector at
            construction and raise :class:`NondeterminismError` if they differ by
            more than ``sqrt(eps)`` relative (far above summation-order round-off,
            far below the effect of dropout, batch statistics or augmentation).
            Those two products are not counted in :attr:`num_products`.
        reduce: applied to the summed weighted product ``[n, k]`` and to the
            sample count (an int64 scalar tensor) before dividing, e.g. an
            all-reduce sum over ranks that each hold a shard of the data. It
            must return the reduced tensor (``dist.all_reduce`` works in place
            and returns ``None``: wrap it and return its argument).
        progress: show a tqdm bar over batches.
        graph_cache_batches: with double backward, if the data has at most
            this many batches, the first product builds each batch's gradient
            with ``create_graph=True`` once and keeps that graph (memory: the
            saved activations of the whole data set, twice a training step's),
            so every later product is one backward pass. The graph is rebuilt
            when a parameter or buffer of the model has changed (version
            counters and storage); the data are assumed fixed, as the
            determinism check already requires. ``0`` recomputes the graph in
            every product; :meth:`clear_graph_cache` frees it.

    Example:
        >>> import torch.nn.functional as F
        >>> model = nn.Linear(2, 1, bias=False).double()
        >>> x = torch.eye(2, dtype=torch.float64)
        >>> y = torch.zeros(2, 1, dtype=torch.float64)
        >>> H = WeightHessian(model, F.mse_loss, (x, y), batch_size=1)
        >>> H.to_dense().tolist()  # (2 / N) * X^T X with N = 2
        [[1.0, 0.0], [0.0, 1.0]]

    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: tuple[Tensor, Tensor] | Iterable[tuple[Any, Any]],
        *,
        params: Iterable[Tensor] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        method: Method = "auto",
        check_determinism: bool = True,
        reduce: Callable[[Tensor], Tensor] | None = None,
        progress: bool = False,
        graph_cache_batches: int = DEFAULT_GRAPH_CACHE_BATCHES,
    ):
        if not isinstance(graph_cache_batches, int) or graph_cache_batches < 0:
            raise ValueError(
                f"graph_cache_batches must be an int >= 0, got {graph_cache_batches!r}"
                "; 0 disables the cache"
            )
        self.names, self.params = _select_params(model, params)
        first = self.params[0]
        super().__init__(sum(p.numel() for p in self.params), first.dtype, first.device)
        self.model, self.loss_fn = model, loss_fn
        self.batches = _as_batches(data, batch_size)
        self.method = _resolve_method(method, self.device)
        self.reduce, self.progress = reduce, progress
        self.graph_cache_batches = graph_cache_batches
        self._graph: _Graph | None = None
        self._graph_key: tuple | None = None
        self._graph_too_big = False  # the data has more batches than the cache
        _refuse_batch_statistics(model)
        if check_determinism:
            self._check_determinism()

    def flatten(self, tensors: Sequence[Tensor]) -> Tensor:
        """Tensors shaped like the selected parameters -> flat ``[n]``."""
        return flatten_like(tensors)

    def unflatten(self, vec: Tensor) -> list[Tensor]:
        """Flat ``[n]`` (e.g. ``result.eigenvectors[:, i]``) -> parameter shapes."""
        return unflatten_like(vec, self.params)

    def _check_determinism(self) -> None:
        gen = torch.Generator().manual_seed(DETERMINISM_SEED)
        probe = torch.randn(self.size, 1, generator=gen, dtype=self.dtype)
        probe = probe.to(self.device)
        first, second = self._matmat_recompute(probe), self._matmat_recompute(probe)
        scale = torch.linalg.vector_norm(first).clamp_min(torch.finfo(self.dtype).tiny)
        rel = (torch.linalg.vector_norm(first - second) / scale).item()
        tol = torch.finfo(self.dtype).eps ** 0.5
        if rel > tol:
            raise NondeterminismError(
                f"two Hessian-vector products of the same vector differ by "
                f"{rel:.2e} relative (tolerance {tol:.1e}): the operator is not a "
                "fixed matrix. Likely causes: dropout or batch statistics active "
                "even in eval mode, random data augmentation, or a loader that "
                "resamples between passes. Remove the randomness, or pass "
                "check_determinism=False if you accept it."
            )

    def clear_graph_cache(self) -> None:
        """Free the kept first-order graph; the next product rebuilds it."""
        self._graph, self._graph_key = None, None

    def _matmat(self, mat: Tensor) -> Tensor:
        graph = self._cached_graph()
        if graph is None:
            return self._matmat_recompute(mat)
        grads, leaves, count = graph
        columns = [unflatten_like(c, self.params) for c in mat.T]
        hvps = _hvps_from_gradient(grads, leaves, columns)
        total = torch.stack([flatten_like(h) for h in hvps], dim=1)
        return self._normalize(total, count)

    def _state_key(self) -> tuple:
        """Identify the values of the parameters and buffers (for the cache)."""
        tensors = [*self.params, *self.model.buffers()]
        return tuple((id(t), t.data_ptr(), t._version) for t in tensors)

    def _cached_graph(self) -> _Graph | None:
        """The kept first-order graph, built if needed.

        Returns ``None`` (recompute every product) for forward-over-reverse, a
        disabled cache, or data of more than ``graph_cache_batches`` batches.
        """
        if (
            self.method != "double_backward"
            or self.graph_cache_batches == 0
            or self._graph_too_big
        ):
            return None
        key = self._state_key()
        if self._graph is not None and self._graph_key == key:
            return self._graph
        self.clear_graph_cache()
        size = len(self.batches) if hasattr(self.batches, "__len__") else None
        if size is None or size <= self.graph_cache_batches:
            self._graph = self._build_graph()
        self._graph_too_big = self._graph is None
        self._graph_key = key
        return self._graph

    def _build_graph(self) -> _Graph | None:
        """Sum ``n_b * grad_b`` over batches with ``create_graph=True``.

        Returns ``None`` if the data has more than ``graph_cache_batches``
        batches or no samples (the recomputing path then raises).
        """
        leaves = tuple(p.detach().requires_grad_(True) for p in self.params)
        total = [torch.zeros_like(p) for p in leaves]
        count = 0
        batches = _maybe_progress(self.batches, self.progress)
        with torch.enable_grad(), eval_mode(self.model), _affine_batchnorm(self.model):
            for i, (x, y) in enumerate(batches):
                if i == self.graph_cache_batches:
                    return None
                x, y = _to_device(x, self.device), _to_device(y, self.device)
                n_b = _num_samples(x)
                value = n_b * self._loss(x, y)(*leaves)
                grads = torch.autograd.grad(
                    value, leaves, create_graph=True, allow_unused=True
                )
                total = [
                    t if g is None else t + g
                    for t, g in zip(total, grads, strict=True)
                ]
                count += n_b
        return (tuple(total), leaves, count) if count else None

    def _matmat_recompute(self, mat: Tensor) -> Tensor:
        columns = [unflatten_like(c, self.params) for c in mat.T]
        primals = tuple(p.detach() for p in self.params)
        total = torch.zeros_like(mat)
        count = 0
        with eval_mode(self.model), _affine_batchnorm(self.model):
            for x, y in _maybe_progress(self.batches, self.progress):
                x, y = _to_device(x, self.device), _to_device(y, self.device)
                hvps = _hvps(self._loss(x, y), primals, columns, self.method)
                n_b = _num_samples(x)
                total += n_b * torch.stack([flatten_like(h) for h in hvps], dim=1)
                count += n_b
        return self._normalize(total, count)

    def _normalize(self, total: Tensor, count: int) -> Tensor:
        """Reduce ``sum_b n_b H_b mat`` and the count over ranks; divide."""
        count_t = torch.tensor(count, dtype=torch.int64, device=self.device)
        if self.reduce is not None:
            total, count_t = self.reduce(total), self.reduce(count_t)
        if int(count_t) == 0:
            raise ValueError("data yielded no samples; pass a non-empty data set")
        return total / count_t.to(total.dtype)

    def _loss(self, x: Any, y: Any) -> Callable[..., Tensor]:
        def loss(*values: Tensor) -> Tensor:
            named = dict(zip(self.names, values, strict=True))
            out = functional_call(self.model, named, (x,))
            return self.loss_fn(out, y)

        return loss


def _num_samples(x: Any) -> int:
    if isinstance(x, Tensor):
        return x.shape[0]
    raise TypeError(f"batch inputs must be a tensor [B, ...], got {type(x).__name__}")


def _to_device(t: Any, device: torch.device) -> Any:
    return t.to(device) if isinstance(t, Tensor) else t


def _maybe_progress(batches: Iterable, progress: bool) -> Iterable:
    if not progress:
        return batches
    from tqdm.auto import tqdm

    return tqdm(batches, desc="hvp batches", leave=False)


# --------------------------------------------------------------------------
# the per-sample input Hessian of a batch


class InputHessian(LinearOperator):
    r"""Hessian of the summed loss of a batch with respect to the batch's inputs.

    For :math:`L(X) = \sum_i \ell(f(x_i), y_i)` with the model in eval mode
    (each sample processed on its own), :math:`\nabla_X^2 L` is block-diagonal
    with block :math:`H_i = \nabla_{x_i}^2 \ell(f(x_i), y_i)`, so one product
    with ``V`` of shape ``[N, *input_shape]`` returns every :math:`H_i v_i`
    (:meth:`block_matvec`). As a :class:`LinearOperator` it acts on flat
    vectors of size ``N * prod(input_shape)``. The model's modes are restored
    after every product.

    Args:
        model: the network.
        loss_fn: ``loss_fn(model(x), y) -> scalar``.
        x: ``[N, *input_shape]`` input batch (not modified).
        y: ``[N]`` targets.
        loss_reduction: whether ``loss_fn`` returns the batch ``"mean"`` (it is
            then multiplied by ``N`` to give the sum) or the ``"sum"``.
        method: as for :class:`WeightHessian`.

    Example:
        >>> import torch.nn.functional as F
        >>> model = nn.Linear(3, 2).double()
        >>> x = torch.randn(4, 3, dtype=torch.float64)
        >>> y = torch.zeros(4, dtype=torch.long)
        >>> H = InputHessian(model, F.cross_entropy, x, y)
        >>> H.block_matvec(torch.ones_like(x)).shape
        torch.Size([4, 3])

    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        x: Tensor,
        y: Tensor,
        *,
        loss_reduction: Literal["mean", "sum"] = "mean",
        method: Method = "auto",
    ):
        if loss_reduction not in ("mean", "sum"):
            raise ValueError(
                f"loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}"
            )
        if x.dim() < 2:
            raise ValueError(
                f"x must be a batch [N, *input_shape], got {tuple(x.shape)}"
            )
        super().__init__(x.numel(), x.dtype, x.device)
        _refuse_batch_statistics(model)
        self.model, self.loss_fn = model, loss_fn
        self.x, self.y = x.detach(), y
        self.scale = x.shape[0] if loss_reduction == "mean" else 1
        self.method = _resolve_method(method, self.device)
        self.num_batched_products = 0

    @property
    def batch_shape(self) -> tuple[int, int]:
        """``(N, d)``: samples and input entries per sample."""
        return self.x.shape[0], self.x[0].numel()

    def block_matvec(self, vecs: Tensor) -> Tensor:
        """Every sample's block product: ``[N, *input_shape] -> [N, *input_shape]``.

        Counts one batched product (``num_batched_products``) and ``N`` in
        ``num_products``.
        """
        if vecs.shape != self.x.shape:
            raise ValueError(
                f"block_matvec expects the shape of x {tuple(self.x.shape)}, "
                f"got {tuple(vecs.shape)}"
            )
        vecs = vecs.to(dtype=self.dtype, device=self.device)
        with eval_mode(self.model), _affine_batchnorm(self.model):
            (out,) = _hvps(self._loss, (self.x,), [(vecs,)], self.method)[0]
        self.num_batched_products += 1
        self.num_products += self.x.shape[0]
        return out

    def _loss(self, x: Tensor) -> Tensor:
        return self.scale * self.loss_fn(self.model(x), self.y)

    def _matmat(self, mat: Tensor) -> Tensor:
        cols = [self.block_matvec(c.view_as(self.x)).reshape(-1) for c in mat.T]
        self.num_products -= len(cols) * self.x.shape[0]  # matmat counts columns
        return torch.stack(cols, dim=1)

    def extremes(
        self,
        *,
        which: Literal["largest", "smallest", "both"] = "largest",
        tol: float = 1e-4,
        max_iter: int = 200,
        init: Tensor | None = None,
        generator: torch.Generator | None = None,
    ):
        """Each sample's extreme input-Hessian eigenvalues by batched Lanczos.

        Args:
            which: ``"largest"`` (top), ``"smallest"`` (bottom) or ``"both"``.
            tol: relative residual target per sample.
            max_iter: most batched products.
            init: ``[N, *input_shape]`` starting vectors (e.g. the previous
                attack step's eigenvectors); random if ``None``.
            generator: source of random vectors.

        Returns:
            :class:`~hesslib.hessian.solvers.BatchExtremesResult` with ``[N]``
            eigenvalues, ``[N]`` residuals and converged flags, ``[N, d]``
            eigenvectors and the number of batched products.

        """
        from hesslib.hessian.solvers import batched_lanczos

        n, d = self.batch_shape

        def matvec(flat: Tensor) -> Tensor:
            return self.block_matvec(flat.view_as(self.x)).reshape(n, d)

        start = None if init is None else init.reshape(n, d)
        return batched_lanczos(
            matvec,
            (n, d),
            which=which,
            tol=tol,
            max_iter=max_iter,
            init=start,
            generator=generator,
            dtype=self.dtype,
            device=self.device,
        )
