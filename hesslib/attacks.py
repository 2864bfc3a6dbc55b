"""Adversarial attacks on classifiers whose inputs are images in [0, 1].

FGSM, PGD under the L-infinity and L2 norms, attacks over a whole in-memory data set
in batches, robustness curves (accuracy under attack per eps) and the authors' robust
training batch mix of Yao et al. (2018): a fraction of each batch replaced by FGSM
examples.

Conventions shared by every attack here:

* Inputs ``x`` lie in the box :math:`[0, 1]`; any normalization lives inside the
  model. Models map ``x`` of shape ``(N, ...)`` to logits of shape ``(N, C)``.
* Untargeted attacks ascend the loss :math:`J(x', y)`; targeted ones take ``y`` as the
  target labels and descend it.
* The result always lies in the eps-ball of the chosen norm around ``x`` and in the
  box: every iterate is projected onto both (see :func:`pgd`).
* The model runs in eval mode (BatchNorm is a fixed affine map, dropout is off, so
  samples do not interact and a batch attack equals per-sample attacks); the caller's
  train/eval mode of every submodule is restored afterwards, also on an exception.
* Gradients are taken with respect to the input only (``torch.autograd.grad``): no
  parameter ``.grad`` is created or changed, and the caller's tensors are not mutated.
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_STEP_SIZE_FACTOR",
    "DEFAULT_STEPS",
    "ROBUST_EPS",
    "ROBUST_FRACTION",
    "AttackName",
    "Norm",
    "RobustnessCurve",
    "adversarial_mix",
    "attack_dataset",
    "fgsm",
    "pgd",
    "pgd_batch",
    "robustness_curve",
]

Norm = Literal["linf", "l2"]
AttackName = Literal["fgsm", "pgd"]
LossFn = Callable[[Tensor, Tensor], Tensor]
Attack = Callable[[nn.Module, Tensor, Tensor], Tensor]
Callback = Callable[[int, Tensor], None]

PIXEL_MIN = 0.0
PIXEL_MAX = 1.0
# The usual PGD rule of thumb: steps of 2.5 * eps / steps travel 2.5 radii in all,
# enough to cross the ball and come back.
DEFAULT_STEP_SIZE_FACTOR = 2.5
# Ten steps are the common PGD budget for evaluation at small eps.
DEFAULT_STEPS = 10
# The authors' robust training: 20% of each batch replaced by FGSM examples, eps 0.005.
ROBUST_FRACTION = 0.2
ROBUST_EPS = 0.005
# Large enough to keep a GPU busy on CIFAR-sized models, small enough for a CPU.
DEFAULT_BATCH_SIZE = 256


# --------------------------------------------------------------------------- checks


def _check_eps(eps: float) -> None:
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(
            f"eps must be a finite number >= 0, got {eps!r}; "
            "eps is measured on pixels in [0, 1] (e.g. 8/255)."
        )


def _check_norm(norm: str) -> None:
    if norm not in get_args(Norm):
        raise ValueError(f"norm must be one of {get_args(Norm)}, got {norm!r}.")


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


def _check_pixels(x: Tensor) -> None:
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor in [0, 1], got {x.dtype}.")
    lo, hi = torch.aminmax(x.detach())
    lo, hi = lo.item(), hi.item()
    if not (lo >= PIXEL_MIN and hi <= PIXEL_MAX):
        raise ValueError(
            f"x must lie in [0, 1], but its values span [{lo:.4g}, {hi:.4g}]; "
            "pass raw pixels and put normalization inside the model "
            "(e.g. a first layer that subtracts the mean and divides by the std)."
        )


def _check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")


def _check_inputs(x: Tensor, y: Tensor, eps: float, norm: str) -> None:
    _check_eps(eps)
    _check_norm(norm)
    _check_samples(x, y)
    _check_pixels(x)


def _check_curve_args(
    eps_list: tuple[float, ...], attack: str, step_size_factor: float
) -> None:
    if attack not in get_args(AttackName):
        raise ValueError(
            f"attack must be one of {get_args(AttackName)}, got {attack!r}."
        )
    if not eps_list:
        raise ValueError("eps_list is empty; pass at least one radius, e.g. [0.0].")
    for eps in eps_list:
        _check_eps(eps)
    if not (math.isfinite(step_size_factor) and step_size_factor > 0):
        raise ValueError(
            f"step_size_factor must be a finite number > 0, got {step_size_factor!r}."
        )


def _for_autograd(t: Tensor) -> Tensor:
    """Detach ``t``; copy it if it was made under ``torch.inference_mode``."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "attacks need autograd for the input gradient; call them outside "
            "torch.inference_mode() (torch.no_grad() around them is fine)."
        )
    return t.clone() if t.is_inference() else t.detach()


