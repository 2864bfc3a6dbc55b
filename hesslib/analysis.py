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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hesslib.attacks import robustness_curve
from hesslib.data import Split, balanced_subset
from hesslib.hessian import EigenResult, InputHessian, WeightHessian, lanczos
from hesslib.store import Store

__all__ = [
    "DEFAULT_TOL",
    "Measurement",
    "cached_json",
    "input_top_eigenvalues",
    "measure",
    "weight_spectrum",
]

DEFAULT_TOL = 1e-4  # the paper's relative tolerance (its Fig. 1)
_INPUT_BATCH = 64  # samples per batched input-Hessian solve
_HESSIAN_BATCH = 256  # samples per forward pass of a weight-Hessian product


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

    Returns:
        The measurement.
    """
    if store is not None and run_key is None:
        raise ValueError("measure(..., store=...) needs run_key, the trained "
                         "run's store key, to cache the measurement under")
    config = {"run": run_key, "hessian_samples": hessian_samples,
              "input_samples": input_samples, "attack_samples": attack_samples,
              "attack_eps": list(attack_eps), "tol": tol, "seed": seed,
              "test_accuracy": test_accuracy}

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
                               generator=torch.Generator().manual_seed(seed))
    probe = balanced_subset(test_split, min(config["input_samples"],
                                            len(test_split)), seed=seed)
    tops, converged = input_top_eigenvalues(
        model, probe.x, probe.y, tol=config["tol"],
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
