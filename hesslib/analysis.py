"""Measurements of trained models, as the book's tables report them.

The paper characterizes a trained model by four numbers: its test
accuracy, lambda_1(theta) (the top eigenvalue of the Hessian of the mean
training loss with respect to the weights), lambda_1(x) (the top eigenvalue
of the Hessian of a sample's loss with respect to its input, averaged over
test samples) and its accuracy under attack. :func:`measure` computes them
for one model; with a results store, every measurement is computed once and
read back afterwards (:func:`cached_json`).

Choices the paper leaves open, made here and stated in the book:

* lambda_1(theta) is computed on a fixed class-balanced subset of the
  training data (its size is a profile setting), in eval mode, by Lanczos to
  a relative residual of 1e-4.
* lambda_1(x) is the mean over test samples of each sample's own top
  input-Hessian eigenvalue (cross-entropy loss, eval mode).

The book's pages also draw on the cached summaries here: extreme
eigenvalues (:func:`spectrum_summary`), spectral densities
(:func:`density_summary`), loss landscapes along Hessian eigenvectors
(:func:`landscape_summary`), accuracy under attack (:func:`attack_summary`),
and lambda_1(theta) tracked after every training epoch
(:class:`TopEigenvalueTracker`, :func:`tracked_run`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hesslib.attacks import robustness_curve
from hesslib.data import Split, balanced_subset
from hesslib.experiments import RunResult, profile_spec, run_training
from hesslib.hessian import (
    ConvergenceWarning,
    EigenResult,
    InputHessian,
    WeightHessian,
    lanczos,
    spectral_density,
)
from hesslib.landscape import loss_along_line, loss_surface, random_direction
from hesslib.profiles import Profile
from hesslib.store import Store
from hesslib.train import EpochRecord

__all__ = [
    "DEFAULT_TOL",
    "Measurement",
    "TopEigenvalueTracker",
    "attack_summary",
    "cached_json",
    "density_summary",
    "input_top_eigenvalues",
    "landscape_summary",
    "measure",
    "spectrum_summary",
    "state_copy",
    "state_unchanged",
    "tracked_run",
    "weight_spectrum",
]

DEFAULT_TOL = 1e-4  # the paper's relative tolerance (its Fig. 1)
_INPUT_BATCH = 64  # samples per batched input-Hessian solve
_HESSIAN_BATCH = 256  # samples per forward pass of a weight-Hessian product
_MIN_INPUT_ITER = 20  # input Hessians converge fast: a floor for small budgets
# Part of every cached result's key, raised whenever the measuring code
# changes what it computes, so that a store never serves an older code's
# results. 2: the eigen solvers accumulate norms and Rayleigh quotients in
# float64 (float32 sums had put CIFAR eigenvalues off by up to 5e-4).
MEASUREMENT_REVISION = 2


def cached_json(
    store: Store | None,
    kind: str,
    config: Mapping[str, Any],
    compute: Callable[[], dict],
    *,
    parents: Sequence[str] = (),
) -> dict:
    """``compute()``, or its stored result for the same ``kind`` and ``config``.

    Args:
        store: Where results are kept; ``None`` always computes.
        kind: The kind of result (a plain name, e.g. ``"spectrum"``).
        config: Everything that determines the result (JSON-able).
        compute: Makes the result, a JSON-able dictionary.
        parents: Store references (``"kind/key"``) it was derived from.

    Returns:
        The result.
    """
    config = {**config, "measurement_revision": MEASUREMENT_REVISION}
    if store is not None:
        stored = store.get_json(kind, config)
        if stored is not None:
            return stored
    result = compute()
    if store is not None:
        store.put_json(kind, config, result, parents=parents)
    return result


def weight_spectrum(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    k: int = 1,
    which: str = "largest",
    tol: float = DEFAULT_TOL,
    max_iter: int = 300,
    batch_size: int = _HESSIAN_BATCH,
    init: Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> EigenResult:
    """Extreme eigenpairs of the weight Hessian of the mean cross-entropy.

    Args:
        model: The classifier (evaluated in eval mode; its mode is restored).
        x: Inputs, shape (N, ...), in [0, 1].
        y: Labels, shape (N,).
        k: Eigenpairs wanted at each end.
        which: ``"largest"``, ``"smallest"`` or ``"both"``.
        tol: Relative residual every wanted pair must reach.
        max_iter: Most Lanczos vectors.
        batch_size: Samples per forward pass.
        init: Start vector, shape (P,) (e.g. last epoch's eigenvector).
        generator: Source of the random start.
        progress: Show a progress bar over products.

    Returns:
        The Lanczos result; eigenvectors are flat, shape (P, k).
    """
    operator = WeightHessian(model, F.cross_entropy, (x, y), batch_size=batch_size)
    return lanczos(operator, k, which=which, tol=tol, max_iter=max_iter,
                   init=init, generator=generator, progress=progress)


def input_top_eigenvalues(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    tol: float = DEFAULT_TOL,
    max_iter: int = 100,
    batch_size: int = _INPUT_BATCH,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Each sample's top input-Hessian eigenvalue of its cross-entropy loss.

    Args:
        model: The classifier (eval mode inside; its mode is restored).
        x: Inputs, shape (N, ...), in [0, 1].
        y: Labels, shape (N,).
        tol: Relative residual per sample.
        max_iter: Most batched products per batch.
        batch_size: Samples solved together (one product serves them all).
        generator: Source of the random starts.

    Returns:
        ``(top, converged)``, each of shape (N,).
    """
    tops, flags = [], []
    for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
        operator = InputHessian(model, F.cross_entropy, xb, yb)
        result = operator.extremes(which="largest", tol=tol, max_iter=max_iter,
                                   generator=generator)
        tops.append(result.top)
        flags.append(result.converged)
    return torch.cat(tops), torch.cat(flags)


@dataclass(frozen=True)
class Measurement:
    """The paper's numbers for one trained model.

    Attributes:
        test_accuracy: Accuracy on the whole test split of the run.
        weight_top: lambda_1(theta) on the Hessian subset.
        weight_residual: Its relative residual.
        weight_products: Hessian-vector products used.
        input_top_mean: lambda_1(x): mean of the samples' top eigenvalues.
        input_top_std_error: Standard error of that mean.
        input_converged: Fraction of samples whose solve converged.
        clean_accuracy: Accuracy on the attacked subset, unperturbed.
        attack_eps: The FGSM perturbation sizes.
        attack_accuracy: Accuracy under FGSM per ``attack_eps``.
    """

    test_accuracy: float
    weight_top: float
    weight_residual: float
    weight_products: int
    input_top_mean: float
    input_top_std_error: float
    input_converged: float
    clean_accuracy: float
    attack_eps: tuple[float, ...]
    attack_accuracy: tuple[float, ...]

    def to_dict(self) -> dict:
        """The measurement as a JSON-able dictionary."""
        return asdict(self)


def measure(
    model: nn.Module,
    train_split: Split,
    test_split: Split,
    *,
    test_accuracy: float,
    hessian_samples: int,
    input_samples: int,
    attack_samples: int,
    attack_eps: Sequence[float],
    tol: float = DEFAULT_TOL,
    seed: int = 0,
    store: Store | None = None,
    run_key: str | None = None,
    max_iter: int = 300,
) -> Measurement:
    """Measure lambda_1(theta), lambda_1(x) and FGSM accuracy of a model.

    Each quantity uses a fixed class-balanced subset (seeded by ``seed``): of
    the training split for the weight Hessian, of the test split for the
    input Hessian and the attacks.

    Args:
        model: The trained classifier.
        train_split: Its training data.
        test_split: Its test data.
        test_accuracy: Its accuracy on the whole test split (from training).
        hessian_samples: Training samples in the weight Hessian.
        input_samples: Test samples for lambda_1(x).
        attack_samples: Test samples attacked.
        attack_eps: FGSM perturbation sizes (L-infinity, pixels in [0, 1]).
        tol: Relative residual of the eigen solves.
        seed: Seed of the subsets and random starts.
        store: Where to cache the measurement (keyed by ``run_key`` and the
            arguments); ``None`` computes every time.
        run_key: The store key of the trained run (required with a store).
        max_iter: Most Lanczos vectors of the weight-Hessian solve (the
            input-Hessian solves take at most a third of it, and at least 20).

    Returns:
        The measurement.
    """
    if store is not None and run_key is None:
        raise ValueError("measure(..., store=...) needs run_key, the trained "
                         "run's store key, to cache the measurement under")
    config = {"run": run_key, "hessian_samples": hessian_samples,
              "input_samples": input_samples, "attack_samples": attack_samples,
              "attack_eps": list(attack_eps), "tol": tol, "seed": seed,
              "test_accuracy": test_accuracy, "max_iter": max_iter}

    def compute() -> dict:
        return _measure(model, train_split, test_split, config).to_dict()

    parents = [f"run/{run_key}"] if run_key else []
    stored = cached_json(store, "measurement", config, compute, parents=parents)
    stored["attack_eps"] = tuple(stored["attack_eps"])
    stored["attack_accuracy"] = tuple(stored["attack_accuracy"])
    return Measurement(**stored)


def _measure(
    model: nn.Module, train_split: Split, test_split: Split, config: dict
) -> Measurement:
    seed = config["seed"]
    hess = balanced_subset(train_split, min(config["hessian_samples"],
                                            len(train_split)), seed=seed)
    spectrum = weight_spectrum(model, hess.x, hess.y, tol=config["tol"],
                               max_iter=config["max_iter"],
                               generator=torch.Generator().manual_seed(seed))
    probe = balanced_subset(test_split, min(config["input_samples"],
                                            len(test_split)), seed=seed)
    tops, converged = input_top_eigenvalues(
        model, probe.x, probe.y, tol=config["tol"],
        max_iter=max(_MIN_INPUT_ITER, config["max_iter"] // 3),
        generator=torch.Generator(device=probe.x.device).manual_seed(seed))
    attacked = balanced_subset(test_split, min(config["attack_samples"],
                                               len(test_split)), seed=seed)
    curve = robustness_curve(model, attacked.x, attacked.y,
                             [0.0, *config["attack_eps"]], attack="fgsm")
    tops = tops.double()
    return Measurement(
        test_accuracy=config["test_accuracy"],
        weight_top=spectrum.eigenvalues[0].item(),
        weight_residual=spectrum.residuals[0].item(),
        weight_products=spectrum.num_products,
        input_top_mean=tops.mean().item(),
        input_top_std_error=(tops.std() / math.sqrt(len(tops))).item()
        if len(tops) > 1 else float("nan"),
        input_converged=converged.double().mean().item(),
        clean_accuracy=curve.clean_accuracy,
        attack_eps=tuple(config["attack_eps"]),
        attack_accuracy=tuple(curve.accuracy[1:]),
    )


# ----------------------------------------------------------- pages' summaries


def _eigen_dict(result: EigenResult) -> dict:
    return {"eigenvalues": result.eigenvalues.double().tolist(),
            "residuals": result.residuals.double().tolist(),
            "converged": bool(result.converged),
            "products": int(result.num_products),
            "iterations": int(result.num_iterations)}


def spectrum_summary(
    model: nn.Module,
    split: Split,
    *,
    samples: int,
    k: int,
    which: str = "largest",
    tol: float = DEFAULT_TOL,
    max_iter: int = 200,
    seed: int = 0,
    store: Store | None = None,
    run_key: str | None = None,
) -> dict:
    """Extreme weight-Hessian eigenvalues on a class-balanced subset, cached.

    The Hessian is that of the mean cross-entropy over ``samples``
    class-balanced training samples (seeded by ``seed``), in eval mode
    (:func:`weight_spectrum`, Lanczos with full reorthogonalization).

    Args:
        model: The trained classifier.
        split: Its training split.
        samples: Samples in the Hessian (at most ``len(split)``).
        k: Eigenvalues wanted (at each end for ``"both"``).
        which: ``"largest"`` (descending), ``"smallest"`` (ascending) or
            ``"both"``.
        tol: Relative residual every wanted pair must reach.
        max_iter: Most Lanczos vectors (memory: two ``[P, max_iter]`` blocks).
        seed: Seed of the subset and the random start.
        store: Where to cache it (under ``run_key`` and the arguments).
        run_key: The trained run's store key (required with a store).

    Returns:
        A dict with the keys ``eigenvalues`` and ``residuals`` (lists of k),
        ``converged``, ``products``, ``iterations`` and ``samples``; the
        residuals are true relative residuals, whether or not ``tol`` was
        reached.

    """
    _need_key(store, run_key, "spectrum_summary")
    size = min(samples, len(split))
    config = {"run": run_key, "samples": size, "k": k, "which": which,
              "tol": tol, "max_iter": max_iter, "seed": seed}

    def compute() -> dict:
        sub = balanced_subset(split, size, seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # reported
            result = weight_spectrum(
                model, sub.x, sub.y, k=k, which=which, tol=tol, max_iter=max_iter,
                generator=torch.Generator().manual_seed(seed))
        return {**_eigen_dict(result), "samples": size}

    return cached_json(store, "spectrum", config, compute, parents=_parents(run_key))


def density_summary(
    model: nn.Module,
    split: Split,
    *,
    samples: int,
    num_runs: int = 3,
    num_steps: int = 40,
    num_points: int = 400,
    seed: int = 0,
    store: Store | None = None,
    run_key: str | None = None,
) -> dict:
    r"""Spectral density of the weight Hessian by stochastic Lanczos, cached.

    :func:`hesslib.hessian.spectral_density` on the Hessian of
    :func:`spectrum_summary` (same subset for the same ``samples`` and
    ``seed``): ``num_runs`` Rademacher starts of ``num_steps`` Lanczos steps,
    Gaussian smoothing of 1% of the spectral width, evaluated on
    ``num_points`` grid points. It costs ``num_runs * num_steps`` products.

    Returns:
        A dict with the keys ``grid`` and ``density`` (lists of P),
        ``nodes`` and ``weights`` (lists of R*m), ``sigma`` and
        ``products``; the weights sum to ``num_runs`` (each run's to one),
        the density integrates to one.

    """
    _need_key(store, run_key, "density_summary")
    size = min(samples, len(split))
    config = {"run": run_key, "samples": size, "num_runs": num_runs,
              "num_steps": num_steps, "num_points": num_points, "seed": seed}

    def compute() -> dict:
        sub = balanced_subset(split, size, seed=seed)
        op = WeightHessian(model, F.cross_entropy, (sub.x, sub.y),
                           batch_size=_HESSIAN_BATCH)
        result = spectral_density(op, num_runs=num_runs, num_steps=num_steps,
                                  num_points=num_points,
                                  generator=torch.Generator().manual_seed(seed))
        return {"grid": result.grid.tolist(), "density": result.density.tolist(),
                "nodes": result.nodes.reshape(-1).tolist(),
                "weights": result.weights.reshape(-1).tolist(),
                "sigma": float(result.sigma), "products": int(result.num_products)}

    return cached_json(store, "density", config, compute, parents=_parents(run_key))


def landscape_summary(
    model: nn.Module,
    split: Split,
    *,
    samples: int,
    points: int,
    radius: float,
    tol: float = DEFAULT_TOL,
    max_iter: int = 200,
    seed: int = 0,
    store: Store | None = None,
    run_key: str | None = None,
) -> dict:
    r"""The loss around a trained model along its top Hessian eigenvectors.

    On ``samples`` class-balanced training samples (seeded by ``seed``), in
    eval mode: the top two unit eigenvectors :math:`v_1, v_2` of the weight
    Hessian (Lanczos to ``tol``), a Gaussian random direction :math:`d` of
    the same norm as :math:`v_1` (:func:`hesslib.landscape.random_direction`
    with ``normalization="global"``, ``like=v1``: a random unit direction),
    and on ``points`` positions :math:`\epsilon \in [-r, r]`:

    * the lines :math:`L(\theta + \epsilon v_1)` and
      :math:`L(\theta + \epsilon d)` (Fig. 2);
    * the surface :math:`L(\theta + \epsilon_1 v_1 + \epsilon_2 v_2)` on the
      ``points x points`` grid (Fig. 3), and likewise over the plane of
      :math:`d` and a second random unit direction.

    The model's parameters and buffers are never written (the landscape
    functions evaluate perturbed copies through ``functional_call``).

    Returns:
        A dict with the keys ``eps``, ``line_v1``, ``line_random``,
        ``accuracy_v1`` and ``accuracy_random`` (lists of A), ``surface_v``
        and ``surface_random`` (A x A nested lists), ``eigenvalues`` and
        ``residuals`` (of v1 and v2), ``converged``, ``products`` and
        ``samples``; ``surface[i][j]`` is at ``(eps[i], eps[j])``.

    """
    _need_key(store, run_key, "landscape_summary")
    if not (math.isfinite(radius) and radius > 0) or points < 2:
        raise ValueError(f"landscape_summary needs radius > 0 and points >= 2, got "
                         f"radius={radius!r}, points={points!r}")
    size = min(samples, len(split))
    config = {"run": run_key, "samples": size, "points": points, "radius": radius,
              "tol": tol, "max_iter": max_iter, "seed": seed}

    def compute() -> dict:
        sub = balanced_subset(split, size, seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # reported
            eig = weight_spectrum(model, sub.x, sub.y, k=2, tol=tol,
                                  max_iter=max_iter,
                                  generator=torch.Generator().manual_seed(seed))
        v1, v2 = eig.eigenvectors[:, 0], eig.eigenvectors[:, 1]
        gen = torch.Generator().manual_seed(seed + 1)
        d1, d2 = (random_direction(model, like=v1, generator=gen,
                                   normalization="global") for _ in range(2))
        eps = torch.linspace(-radius, radius, points, dtype=torch.float64)
        along = loss_along_line(model, v1, eps, sub.x, sub.y)
        rand = loss_along_line(model, d1, eps, sub.x, sub.y)
        plane = loss_surface(model, v1, v2, eps, eps, sub.x, sub.y)
        rplane = loss_surface(model, d1, d2, eps, eps, sub.x, sub.y)
        return {"eps": eps.tolist(), **_eigen_dict(eig),
                "line_v1": along.loss.tolist(), "line_random": rand.loss.tolist(),
                "accuracy_v1": along.accuracy.tolist(),
                "accuracy_random": rand.accuracy.tolist(),
                "surface_v": plane.loss.tolist(),
                "surface_random": rplane.loss.tolist(), "samples": size}

    return cached_json(store, "landscape", config, compute,
                       parents=_parents(run_key))


def attack_summary(
    model: nn.Module,
    split: Split,
    *,
    attack: str,
    eps: Sequence[float],
    samples: int,
    steps: int = 10,
    seed: int = 0,
    store: Store | None = None,
    run_key: str | None = None,
) -> dict:
    """Accuracy under an L-infinity attack per eps, on a balanced test subset.

    :func:`hesslib.attacks.robustness_curve` on ``samples`` class-balanced
    test samples (seeded by ``seed``), pixels in [0, 1]. ``"pgd"`` takes
    ``steps`` steps of size ``2.5 * eps / steps`` from a random start
    (seeded by ``seed``); ``"fgsm"`` one step of size eps.

    Returns:
        A dict with the keys ``eps`` and ``accuracy`` (lists of E),
        ``clean_accuracy``, ``attack``, ``steps`` and ``samples``.

    """
    _need_key(store, run_key, "attack_summary")
    size = min(samples, len(split))
    config = {"run": run_key, "attack": attack, "eps": [float(e) for e in eps],
              "samples": size, "steps": steps, "seed": seed}

    def compute() -> dict:
        sub = balanced_subset(split, size, seed=seed)
        gen = torch.Generator(device=sub.x.device).manual_seed(seed)
        curve = robustness_curve(model, sub.x, sub.y, config["eps"],
                                 attack=attack, steps=steps, generator=gen)
        return {"eps": list(curve.eps), "accuracy": list(curve.accuracy),
                "clean_accuracy": curve.clean_accuracy, "attack": attack,
                "steps": curve.steps, "samples": size}

    return cached_json(store, "attack", config, compute, parents=_parents(run_key))


def state_copy(model: nn.Module) -> dict[str, Tensor]:
    """A detached copy of every parameter and buffer of ``model``, by name."""
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def state_unchanged(model: nn.Module, before: Mapping[str, Tensor]) -> bool:
    """Whether ``model``'s parameters and buffers equal ``before`` bit for bit.

    Example:
        >>> model = nn.BatchNorm1d(2)
        >>> before = state_copy(model)
        >>> state_unchanged(model, before)
        True
        >>> with torch.no_grad():
        ...     _ = model.weight.add_(1.0)
        >>> state_unchanged(model, before)
        False

    """
    now = model.state_dict()
    return now.keys() == before.keys() and all(
        torch.equal(now[name], before[name]) for name in now)


def _need_key(store: Store | None, run_key: str | None, name: str) -> None:
    if store is not None and run_key is None:
        raise ValueError(f"{name}(..., store=...) needs run_key, the trained run's "
                         "store key (result.key), to cache the result under")


def _parents(run_key: str | None) -> list[str]:
    return [f"run/{run_key}"] if run_key else []


# ------------------------------------------------------ tracking during training


class TopEigenvalueTracker:
    r"""An ``on_epoch_end`` callback: lambda_1(theta) after every epoch.

    After each epoch it computes the top eigenvalue of the weight Hessian of
    the mean cross-entropy over the fixed samples ``(x, y)``, in eval mode,
    by Lanczos to the relative residual ``tol``, warm-started from the
    previous epoch's top eigenvector (after a resume, the first epoch starts
    from a random vector). It returns ``{"lambda_1": ..., "lambda_1_residual":
    ..., "lambda_1_products": ...}`` for the epoch's ``record.extras``. The
    operator's determinism check (two extra products) runs at the first call
    only. The weights are not touched.

    Args:
        x: Inputs of the Hessian samples, shape (N, ...).
        y: Their labels, shape (N,).
        tol: Relative residual of each solve.
        max_iter: Most products per solve.
        seed: Seed of the random starts (epoch ``e`` uses ``seed + e``).

    Example:
        >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> tracker = TopEigenvalueTracker(torch.rand(8, 3), torch.arange(8) % 2)
        >>> tracker.name
        'lambda_1/lanczos tol=0.0001 max_iter=100 samples=8 seed=0'

    """

    def __init__(self, x: Tensor, y: Tensor, *, tol: float = DEFAULT_TOL,
                 max_iter: int = 100, seed: int = 0) -> None:
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"TopEigenvalueTracker needs as many labels as inputs, "
                             f"at least one; got {len(x)} inputs, {len(y)} labels")
        self.x, self.y = x, y
        self.tol, self.max_iter, self.seed = tol, max_iter, seed
        self.vector: Tensor | None = None

    @property
    def name(self) -> str:
        """What it computes: the ``callback_name`` of :func:`run_training`."""
        return (f"lambda_1/lanczos tol={self.tol:g} max_iter={self.max_iter} "
                f"samples={len(self.x)} seed={self.seed}")

    def __call__(self, model: nn.Module, record: EpochRecord) -> dict[str, float]:
        """Compute the epoch's lambda_1; see the class docstring."""
        op = WeightHessian(model, F.cross_entropy, (self.x, self.y),
                           batch_size=_HESSIAN_BATCH,
                           check_determinism=self.vector is None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # in the residual
            result = lanczos(op, 1, tol=self.tol, max_iter=self.max_iter,
                             init=self.vector,
                             generator=torch.Generator().manual_seed(
                                 self.seed + record.epoch))
        self.vector = result.eigenvectors[:, 0].detach().clone()
        return {"lambda_1": result.eigenvalues[0].item(),
                "lambda_1_residual": result.residuals[0].item(),
                "lambda_1_products": float(result.num_products)}


def tracked_run(
    profile: Profile,
    model: str,
    batch: int | str,
    *,
    splits: tuple[Split, Split],
    device: torch.device | str = "cpu",
    store: Store | None = None,
    seed: int = 0,
    tol: float = DEFAULT_TOL,
    max_iter: int = 100,
    **overrides: Any,
) -> RunResult:
    """A run of ``profile`` with lambda_1(theta) tracked after every epoch.

    The run of :func:`hesslib.experiments.profile_spec` (``overrides`` such as
    ``robust="fgsm_mix"`` go to its training configuration), trained with a
    :class:`TopEigenvalueTracker` on the profile's ``hessian_samples[model]``
    class-balanced training samples; ``record.extras["lambda_1"]`` of its
    history holds the values. It is stored under its own key (the tracker's
    name enters it), apart from the untracked run; the callback draws no
    random numbers that training uses, so its weights are those of the
    untracked run.

    Returns:
        The run, trained or loaded from ``store``.

    """
    train_split = splits[0]
    spec = profile_spec(profile, model, batch, train_size=len(train_split),
                        seed=seed, **overrides)
    size = min(profile.hessian_samples[model], len(train_split))
    sub = balanced_subset(train_split, size, seed=seed)
    tracker = TopEigenvalueTracker(sub.x, sub.y, tol=tol, max_iter=max_iter,
                                   seed=seed)
    return run_training(spec, splits=splits, device=device, store=store,
                        on_epoch_end=tracker, callback_name=tracker.name)
