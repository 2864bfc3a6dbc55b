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

Runs survive interruption. With ``checkpoint_dir``, :func:`train` writes a
checkpoint atomically after every finished epoch (model and optimizer state,
the epoch, the history) and, when started again on the same folder, resumes
after the last finished epoch. Training draws no global randomness: epoch
``e``'s batch order and augmentation come from generators seeded by
``(config.seed, e)``, so a resumed run ends with the same weights, bit for
bit, as an uninterrupted one on the same device and software.

Under ``torchrun`` (a process group of several ranks, see
:mod:`hesslib.distributed`) :func:`train` is data parallel: every global batch
is drawn as in one process and dealt out to the ranks in whole chunks; each
rank divides its chunks' summed losses by the global batch size, and the
gradients are summed with one all-reduce, so each step equals the
one-process step up to the order of summation (with train-mode BatchNorm
too: a chunk is normalized with its own statistics on whichever rank holds
it). Robust training skips, on each rank, the random draws of the chunks
before its own, so it matches one process as well. Evaluation and the
gradient norm are sharded the same way and summed; only rank 0 writes
checkpoints and snapshots.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hesslib import distributed as dist_lib
from hesslib.data import Split, random_crop_flip
from hesslib.store import atomic_torch_save

__all__ = [
    "CHECKPOINT_FILE",
    "CheckpointMismatchError",
    "EpochCallback",
    "EpochRecord",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "accumulated_step_gradient",
    "adversarial_batch",
    "evaluate",
    "gradient_norm",
    "learning_rate",
    "load_checkpoint",
    "make_optimizer",
    "sgd_step",
    "train",
]

logger = logging.getLogger(__name__)

