"""Training with SGD at any batch size, as in the paper.

A batch of ``B`` samples is processed in chunks of ``chunk_size`` (128, as in
the authors' code): each chunk's summed loss is back-propagated, divided by
``B``, and the gradients accumulate, so one optimizer step sees the gradient
of the batch's mean loss while memory stays bounded by the chunk. With
train-mode BatchNorm each chunk is normalized with its own statistics, as in
the authors' code; for models without BatchNorm (M1) one accumulated step
equals one step on the whole batch.

The learning rate follows the paper's schedule: ``lr`` (0.01), halved every
5 epochs, optionally scaled with the batch size relative to
``base_batch_size`` (``"none"``, ``"linear"`` or ``"sqrt"``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hesslib.data import Split, random_crop_flip

__all__ = [
    "EpochRecord",
    "NonFiniteLossError",
    "TrainConfig",
    "accumulated_step_gradient",
    "evaluate",
    "gradient_norm",
    "learning_rate",
    "train",
]

logger = logging.getLogger(__name__)

LrScaling = Literal["none", "linear", "sqrt"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run besides model and data.

    Attributes:
        batch_size: Samples per optimizer step; at most the training set.
        chunk_size: Samples per forward/backward pass (gradient accumulation).
        epochs: Passes over the training set.
        lr: Base learning rate (the paper: 0.01).
        momentum: SGD momentum (the paper: 0.9).
        lr_decay: Factor applied every ``lr_decay_every`` epochs (0.5).
        lr_decay_every: Epochs between decays (5).
        lr_scaling: How the learning rate grows with the batch size.
        base_batch_size: Batch size at which no scaling applies.
        weight_decay: L2 penalty of SGD (the paper: none stated; 0).
        augment: Random crop and flip per batch (off, as the authors' code).
        seed: Seed of the batch order and augmentation of every epoch.
        grad_norm_samples: Size of the fixed training subset on which the
            full gradient norm is measured after each epoch (eval mode).
        eval_batch_size: Batch size of evaluation passes.

    """

    batch_size: int = 128
    chunk_size: int = 128
    epochs: int = 100
    lr: float = 0.01
    momentum: float = 0.9
    lr_decay: float = 0.5
    lr_decay_every: int = 5
    lr_scaling: LrScaling = "none"
    base_batch_size: int = 128
    weight_decay: float = 0.0
    augment: bool = False
    seed: int = 0
    grad_norm_samples: int = 1024
    eval_batch_size: int = 1024

    def __post_init__(self) -> None:
        for name in ("batch_size", "chunk_size", "epochs", "lr_decay_every",
                     "base_batch_size", "grad_norm_samples", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if self.lr_scaling not in ("none", "linear", "sqrt"):
            raise ValueError(
                f"lr_scaling must be 'none', 'linear' or 'sqrt', "
                f"got {self.lr_scaling!r}"
            )

    def to_dict(self) -> dict:
        """The configuration as a plain dictionary (for records and keys)."""
        return asdict(self)


@dataclass(frozen=True)
class EpochRecord:
    """What happened in one epoch.

    Attributes:
        epoch: 1-based epoch number.
        lr: Learning rate used in the epoch.
        train_loss: Mean loss over the epoch's steps (train mode).
        train_accuracy: Accuracy over the epoch's steps (train mode).
        test_loss: Mean loss on the test split (eval mode).
        test_accuracy: Accuracy on the test split (eval mode).
        grad_norm: Norm of the full gradient of the mean loss on the fixed
            gradient subset (eval mode), after the epoch.
        seconds: Wall time of the epoch's training steps.
        steps: Optimizer steps taken in the epoch.

    """

    epoch: int
    lr: float
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    grad_norm: float
    seconds: float
    steps: int


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, step: int, loss: float):
        super().__init__(
            f"non-finite loss {loss} at epoch {epoch}, step {step}; lower the "
            "learning rate (or its batch-size scaling) and rerun"
        )
        self.epoch, self.step, self.loss = epoch, step, loss


def learning_rate(config: TrainConfig, epoch: int) -> float:
    """Learning rate of 1-based ``epoch``: scaled, then step-decayed.

    Example:
        >>> cfg = TrainConfig(batch_size=512, lr_scaling="sqrt")
        >>> learning_rate(cfg, 1), learning_rate(cfg, 6)
        (0.02, 0.01)

    """
    ratio = config.batch_size / config.base_batch_size
    scale = {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}
    decays = (epoch - 1) // config.lr_decay_every
    return config.lr * scale[config.lr_scaling] * config.lr_decay**decays


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Shuffled index batches covering ``range(n)``; the last may be smaller."""
    order = torch.randperm(n, generator=generator)
    yield from order.split(batch_size)


def accumulated_step_gradient(
    model: nn.Module, x: Tensor, y: Tensor, chunk_size: int
) -> tuple[float, int]:
    """Accumulate the gradient of the batch's mean loss over chunks.

    Each chunk's summed cross-entropy is divided by the batch size ``N`` and
    back-propagated, so ``p.grad`` ends up holding
    ``(1 / N) * sum_chunks grad(sum_{i in chunk} loss_i)``.

    Args:
        model: The model, in the mode the caller chose.
        x: Batch inputs, shape (N, ...).
        y: Batch labels, shape (N,).
        chunk_size: Samples per forward/backward pass.

    Returns:
        The batch's summed loss and number of correct predictions.

    """
    total_loss, correct = 0.0, 0
    for xc, yc in zip(x.split(chunk_size), y.split(chunk_size)):
        logits = model(xc)
        loss = F.cross_entropy(logits, yc, reduction="sum")
        (loss / len(y)).backward()
        total_loss += loss.item()
        correct += (logits.argmax(1) == yc).sum().item()
    return total_loss, correct


@torch.no_grad()
def evaluate(
    model: nn.Module, split: Split, *, batch_size: int = 1024
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``split``, in eval mode.

    The model's mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        loss, correct = 0.0, 0
        for x, y in zip(split.x.split(batch_size), split.y.split(batch_size)):
            logits = model(x)
            loss += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
    finally:
        model.train(was_training)
    return loss / len(split), correct / len(split)


def gradient_norm(
    model: nn.Module, x: Tensor, y: Tensor, *, chunk_size: int = 1024
) -> float:
    """Norm of the gradient of the mean loss on ``(x, y)``, in eval mode.

    Parameter gradients and the model's mode are left as they were.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    model.eval()
    try:
        total = [torch.zeros_like(p) for p in params]
        for xc, yc in zip(x.split(chunk_size), y.split(chunk_size)):
            loss = F.cross_entropy(model(xc), yc, reduction="sum") / len(y)
            for acc, g in zip(total, torch.autograd.grad(loss, params)):
                acc += g
    finally:
        model.train(was_training)
    return torch.sqrt(sum((g.double() ** 2).sum() for g in total)).item()