# ------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode; restore every submodule's own mode on exit."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def _default_loss(logits: Tensor, y: Tensor) -> Tensor:
    # Summed, so that each sample's input gradient does not shrink with batch size.
    return F.cross_entropy(logits, y, reduction="sum")


def _input_grad(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn) -> Tensor:
    """Gradient of ``loss_fn(model(x), y)`` w.r.t. ``x`` only; same shape as ``x``."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(model(x), y)
        if loss.dim() != 0:
            raise ValueError(
                f"loss_fn must return a scalar, got shape {tuple(loss.shape)}; "
                "reduce it over the batch (reduction='sum')."
            )
        (grad,) = torch.autograd.grad(
            loss, x, allow_unused=True, materialize_grads=True
        )
    return grad


def _sample_norm(t: Tensor) -> Tensor:
    """Per-sample L2 norm of ``t`` (N, ...), shaped (N, 1, ..., 1) to broadcast."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def _tiny(t: Tensor) -> float:
    return torch.finfo(t.dtype).tiny


def _direction(grad: Tensor, norm: Norm) -> Tensor:
    """Steepest-ascent direction of unit norm (per sample) for a linear loss."""
    if norm == "linf":
        return grad.sign()
    return grad / _sample_norm(grad).clamp_min(_tiny(grad))


def _project(x_adv: Tensor, x: Tensor, eps: float, norm: Norm) -> Tensor:
    """Map ``x_adv`` into the eps-ball around ``x`` and the box [0, 1].

    L-infinity: ball and box are both boxes, so clamping to their intersection is the
    exact Euclidean projection. L2: scale the perturbation onto the ball, then clamp to
    the box. Clamping never increases the distance to ``x``: each coordinate moves
    towards [0, 1], which contains ``x_i``, so ``|x'_i - x_i|`` can only shrink and the
    result stays in the ball. It is a feasible point, not always the exact projection
    onto the intersection (that would need an iterative scheme such as Dykstra's).
    """
    if norm == "linf":
        x_adv = torch.minimum(torch.maximum(x_adv, x - eps), x + eps)
    else:
        delta = x_adv - x
        scale = (eps / _sample_norm(delta).clamp_min(_tiny(delta))).clamp(max=1.0)
        x_adv = x + delta * scale
    return x_adv.clamp(PIXEL_MIN, PIXEL_MAX)


def _random(
    shape: Sequence[int],
    like: Tensor,
    generator: torch.Generator | None,
    *,
    normal: bool,
) -> Tensor:
    """Draw uniform [0, 1) or standard normal values shaped ``shape`` like ``like``."""
    device = like.device if generator is None else generator.device
    draw = torch.randn if normal else torch.rand
    out = draw(tuple(shape), generator=generator, device=device, dtype=like.dtype)
    return out.to(like.device)


def _random_start(
    x: Tensor, eps: float, norm: Norm, generator: torch.Generator | None
) -> Tensor:
    """Draw a point uniformly from the eps-ball around ``x``, then project it."""
    if norm == "linf":
        delta = (2 * _random(x.shape, x, generator, normal=False) - 1) * eps
    else:
        direction = _random(x.shape, x, generator, normal=True)
        direction = direction / _sample_norm(direction).clamp_min(_tiny(x))
        radial_shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        uniform = _random(radial_shape, x, generator, normal=False)
        delta = direction * eps * uniform ** (1.0 / x[0].numel())
    return _project(x + delta, x, eps, norm)


