"""Training runs as the book describes them.

A run is a model name, a data set size and a training configuration,
resolved into a trained model and its history.

This is the glue between :mod:`hesslib.data`, :mod:`hesslib.models` and
:mod:`hesslib.train`; pages call it so that they hold no training logic.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from hesslib import data as data_lib
from hesslib.models import MODEL_DATA, build_model
from hesslib.train import EpochRecord, TrainConfig, train

__all__ = [
    "DEVICE_ENV",
    "RunResult",
    "RunSpec",
    "load_splits",
    "resolve_device",
    "run_training",
]

DEVICE_ENV = "HESSLIB_DEVICE"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The device to compute on.

    ``"auto"`` takes ``$HESSLIB_DEVICE`` if set, else CUDA when available,
    else the CPU.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')

    """
    if str(device) == "auto":
        device = os.environ.get(DEVICE_ENV) or (
            "cuda" if torch.cuda.is_available() else "cpu"
        )
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(
            f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda'"
        ) from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available")
    return resolved


@dataclass(frozen=True)
class RunSpec:
    """One training run of the book.

    Attributes:
        model: Model name (``"M1"``, ``"C1"``, ...).
        train_size: Class-balanced training samples (``None``: all).
        test_size: Class-balanced test samples (``None``: all).
        subset_seed: Seed of the class-balanced subsets.
        config: The training configuration.

    """

    model: str
    train_size: int | None
    test_size: int | None
    config: TrainConfig
    subset_seed: int = 0

    @property
    def dataset(self) -> str:
        """Name of the model's data set."""
        return MODEL_DATA[self.model]

    def to_dict(self) -> dict:
        """A plain dictionary: everything that determines the run."""
        record = asdict(self)
        record["dataset"] = self.dataset
        return record


@dataclass
class RunResult:
    """A trained model and its per-epoch history."""

    spec: RunSpec
    model: nn.Module
    history: list[EpochRecord] = field(default_factory=list)

    @property
    def final(self) -> EpochRecord:
        """The last epoch's record."""
        return self.history[-1]


def load_splits(
    dataset: str,
    train_size: int | None,
    test_size: int | None,
    *,
    subset_seed: int = 0,
    root: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
) -> tuple[data_lib.Split, data_lib.Split]:
    """Training and test splits of ``dataset``, class-balanced subsets."""
    full = data_lib.load(dataset, root=root, device=device)
    train_split = data_lib.balanced_subset(full.train, train_size, seed=subset_seed)
    test_split = data_lib.balanced_subset(full.test, test_size, seed=subset_seed)
    return train_split, test_split


def run_training(
    spec: RunSpec,
    *,
    splits: tuple[data_lib.Split, data_lib.Split],
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> RunResult:
    """Train ``spec.model`` on ``splits`` with ``spec.config``.

    The initial weights are seeded by ``spec.config.seed``.

    Args:
        spec: The run.
        splits: Training and test splits (as from :func:`load_splits`).
        device: Where to train.
        progress: Show progress bars.

    Returns:
        The trained model (in eval mode) and its history.

    """
    train_split, test_split = (s.to(device) for s in splits)
    model = build_model(spec.model, seed=spec.config.seed).to(device)
    history = train(model, train_split, test_split, spec.config,
                    progress=progress)
    model.eval()
    return RunResult(spec, model, history)
