r"""Loss landscapes: lines, planes and interpolations in parameter space.

The figures of Yao et al. (2018) that look at the loss around a trained model:

* Fig. 2, the loss along the top Hessian eigenvector :math:`v_1`,
  :math:`\epsilon \mapsto L(\theta + \epsilon v_1)` (:func:`loss_along_line`),
  compared with a random direction of the same norm (:func:`random_direction`);
* Fig. 3, the surface along :math:`v_1` and :math:`v_2`,
  :math:`(\epsilon_1, \epsilon_2) \mapsto L(\theta + \epsilon_1 v_1 + \epsilon_2 v_2)`
  (:func:`loss_surface`);
* Fig. 5, the line between two models,
  :math:`\alpha \mapsto L((1 - \alpha)\theta_a + \alpha\theta_b)` (:func:`interpolate`).

Conventions shared by every function here:

* :math:`L` is the mean of ``loss_fn`` over the given samples ``x``, ``y``,
  evaluated in chunks of ``batch_size`` and accumulated in float64 (each chunk's
  batch-mean loss weighted by its size). ``loss_fn(outputs, y)`` returns the
  batch mean, as for :class:`hesslib.hessian.operators.WeightHessian`, so that the
  same ``loss_fn`` defines the Hessian and its landscape. Default: cross-entropy.
* A direction lives in the space of the model's trainable parameters (those with
  ``requires_grad``, in ``model.named_parameters()`` order): either a list of
  tensors shaped like them, or one flat vector of their total size (as eigen
  solvers return). Frozen parameters and buffers are never moved (except by
  :func:`interpolate`, which moves every floating-point parameter).
* The model runs in eval mode: BatchNorm uses its running statistics, which are
  buffers and are neither perturbed nor updated, and dropout is off. Each point is
  evaluated by :func:`torch.func.functional_call` with a perturbed parameter
  dictionary, so the caller's parameters and buffers are never written; the
  train/eval flag of every submodule is restored afterwards, also on an exception.
* Accuracy is reported when the outputs are logits ``(B, C)`` and ``y`` holds
  integer labels ``(B,)``; otherwise (e.g. regression) it is NaN.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "BufferPolicy",
    "Direction",
    "LossCurve",
    "LossSurface",
    "Normalization",
    "interpolate",
    "loss_along_line",
    "loss_surface",
    "random_direction",
]

LossFn = Callable[[Tensor, Tensor], Tensor]
Direction = Sequence[Tensor] | Tensor
Normalization = Literal["none", "unit", "filter"]
RandomNormalization = Literal["none", "global", "filter"]
BufferPolicy = Literal["a", "interpolate"]

# Large enough to keep a GPU busy on CIFAR-sized models, small enough for a CPU.
DEFAULT_BATCH_SIZE = 256


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class LossCurve:
    """Mean loss and accuracy at each point of a line in parameter space.

    Attributes:
        alphas: Positions along the line, shape ``(A,)``, float64 on the CPU.
        loss: Mean loss at each position, shape ``(A,)``, float64 on the CPU.
        accuracy: Accuracy at each position, fractions in [0, 1], shape ``(A,)``;
            NaN when the task is not classification.
        n_samples: Number of samples each point was evaluated on.

    """

    alphas: Tensor
    loss: Tensor
    accuracy: Tensor
    n_samples: int


@dataclass(frozen=True)
class LossSurface:
    """Mean loss and accuracy on a grid of a plane in parameter space.

    Attributes:
        alphas: Positions along the first direction, shape ``(A,)``, float64.
        betas: Positions along the second direction, shape ``(B,)``, float64.
        loss: Mean loss, shape ``(A, B)``: ``loss[i, j]`` is at
            ``(alphas[i], betas[j])``. Float64 on the CPU.
        accuracy: Accuracy, shape ``(A, B)``; NaN when not classification.
        n_samples: Number of samples each point was evaluated on.

    """

    alphas: Tensor
    betas: Tensor
    loss: Tensor
    accuracy: Tensor
    n_samples: int


# --------------------------------------------------------------------------- checks


def _check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")


def _check_option(name: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}.")


def _as_positions(name: str, values: Iterable[float] | Tensor) -> tuple[float, ...]:
    if isinstance(values, Tensor):
        if values.dim() > 1:
            raise ValueError(
                f"{name} must be a 1-D sequence of numbers, got a tensor of shape "
                f"{tuple(values.shape)}; pass e.g. torch.linspace(-1, 1, 21)."
            )
        values = values.detach().cpu().reshape(-1).tolist()
    positions = tuple(float(v) for v in values)
    if not positions:
        raise ValueError(f"{name} is empty; pass at least one position, e.g. [0.0].")
    bad = [v for v in positions if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{name} must be finite numbers, got {bad[0]!r} among them.")
    return positions


def _check_samples(x: Tensor, y: Tensor) -> None:
    if x.dim() == 0 or x.shape[0] == 0:
        raise ValueError(
            f"x must hold at least one sample, got shape {tuple(x.shape)}."
        )
    if y.dim() == 0 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"x and y must hold the same number of samples, got x of shape "
            f"{tuple(x.shape)} and y of shape {tuple(y.shape)}."
        )


def _refuse_batch_statistics(model: nn.Module) -> None:
    """Raise if a BatchNorm layer would normalize with batch statistics in eval."""
    for name, module in model.named_modules():
        is_bn = isinstance(module, nn.modules.batchnorm._BatchNorm)
        if is_bn and module.running_mean is None:
            raise ValueError(
                f"BatchNorm layer {name!r} has track_running_stats=False, so it "
                "normalizes with the statistics of each chunk even in eval mode and "
                "the loss would depend on batch_size; build it with "
                "track_running_stats=True and train it."
            )


# ----------------------------------------------------------------------- directions


def _trainable(model: nn.Module) -> dict[str, Tensor]:
    """The trainable parameters, by name, in ``named_parameters()`` order."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError(
            "the model has no trainable parameters (none requires grad); "
            "a direction needs at least one."
        )
    return params


