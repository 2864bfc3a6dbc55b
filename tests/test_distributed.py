"""Data parallelism on 2 CPU processes (gloo on 127.0.0.1) equals one process.

Each multi-process test runs this file as a script in 2 subprocesses (one
torch thread each), which join a process group through a file in the test's
temporary folder, run one task and save what they computed; the test then
compares it with the same computation in the test process. Problems are
tiny and in float64, so that "equal up to summation order" can be checked
to 1e-9 instead of float32's round-off.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hesslib import distributed as dist_lib
from hesslib.attacks import fgsm, pgd
from hesslib.data import Split, balanced_subset, load
from hesslib.experiments import RunSpec, run_training
from hesslib.hessian import WeightHessian, hutchinson, lanczos
from hesslib.models import build_model
from hesslib.store import Store
from hesslib.train import TrainConfig, train

RANKS = 2
LAUNCH_TIMEOUT = 120  # seconds; each task takes a few on 2 idle cores
# float64 training differs from one process only in the order of summation
# of the ranks' gradients: a few ulps per step, grown by a few steps.
RTOL, ATOL = 1e-9, 1e-11

# ------------------------------------------------------------------- tasks
# Each task runs on every rank (and once in the test process, with no
# process group) and returns a dictionary of tensors and numbers.


def _mnist(root: str, train_size: int, test_size: int) -> tuple[Split, Split]:
    full = load("mnist", root=root)
    train_split = balanced_subset(full.train, train_size, seed=0)
    test_split = balanced_subset(full.test, test_size, seed=0)
    return tuple(Split(s.x.double(), s.y, s.indices)
                 for s in (train_split, test_split))


def _cifar_like(n: int, seed: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 32, 32, generator=g, dtype=torch.float64)
    return Split(x, torch.randint(0, 10, (n,), generator=g), torch.arange(n))


def _trained(model: nn.Module, result) -> dict:
    return {"state": {k: v.clone() for k, v in model.state_dict().items()},
            "history": [r.to_dict() for r in result.history]}


def task_train_m1(root: str, robust: str = "none") -> dict:
    """M1 on real MNIST: 200 samples, batches of 160 in chunks of 48."""
    train_split, test_split = _mnist(root, 200, 100)
    config = TrainConfig(batch_size=160, chunk_size=48, epochs=2, lr=0.05,
                         grad_norm_samples=100, eval_batch_size=48,
                         robust=robust, robust_eps=0.05, robust_steps=2,
                         robust_fraction=0.5)
    model = build_model("M1", seed=0).double()
    return _trained(model, train(model, train_split, test_split, config))


class _Stop(Exception):
    """Raised by a callback to cut a run short after its first epoch."""


def task_resume(root: str, folder: str) -> dict:
    """M1 stopped in the callback after epoch 1, then resumed from the folder."""
    train_split, test_split = _mnist(root, 200, 100)
    config = TrainConfig(batch_size=160, chunk_size=48, epochs=2, lr=0.05,
                         grad_norm_samples=100, eval_batch_size=48)

    def stop(model, record):
        raise _Stop

    model = build_model("M1", seed=0).double()
    try:
        train(model, train_split, test_split, config, checkpoint_dir=folder,
              on_epoch_end=stop, snapshot_every=1)
    except _Stop:  # rank 0 may still be writing; train() waits for it
        pass
    model = build_model("M1", seed=0).double()
    result = train(model, train_split, test_split, config, checkpoint_dir=folder,
                   on_epoch_end=lambda m, r: {"epoch": r.epoch}, snapshot_every=1)
    files = sorted(p.name for p in Path(folder).iterdir())
    return {**_trained(model, result), "resumed_from": result.resumed_from,
            "files": files}


def task_train_c1(root: str) -> dict:
    """C1 (BatchNorm in train mode) on 96 random images, chunks of 16."""
    train_split, test_split = _cifar_like(96, 0), _cifar_like(32, 1)
    config = TrainConfig(batch_size=80, chunk_size=16, epochs=1, lr=0.05,
                         grad_norm_samples=32, eval_batch_size=16)
    model = build_model("C1", seed=0).double()
    return _trained(model, train(model, train_split, test_split, config))


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 24), nn.Tanh(),
                         nn.Linear(24, 10)).double()


def task_hessian(root: str) -> dict:
    """Top eigenvalues and Hutchinson trace of a weight Hessian, sharded."""
    (split, _) = _mnist(root, 250, 10)
    model = _mlp()
    x, y = dist_lib.shard_by_rank(split.x, split.y, chunk_size=64)
    operator = WeightHessian(model, F.cross_entropy, (x, y), batch_size=64,
                             reduce=dist_lib.all_reduce_sum)
    top = lanczos(operator, 3, tol=1e-8, generator=torch.Generator().manual_seed(1))
    trace = hutchinson(operator, rtol=1.0, min_samples=12,
                       generator=torch.Generator().manual_seed(2))
    return {"eigenvalues": top.eigenvalues, "products": top.num_products,
            "trace": trace.estimate, "trace_samples": trace.num_samples}


def task_attacks(root: str) -> dict:
    """FGSM and PGD (no random start) split by samples, gathered."""
    (_, split) = _mnist(root, 10, 101)
    model = build_model("M1", seed=0).double()
    attack = functools.partial(pgd, eps=0.1, steps=3, random_start=False)
    return {
        "fgsm": dist_lib.map_by_rank(functools.partial(fgsm, model, eps=0.1),
                                     split.x, split.y),
        "pgd": dist_lib.map_by_rank(functools.partial(attack, model),
                                    split.x, split.y, chunk_size=16),
        "ranks": dist_lib.gather_by_rank(torch.full((dist_lib.rank() + 2,),
                                                    dist_lib.rank())),
    }


def task_store(root: str, store_dir: str) -> dict:
    """run_training with a store, twice: trained once, then loaded."""
    splits = _mnist(root, 200, 100)
    splits = tuple(Split(s.x.float(), s.y, s.indices) for s in splits)
    spec = RunSpec("M1", 200, 100, TrainConfig(batch_size=200, epochs=1,
                                               grad_norm_samples=64))
    first = run_training(spec, splits=splits, store=Store(store_dir))
    second = run_training(spec, splits=splits, store=Store(store_dir))
    return {"key": first.key, "first": first.from_store,
            "second": second.from_store,
            "state": first.model.state_dict(),
            "accuracy": first.final.test_accuracy}


TASKS = {name[len("task_"):]: value for name, value in globals().items()
         if name.startswith("task_")}


def _worker(out: str, task: str, kwargs: str) -> None:
    """One rank: join the group (file rendezvous, gloo on loopback), run."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    rank, ranks = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", init_method=f"file://{out}/rendezvous",
                            rank=rank, world_size=ranks)
    try:
        result = TASKS[task](**json.loads(kwargs))
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _launch(tmp_path: Path, task: str, ranks: int = RANKS, **kwargs) -> list[dict]:
    """Run ``task`` on ``ranks`` processes; return each rank's result."""
    env = {**os.environ, "WORLD_SIZE": str(ranks), "OMP_NUM_THREADS": "1",
           "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1",
           "PYTHONPATH": os.pathsep.join(filter(None, [
               str(Path(__file__).resolve().parents[1]),
               os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, __file__, str(tmp_path), task, json.dumps(kwargs)]
    procs = [subprocess.Popen(command, env={**env, "RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for r in range(ranks)]
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=LAUNCH_TIMEOUT)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    failed = [(r, p.returncode) for r, p in enumerate(procs) if p.returncode]
    assert not failed, f"ranks failed {failed}:\n" + "\n".join(logs)[-3000:]
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False)
            for r in range(ranks)]


def _assert_same_run(ranked: dict, single: dict, rtol=RTOL, atol=ATOL) -> None:
    for name, value in single["state"].items():
        torch.testing.assert_close(ranked["state"][name], value, rtol=rtol,
                                   atol=atol, msg=lambda m, n=name: f"{n}: {m}")
    for got, want in zip(ranked["history"], single["history"], strict=True):
        assert got["test_accuracy"] == want["test_accuracy"], (got, want)
        assert got["train_accuracy"] == want["train_accuracy"], (got, want)
        assert got["steps"] == want["steps"]
        for field in ("train_loss", "test_loss", "grad_norm", "lr"):
            assert got[field] == pytest.approx(want[field], rel=rtol), field


@pytest.fixture(scope="module")
def root(data_dir) -> str:
    return str(data_dir)


# ------------------------------------------------------------------- tests


@pytest.mark.parametrize("robust", ["none", "pgd", "fgsm_mix"])
def test_m1_training_on_two_ranks_equals_one_process(tmp_path, root, robust):
    ranked = _launch(tmp_path, "train_m1", root=root, robust=robust)
    single = task_train_m1(root, robust=robust)
    for result in ranked:
        _assert_same_run(result, single)
    for name, value in ranked[0]["state"].items():  # the ranks agree exactly
        assert torch.equal(ranked[1]["state"][name], value), name


def test_resumed_run_on_two_ranks_equals_one_process(tmp_path, root):
    ranked = _launch(tmp_path, "resume", root=root, folder=str(tmp_path / "run"))
    single = task_train_m1(root)
    for result in ranked:
        assert result["resumed_from"] == 1
        assert result["files"] == ["checkpoint.pt", "snapshot-0001.pt",
                                   "snapshot-0002.pt"]
        assert [r["extras"] for r in result["history"]] == [{"epoch": 1.0},
                                                           {"epoch": 2.0}]
        _assert_same_run(result, single)


def test_c1_batchnorm_training_on_two_ranks_equals_one_process(tmp_path, root):
    # Chunks are dealt out whole, so each is normalized with its own batch
    # statistics exactly as in one process (no SyncBatchNorm); the running
    # statistics are merged as if one process had updated them chunk after
    # chunk, so eval-mode results (test accuracy, gradient norm) agree too.
    ranked = _launch(tmp_path, "train_c1", root=root)
    single = task_train_c1(root)
    assert any("running_var" in name for name in single["state"])
    for result in ranked:
        _assert_same_run(result, single)


def test_hessian_eigenvalues_and_trace_on_two_ranks(tmp_path, root):
    ranked = _launch(tmp_path, "hessian", root=root)
    single = task_hessian(root)
    for result in ranked:
        torch.testing.assert_close(result["eigenvalues"], single["eigenvalues"],
                                   rtol=1e-9, atol=0)
        assert result["trace"] == pytest.approx(single["trace"], rel=1e-10)
        assert result["trace_samples"] == single["trace_samples"]
        assert result["products"] == single["products"]


def test_attacks_split_by_samples_equal_one_process(tmp_path, root):
    ranked = _launch(tmp_path, "attacks", root=root)
    single = task_attacks(root)
    for result in ranked:
        # each sample is attacked alone in eval mode: identical up to the
        # batch size's effect on convolution round-off
        for name in ("fgsm", "pgd"):
            torch.testing.assert_close(result[name], single[name], rtol=0,
                                       atol=1e-12)
        assert result["ranks"].tolist() == [0, 0, 1, 1, 1]


def test_run_training_stores_once_and_records_the_ranks(tmp_path, root):
    store_dir = tmp_path / "store"
    ranked = _launch(tmp_path, "store", root=root, store_dir=str(store_dir))
    assert [r["first"] for r in ranked] == [False, False]  # both trained it
    assert [r["second"] for r in ranked] == [True, True]  # both loaded it
    store = Store(store_dir)
    (info,) = store.list("run")
    entry = store.get_by_key("run", info.key)
    launch = json.loads(entry.file("launch.json").read_text())
    assert launch == {"world_size": RANKS}
    assert not any((store_dir / ".work" / "run").glob("*"))  # work folder gone
    # one process finds the run the two ranks stored, under the same key
    loaded = task_store(str(root), str(store_dir))
    assert loaded["key"] == ranked[0]["key"] and loaded["first"] is True
    for name, value in ranked[0]["state"].items():
        assert torch.equal(loaded["state"][name], value), name


# -------------------------------------------------- helpers, one process


def test_rank_slices_cover_every_sample_once_in_whole_chunks():
    for n, chunk, ranks in [(300, 128, 2), (5, 1, 2), (1000, 128, 3),
                            (100, 128, 4), (0, 8, 2), (257, 16, 5)]:
        slices = [dist_lib.rank_slice(n, chunk, rank_index=r, ranks=ranks)
                  for r in range(ranks)]
        assert slices[0].start == 0 and slices[-1].stop == n
        for a, b in zip(slices, slices[1:]):
            assert a.stop == b.start
        for s in slices:
            assert s.start % chunk == 0 and (s.stop % chunk == 0 or s.stop == n)


def test_helpers_are_the_identity_without_a_process_group():
    x, y = torch.arange(6.0), torch.arange(6)
    assert not dist_lib.is_distributed()
    assert (dist_lib.rank(), dist_lib.world_size(), dist_lib.is_main()) == (0, 1,
                                                                          True)
    assert dist_lib.shard_by_rank(x, y, 4)[0] is not None
    assert torch.equal(dist_lib.all_reduce_sum(x.clone()), x)
    assert torch.equal(dist_lib.gather_by_rank(x), x)
    assert dist_lib.sum_scalars([1.5, 2]) == [1.5, 2]
    assert dist_lib.broadcast_flag(True) is True


def test_helpers_name_the_bad_value():
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        dist_lib.rank_slice(10, 0)
    with pytest.raises(ValueError, match="rank 2 outside range"):
        dist_lib.rank_slice(10, 1, rank_index=2, ranks=2)
    with pytest.raises(ValueError, match="lengths \\[2, 3\\]"):
        dist_lib.map_by_rank(lambda a, b: a, torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match="5 vs 4"):
        dist_lib.shard_by_rank(torch.zeros(5), torch.zeros(4))


if __name__ == "__main__":
    _worker(*sys.argv[1:4])
