"""Data parallelism with ``torch.distributed``: shards, sums and gathers.

Several processes (ranks), started by ``torchrun``, each hold the whole
in-memory data set and work on their own share of it; the results are summed
(``all_reduce``) or concatenated (``all_gather``) so that every rank ends with
the number one process would compute, up to the order of floating-point
summation. Without an initialized process group, or with a single rank,
every helper here is the identity, so library code calls them
unconditionally.

How work is split, everywhere in hesslib: a tensor of ``N`` samples is cut
into chunks of ``chunk_size`` (the last may be smaller), and each rank takes a
contiguous run of whole chunks (:func:`rank_slice`). A chunk is therefore
processed exactly as in one process (same samples, same BatchNorm statistics
in train mode); only the order in which the chunks' contributions are added
changes. A rank may get no chunk at all (fewer chunks than ranks); it then
contributes zeros.

* Training (:func:`hesslib.train.train`): each global batch is drawn as in
  one process and split by chunks; gradients are summed with
  :func:`sum_gradients`. BatchNorm in train mode normalizes each chunk with
  its own statistics, wherever it runs (no SyncBatchNorm: one process does
  not synchronize chunks either), and :func:`merge_running_stats` makes the
  running statistics those of one process updating them chunk after chunk.
* Hessian products: ``WeightHessian(model, loss, shard_by_rank(x, y),
  reduce=all_reduce_sum)`` sums the products of every rank's shard; all
  ranks then run the same solver with the same seed and agree.
* Per-sample work (attacks, input Hessians): :func:`map_by_rank` splits by
  samples, applies a function and gathers the results in order.

The process group is started from the variables ``torchrun`` sets
(:func:`process_group`), with the ``gloo`` backend on the CPU and ``nccl``
on CUDA, each rank on GPU ``LOCAL_RANK``.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "DEFAULT_TIMEOUT",
    "all_reduce_sum",
    "barrier",
    "broadcast_flag",
    "gather_by_rank",
    "is_distributed",
    "is_main",
    "map_by_rank",
    "merge_running_stats",
    "process_group",
    "rank",
    "rank_slice",
    "running_stats",
    "shard_by_rank",
    "split_by_rank",
    "sum_gradients",
    "sum_scalars",
    "world_size",
]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)
"""Longest wait in a collective: one rank may be alone writing a large run."""


def is_distributed() -> bool:
    """Whether a process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Whether this is rank 0, the one that writes files and logs results."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (nothing without a process group)."""
    if is_distributed():
        dist.barrier()


def rank_slice(
    n: int,
    chunk_size: int = 1,
    *,
    rank_index: int | None = None,
    ranks: int | None = None,
) -> slice:
    """The samples of ``range(n)`` a rank works on: whole, contiguous chunks.

    The ``m = ceil(n / chunk_size)`` chunks are dealt out in order, rank ``r``
    getting chunks ``floor(r * m / R)`` up to ``floor((r + 1) * m / R)``.

    Args:
        n: Number of samples.
        chunk_size: Samples per chunk, the unit that is never split.
        rank_index: The rank (default: this process's).
        ranks: Number of ranks (default: the process group's).

    Returns:
        The rank's ``slice(start, stop)``; empty if it gets no chunk.

    Example:
        >>> [rank_slice(300, 128, rank_index=r, ranks=2) for r in (0, 1)]
        [slice(0, 128, None), slice(128, 300, None)]

    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size!r}")
    r = rank() if rank_index is None else rank_index
    size = world_size() if ranks is None else ranks
    if not 0 <= r < size:
        raise ValueError(f"rank {r} outside range({size}); pass 0 <= rank < ranks")
    chunks = -(-n // chunk_size)
    first, last = r * chunks // size, (r + 1) * chunks // size
    return slice(min(first * chunk_size, n), min(last * chunk_size, n))


def split_by_rank(tensor: Tensor, chunk_size: int = 1) -> Tensor:
    """This rank's share of ``tensor`` along its first dimension (a view)."""
    return tensor[rank_slice(tensor.shape[0], chunk_size)]