# ------------------------------------------------------------------------- attacks


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    norm: Norm = "linf",
    steps: int = DEFAULT_STEPS,
    step_size: float | None = None,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    targeted: bool = False,
    loss_fn: LossFn | None = None,
    callback: Callback | None = None,
) -> Tensor:
    r"""Projected gradient descent (ascent) on the loss within an eps-ball.

    Starting from :math:`x^0` (``x`` or a uniform draw from the ball), iterate

    .. math::
        x^{k+1} = \Pi_{B_p(x, \epsilon) \cap [0, 1]^d}
        \left(x^k \pm \alpha\, d_p(\nabla_x J(x^k, y))\right),

    with :math:`d_\infty(g) = \operatorname{sign}(g)` and :math:`d_2(g) = g / \|g\|_2`
    per sample, ``+`` for untargeted and ``-`` for targeted attacks. With
    ``norm="linf"`` and ``random_start=False`` this is iterative FGSM (BIM). The
    projection is exact for L-infinity; for L2 it scales onto the ball and then clamps
    to the box, which keeps the point in the ball (clamping towards ``x``'s box never
    increases the distance to ``x``). Both hold up to floating-point round-off (a few
    ulps of 1.0 in the input's dtype). The last iterate is returned.

    Args:
        model: Classifier mapping ``(N, ...)`` inputs to ``(N, C)`` logits. Run in eval
            mode; every submodule's mode is restored afterwards.
        x: Clean inputs, shape ``(N, ...)``, values in [0, 1]. Not modified.
        y: Labels, shape ``(N,)``; the target labels when ``targeted``.
        eps: Radius of the ball, >= 0, in pixel units of [0, 1].
        norm: ``"linf"`` or ``"l2"`` (the L2 norm of each whole sample).
        steps: Number of gradient steps, >= 1.
        step_size: Step length :math:`\alpha`; default
            ``DEFAULT_STEP_SIZE_FACTOR * eps / steps`` (2.5 eps / steps).
        random_start: Start from a uniform draw from the ball (projected to the box).
        generator: Source of the random start; ``None`` uses the global generator.
        targeted: Descend the loss towards the labels ``y`` instead of ascending it.
        loss_fn: ``(logits, y) -> scalar`` loss; default summed cross-entropy. Any
            positive scaling (sum or mean) gives the same attack, since steps use the
            sign or the normalized gradient.
        callback: Called as ``callback(step, x_adv)`` with each iterate, ``step = 0``
            being the start point and ``step = steps`` the result, while the model is
            still in eval mode. ``x_adv`` is detached; do not modify it in place.

    Returns:
        Adversarial inputs, same shape, dtype and device as ``x``, detached.

    Raises:
        ValueError: If ``eps < 0``, ``norm`` is unknown, ``steps < 1``,
            ``step_size < 0``, ``x`` leaves [0, 1] or ``x`` and ``y`` differ in length.
        RuntimeError: If called under ``torch.inference_mode()`` (tensors made there
            are fine).

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x, y = torch.rand(2, 1, 2, 2), torch.tensor([0, 2])
        >>> g = torch.Generator().manual_seed(0)
        >>> x_adv = pgd(model, x, y, 0.5, norm="l2", steps=3, generator=g)
        >>> bool((x_adv - x).flatten(1).norm(dim=1).max() <= 0.5 + 1e-6)
        True

    """
    _check_inputs(x, y, eps, norm)
    _check_positive_int("steps", steps)
    if step_size is None:
        step_size = DEFAULT_STEP_SIZE_FACTOR * eps / steps
    elif not (math.isfinite(step_size) and step_size >= 0):
        raise ValueError(f"step_size must be a finite number >= 0, got {step_size!r}.")
    loss_fn = _default_loss if loss_fn is None else loss_fn
    signed_step = -step_size if targeted else step_size
    x, y = _for_autograd(x), _for_autograd(y)
    with _eval_mode(model):
        x_adv = _random_start(x, eps, norm, generator) if random_start else x.clone()
        if callback is not None:
            callback(0, x_adv)
        for step in range(1, steps + 1):
            grad = _input_grad(model, x_adv, y, loss_fn)
            x_adv = x_adv + signed_step * _direction(grad, norm)
            x_adv = _project(x_adv, x, eps, norm)
            if callback is not None:
                callback(step, x_adv)
    return x_adv


