"""Data sets by name, as whole tensors with pixels in [0, 1].

The paper's data sets are small enough to live in memory (CIFAR-10's
training split is 600 MB in float32), so a split is two tensors on the
chosen device rather than a ``DataLoader``: batches are index slices, with no
per-sample Python overhead.

Where the files come from, in order:

1. the ``root`` argument of :func:`load`;
2. the folder named by the environment variable ``HESSLIB_DATA``;
3. with ``download=True``, a torchvision download into the cache folder
   (``HESSLIB_CACHE``, default ``~/.cache/hesslib``), converted once to the
   same ``.npz`` layout.

A data folder holds ``mnist.npz``, ``cifar10.npz`` and ``cifar100.npz``,
each with the arrays ``x_train`` (N, H, W) or (N, H, W, C) uint8, ``y_train``
(N,) int64, ``x_test``, ``y_test`` and ``classes``. A given data folder is
only read, never written.
"""

from __future__ import annotations

import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "CACHE_ENV",
    "DATASETS",
    "DATA_ENV",
    "DataError",
    "Dataset",
    "Split",
    "balanced_subset",
    "data_root",
    "load",
    "random_crop_flip",
]

logger = logging.getLogger(__name__)

DATA_ENV = "HESSLIB_DATA"
CACHE_ENV = "HESSLIB_CACHE"


@dataclass(frozen=True)
class _Spec:
    """What a data set's arrays must look like."""

    image_shape: tuple[int, ...]  # (H, W) or (H, W, C), as stored
    num_classes: int
    num_train: int
    num_test: int


DATASETS: dict[str, _Spec] = {
    "mnist": _Spec((28, 28), 10, 60_000, 10_000),
    "cifar10": _Spec((32, 32, 3), 10, 50_000, 10_000),
    "cifar100": _Spec((32, 32, 3), 100, 50_000, 10_000),
}


class DataError(RuntimeError):
    """A data file is missing, corrupt, or not of the expected layout."""


@dataclass(frozen=True)
class Split:
    """One split of a data set, held as whole tensors.

    Attributes:
        x: Images, shape (N, C, H, W), float32 in [0, 1].
        y: Labels, shape (N,), int64 in [0, num_classes).
        indices: Positions of these samples in the full split, shape (N,).

    """

    x: Tensor
    y: Tensor
    indices: Tensor

    def __len__(self) -> int:
        return self.y.shape[0]

    def to(self, device: torch.device | str) -> Split:
        """Return the split on ``device``."""
        return Split(self.x.to(device), self.y.to(device), self.indices)


@dataclass(frozen=True)
class Dataset:
    """A named data set: its training and test splits and class names."""

    name: str
    train: Split
    test: Split
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)


