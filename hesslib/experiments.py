"""Training runs as the book describes them.

A run is a model name, a data set size and a training configuration,
resolved into a trained model and its history.

This is the glue between :mod:`hesslib.data`, :mod:`hesslib.models`,
:mod:`hesslib.train` and :mod:`hesslib.store`; pages call it so that they hold
no training logic.

With a :class:`~hesslib.store.Store`, :func:`run_training` trains each run
once: a finished run is stored under the key of :func:`run_config` (the
spec, the device type and the software versions) and loaded by every later
call; an interrupted run resumes from its last finished epoch.

Under ``torchrun`` (see :mod:`hesslib.distributed`) every rank calls
:func:`run_training` with the same arguments. Rank 0 alone takes the store's
lock, looks the run up and tells the others; then either all ranks load the
stored run, or all train it data parallel and rank 0 puts it into the store
while the others wait. The number of ranks does not enter the key (a run
trained on several ranks equals the one-process run up to round-off); it is
recorded in the stored run's ``launch.json``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hesslib import data as data_lib
from hesslib import distributed as dist_lib
from hesslib.models import MODEL_DATA, build_model
from hesslib.profiles import Profile
from hesslib.store import Entry, Store, config_key, environment_fingerprint
from hesslib.train import EpochCallback, EpochRecord, TrainConfig, train

__all__ = [
    "DEVICE_ENV",
    "RUN_KIND",
    "RunResult",
    "RunSpec",
    "load_splits",
    "profile_spec",
    "profile_splits",
    "resolve_device",
    "run_config",
    "run_key",
    "run_training",
]

logger = logging.getLogger(__name__)

DEVICE_ENV = "HESSLIB_DEVICE"

RUN_KIND = "run"
"""Store kind of finished training runs."""

_WEIGHTS_FILE = "state_dict.pt"
_HISTORY_FILE = "history.json"
_SNAPSHOTS_FILE = "snapshots.pt"
_LAUNCH_FILE = "launch.json"


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
        snapshot_every: Keep the model's state after every this many epochs
            (``None``: none); see :func:`hesslib.train.train`.

    """

    model: str
    train_size: int | None
    test_size: int | None
    config: TrainConfig
    subset_seed: int = 0
    snapshot_every: int | None = None

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
    """A trained model and its per-epoch history.

    Attributes:
        spec: The run.
        model: The trained model, in eval mode.
        history: One record per epoch.
        snapshots: Model state dicts (CPU) by epoch, if the spec asked.
        key: The run's store key (``None`` without a store).
        from_store: Whether the run was loaded rather than trained.

    """

    spec: RunSpec
    model: nn.Module
    history: list[EpochRecord] = field(default_factory=list)
    snapshots: dict[int, dict[str, Tensor]] = field(default_factory=dict)
    key: str | None = None
    from_store: bool = False

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


def run_config(
    spec: RunSpec,
    device: torch.device | str,
    *,
    callback_name: str | None = None,
) -> dict[str, Any]:
    """The store configuration of a run: what its key is computed from.

    It holds ``spec.to_dict()`` (model, data set, subset sizes and seed, the
    whole training configuration, snapshots), the environment of
    :func:`hesslib.store.environment_fingerprint` (device type, torch, Python
    and hesslib versions) and the name of the per-epoch callback whose
    values the history holds.

    Example:
        >>> spec = RunSpec("M1", 1000, 1000, TrainConfig(epochs=2))
        >>> sorted(run_config(spec, "cpu"))
        ['callback', 'environment', 'spec']

    """
    return {
        "spec": spec.to_dict(),
        "environment": environment_fingerprint(torch.device(device).type),
        "callback": callback_name,
    }


def run_key(
    spec: RunSpec, device: torch.device | str, *, callback_name: str | None = None
) -> str:
    """The store key of a run (see :func:`run_config`)."""
    return config_key(RUN_KIND, run_config(spec, device, callback_name=callback_name))


def profile_splits(
    profile: Profile,
    dataset: str,
    *,
    root: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
) -> tuple[data_lib.Split, data_lib.Split]:
    """The training and test splits of ``dataset`` at ``profile``'s sizes."""
    return load_splits(dataset, profile.train_size[dataset],
                       profile.test_size[dataset], root=root, device=device)