pgd_batch = pgd
"""Alias of :func:`pgd`, which already attacks a whole batch at once."""


def fgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    norm: Norm = "linf",
    loss_fn: LossFn | None = None,
    targeted: bool = False,
) -> Tensor:
    r"""Fast gradient sign method: one gradient step of length eps, then the box.

    .. math::
        x' = \operatorname{clip}_{[0, 1]}\left(x \pm \epsilon\,
        \operatorname{sign}(\nabla_x J(x, y))\right)

    This is :func:`pgd` with one step of size ``eps`` and no random start. With
    ``norm="l2"`` the step is :math:`\epsilon\, g / \|g\|_2` per sample (the fast
    gradient method).

    Args:
        model: Classifier mapping ``(N, ...)`` inputs to ``(N, C)`` logits.
        x: Clean inputs, shape ``(N, ...)``, values in [0, 1]. Not modified.
        y: Labels, shape ``(N,)``; the target labels when ``targeted``.
        eps: Step length, >= 0, in pixel units of [0, 1].
        norm: ``"linf"`` (FGSM proper) or ``"l2"``.
        loss_fn: ``(logits, y) -> scalar`` loss; default summed cross-entropy.
        targeted: Descend the loss towards the labels ``y`` instead of ascending it.

    Returns:
        Adversarial inputs, same shape, dtype and device as ``x``, detached.

    Raises:
        ValueError: As :func:`pgd`.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x, y = torch.rand(2, 1, 2, 2), torch.tensor([0, 2])
        >>> x_adv = fgsm(model, x, y, eps=0.1)
        >>> bool((x_adv - x).abs().max() <= 0.1 + 1e-6)
        True

    """
    return pgd(
        model,
        x,
        y,
        eps,
        norm=norm,
        steps=1,
        step_size=eps,
        random_start=False,
        targeted=targeted,
        loss_fn=loss_fn,
    )


# ------------------------------------------------------------------ whole data sets