LrScaling = Literal["none", "linear", "sqrt"]
Robust = Literal["none", "fgsm_mix", "pgd"]


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
        eval_every: Epochs between evaluations on the test split; the last
            epoch is always evaluated. On a CPU a CIFAR-10 test pass costs
            more than a small training epoch, so a profile may thin them.
        robust: Robust training: ``"none"``; ``"fgsm_mix"``, the authors'
            scheme, where a fraction of every chunk is replaced by FGSM
            examples; or ``"pgd"``, every sample replaced by its PGD example
            (the full min-max). Examples are computed in eval mode.
        robust_fraction: Fraction of each chunk replaced (``"fgsm_mix"``).
        robust_eps: Perturbation size on [0, 1] pixels (the authors: 0.005).
        robust_norm: Norm of the PGD ball, ``"linf"`` or ``"l2"``.
        robust_steps: PGD steps (step size 2.5 * eps / steps).

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
    eval_every: int = 1
    robust: Robust = "none"
    robust_fraction: float = 0.2
    robust_eps: float = 0.005
    robust_norm: Literal["linf", "l2"] = "linf"
    robust_steps: int = 10

    def __post_init__(self) -> None:
        for name in ("batch_size", "chunk_size", "epochs", "lr_decay_every",
                     "base_batch_size", "grad_norm_samples", "eval_batch_size",
                     "eval_every", "robust_steps"):
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
        self._check_robust()

    def _check_robust(self) -> None:
        if self.robust not in ("none", "fgsm_mix", "pgd"):
            raise ValueError(
                f"robust must be 'none', 'fgsm_mix' or 'pgd', got {self.robust!r}"
            )
        if not 0.0 <= self.robust_fraction <= 1.0:
            raise ValueError(
                f"robust_fraction must lie in [0, 1], got {self.robust_fraction!r}"
            )
        if not (math.isfinite(self.robust_eps) and self.robust_eps >= 0):
            raise ValueError(
                f"robust_eps must be a finite number >= 0, got {self.robust_eps!r}"
            )
        if self.robust_norm not in ("linf", "l2"):
            raise ValueError(
                f"robust_norm must be 'linf' or 'l2', got {self.robust_norm!r}"
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
        test_loss: Mean loss on the test split (eval mode); NaN in an
            epoch that ``eval_every`` skips.
        test_accuracy: Accuracy on the test split (eval mode); NaN in an
            epoch that ``eval_every`` skips.
        grad_norm: Norm of the full gradient of the mean loss on the fixed
            gradient subset (eval mode), after the epoch.
        seconds: Wall time of the epoch's training steps.
        steps: Optimizer steps taken in the epoch.
        extras: Values returned by the ``on_epoch_end`` callback (e.g. the
            top Hessian eigenvalue ``lambda_1`` after the epoch); empty
            without one.

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
    extras: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The record as a plain, JSON-able dictionary."""
        return asdict(self)

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> EpochRecord:
        """Rebuild a record written by :meth:`to_dict`."""
        return cls(**{**record, "extras": dict(record.get("extras", {}))})


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
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    chunk_size: int,
    *,
    total: int | None = None,
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
        total: The ``N`` to divide by (default ``len(y)``); a rank holding
            part of a global batch passes the global batch size.

    Returns:
        The batch's summed loss and number of correct predictions.

    """
    total_loss, correct = 0.0, 0
    n = len(y) if total is None else total
    for xc, yc in zip(x.split(chunk_size), y.split(chunk_size)):
        logits = model(xc)
        loss = F.cross_entropy(logits, yc, reduction="sum")
        (loss / n).backward()
        total_loss += loss.item()
        correct += (logits.argmax(1) == yc).sum().item()
    return total_loss, correct


@torch.no_grad()
def evaluate(
    model: nn.Module,
    split: Split,
    *,
    batch_size: int = 1024,
    sharded: bool = False,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``split``, in eval mode.

    The model's mode is restored afterwards. With ``sharded`` (and a process
    group), each rank evaluates its whole batches and the sums are
    all-reduced: every rank must call it.
    """
    was_training = model.training
    model.eval()
    sharded = sharded and dist_lib.is_distributed()
    part = dist_lib.rank_slice(len(split), batch_size) if sharded else slice(None)
    try:
        loss, correct = 0.0, 0
        for x, y in zip(split.x[part].split(batch_size),
                        split.y[part].split(batch_size)):
            logits = model(x)
            loss += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
    finally:
        model.train(was_training)
    if sharded:
        loss, correct = dist_lib.sum_scalars([loss, correct], split.x.device)
    return loss / len(split), correct / len(split)


def gradient_norm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    chunk_size: int = 1024,
    sharded: bool = False,
) -> float:
    """Norm of the gradient of the mean loss on ``(x, y)``, in eval mode.

    Parameter gradients and the model's mode are left as they were. With
    ``sharded`` (and a process group), each rank takes its whole chunks and
    the gradients are all-reduced: every rank must call it.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    model.eval()
    sharded = sharded and dist_lib.is_distributed()
    part = dist_lib.rank_slice(len(y), chunk_size) if sharded else slice(None)
    try:
        total = [torch.zeros_like(p) for p in params]
        for xc, yc in zip(x[part].split(chunk_size), y[part].split(chunk_size)):
            loss = F.cross_entropy(model(xc), yc, reduction="sum") / len(y)
            for acc, g in zip(total, torch.autograd.grad(loss, params)):
                acc += g
    finally:
        model.train(was_training)
    if sharded:
        total = [dist_lib.all_reduce_sum(torch.cat([g.reshape(-1) for g in total]))]
    return torch.sqrt(sum((g.double() ** 2).sum() for g in total)).item()


EpochCallback = Callable[[nn.Module, EpochRecord], Mapping[str, float] | None]
"""``on_epoch_end(model, record) -> extras or None``, see :func:`train`."""

CHECKPOINT_FILE = "checkpoint.pt"
"""The checkpoint's file name inside a checkpoint folder."""

CHECKPOINT_FORMAT = 1
"""Version of the checkpoint layout; a checkpoint of another version is refused."""

SNAPSHOT_PATTERN = "snapshot-{epoch:04d}.pt"
"""File name of the parameter snapshot taken after an epoch."""


class CheckpointMismatchError(ValueError):
    """A checkpoint folder holds a run of another configuration."""


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        history: One record per epoch, from epoch 1 (epochs restored from a
            checkpoint included).
        snapshots: Model state dicts (on the CPU) after every
            ``snapshot_every``-th epoch, by epoch.
        resumed_from: The last finished epoch found in the checkpoint folder
            (0: the run started from scratch).

    """

    history: list[EpochRecord]
    snapshots: dict[int, dict[str, Tensor]] = field(default_factory=dict)
    resumed_from: int = 0


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
    checkpoint_dir: str | os.PathLike | None = None,
    snapshot_every: int | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train ``model`` with SGD; return the per-epoch history and snapshots.

    Epoch ``e`` shuffles the training split with a generator seeded by
    ``(config.seed, e)`` and takes ``ceil(N / config.batch_size)`` steps of
    :func:`sgd_step`.

    With ``checkpoint_dir``, after every finished epoch the model state,
    optimizer state, epoch and history are written atomically to
    ``checkpoint_dir/checkpoint.pt``. If the folder already holds a checkpoint
    of the same ``config``, the model and optimizer are restored from it and
    training continues after its epoch; an epoch cut short is redone from its
    start, a finished one never. A run whose checkpoint is at
    ``config.epochs`` trains nothing.

    The order after each epoch is: snapshot written (if due), checkpoint
    written, then ``on_epoch_end(model, record)`` called. The callback may
    return a mapping of extra per-epoch values (``{"lambda_1": 12.3}``); they
    are stored in ``record.extras`` and in the checkpoint, which is written
    again. If the run stops inside the callback, the resumed run calls it
    again for that epoch before training on. The callback must leave the
    weights alone and may change the model's mode (each epoch sets
    ``train()``); training draws no global random numbers, so a callback that
    does (a random start vector) does not change the trained weights.

    Args:
        model: The model; it and the splits must be on the same device. It
            is trained in place.
        train_split: Training data, N samples.
        test_split: Evaluation data for the per-epoch record.
        config: The training configuration.
        on_epoch_end: Called after each epoch (see above).
        checkpoint_dir: Folder of the resumable checkpoint (created if
            missing); ``None``: no checkpoints. Under a process group only
            rank 0 writes it, and every rank waits for it at the start and
            the end of the call.
        snapshot_every: Keep the model's state dict after epochs
            ``k, 2k, ...``; with ``checkpoint_dir`` they are also written
            there, so a resumed run returns them all. ``None``: no snapshots.
        progress: Show a progress bar over steps.

    Returns:
        The history of all ``config.epochs`` epochs and the snapshots.

    Raises:
        NonFiniteLossError: The loss became NaN or infinite; the checkpoint
            of the last finished epoch is left as it was.
        CheckpointMismatchError: ``checkpoint_dir`` holds another run.

    """
    if config.batch_size > len(train_split):
        raise ValueError(
            f"batch_size {config.batch_size} exceeds the training set "
            f"({len(train_split)} samples); use at most {len(train_split)}"
        )
    if snapshot_every is not None and (
        not isinstance(snapshot_every, int) or snapshot_every < 1
    ):
        raise ValueError(
            f"snapshot_every must be a positive integer or None, got "
            f"{snapshot_every!r}"
        )
    folder = None if checkpoint_dir is None else Path(checkpoint_dir)
    optimizer = make_optimizer(model, config)
    history: list[EpochRecord] = []
    snapshots: dict[int, dict[str, Tensor]] = {}
    pending = False
    if folder is not None:  # rank 0 may still be writing the folder
        dist_lib.barrier()
    if folder is not None and (folder / CHECKPOINT_FILE).is_file():
        state = load_checkpoint(folder, config, map_location=_device_of(model))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = [EpochRecord.from_dict(r) for r in state["history"]]
        pending = state["callback_pending"]
        snapshots = _load_snapshots(folder, state["epoch"], snapshot_every)
        logger.info("resuming from %s after epoch %d", folder, state["epoch"])
    resumed_from = len(history)
    if pending and on_epoch_end is not None:
        history[-1] = _call_back(on_epoch_end, model, history[-1])
        _save_checkpoint(folder, model, optimizer, config, history, pending=False)
    probe = _gradient_probe(train_split, config)
    for epoch in range(resumed_from + 1, config.epochs + 1):
        record = _train_epoch(model, optimizer, train_split, test_split,
                              probe, config, epoch, progress)
        history.append(record)
        logger.info("epoch %d: %s", epoch, record)
        if snapshot_every is not None and epoch % snapshot_every == 0:
            snapshots[epoch] = _cpu_state(model)
            if folder is not None and dist_lib.is_main():  # before the checkpoint
                atomic_torch_save(snapshots[epoch],
                                  folder / SNAPSHOT_PATTERN.format(epoch=epoch))
        waiting = on_epoch_end is not None
        if folder is not None:
            _save_checkpoint(folder, model, optimizer, config, history,
                             pending=waiting)
        if waiting:
            history[-1] = _call_back(on_epoch_end, model, record)
            if folder is not None:
                _save_checkpoint(folder, model, optimizer, config, history,
                                 pending=False)
    if folder is not None:  # the folder is complete when any rank returns
        dist_lib.barrier()
    return TrainResult(history, snapshots, resumed_from)


def load_checkpoint(
    folder: str | os.PathLike,
    config: TrainConfig,
    *,
    map_location: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Load the checkpoint in ``folder`` and check that it belongs to ``config``.

    Returns:
        A dictionary with ``format``, ``config`` (as a dict), ``epoch`` (the
        last finished epoch), ``model`` and ``optimizer`` (state dicts),
        ``history`` (record dicts) and ``callback_pending`` (whether the last
        epoch's callback has not returned yet).

    Raises:
        FileNotFoundError: There is no checkpoint in ``folder``.
        CheckpointMismatchError: The checkpoint is of another format or
            configuration.

    """
    path = Path(folder) / CHECKPOINT_FILE
    state = torch.load(path, map_location=map_location, weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatchError(
            f"{path} has checkpoint format {state.get('format')!r}, expected "
            f"{CHECKPOINT_FORMAT}; delete the folder to train from scratch"
        )
    if state["config"] != config.to_dict():
        changed = sorted(k for k, v in config.to_dict().items()
                         if state["config"].get(k) != v)
        raise CheckpointMismatchError(
            f"{path} belongs to another training configuration (differs in "
            f"{', '.join(changed)}); use another checkpoint_dir or delete it"
        )
    return state


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.SGD:
    """The SGD optimizer of ``config`` over the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def sgd_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    config: TrainConfig,
    *,
    generator: torch.Generator | None = None,
    sharded: bool = False,
) -> tuple[float, int]:
    """One optimizer step on the batch ``(x, y)``, accumulated over chunks.

    This is the one place that turns a batch into an update. With robust
    training (``config.robust``), each chunk is first replaced by its
    adversarial version (:func:`adversarial_batch`).

    Args:
        model: The model, in train mode.
        optimizer: Its optimizer, learning rate already set.
        x: Batch inputs, shape (B, ...).
        y: Batch labels, shape (B,).
        config: The training configuration (``chunk_size``, ``robust*``).
        generator: Source of the attacks' randomness (on ``x``'s device).
        sharded: Data parallel over the process group (every rank must
            call it, with the same global batch and generator state): each
            rank steps on its whole chunks, the gradients are summed, and
            the returned numbers are the global batch's.

    Returns:
        The batch's summed loss and number of correct predictions. If the
        loss is not finite, no step is taken (the weights stay as they were)
        and the caller stops the run.

    """
    if sharded and dist_lib.is_distributed():
        return _sharded_step(model, optimizer, x, y, config, generator)
    if config.robust != "none":
        x = adversarial_batch(model, x, y, config, generator=generator)
    optimizer.zero_grad(set_to_none=True)
    loss, correct = accumulated_step_gradient(model, x, y, config.chunk_size)
    if math.isfinite(loss):
        optimizer.step()
    return loss, correct


def adversarial_batch(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    config: TrainConfig,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The batch robust training steps on, made chunk by chunk.

    ``"fgsm_mix"`` replaces ``round(robust_fraction * n)`` samples of every
    chunk of ``n`` by their FGSM examples of size ``robust_eps``; ``"pgd"``
    replaces every sample by its PGD example (random start). The attacks run
    in eval mode, and the model's mode is restored.

    Args:
        model: The model being trained.
        x: Batch inputs, shape (B, ...), in [0, 1].
        y: Batch labels, shape (B,).
        config: The training configuration.
        generator: Source of the attacks' randomness.

    Returns:
        The adversarial batch, shape (B, ...), detached.

    """
    from hesslib.attacks import adversarial_mix, pgd

    chunks = []
    for xc, yc in zip(x.split(config.chunk_size), y.split(config.chunk_size)):
        if config.robust == "fgsm_mix":
            chunks.append(adversarial_mix(
                model, xc, yc, fraction=config.robust_fraction,
                eps=config.robust_eps, generator=generator))
        else:
            chunks.append(pgd(model, xc, yc, config.robust_eps,
                              norm=config.robust_norm, steps=config.robust_steps,
                              generator=generator))
    return torch.cat(chunks)


def _sharded_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    config: TrainConfig,
    generator: torch.Generator | None,
) -> tuple[float, int]:
    """:func:`sgd_step` on this rank's chunks of the global batch ``(x, y)``."""
    part = dist_lib.rank_slice(len(y), config.chunk_size)
    if config.robust != "none":
        _skip_attack_draws(x[: part.start], config, generator)
    mine_x, mine_y = x[part], y[part]
    optimizer.zero_grad(set_to_none=True)
    before = dist_lib.running_stats(model)
    loss, correct = 0.0, 0
    if len(mine_y):  # a rank may get no chunk of a small batch
        if config.robust != "none":
            mine_x = adversarial_batch(model, mine_x, mine_y, config,
                                       generator=generator)
        loss, correct = accumulated_step_gradient(
            model, mine_x, mine_y, config.chunk_size, total=len(y))
    dist_lib.merge_running_stats(model, before, len(y), config.chunk_size)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    dist_lib.sum_gradients(params)
    loss, correct = dist_lib.sum_scalars([loss, correct], y.device)
    if math.isfinite(loss):
        optimizer.step()
    return loss, int(correct)


def _skip_attack_draws(
    x: Tensor, config: TrainConfig, generator: torch.Generator | None
) -> None:
    """Draw, and drop, what :func:`adversarial_batch` draws for ``x``'s chunks.

    A rank thus starts its own chunks with the generator in the state one
    process would have reached, and robust training matches one process.
    Without a generator (the global one) the ranks' streams differ.
    """
    from hesslib.attacks import _random_start

    if generator is None:
        return
    for start in range(0, len(x), config.chunk_size):
        xc = x[start : start + config.chunk_size]
        if config.robust == "fgsm_mix":
            torch.randperm(len(xc), generator=generator, device=generator.device)
        else:
            _random_start(xc, config.robust_eps, config.robust_norm, generator)


def _device_of(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return torch.device("cpu") if first is None else first.device


def _cpu_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True)
            for k, v in model.state_dict().items()}


def _call_back(
    callback: EpochCallback, model: nn.Module, record: EpochRecord
) -> EpochRecord:
    """Call ``callback`` and return the record with its extras added."""
    extras = callback(model, record)
    if extras is None:
        return record
    if not isinstance(extras, Mapping):
        raise TypeError(
            f"on_epoch_end returned a {type(extras).__name__}; return None or a "
            "mapping of str to float such as {'lambda_1': 3.2}"
        )
    plain = {}
    for name, value in extras.items():
        if not isinstance(name, str) or isinstance(value, bool) or not isinstance(
            value, (int, float)
        ):
            raise TypeError(
                f"on_epoch_end returned {name!r}: {value!r}; keys must be str and "
                "values int or float (convert tensors with .item())"
            )
        plain[name] = float(value)
    return EpochRecord(**{**vars(record), "extras": {**record.extras, **plain}})


def _save_checkpoint(
    folder: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    history: list[EpochRecord],
    *,
    pending: bool,
) -> None:
    if not dist_lib.is_main():  # ranks hold the same weights; rank 0 writes
        return
    state = {
        "format": CHECKPOINT_FORMAT,
        "config": config.to_dict(),
        "epoch": history[-1].epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "history": [r.to_dict() for r in history],
        "callback_pending": pending,
    }
    atomic_torch_save(state, folder / CHECKPOINT_FILE)


def _load_snapshots(
    folder: Path, last_epoch: int, every: int | None
) -> dict[int, dict[str, Tensor]]:
    """The snapshots of epochs up to ``last_epoch`` written in ``folder``."""
    if every is None:
        return {}
    snapshots = {}
    for epoch in range(every, last_epoch + 1, every):
        path = folder / SNAPSHOT_PATTERN.format(epoch=epoch)
        if not path.is_file():
            raise CheckpointMismatchError(
                f"{folder} resumes after epoch {last_epoch} but lacks the snapshot "
                f"{path.name}; it was trained without snapshot_every={every}: "
                "delete the folder to train from scratch"
            )
        snapshots[epoch] = torch.load(path, map_location="cpu", weights_only=True)
    return snapshots


def _gradient_probe(split: Split, config: TrainConfig) -> tuple[Tensor, Tensor]:
    """The fixed training subset on which the gradient norm is measured."""
    generator = torch.Generator().manual_seed(config.seed)
    size = min(config.grad_norm_samples, len(split))
    keep = torch.randperm(len(split), generator=generator)[:size]
    keep = keep.to(split.x.device)
    return split.x[keep], split.y[keep]


# Keeps the attacks' random stream apart from the augmentation's.
_ATTACK_SEED_OFFSET = 7_919


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
    attack_gen = torch.Generator(device=train_split.x.device)
    attack_gen.manual_seed(config.seed * 100_003 + epoch + _ATTACK_SEED_OFFSET)
    batches = list(_batches(len(train_split), config.batch_size, generator))
    loss_sum, correct, start = 0.0, 0, time.perf_counter()
    model.train()
    desc = f"epoch {epoch}/{config.epochs} (batch {config.batch_size})"
    with _Progress(progress and dist_lib.is_main(), len(batches), desc) as bar:
        for step, index in enumerate(batches, start=1):
            index = index.to(train_split.x.device)
            x, y = train_split.x[index], train_split.y[index]
            if config.augment:
                x = random_crop_flip(x, generator=augment_gen)
            batch_loss, batch_correct = sgd_step(model, optimizer, x, y, config,
                                                 generator=attack_gen, sharded=True)
            if not math.isfinite(batch_loss):
                raise NonFiniteLossError(epoch, step, batch_loss)
            loss_sum += batch_loss
            correct += batch_correct
            bar.update(loss=batch_loss / len(y))
    seconds = time.perf_counter() - start
    test_loss = test_accuracy = math.nan
    if epoch % config.eval_every == 0 or epoch == config.epochs:
        test_loss, test_accuracy = evaluate(
            model, test_split, batch_size=config.eval_batch_size, sharded=True)
    return EpochRecord(
        epoch=epoch,
        lr=lr,
        train_loss=loss_sum / len(train_split),
        train_accuracy=correct / len(train_split),
        test_loss=test_loss,
        test_accuracy=test_accuracy,
        grad_norm=gradient_norm(model, *probe, sharded=True),
        seconds=seconds,
        steps=len(batches),
    )