def shard_by_rank(
    x: Tensor, y: Tensor, chunk_size: int = 1
) -> tuple[Tensor, Tensor]:
    """This rank's share of a data set ``(x, y)``, cut at whole chunks.

    Example:
        >>> x, y = torch.zeros(5, 2), torch.arange(5)
        >>> shard_by_rank(x, y)[1].tolist()  # one process holds everything
        [0, 1, 2, 3, 4]

    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y disagree on the number of samples: {x.shape[0]} vs "
            f"{y.shape[0]}"
        )
    part = rank_slice(x.shape[0], chunk_size)
    return x[part], y[part]


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over ranks in place and return it.

    The ``reduce`` hook of :class:`~hesslib.hessian.WeightHessian`
    (``dist.all_reduce`` itself returns ``None``). Every rank receives the
    same bytes, so solvers driven by it stay in lockstep.

    Example:
        >>> all_reduce_sum(torch.ones(2)).tolist()  # one process: unchanged
        [1.0, 1.0]

    """
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def sum_scalars(
    values: Sequence[float], device: torch.device | str = "cpu"
) -> list[float]:
    """Sum Python numbers over ranks (in float64), in one collective."""
    if not is_distributed():
        return list(values)
    packed = torch.tensor(list(values), dtype=torch.float64, device=device)
    return all_reduce_sum(packed).tolist()


def sum_gradients(params: Iterable[Tensor]) -> None:
    """Sum the parameters' ``.grad`` over ranks, in one flat all-reduce.

    A parameter without a gradient counts as zero; it keeps ``grad = None``
    only if it has none on every rank (as it would in one process, where
    SGD then leaves it alone).
    """
    if not is_distributed():
        return
    params = list(params)
    if not params:
        return
    device = params[0].device
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float64,
                       device=device)
    flat = torch.cat([
        (torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1)
        for p in params
    ])
    all_reduce_sum(has)
    all_reduce_sum(flat)
    for p, used, piece in zip(params, has.tolist(), flat.split(
            [p.numel() for p in params]), strict=True):
        if used:
            p.grad = piece.view_as(p).clone()


RunningStats = list[tuple[Tensor, Tensor, Tensor]]


def _tracking_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
            and m.running_mean is not None]


def running_stats(model: nn.Module) -> RunningStats:
    """Copies of the running statistics that train-mode BatchNorm updates."""
    return [(m.running_mean.clone(), m.running_var.clone(),
             m.num_batches_tracked.clone()) for m in _tracking_norms(model)]