def profile_spec(
    profile: Profile,
    model: str,
    batch: int | str,
    *,
    train_size: int,
    seed: int = 0,
    **overrides: Any,
) -> RunSpec:
    """The run of ``model`` at ``batch`` as ``profile`` sets it up.

    Args:
        profile: Sizes, epochs and learning-rate scaling.
        model: Model name.
        batch: Batch size, or ``"all"`` for the whole training subset.
        train_size: Samples in the training split actually loaded (it
            resolves ``"all"``).
        seed: Seed of the weights and batch order.
        **overrides: Other :class:`~hesslib.train.TrainConfig` fields, e.g.
            ``robust="fgsm_mix"`` or ``epochs=5``.

    Example:
        >>> from hesslib.profiles import get_profile
        >>> spec = profile_spec(get_profile("smoke"), "M1", "all", train_size=1000)
        >>> spec.config.batch_size, spec.config.epochs
        (1000, 2)

    """
    dataset = MODEL_DATA[model]
    options = {"epochs": profile.epochs, "lr_scaling": profile.lr_scaling,
               "eval_every": profile.eval_every[dataset]}
    options.update(overrides)
    config = TrainConfig(batch_size=profile.resolve_batch(batch, train_size),
                         seed=seed, **options)
    return RunSpec(model, profile.train_size[dataset],
                   profile.test_size[dataset], config)


def run_training(
    spec: RunSpec,
    *,
    splits: tuple[data_lib.Split, data_lib.Split],
    device: torch.device | str = "cpu",
    store: Store | None = None,
    on_epoch_end: EpochCallback | None = None,
    callback_name: str | None = None,
    progress: bool = False,
) -> RunResult:
    """Train ``spec.model`` on ``splits`` with ``spec.config``, or load it.

    The initial weights are seeded by ``spec.config.seed``. With a store, a
    finished run under the key of :func:`run_config` is loaded (weights,
    history, snapshots) and nothing is trained. Otherwise the run trains,
    under the store's lock for its key (a second process waits, then loads),
    with checkpoints in ``store.workdir(...)`` (an interrupted run resumes
    there), is put into the store, and its work folder is removed. The log
    (logger ``hesslib.experiments``, INFO) says ``trained run <key>`` or
    ``loaded run <key> from the store``.

    Args:
        spec: The run.
        splits: Training and test splits (as from :func:`load_splits`) of the
            sizes in ``spec``.
        device: Where to train; its type enters the store key.
        store: Where finished runs are kept; ``None``: always train.
        on_epoch_end: Called after each epoch; its returned values go into
            ``record.extras`` (see :func:`hesslib.train.train`). A loaded run
            does not call it.
        callback_name: Names what ``on_epoch_end`` computes (e.g.
            ``"lambda_1/v1"``); it enters the store key, so runs tracked
            differently are stored apart. Required with a store and a
            callback.
        progress: Show progress bars.

    Returns:
        The trained model (in eval mode), its history and snapshots, and the
        store key.

    Raises:
        ValueError: The splits do not have the sizes of ``spec``, or a
            callback is given with a store but without ``callback_name``.

    """
    device = torch.device(device)
    _check_splits(spec, splits)
    if store is not None and on_epoch_end is not None and callback_name is None:
        raise ValueError(
            "on_epoch_end given with a store but callback_name is None; name what "
            "the callback computes (e.g. callback_name='lambda_1') so that its "
            "values are stored under their own key"
        )
    if store is None:
        return _train_run(spec, splits, device, None, on_epoch_end, progress)
    if dist_lib.is_distributed():
        return _run_training_ranked(spec, splits, device, store, on_epoch_end,
                                    callback_name, progress)
    config = run_config(spec, device, callback_name=callback_name)
    key = config_key(RUN_KIND, config)
    with store.lock(RUN_KIND, config):
        entry = store.get(RUN_KIND, config)
        if entry is not None:
            logger.info("loaded run %s from the store (%s)", key, _describe(spec))
            return _load_run(spec, entry, device)
        workdir = store.workdir(RUN_KIND, config)
        result = _train_run(spec, splits, device, workdir, on_epoch_end, progress)
        store.put(RUN_KIND, config, lambda folder: _write_run(folder, result))
        store.remove_workdir(RUN_KIND, config)
    logger.info("trained run %s (%s)", key, _describe(spec))
    result.key = key
    return result


