"""The book's sizes, in one place: ``smoke``, ``cpu`` and ``paper``.

* ``smoke``: seconds per page; for tests and CI. Effects may not show.
* ``cpu``: the default; faithful but smaller, sized so that the whole book
  builds on a 2-core laptop.
* ``paper``: the paper's scale (full data sets, 100 epochs, batch sizes up
  to the whole training set, 3 seeds), for a GPU.

Each page reads its profile with :func:`get_profile` and states on the page
how the profile deviates from the paper.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["PROFILES", "Profile", "get_profile"]


@dataclass(frozen=True)
class Profile:
    """Sizes of one profile.

    Attributes:
        name: The profile's name.
        train_size: Class-balanced training samples per data set
            (``None``: the whole split).
        test_size: Class-balanced test samples per data set (``None``: all).
        epochs: Training epochs of every run.
        eval_every: Epochs between test-set evaluations during training,
            per data set (the last epoch is always evaluated).
        batch_sizes: Batch sizes trained per model; ``"all"`` stands for the
            whole training subset (the gradient-descent limit).
        lr_scaling: Learning-rate scaling with batch size used by the book.
        seeds: Seeds of the repeated runs.
        hessian_samples: Training samples in each weight-Hessian, per model.
        num_eigenvalues: Eigenvalues of Fig. 1.
        max_iter: Most Lanczos vectors of a weight-Hessian solve.
        landscape_points: Grid points per axis of the loss-surface plane.
        landscape_samples: Training samples on which landscapes are drawn.
        input_hessian_samples: Test samples for lambda_1(x).
        attack_samples: Test samples attacked.
        description: How the profile deviates from the paper.

    """

    name: str
    train_size: dict[str, int | None]
    test_size: dict[str, int | None]
    epochs: int
    eval_every: dict[str, int]
    batch_sizes: dict[str, tuple[int | str, ...]]
    lr_scaling: str
    seeds: tuple[int, ...]
    hessian_samples: dict[str, int]
    num_eigenvalues: int
    max_iter: int
    landscape_points: int
    landscape_samples: int
    input_hessian_samples: int
    attack_samples: int
    description: str = field(default="")

    def to_dict(self) -> dict:
        """The profile as a plain dictionary (for records and tables)."""
        return asdict(self)

    def resolve_batch(self, batch: int | str, train_size: int) -> int:
        """A batch size as a number: ``"all"`` becomes ``train_size``."""
        return train_size if batch == "all" else int(batch)


_SMOKE = Profile(
    name="smoke",
    train_size={"mnist": 1_000, "cifar10": 256, "cifar100": 256},
    test_size={"mnist": 500, "cifar10": 256, "cifar100": 256},
    epochs=2,
    eval_every={"mnist": 1, "cifar10": 1, "cifar100": 1},
    batch_sizes={"M1": (128, "all"), "C1": (128, "all"), "C2": (128, "all"),
                 "C3": (128, "all"), "C4": (128, "all")},
    lr_scaling="sqrt",
    seeds=(0,),
    hessian_samples={"M1": 128, "C1": 32, "C2": 32, "C3": 32, "C4": 32},
    num_eigenvalues=3,
    # Few samples of barely trained models: a flat spectrum that converges
    # slowly; the smoke profile checks that cells run, not convergence.
    max_iter=40,
    landscape_points=3,
    landscape_samples=64,
    input_hessian_samples=4,
    attack_samples=64,
    description=(
        "A few hundred samples and 2 epochs: checks that every cell runs. "
        "Its numbers say nothing about the paper."
    ),
)

_CPU = Profile(
    name="cpu",
    train_size={"mnist": 20_000, "cifar10": 5_000, "cifar100": 5_000},
    test_size={"mnist": None, "cifar10": None, "cifar100": None},
    epochs=15,
    # A pass over the 10,000 CIFAR test images costs more on a CPU than an
    # epoch of 5,000 training images: test accuracy every 5 epochs there.
    eval_every={"mnist": 1, "cifar10": 5, "cifar100": 5},
    # The whole subset (one step per epoch, 15 steps in all) leaves the models
    # barely trained at this size; the largest batch is a fifth of the set
    # for MNIST, and about 40% for CIFAR.
    batch_sizes={"M1": (128, 1024, 4096), "C1": (128, 2048),
                 "C2": (128, 2048), "C3": (128, 2048), "C4": (128, 2048)},
    lr_scaling="sqrt",
    seeds=(0,),
    # 1,024 MNIST and 256 CIFAR samples (not 2,048 and 512) keep the book's
    # Hessian work within its 90 minutes.
    hessian_samples={"M1": 1024, "C1": 256, "C2": 256, "C3": 256, "C4": 256},
    num_eigenvalues=20,
    max_iter=300,
    landscape_points=15,
    landscape_samples=256,
    input_hessian_samples=128,
    attack_samples=1_000,
    description=(
        "Class-balanced training subsets (MNIST 20,000, CIFAR 5,000), whole "
        "test sets, 15 epochs instead of 100, one seed, learning rate scaled "
        "with the square root of the batch size, largest batch 4,096 (MNIST) "
        "or 2,048 (CIFAR) instead of the whole training set, Hessians on 1,024 "
        "(MNIST) or 256 (CIFAR) training samples, CIFAR test accuracy "
        "during training every 5 epochs."
    ),
)

_PAPER = Profile(
    name="paper",
    train_size={"mnist": None, "cifar10": None, "cifar100": None},
    test_size={"mnist": None, "cifar10": None, "cifar100": None},
    epochs=100,
    eval_every={"mnist": 1, "cifar10": 1, "cifar100": 1},
    batch_sizes={"M1": (128, 512, 2048, 8192, "all"),
                 "C1": (128, 512, 2048, 8192, "all"),
                 "C2": (128, 512, 2048, 8192, "all"),
                 "C3": (128, 512, 2048, 8192, "all"),
                 "C4": (128, 512, 2048, 8192, "all")},
    lr_scaling="none",
    seeds=(0, 1, 2),
    hessian_samples={"M1": 60_000, "C1": 50_000, "C2": 50_000, "C3": 50_000,
                     "C4": 50_000},
    num_eigenvalues=20,
    max_iter=500,
    landscape_points=25,
    landscape_samples=5_000,
    input_hessian_samples=1_000,
    attack_samples=10_000,
    description=(
        "The paper's scale: whole data sets, 100 epochs, batch sizes from "
        "128 to the whole training set, 3 seeds; meant for a GPU."
    ),
)

PROFILES: dict[str, Profile] = {p.name: p for p in (_SMOKE, _CPU, _PAPER)}


def get_profile(name: str) -> Profile:
    """The profile called ``name``.

    Example:
        >>> get_profile("cpu").epochs
        15

    """
    if name not in PROFILES:
        raise ValueError(
            f"unknown profile {name!r}; choose one of {sorted(PROFILES)}"
        )
    return PROFILES[name]