def _batches(
    x: Tensor,
    y: Tensor,
    batch_size: int,
    device: torch.device | str | None,
    *,
    progress: bool,
    desc: str,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(x, y)`` batches in order, moved to ``device`` if given."""
    starts = range(0, x.shape[0], batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=desc, unit="batch")
    for start in starts:
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        if device is not None:
            xb, yb = xb.to(device), yb.to(device)
        yield xb, yb


def attack_dataset(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attack: Attack,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> Tensor:
    """Run ``attack`` over a large in-memory data set, one batch at a time.

    Since attacks run the model in eval mode, samples do not interact and the result
    does not depend on ``batch_size`` (up to floating-point round-off).

    Args:
        model: Classifier mapping ``(B, ...)`` inputs to ``(B, C)`` logits.
        x: Clean inputs, shape ``(N, ...)``, values in [0, 1]. Not modified.
        y: Labels (or targets), shape ``(N,)``.
        attack: ``attack(model, x_batch, y_batch) -> x_adv_batch``, e.g.
            ``functools.partial(pgd, eps=8 / 255, generator=g)``. A generator bound in
            it is consumed batch after batch, so the result is reproducible.
        batch_size: Samples per batch, >= 1.
        device: Where to move each batch (the model's device); ``None`` keeps ``x``'s.
        progress: Show a tqdm progress bar over batches.

    Returns:
        Adversarial inputs, shape ``(N, ...)``, on ``x``'s device.

    Raises:
        ValueError: If ``batch_size < 1``, ``x`` leaves [0, 1] or ``x`` and ``y``
            differ in length.

    Example:
        >>> import functools, torch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x, y = torch.rand(5, 1, 2, 2), torch.randint(3, (5,))
        >>> attack = functools.partial(fgsm, eps=0.1)
        >>> attack_dataset(model, x, y, attack, batch_size=2).shape
        torch.Size([5, 1, 2, 2])

    """
    _check_positive_int("batch_size", batch_size)
    _check_samples(x, y)
    _check_pixels(x)
    batches = _batches(x, y, batch_size, device, progress=progress, desc="attack")
    return torch.cat([attack(model, xb, yb).to(x.device) for xb, yb in batches])


@dataclass(frozen=True)
class RobustnessCurve:
    """Accuracy of a classifier under attack, per perturbation radius.

    Attributes:
        eps: Radii, in the order they were given.
        accuracy: Accuracy under attack at each radius, fractions in [0, 1].
        clean_accuracy: Accuracy on the clean inputs.
        attack: ``"fgsm"`` or ``"pgd"``.
        norm: ``"linf"`` or ``"l2"``.
        steps: Gradient steps per attack (1 for FGSM).
        n_samples: Number of samples evaluated.

    """

    eps: tuple[float, ...]
    accuracy: tuple[float, ...]
    clean_accuracy: float
    attack: AttackName
    norm: Norm
    steps: int
    n_samples: int

    def as_table(self) -> list[dict[str, float | int | str]]:
        """One row per eps, ready for a plot or ``pandas.DataFrame(rows)``.

        Returns:
            Rows with keys ``eps``, ``accuracy``, ``clean_accuracy``, ``attack``,
            ``norm``, ``steps`` and ``n_samples``.

        """
        fixed = {
            "clean_accuracy": self.clean_accuracy,
            "attack": self.attack,
            "norm": self.norm,
            "steps": self.steps,
            "n_samples": self.n_samples,
        }
        return [
            {"eps": eps, "accuracy": acc, **fixed}
            for eps, acc in zip(self.eps, self.accuracy, strict=True)
        ]


def _n_correct(model: nn.Module, x: Tensor, y: Tensor) -> int:
    with torch.no_grad():
        return int((model(x).argmax(dim=1) == y).sum().item())


def robustness_curve(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps_list: Sequence[float],
    *,
    attack: AttackName = "fgsm",
    norm: Norm = "linf",
    steps: int = DEFAULT_STEPS,
    step_size_factor: float = DEFAULT_STEP_SIZE_FACTOR,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    loss_fn: LossFn | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> RobustnessCurve:
    """Accuracy under an untargeted attack for each eps, over a whole data set.

    Each batch is attacked at every eps in turn and only the counts of correct
    predictions are kept, so no adversarial data set is stored. Accuracy at
    ``eps = 0`` equals the clean accuracy exactly.

    Args:
        model: Classifier mapping ``(B, ...)`` inputs to ``(B, C)`` logits; evaluated
            in eval mode, its modes restored afterwards.
        x: Clean inputs, shape ``(N, ...)``, values in [0, 1]. Not modified.
        y: True labels, shape ``(N,)``.
        eps_list: Radii, each >= 0.
        attack: ``"fgsm"`` (:func:`fgsm`: one step of length eps, no random start)
            or ``"pgd"`` (:func:`pgd`).
        norm: ``"linf"`` or ``"l2"``.
        steps: PGD steps (ignored for FGSM).
        step_size_factor: PGD step size as a multiple of ``eps / steps``, > 0.
        random_start: PGD starts from a uniform draw from the ball.
        generator: Source of PGD's random starts.
        loss_fn: ``(logits, y) -> scalar`` loss; default summed cross-entropy.
        batch_size: Samples per batch, >= 1.
        device: Where to move each batch (the model's device); ``None`` keeps ``x``'s.
        progress: Show a tqdm progress bar over batches.

    Returns:
        The curve; see :class:`RobustnessCurve`.

    Raises:
        ValueError: If an eps is negative, ``attack`` or ``norm`` is unknown, ``steps``
            or ``batch_size`` is < 1, ``x`` leaves [0, 1] or ``x`` and ``y`` differ in
            length.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x, y = torch.rand(6, 1, 2, 2), torch.randint(3, (6,))
        >>> curve = robustness_curve(model, x, y, [0.0, 0.1], batch_size=4)
        >>> curve.accuracy[0] == curve.clean_accuracy
        True

    """
    eps_tuple = tuple(float(eps) for eps in eps_list)
    _check_curve_args(eps_tuple, attack, step_size_factor)
    _check_norm(norm)
    _check_positive_int("steps", steps)
    _check_positive_int("batch_size", batch_size)
    _check_samples(x, y)
    _check_pixels(x)
    if attack == "fgsm":  # one step of length eps from x itself
        steps, step_size_factor, random_start = 1, 1.0, False
    run = functools.partial(
        pgd, model, norm=norm, steps=steps, random_start=random_start,
        generator=generator, loss_fn=loss_fn,
    )  # fmt: skip
    clean, correct = 0, [0] * len(eps_tuple)
    batches = _batches(x, y, batch_size, device, progress=progress, desc="robustness")
    with _eval_mode(model):
        for xb, yb in batches:
            clean += _n_correct(model, xb, yb)
            for i, eps in enumerate(eps_tuple):
                x_adv = run(xb, yb, eps, step_size=step_size_factor * eps / steps)
                correct[i] += _n_correct(model, x_adv, yb)
    n = x.shape[0]
    return RobustnessCurve(
        eps=eps_tuple,
        accuracy=tuple(c / n for c in correct),
        clean_accuracy=clean / n,
        attack=attack,
        norm=norm,
        steps=steps,
        n_samples=n,
    )


# ------------------------------------------------------------------- robust training


def adversarial_mix(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    fraction: float = ROBUST_FRACTION,
    eps: float = ROBUST_EPS,
    generator: torch.Generator | None = None,
    loss_fn: LossFn | None = None,
) -> Tensor:
    """Replace a random fraction of a training batch by FGSM examples.

    The authors' robust training: draw a random permutation of the ``N`` samples from
    ``generator`` and replace the first ``k = round(fraction * N)`` of them (Python's
    ``round``, halves to even) by FGSM examples at ``eps``, computed in eval mode.
    Labels are unchanged, so the returned batch pairs with ``y``.

    Args:
        model: Classifier being trained; its train/eval modes are restored.
        x: Training inputs, shape ``(N, ...)``, values in [0, 1]. Not modified.
        y: Labels, shape ``(N,)``.
        fraction: Share of the batch to replace, in [0, 1].
        eps: FGSM step length, >= 0, in pixel units of [0, 1].
        generator: Source of the permutation; ``None`` uses the global generator.
        loss_fn: ``(logits, y) -> scalar`` loss; default summed cross-entropy.

    Returns:
        The mixed batch, same shape, dtype and device as ``x``, detached.

    Raises:
        ValueError: If ``fraction`` is outside [0, 1], or as :func:`fgsm`.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x, y = torch.rand(10, 1, 2, 2), torch.randint(3, (10,))
        >>> mixed = adversarial_mix(model, x, y, fraction=0.3, eps=0.1)
        >>> int((mixed != x).flatten(1).any(dim=1).sum()) <= 3
        True

    """
    if not (0.0 <= fraction <= 1.0):
        raise ValueError(f"fraction must lie in [0, 1], got {fraction!r} (0.2 = 20%).")
    _check_inputs(x, y, eps, "linf")
    n = x.shape[0]
    k = round(fraction * n)
    device = x.device if generator is None else generator.device
    chosen = torch.randperm(n, generator=generator, device=device)[:k].to(x.device)
    mixed = x.detach().clone()
    if k > 0:
        mixed[chosen] = fgsm(model, x[chosen], y[chosen], eps, loss_fn=loss_fn)
    return mixed