EpochCallback = Callable[[nn.Module, EpochRecord], None]


@dataclass
class _Progress:
    """An optional tqdm bar over optimizer steps."""

    enabled: bool
    total: int
    desc: str
    bar: object = field(default=None, init=False)

    def __enter__(self) -> _Progress:
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=self.desc, leave=False)
        return self

    def update(self, **postfix: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(postfix, refresh=False)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def train(
    model: nn.Module,
    train_split: Split,
    test_split: Split,
    config: TrainConfig,
    *,
    on_epoch_end: EpochCallback | None = None,
    progress: bool = False,
    start_epoch: int = 1,
    optimizer: torch.optim.Optimizer | None = None,
) -> list[EpochRecord]:
    """Train ``model`` with SGD and return the per-epoch history.

    Each epoch shuffles the training split with a generator seeded by
    ``(config.seed, epoch)``, so a run resumed at ``start_epoch`` sees the
    same batches as an uninterrupted one.

    Args:
        model: The model; it and the splits must be on the same device.
        train_split: Training data.
        test_split: Evaluation data for the per-epoch record.
        config: The training configuration.
        on_epoch_end: Called with the model and the epoch's record.
        progress: Show a progress bar over steps.
        start_epoch: First epoch to run (for resuming).
        optimizer: An SGD optimizer whose state to continue (for resuming);
            a fresh one is made when ``None``.

    Returns:
        One record per epoch run.

    Raises:
        NonFiniteLossError: The loss became NaN or infinite.

    """
    if config.batch_size > len(train_split):
        raise ValueError(
            f"batch_size {config.batch_size} exceeds the training set "
            f"({len(train_split)} samples); use at most {len(train_split)}"
        )
    optimizer = optimizer or make_optimizer(model, config)
    probe = _gradient_probe(train_split, config)
    history = []
    for epoch in range(start_epoch, config.epochs + 1):
        record = _train_epoch(model, optimizer, train_split, test_split,
                              probe, config, epoch, progress)
        history.append(record)
        logger.info("epoch %d: %s", epoch, record)
        if on_epoch_end is not None:
            on_epoch_end(model, record)
    return history


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.SGD:
    """The SGD optimizer of ``config`` over the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def _gradient_probe(split: Split, config: TrainConfig) -> tuple[Tensor, Tensor]:
    """The fixed training subset on which the gradient norm is measured."""
    generator = torch.Generator().manual_seed(config.seed)
    size = min(config.grad_norm_samples, len(split))
    keep = torch.randperm(len(split), generator=generator)[:size]
    keep = keep.to(split.x.device)
    return split.x[keep], split.y[keep]


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_split: Split,
    test_split: Split,
    probe: tuple[Tensor, Tensor],
    config: TrainConfig,
    epoch: int,
    progress: bool,
) -> EpochRecord:
    lr = learning_rate(config, epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    augment_gen = torch.Generator(device=train_split.x.device)
    augment_gen.manual_seed(config.seed * 100_003 + epoch)
    batches = list(_batches(len(train_split), config.batch_size, generator))
    loss_sum, correct, start = 0.0, 0, time.perf_counter()
    model.train()
    desc = f"epoch {epoch}/{config.epochs} (batch {config.batch_size})"
    with _Progress(progress, len(batches), desc) as bar:
        for step, index in enumerate(batches, start=1):
            index = index.to(train_split.x.device)
            x, y = train_split.x[index], train_split.y[index]
            if config.augment:
                x = random_crop_flip(x, generator=augment_gen)
            optimizer.zero_grad(set_to_none=True)
            batch_loss, batch_correct = accumulated_step_gradient(
                model, x, y, config.chunk_size)
            if not math.isfinite(batch_loss):
                raise NonFiniteLossError(epoch, step, batch_loss)
            optimizer.step()
            loss_sum += batch_loss
            correct += batch_correct
            bar.update(loss=batch_loss / len(y))
    seconds = time.perf_counter() - start
    test_loss, test_accuracy = evaluate(
        model, test_split, batch_size=config.eval_batch_size)
    return EpochRecord(
        epoch=epoch,
        lr=lr,
        train_loss=loss_sum / len(train_split),
        train_accuracy=correct / len(train_split),
        test_loss=test_loss,
        test_accuracy=test_accuracy,
        grad_norm=gradient_norm(model, *probe),
        seconds=seconds,
        steps=len(batches),
    )