def _as_direction(
    direction: Direction, params: dict[str, Tensor], what: str = "direction"
) -> list[Tensor]:
    """Check ``direction`` against ``params``; return it as tensors like them.

    Each tensor is detached and moved to its parameter's device and dtype.
    """
    shapes = [p.shape for p in params.values()]
    total = sum(p.numel() for p in params.values())
    if isinstance(direction, Tensor):
        if direction.dim() != 1 or direction.numel() != total:
            raise ValueError(
                f"{what} given as one tensor must be a flat vector of the "
                f"{total} trainable parameter entries, got shape "
                f"{tuple(direction.shape)}; pass a flat vector or one tensor per "
                "trainable parameter in model.named_parameters() order."
            )
        pieces = list(direction.detach().split([math.prod(s) for s in shapes]))
        pieces = [piece.view(shape) for piece, shape in zip(pieces, shapes)]
    else:
        pieces = [t.detach() for t in direction]
        if len(pieces) != len(params):
            raise ValueError(
                f"{what} has {len(pieces)} tensors but the model has {len(params)} "
                f"trainable parameters ({', '.join(params)}); pass one tensor per "
                "trainable parameter in model.named_parameters() order."
            )
        for (name, p), piece in zip(params.items(), pieces):
            if piece.shape != p.shape:
                raise ValueError(
                    f"{what} for parameter {name!r} has shape {tuple(piece.shape)} "
                    f"but the parameter has shape {tuple(p.shape)}; pass tensors "
                    "shaped like the trainable parameters, in "
                    "model.named_parameters() order."
                )
    out = []
    for (name, p), piece in zip(params.items(), pieces):
        if not piece.is_floating_point():
            raise ValueError(
                f"{what} for parameter {name!r} has dtype {piece.dtype}; "
                "directions must be floating-point."
            )
        out.append(piece.to(device=p.device, dtype=p.dtype))
    return out


def _global_norm(tensors: Sequence[Tensor]) -> float:
    """Euclidean norm of the concatenation of ``tensors``, computed in float64."""
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in tensors))