def _run_training_ranked(
    spec: RunSpec,
    splits: tuple[data_lib.Split, data_lib.Split],
    device: torch.device,
    store: Store,
    on_epoch_end: EpochCallback | None,
    callback_name: str | None,
    progress: bool,
) -> RunResult:
    """:func:`run_training` with a store, on every rank of a process group."""
    config = run_config(spec, device, callback_name=callback_name)
    key = config_key(RUN_KIND, config)
    main = dist_lib.is_main()
    with store.lock(RUN_KIND, config) if main else contextlib.nullcontext():
        entry = store.get(RUN_KIND, config) if main else None
        if dist_lib.broadcast_flag(entry is not None, device):
            if entry is None:  # rank 0 found it, so it is complete on disk
                entry = store.get(RUN_KIND, config)
            if entry is None:
                raise RuntimeError(
                    f"rank {dist_lib.rank()} cannot see run {key} that rank 0 "
                    f"found in {store.root}; give every rank the same store folder"
                )
            logger.info("loaded run %s from the store (%s)", key, _describe(spec))
            return _load_run(spec, entry, device)
        workdir = store.workdir(RUN_KIND, config)
        result = _train_run(spec, splits, device, workdir, on_epoch_end, progress)
        if main:
            store.put(RUN_KIND, config, lambda folder: _write_run(
                folder, result, launch={"world_size": dist_lib.world_size()}))
            store.remove_workdir(RUN_KIND, config)
        dist_lib.barrier()  # the others return once the run is stored
    if main:
        logger.info("trained run %s (%s) on %d ranks", key, _describe(spec),
                    dist_lib.world_size())
    result.key = key
    return result


def _describe(spec: RunSpec) -> str:
    c = spec.config
    return (f"{spec.model}, batch {c.batch_size}, {c.epochs} epochs, "
            f"seed {c.seed}, train size {spec.train_size}")


def _check_splits(
    spec: RunSpec, splits: tuple[data_lib.Split, data_lib.Split]
) -> None:
    for name, split, size in zip(("train", "test"), splits,
                                 (spec.train_size, spec.test_size)):
        if size is not None and len(split) != size:
            raise ValueError(
                f"the {name} split has {len(split)} samples but spec.{name}_size "
                f"is {size}; load the splits with load_splits(spec.dataset, "
                "spec.train_size, spec.test_size, subset_seed=spec.subset_seed)"
            )


def _train_run(
    spec: RunSpec,
    splits: tuple[data_lib.Split, data_lib.Split],
    device: torch.device,
    workdir: Path | None,
    on_epoch_end: EpochCallback | None,
    progress: bool,
) -> RunResult:
    train_split, test_split = (s.to(device) for s in splits)
    model = build_model(spec.model, seed=spec.config.seed).to(device)
    trained = train(model, train_split, test_split, spec.config,
                    on_epoch_end=on_epoch_end, checkpoint_dir=workdir,
                    snapshot_every=spec.snapshot_every, progress=progress)
    if trained.resumed_from:
        logger.info("resumed run after epoch %d from %s", trained.resumed_from,
                    workdir)
    model.eval()
    return RunResult(spec, model, trained.history, trained.snapshots)


def _torch_file(obj: Any, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    path.write_bytes(buffer.getvalue())


def _write_run(
    folder: Path, result: RunResult, *, launch: dict[str, Any] | None = None
) -> None:
    """Write a run's payload: weights, history, snapshots, how it was launched."""
    state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
    _torch_file(state, folder / _WEIGHTS_FILE)
    history = [record.to_dict() for record in result.history]
    text = json.dumps(history, indent=1) + "\n"
    (folder / _HISTORY_FILE).write_text(text, encoding="utf-8")
    if result.snapshots:
        _torch_file(result.snapshots, folder / _SNAPSHOTS_FILE)
    if launch is not None:
        text = json.dumps(launch, indent=1) + "\n"
        (folder / _LAUNCH_FILE).write_text(text, encoding="utf-8")


def _load_run(spec: RunSpec, entry: Entry, device: torch.device) -> RunResult:
    """Rebuild a stored run on ``device``."""
    model = build_model(spec.model, seed=spec.config.seed).to(device)
    state = torch.load(entry.file(_WEIGHTS_FILE), map_location=device,
                       weights_only=True)
    model.load_state_dict(state)
    model.eval()
    records = json.loads(entry.file(_HISTORY_FILE).read_text(encoding="utf-8"))
    history = [EpochRecord.from_dict(record) for record in records]
    snapshots: Mapping[int, dict[str, Tensor]] = {}
    if _SNAPSHOTS_FILE in entry.files:
        snapshots = torch.load(entry.file(_SNAPSHOTS_FILE), map_location="cpu",
                               weights_only=True)
    return RunResult(spec, model, history, dict(snapshots), key=entry.key,
                     from_store=True)