def data_root(root: str | os.PathLike | None = None) -> Path | None:
    """Resolve the data folder: the argument, else ``$HESSLIB_DATA``, else None."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else None


def _cache_root() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hesslib"


def load(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    download: bool = False,
) -> Dataset:
    """Load a data set by name as tensors with pixels in [0, 1].

    Args:
        name: One of ``"mnist"``, ``"cifar10"``, ``"cifar100"``.
        root: Folder holding ``<name>.npz``; defaults to ``$HESSLIB_DATA``.
        device: Where the tensors are put.
        download: If the file is not found, download it with torchvision
            into the cache folder (needs a network).

    Returns:
        The data set, images shaped (N, C, H, W).

    Raises:
        DataError: Unknown name, missing or corrupt file, wrong layout.

    """
    spec = _spec(name)
    path = _find_file(name, root, download)
    arrays = _read_npz(path, spec)
    train = _to_split(arrays["x_train"], arrays["y_train"], device)
    test = _to_split(arrays["x_test"], arrays["y_test"], device)
    classes = tuple(str(c) for c in arrays["classes"])
    logger.info("loaded %s from %s", name, path)
    return Dataset(name, train, test, classes)


def _spec(name: str) -> _Spec:
    if name not in DATASETS:
        known = ", ".join(sorted(DATASETS))
        raise DataError(f"unknown data set {name!r}; known data sets: {known}")
    return DATASETS[name]


def _find_file(
    name: str, root: str | os.PathLike | None, download: bool
) -> Path:
    folder = data_root(root)
    looked = []
    if folder is not None:
        path = folder / f"{name}.npz"
        if path.is_file():
            return path
        looked.append(str(path))
    cached = _cache_root() / f"{name}.npz"
    if cached.is_file():
        return cached
    looked.append(str(cached))
    if download:
        return _download(name, cached)
    raise DataError(
        f"data set {name!r} not found; looked for {' and '.join(looked)}. "
        f"Point {DATA_ENV} at a folder holding {name}.npz (for example "
        f"../shared/data), pass root=..., or pass download=True where a "
        "network is available."
    )


def _read_npz(path: Path, spec: _Spec) -> dict[str, np.ndarray]:
    keys = ("x_train", "y_train", "x_test", "y_test", "classes")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in keys if k not in archive.files]
            if missing:
                raise DataError(f"{path} lacks the arrays {missing}")
            arrays = {k: archive[k] for k in keys}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise DataError(
            f"{path} is not a readable .npz archive ({error}); "
            "replace it with a fresh copy"
        ) from error
    _check_arrays(path, arrays, spec)
    return arrays


def _check_arrays(path: Path, arrays: dict[str, np.ndarray], spec: _Spec) -> None:
    for split, count in (("train", spec.num_train), ("test", spec.num_test)):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        expected = (count, *spec.image_shape)
        if x.shape != expected or x.dtype != np.uint8:
            raise DataError(
                f"{path}: x_{split} is {x.dtype} {x.shape}, "
                f"expected uint8 {expected}"
            )
        if y.shape != (count,) or not np.issubdtype(y.dtype, np.integer):
            raise DataError(
                f"{path}: y_{split} is {y.dtype} {y.shape}, "
                f"expected integers of shape {(count,)}"
            )
        if y.min() < 0 or y.max() >= spec.num_classes:
            raise DataError(
                f"{path}: y_{split} has labels in [{y.min()}, {y.max()}], "
                f"expected [0, {spec.num_classes - 1}]"
            )
    if len(arrays["classes"]) != spec.num_classes:
        raise DataError(
            f"{path}: {len(arrays['classes'])} class names, "
            f"expected {spec.num_classes}"
        )


def _to_split(x: np.ndarray, y: np.ndarray, device: torch.device | str) -> Split:
    images = torch.from_numpy(x)
    if images.ndim == 3:
        images = images.unsqueeze(-1)
    images = images.permute(0, 3, 1, 2).contiguous()
    images = images.to(device).float().div_(255.0)
    labels = torch.from_numpy(y.astype(np.int64)).to(device)
    return Split(images, labels, torch.arange(len(labels)))


def balanced_subset(split: Split, size: int | None, *, seed: int = 0) -> Split:
    """Take a deterministic, class-balanced subset of a split.

    Each class gives ``size // C`` samples, and the first ``size % C``
    classes one more, chosen by a seeded permutation within the class. The
    subset keeps the split's order.

    Args:
        split: The split to draw from.
        size: Number of samples; ``None`` (or the split's length) keeps all.
        seed: Seed of the per-class permutations.

    Returns:
        The subset, whose ``indices`` refer to the full split.

    Example:
        >>> x = torch.zeros(6, 1, 2, 2)
        >>> y = torch.tensor([0, 1, 0, 1, 0, 1])
        >>> sub = balanced_subset(Split(x, y, torch.arange(6)), 4, seed=0)
        >>> sub.y.bincount().tolist()
        [2, 2]

    """
    if size is None or size == len(split):
        return split
    if not 0 < size <= len(split):
        raise ValueError(
            f"subset size {size} is out of range; use 1 to {len(split)} or None"
        )
    labels = split.y.cpu()
    classes = labels.unique()
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for rank, label in enumerate(classes.tolist()):
        members = (labels == label).nonzero().squeeze(1)
        want = size // len(classes) + (rank < size % len(classes))
        if want > len(members):
            raise ValueError(
                f"class {label} has {len(members)} samples, fewer than the "
                f"{want} a balanced subset of {size} needs; ask for fewer"
            )
        order = torch.randperm(len(members), generator=generator)
        chosen.append(members[order[:want]])
    keep = torch.cat(chosen).sort().values
    device = split.x.device
    return Split(
        split.x[keep.to(device)],
        split.y[keep.to(device)],
        split.indices[keep],
    )


def random_crop_flip(
    x: Tensor, *, padding: int = 4, generator: torch.Generator | None = None
) -> Tensor:
    """Random crop after zero padding, and random horizontal flip, per sample.

    Args:
        x: Images, shape (N, C, H, W).
        padding: Zero padding on each side before cropping back to (H, W).
        generator: Source of randomness (on ``x``'s device).

    Returns:
        Augmented images, shape (N, C, H, W); ``x`` is not modified.

    """
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    shifts = torch.randint(
        0, 2 * padding + 1, (2, n), generator=generator, device=x.device
    )
    rows = shifts[0, :, None] + torch.arange(h, device=x.device)
    cols = shifts[1, :, None] + torch.arange(w, device=x.device)
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    out = out.permute(0, 3, 1, 2)
    flip = torch.rand(n, generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def _download(name: str, target: Path) -> Path:
    """Download with torchvision and convert to the ``.npz`` layout."""
    try:
        from torchvision import datasets
    except ImportError as error:  # pragma: no cover - depends on the install
        raise DataError(
            "download=True needs torchvision; install hesslib[book]"
        ) from error
    makers = {
        "mnist": datasets.MNIST,
        "cifar10": datasets.CIFAR10,
        "cifar100": datasets.CIFAR100,
    }
    raw = target.parent / "torchvision"
    try:
        parts = {
            split: makers[name](str(raw), train=split == "train", download=True)
            for split in ("train", "test")
        }
    except Exception as error:  # network errors come in many types
        raise DataError(
            f"could not download {name!r} into {raw} ({error}); without a "
            f"network, point {DATA_ENV} at a folder holding {name}.npz"
        ) from error
    arrays = {}
    for split, part in parts.items():
        arrays[f"x_{split}"] = np.asarray(part.data, dtype=np.uint8)
        arrays[f"y_{split}"] = np.asarray(part.targets, dtype=np.int64)
    arrays["classes"] = np.asarray(parts["train"].classes)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        dir=target.parent, suffix=".npz", delete=False
    ) as handle:
        np.savez_compressed(handle, **arrays)
    os.replace(handle.name, target)
    return target