def _filter_normalized(
    direction: Sequence[Tensor], weights: Sequence[Tensor]
) -> list[Tensor]:
    r"""Filter-wise normalization of Li et al. (2018).

    For a parameter of two or more dimensions, filter ``i`` is the slice
    ``d[i]`` (an output channel of a convolution, an output row of a linear
    layer), rescaled to :math:`\|d_i\| \to \|\theta_i\|`. One-dimensional
    parameters (biases, BatchNorm scales and shifts) get a zero direction, Li et
    al.'s default. A filter whose direction is zero stays zero.
    """
    out = []
    for d, w in zip(direction, weights):
        if d.dim() <= 1:
            out.append(torch.zeros_like(d))
            continue
        d_norm = d.flatten(1).norm(dim=1)
        w_norm = w.detach().flatten(1).norm(dim=1)
        scale = torch.where(d_norm > 0, w_norm / d_norm.clamp_min(_tiny(d)), 0.0)
        out.append(d * scale.view(-1, *([1] * (d.dim() - 1))))
    return out


def _tiny(t: Tensor) -> float:
    return torch.finfo(t.dtype).tiny


def _normalized(
    direction: list[Tensor],
    params: dict[str, Tensor],
    normalize: Normalization,
    what: str,
) -> list[Tensor]:
    if normalize == "none":
        return direction
    if normalize == "filter":
        return _filter_normalized(direction, list(params.values()))
    norm = _global_norm(direction)
    if norm == 0.0:
        raise ValueError(
            f"{what} has norm 0, so normalize='unit' cannot rescale it; pass a "
            "nonzero direction."
        )
    return [d / norm for d in direction]


def random_direction(
    model: nn.Module,
    *,
    like: Direction | None = None,
    generator: torch.Generator | None,
    normalization: RandomNormalization,
) -> list[Tensor]:
    r"""A Gaussian direction in the space of the trainable parameters.

    Each entry is drawn from :math:`\mathcal{N}(0, 1)` and the draw is rescaled:

    * ``"none"``: no rescaling; the norm is about :math:`\sqrt{n}` for ``n``
      parameter entries.
    * ``"global"``: one factor so that :math:`\|d\| = \|\text{like}\|` (the
      Euclidean norm over all entries). With ``like = v1``, a unit eigenvector,
      ``d`` is a random unit direction and :math:`\epsilon` means the same
      distance along both. ``like=None`` takes the model's trainable
      parameters, :math:`\|d\| = \|\theta\|`.
    * ``"filter"``: filter-wise normalization (Li et al., "Visualizing the Loss
      Landscape of Neural Nets", 2018): filter ``i`` of a parameter of two or
      more dimensions (``d[i]``, an output channel or output row) is rescaled to
      the norm of the same filter of the weights, :math:`\|d_i\| = \|\theta_i\|`;
      one-dimensional parameters (biases, BatchNorm) get zero. This removes the
      scale invariance of ReLU and BatchNorm networks when landscapes of
      different models are compared, but its norm is that of the weights, not
      of ``v1``.

    Which to use in the book: Figs. 2 and 3 compare the loss along ``v1`` with
    the loss along a random direction "of the same norm"; that is ``"global"``
    with ``like=v1``, which keeps :math:`\epsilon` on one axis for both curves
    (the curvature along a random unit direction is the Hessian's mean
    eigenvalue, that along ``v1`` its largest). ``"filter"`` is the check when
    landscapes of different models (batch sizes) are set side by side.

    Args:
        model: The model whose trainable parameters (``requires_grad``, in
            ``named_parameters()`` order) define the shapes, dtypes and devices.
        like: Reference direction for ``"global"`` (a list of tensors shaped like
            the trainable parameters or a flat vector); ``None`` uses the
            parameters themselves. Only allowed with ``"global"``.
        generator: Source of the draw (on the CPU or the parameters' device),
            so that a seed fixes the direction; ``None`` uses the global one.
        normalization: ``"none"``, ``"global"`` or ``"filter"``.

    Returns:
        One tensor per trainable parameter, same shapes, dtypes and devices.

    Raises:
        ValueError: If ``normalization`` is unknown, ``like`` is given with
            another normalization than ``"global"``, ``like`` does not match the
            parameters' shapes or has norm 0.

    Example:
        >>> model = torch.nn.Linear(3, 2)
        >>> g = torch.Generator().manual_seed(0)
        >>> v = [torch.ones(2, 3) / 8 ** 0.5, torch.ones(2) / 8 ** 0.5]
        >>> d = random_direction(model, like=v, generator=g, normalization="global")
        >>> round(float(torch.cat([t.flatten() for t in d]).norm()), 6)
        1.0

    """
    _check_option("normalization", normalization, get_args(RandomNormalization))
    params = _trainable(model)
    if like is not None and normalization != "global":
        raise ValueError(
            f"like is only used with normalization='global', got "
            f"normalization={normalization!r}; drop like or use 'global'."
        )
    draw = []
    for p in params.values():
        device = p.device if generator is None else generator.device
        noise = torch.randn(p.shape, generator=generator, dtype=p.dtype, device=device)
        draw.append(noise.to(p.device))
    if normalization == "none":
        return draw
    if normalization == "filter":
        return _filter_normalized(draw, list(params.values()))
    reference = (
        [p.detach() for p in params.values()]
        if like is None
        else _as_direction(like, params, "like")
    )
    target = _global_norm(reference)
    if target == 0.0:
        raise ValueError("like has norm 0; pass a nonzero reference direction.")
    scale = target / _global_norm(draw)
    return [d * scale for d in draw]