def merge_running_stats(
    model: nn.Module, before: RunningStats, n: int, chunk_size: int
) -> None:
    r"""Running statistics as if one process had seen every chunk in order.

    One process updates :math:`r \leftarrow (1 - m) r + m s_c` for the
    ``K`` chunks of a batch in turn, ending with
    :math:`(1 - m)^K r_0 + \sum_c m (1 - m)^{K - 1 - c} s_c`. A rank that
    processed chunks ``a .. b - 1`` holds :math:`R = (1 - m)^{b - a} r_0 +
    \sum_{c=a}^{b-1} m (1 - m)^{b - 1 - c} s_c`, so each rank contributes
    :math:`(1 - m)^{K - b} (R - (1 - m)^{b - a} r_0)`, the contributions are
    summed, and :math:`(1 - m)^K r_0` is added: the one-process result up to
    round-off, the same on every rank.

    Args:
        model: The model after this rank's forward passes (train mode).
        before: :func:`running_stats` taken before them.
        n: Samples in the global batch.
        chunk_size: Samples per chunk.

    Raises:
        ValueError: A BatchNorm layer uses a cumulative average
            (``momentum=None``), which this merge does not cover.

    """
    norms = _tracking_norms(model)
    if not is_distributed() or not norms:
        return
    chunks = -(-n // chunk_size)
    part = rank_slice(n, chunk_size)
    first, count = part.start // chunk_size, -(-(part.stop - part.start) // chunk_size)
    pieces = []
    for module, (mean, var, _) in zip(norms, before, strict=True):
        if module.momentum is None:
            raise ValueError(
                f"BatchNorm {module} has momentum=None (a cumulative average); "
                "data-parallel training merges exponential averages only: give "
                "it a momentum such as 0.1"
            )
        keep = 1.0 - module.momentum
        later = keep ** (chunks - first - count)
        pieces += [later * (module.running_mean - keep**count * mean),
                   later * (module.running_var - keep**count * var)]
    flat = all_reduce_sum(torch.cat([p.reshape(-1) for p in pieces]))
    merged = iter(flat.split([p.numel() for p in pieces]))
    for module, (mean, var, tracked) in zip(norms, before, strict=True):
        keep = (1.0 - module.momentum) ** chunks
        module.running_mean.copy_(keep * mean + next(merged).view_as(mean))
        module.running_var.copy_(keep * var + next(merged).view_as(var))
        module.num_batches_tracked.copy_(tracked + chunks)


def broadcast_flag(flag: bool, device: torch.device | str = "cpu") -> bool:
    """Rank 0's ``flag`` on every rank (e.g. 'the run is in the store')."""
    if not is_distributed():
        return flag
    packed = torch.tensor([int(flag)], dtype=torch.int64, device=device)
    dist.broadcast(packed, src=0)
    return bool(packed.item())


def gather_by_rank(part: Tensor) -> Tensor:
    """Concatenate every rank's ``part`` along dimension 0, in rank order.

    Parts may differ in length (also be empty); all other dimensions, the
    dtype and the device must agree. Every rank receives the whole.
    """
    if not is_distributed():
        return part
    lengths = torch.zeros(world_size(), dtype=torch.int64, device=part.device)
    lengths[rank()] = part.shape[0]
    all_reduce_sum(lengths)
    longest = int(lengths.max())
    padded = part.new_zeros((longest, *part.shape[1:]))
    padded[: part.shape[0]] = part
    pieces = [torch.empty_like(padded) for _ in range(world_size())]
    dist.all_gather(pieces, padded.contiguous())
    return torch.cat([p[: int(n)] for p, n in zip(pieces, lengths, strict=True)])


def map_by_rank(
    fn: Callable[..., Tensor], *tensors: Tensor, chunk_size: int = 1
) -> Tensor:
    """``fn(*shares)`` on this rank's share of the samples, gathered in order.

    For per-sample work, where the samples do not interact: attacks in eval
    mode, input-Hessian eigenvalues. The result equals ``fn(*tensors)`` in
    one process if ``fn`` draws no random numbers (a random start drawn
    from one generator per rank differs from one process's draws).

    Args:
        fn: Maps tensors of ``n`` samples to a tensor of ``n`` rows.
        *tensors: Inputs sharing their first dimension.
        chunk_size: Samples kept together on one rank.

    Returns:
        ``fn``'s rows for all samples, on every rank.

    Example:
        >>> map_by_rank(lambda x: 2 * x, torch.arange(3)).tolist()
        [0, 2, 4]

    """
    sizes = {t.shape[0] for t in tensors}
    if len(sizes) != 1:
        raise ValueError(
            f"map_by_rank needs tensors of one length, got lengths {sorted(sizes)}"
        )
    part = rank_slice(sizes.pop(), chunk_size)
    return gather_by_rank(fn(*(t[part] for t in tensors)))


def _backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


@contextlib.contextmanager
def process_group(
    device: torch.device | str = "cpu",
    *,
    timeout: datetime.timedelta = DEFAULT_TIMEOUT,
) -> Iterator[torch.device]:
    """Join the process group ``torchrun`` set up; leave it afterwards.

    Reads ``WORLD_SIZE`` and ``LOCAL_RANK`` (set by ``torchrun``, together
    with ``RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, which
    ``init_process_group`` reads). Without ``WORLD_SIZE``, or with one rank,
    nothing is started and ``device`` is yielded as it is.

    Args:
        device: Where to compute: ``"cpu"`` (backend gloo) or ``"cuda"``
            (backend nccl; each rank takes GPU ``LOCAL_RANK``).
        timeout: Longest wait in one collective.

    Yields:
        This rank's device.

    """
    device = torch.device(device)
    ranks = int(os.environ.get("WORLD_SIZE", "1"))
    if ranks <= 1 or dist.is_initialized():
        yield device
        return
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group(_backend(device), init_method="env://", timeout=timeout)
    logger.info("rank %d of %d on %s (%s)", dist.get_rank(), ranks, device,
                _backend(device))
    try:
        yield device
    finally:
        dist.destroy_process_group()