# ------------------------------------------------------------------------ evaluation


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode; restore every submodule's own flag on exit."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for module, training in modes:
            module.training = training


def _chunks(
    x: Tensor, y: Tensor, batch_size: int, device: torch.device | str | None
) -> Iterator[tuple[Tensor, Tensor]]:
    for start in range(0, x.shape[0], batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        if device is not None:
            xb, yb = xb.to(device), yb.to(device)
        yield xb, yb


def _is_classification(outputs: Tensor, y: Tensor) -> bool:
    integral = not (y.is_floating_point() or y.is_complex() or y.dtype == torch.bool)
    return integral and outputs.dim() == 2 and y.dim() == 1


@torch.no_grad()
def _evaluate(
    model: nn.Module,
    tensors: dict[str, Tensor],
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn,
    batch_size: int,
    device: torch.device | str | None,
) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` with ``tensors`` swapped in.

    The loss is accumulated in float64 as ``sum_b n_b * loss_fn(chunk_b) / N``.
    """
    total = torch.zeros((), dtype=torch.float64)
    correct, classification = 0, True
    for xb, yb in _chunks(x, y, batch_size, device):
        outputs = functional_call(model, tensors, (xb,))
        loss = loss_fn(outputs, yb)
        if loss.dim() != 0:
            raise ValueError(
                f"loss_fn must return the batch mean, a scalar, got shape "
                f"{tuple(loss.shape)}; use reduction='mean'."
            )
        total += xb.shape[0] * loss.detach().double().cpu()
        classification = classification and _is_classification(outputs, yb)
        if classification:
            correct += int((outputs.argmax(dim=1) == yb).sum())
    n = x.shape[0]
    accuracy = correct / n if classification else math.nan
    return float(total) / n, accuracy


def _progress(items: Sequence, progress: bool, desc: str) -> Iterable:
    if not progress:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="point")


def _check_common(
    model: nn.Module, x: Tensor, y: Tensor, batch_size: int, normalize: str
) -> None:
    _check_positive_int("batch_size", batch_size)
    _check_option("normalize", normalize, get_args(Normalization))
    _check_samples(x, y)
    _refuse_batch_statistics(model)


def loss_along_line(
    model: nn.Module,
    directions: Direction,
    alphas: Iterable[float] | Tensor,
    x: Tensor,
    y: Tensor,
    *,
    loss_fn: LossFn | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    normalize: Normalization = "none",
    device: torch.device | str | None = None,
    progress: bool = False,
) -> LossCurve:
    r"""Mean loss and accuracy along a line through the model's parameters.

    .. math::
        \alpha \mapsto L(\theta + \alpha d), \qquad
        L(\theta) = \frac{1}{N}\sum_{i=1}^{N} \ell(f_\theta(x_i), y_i),

    with :math:`\theta` the trainable parameters. Fig. 2 of the paper takes
    :math:`d = v_1`, the top eigenvector of the Hessian, and
    :math:`\alpha = \epsilon`. Near a minimum,
    :math:`L(\theta + \alpha d) \approx L(\theta) + \alpha g^\top d +
    \tfrac12 \alpha^2 d^\top H d`.

    Args:
        model: Network mapping ``(B, ...)`` inputs to outputs (logits ``(B, C)``
            for classification). Evaluated in eval mode; its parameters, buffers
            and the mode of every submodule are the same afterwards.
        directions: ``d``: one tensor per trainable parameter, in
            ``model.named_parameters()`` order, or a flat vector of all their
            entries (e.g. an eigenvector from a solver).
        alphas: Positions along the line, shape ``(A,)``; any real numbers.
        x: Inputs, shape ``(N, ...)``.
        y: Targets, shape ``(N, ...)``; integer labels for classification.
        loss_fn: ``loss_fn(outputs, y) -> scalar`` batch mean; default
            cross-entropy.
        batch_size: Samples per forward pass, >= 1; the result does not depend
            on it beyond round-off.
        normalize: How ``d`` is rescaled first: ``"none"`` (as given; the paper's
            eigenvectors have unit norm), ``"unit"`` (divided by its norm, so
            :math:`\alpha` is a Euclidean distance) or ``"filter"`` (filter-wise,
            as in :func:`random_direction`).
        device: Where each chunk of ``x``, ``y`` is moved (the model's device);
            ``None`` leaves them where they are.
        progress: Show a tqdm progress bar over the positions.

    Returns:
        The curve; see :class:`LossCurve`.

    Raises:
        ValueError: If a direction does not match the trainable parameters (the
            message names the parameter and both shapes), an option is unknown,
            ``alphas`` is empty or not finite, ``batch_size < 1``, ``x`` and ``y``
            differ in length, ``loss_fn`` does not return a scalar or a BatchNorm
            layer keeps no running statistics.

    Example:
        >>> model = torch.nn.Linear(3, 2)
        >>> x, y = torch.rand(8, 3), torch.randint(2, (8,))
        >>> d = [torch.ones(2, 3), torch.zeros(2)]
        >>> curve = loss_along_line(model, d, [-1.0, 0.0, 1.0], x, y, batch_size=4)
        >>> curve.loss.shape
        torch.Size([3])
        >>> loss_0 = torch.nn.functional.cross_entropy(model(x), y).item()
        >>> abs(curve.loss[1].item() - loss_0) < 1e-6
        True

    """
    _check_common(model, x, y, batch_size, normalize)
    positions = _as_positions("alphas", alphas)
    params = _trainable(model)
    d = _normalized(_as_direction(directions, params), params, normalize, "directions")
    loss_fn = F.cross_entropy if loss_fn is None else loss_fn
    losses, accuracies = [], []
    with _eval_mode(model):
        for alpha in _progress(positions, progress, "line"):
            moved = {
                name: p.detach() + alpha * di
                for (name, p), di in zip(params.items(), d)
            }
            loss, accuracy = _evaluate(model, moved, x, y, loss_fn, batch_size, device)
            losses.append(loss)
            accuracies.append(accuracy)
    return LossCurve(
        alphas=torch.tensor(positions, dtype=torch.float64),
        loss=torch.tensor(losses, dtype=torch.float64),
        accuracy=torch.tensor(accuracies, dtype=torch.float64),
        n_samples=x.shape[0],
    )


def loss_surface(
    model: nn.Module,
    d1: Direction,
    d2: Direction,
    alphas: Iterable[float] | Tensor,
    betas: Iterable[float] | Tensor,
    x: Tensor,
    y: Tensor,
    *,
    loss_fn: LossFn | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    normalize: Normalization = "none",
    device: torch.device | str | None = None,
    progress: bool = False,
) -> LossSurface:
    r"""Mean loss and accuracy on a grid of the plane spanned by two directions.

    .. math::
        (\alpha, \beta) \mapsto L(\theta + \alpha d_1 + \beta d_2)

    Fig. 3 of the paper takes :math:`d_1 = v_1` and :math:`d_2 = v_2`, the two
    top eigenvectors of the Hessian. Each of ``A * B`` grid points costs one
    pass over ``x``.

    Args:
        model: As :func:`loss_along_line`.
        d1: First direction, as ``directions`` of :func:`loss_along_line`.
        d2: Second direction, likewise.
        alphas: Positions along ``d1``, shape ``(A,)``.
        betas: Positions along ``d2``, shape ``(B,)``.
        x: Inputs, shape ``(N, ...)``.
        y: Targets, shape ``(N, ...)``.
        loss_fn: ``loss_fn(outputs, y) -> scalar`` batch mean; default
            cross-entropy.
        batch_size: Samples per forward pass, >= 1.
        normalize: Rescaling of each direction on its own, as in
            :func:`loss_along_line`.
        device: Where each chunk of ``x``, ``y`` is moved.
        progress: Show a tqdm progress bar over the grid points.

    Returns:
        The surface, ``loss`` of shape ``(A, B)``; see :class:`LossSurface`.

    Raises:
        ValueError: As :func:`loss_along_line`, for ``d1``, ``d2``, ``alphas`` and
            ``betas``.

    Example:
        >>> model = torch.nn.Linear(3, 2)
        >>> x, y = torch.rand(8, 3), torch.randint(2, (8,))
        >>> d1 = torch.ones(8)
        >>> d2 = torch.cat([torch.zeros(6), torch.ones(2)])
        >>> surface = loss_surface(model, d1, d2, [-1, 0, 1], [0, 1], x, y)
        >>> surface.loss.shape
        torch.Size([3, 2])

    """
    _check_common(model, x, y, batch_size, normalize)
    rows = _as_positions("alphas", alphas)
    cols = _as_positions("betas", betas)
    params = _trainable(model)
    e1 = _normalized(_as_direction(d1, params, "d1"), params, normalize, "d1")
    e2 = _normalized(_as_direction(d2, params, "d2"), params, normalize, "d2")
    loss_fn = F.cross_entropy if loss_fn is None else loss_fn
    grid = [(a, b) for a in rows for b in cols]
    losses, accuracies = [], []
    with _eval_mode(model):
        for alpha, beta in _progress(grid, progress, "surface"):
            moved = {
                name: p.detach() + alpha * u + beta * v
                for (name, p), u, v in zip(params.items(), e1, e2)
            }
            loss, accuracy = _evaluate(model, moved, x, y, loss_fn, batch_size, device)
            losses.append(loss)
            accuracies.append(accuracy)
    shape = (len(rows), len(cols))
    return LossSurface(
        alphas=torch.tensor(rows, dtype=torch.float64),
        betas=torch.tensor(cols, dtype=torch.float64),
        loss=torch.tensor(losses, dtype=torch.float64).view(shape),
        accuracy=torch.tensor(accuracies, dtype=torch.float64).view(shape),
        n_samples=x.shape[0],
    )


# --------------------------------------------------------------------- interpolation


def _paired_tensors(
    model_a: nn.Module, model_b: nn.Module
) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
    """Parameters and buffers of both models, checked to match by name and shape."""
    tensors = []
    for kind in ("parameters", "buffers"):
        a = dict(getattr(model_a, f"named_{kind}")())
        b = dict(getattr(model_b, f"named_{kind}")())
        if a.keys() != b.keys():
            only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
            raise ValueError(
                f"model_a and model_b have different {kind}: only in model_a "
                f"{only_a}, only in model_b {only_b}; interpolate two instances of "
                "the same architecture."
            )
        for name in a:
            if a[name].shape != b[name].shape:
                raise ValueError(
                    f"{kind[:-1]} {name!r} has shape {tuple(a[name].shape)} in "
                    f"model_a but {tuple(b[name].shape)} in model_b; interpolate two "
                    "instances of the same architecture."
                )
        tensors += [a, b]
    return tensors[0], tensors[1], tensors[2], tensors[3]


def _lerp(a: Tensor, b: Tensor, alpha: float) -> Tensor:
    """``(1 - alpha) * a + alpha * b`` for floating ``a``; ``a`` itself otherwise."""
    if not a.is_floating_point():
        return a.detach()
    b = b.detach().to(device=a.device, dtype=a.dtype)
    return (1.0 - alpha) * a.detach() + alpha * b


def _warn_negative_variance(buffers: dict[str, Tensor], alpha: float) -> None:
    negative = [
        name
        for name, t in buffers.items()
        if name.rsplit(".", 1)[-1] == "running_var" and bool((t < 0).any())
    ]
    if negative:
        warnings.warn(
            f"at alpha={alpha!r} the interpolated BatchNorm variance {negative[0]!r} "
            "has negative entries, so the loss there is NaN; use buffers='a' or "
            "keep alpha closer to [0, 1].",
            RuntimeWarning,
            stacklevel=3,
        )


def interpolate(
    model_a: nn.Module,
    model_b: nn.Module,
    alphas: Iterable[float] | Tensor,
    x: Tensor,
    y: Tensor,
    *,
    buffers: BufferPolicy = "interpolate",
    loss_fn: LossFn | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> LossCurve:
    r"""Mean loss and accuracy on the line through two models' parameters.

    .. math::
        \alpha \mapsto L\big((1 - \alpha)\,\theta_a + \alpha\,\theta_b\big)

    Fig. 5 of the paper: :math:`\theta_a` the original model, :math:`\theta_b`
    the robustly trained one, :math:`\alpha` from e.g. -0.5 to 1.5. Every
    floating-point parameter moves, trainable or not. The network of ``model_a``
    is run with the interpolated tensors.

    BatchNorm running statistics are buffers, not parameters, and a choice:

    * ``"interpolate"`` (default, the book's): floating-point buffers move with
      the parameters, :math:`(1 - \alpha) \mu_a + \alpha \mu_b` and likewise the
      variances; integer buffers (``num_batches_tracked``) are model a's. The
      endpoints are exactly model a and model b. Outside [0, 1] an interpolated
      variance can turn negative; a ``RuntimeWarning`` then names it.
    * ``"a"``: every buffer is model a's, at every :math:`\alpha`; at
      :math:`\alpha = 1` this is model b's weights with model a's statistics,
      not model b.

    Neither recomputes the statistics for the interpolated weights (a train-mode
    pass over data), which is what makes the two choices differ.

    Args:
        model_a: The model at :math:`\alpha = 0`.
        model_b: The model at :math:`\alpha = 1`, the same architecture (names
            and shapes of parameters and buffers).
        alphas: Positions, shape ``(A,)``; any real numbers.
        x: Inputs, shape ``(N, ...)``.
        y: Targets, shape ``(N, ...)``; integer labels for classification.
        buffers: ``"interpolate"`` or ``"a"``, see above.
        loss_fn: ``loss_fn(outputs, y) -> scalar`` batch mean; default
            cross-entropy.
        batch_size: Samples per forward pass, >= 1.
        device: Where each chunk of ``x``, ``y`` is moved (model a's device).
        progress: Show a tqdm progress bar over the positions.

    Returns:
        The curve; see :class:`LossCurve`. Both models, their parameters, buffers
        and modes are unchanged.

    Raises:
        ValueError: If the models differ in parameter or buffer names or shapes,
            ``buffers`` is unknown, or as :func:`loss_along_line`.

    Example:
        >>> a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
        >>> x, y = torch.rand(8, 3), torch.randint(2, (8,))
        >>> curve = interpolate(a, b, [-0.5, 0.0, 0.5, 1.0, 1.5], x, y)
        >>> curve.loss.shape
        torch.Size([5])

    """
    _check_positive_int("batch_size", batch_size)
    _check_option("buffers", buffers, get_args(BufferPolicy))
    _check_samples(x, y)
    _refuse_batch_statistics(model_a)
    positions = _as_positions("alphas", alphas)
    params_a, params_b, buffers_a, buffers_b = _paired_tensors(model_a, model_b)
    loss_fn = F.cross_entropy if loss_fn is None else loss_fn
    losses, accuracies = [], []
    with _eval_mode(model_a):
        for alpha in _progress(positions, progress, "interpolate"):
            moved = {n: _lerp(p, params_b[n], alpha) for n, p in params_a.items()}
            if buffers == "interpolate":
                kept = {n: _lerp(t, buffers_b[n], alpha) for n, t in buffers_a.items()}
                _warn_negative_variance(kept, alpha)
                moved.update(kept)
            loss, accuracy = _evaluate(
                model_a, moved, x, y, loss_fn, batch_size, device
            )
            losses.append(loss)
            accuracies.append(accuracy)
    return LossCurve(
        alphas=torch.tensor(positions, dtype=torch.float64),
        loss=torch.tensor(losses, dtype=torch.float64),
        accuracy=torch.tensor(accuracies, dtype=torch.float64),
        n_samples=x.shape[0],
    )
