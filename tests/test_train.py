import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hesslib.train as train_lib
from hesslib.data import Split
from hesslib.models import build_model
from hesslib.train import (
    CheckpointMismatchError,
    NonFiniteLossError,
    TrainConfig,
    accumulated_step_gradient,
    adversarial_batch,
    evaluate,
    gradient_norm,
    learning_rate,
    load_checkpoint,
    train,
)


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


def _batch(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g)
    return x, torch.randint(0, 10, (n,), generator=g)


def test_accumulated_step_equals_one_big_batch_for_m1():
    model = build_model("M1", seed=0).double()
    x, y = _batch()
    x = x.double()
    accumulated_step_gradient(model, x, y, chunk_size=16)  # chunks 16, 16, 8
    chunked = _grads(model)
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    for a, b in zip(chunked, _grads(model)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_accumulated_step_is_the_sum_of_chunk_gradients_with_batchnorm():
    model = build_model("C1", seed=0).double().train()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(12, 3, 32, 32, generator=g).double()
    y = torch.randint(0, 10, (12,), generator=g)
    accumulated_step_gradient(model, x, y, chunk_size=5)
    chunked = _grads(model)
    reference = [torch.zeros_like(p) for p in model.parameters()]
    for xc, yc in zip(x.split(5), y.split(5)):
        model.zero_grad()
        # each chunk normalized with its own BatchNorm statistics
        (F.cross_entropy(model(xc), yc, reduction="sum") / 12).backward()
        for acc, p in zip(reference, model.parameters()):
            acc += p.grad
    for a, b in zip(chunked, reference):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_learning_rate_scaling_and_halving():
    base = TrainConfig(batch_size=512)
    assert learning_rate(base, 1) == pytest.approx(0.01)
    assert learning_rate(base, 5) == pytest.approx(0.01)
    assert learning_rate(base, 6) == pytest.approx(0.005)
    assert learning_rate(base, 11) == pytest.approx(0.0025)
    linear = TrainConfig(batch_size=512, lr_scaling="linear")
    assert learning_rate(linear, 1) == pytest.approx(0.04)
    root = TrainConfig(batch_size=512, lr_scaling="sqrt")
    assert learning_rate(root, 1) == pytest.approx(0.02)


def _tiny_split(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return Split(x, y, torch.arange(n))


def test_training_is_deterministic_and_records_every_epoch():
    train_split, test_split = _tiny_split(96, 0), _tiny_split(32, 1)
    config = TrainConfig(batch_size=32, epochs=3, seed=5, grad_norm_samples=64)
    runs = []
    for _ in range(2):
        model = build_model("M1", seed=0)
        history = train(model, train_split, test_split, config).history
        runs.append((model, history))
    (a, ha), (b, hb) = runs
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert [r.epoch for r in ha] == [1, 2, 3]
    assert [r.steps for r in ha] == [3, 3, 3]
    assert ha == [r.__class__(**{**vars(r), "seconds": s.seconds})
                  for r, s in zip(hb, ha)]


def test_eval_every_skips_test_passes_but_not_the_last_or_the_weights():
    train_split, test_split = _tiny_split(96, 0), _tiny_split(32, 1)
    config = TrainConfig(batch_size=32, epochs=5, seed=5, grad_norm_samples=64)
    every = TrainConfig(**{**vars(config), "eval_every": 2})
    dense_model, thin_model = build_model("M1", seed=0), build_model("M1", seed=0)
    dense = train(dense_model, train_split, test_split, config).history
    thin = train(thin_model, train_split, test_split, every).history
    evaluated = [r.epoch for r in thin if not math.isnan(r.test_accuracy)]
    assert evaluated == [2, 4, 5]
    for d, t in zip(dense, thin):
        if t.epoch in evaluated:
            assert (d.test_loss, d.test_accuracy) == (t.test_loss, t.test_accuracy)
        assert d.train_loss == t.train_loss and d.grad_norm == t.grad_norm
    for p, q in zip(dense_model.parameters(), thin_model.parameters()):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="eval_every must be a positive integer"):
        TrainConfig(eval_every=0)


def test_gradient_norm_matches_direct_computation_and_leaves_no_trace():
    model = build_model("M1", seed=0).double().train()
    x, y = _batch(30)
    x = x.double()
    value = gradient_norm(model, x, y, chunk_size=7)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    grads = torch.autograd.grad(F.cross_entropy(model(x), y),
                                list(model.parameters()))
    expected = math.sqrt(sum((g**2).sum().item() for g in grads))
    assert value == pytest.approx(expected, rel=1e-10)


def test_evaluate_restores_mode_and_counts_correctly():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).train()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
        model[1].bias.zero_()
    x = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [1.0, 0, 0, 0]])
    split = Split(x.view(3, 1, 2, 2), torch.tensor([0, 1, 1]), torch.arange(3))
    loss, accuracy = evaluate(model, split, batch_size=2)
    assert model.training
    assert accuracy == pytest.approx(2 / 3)
    expected = F.cross_entropy(model(x), torch.tensor([0, 1, 1])).item()
    assert loss == pytest.approx(expected)


def test_non_finite_loss_names_epoch_and_step():
    train_split, test_split = _tiny_split(64, 0), _tiny_split(16, 1)
    config = TrainConfig(batch_size=16, epochs=2, lr=1e12)
    with pytest.raises(NonFiniteLossError, match=r"at epoch \d+, step \d+"):
        train(build_model("M1", seed=0), train_split, test_split, config)


def test_bad_configurations_are_rejected():
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="lr_scaling must be"):
        TrainConfig(lr_scaling="cubic")
    with pytest.raises(ValueError, match="lr must be positive"):
        TrainConfig(lr=-1.0)
    split = _tiny_split(8, 0)
    with pytest.raises(ValueError, match="batch_size 16 exceeds the training set"):
        train(build_model("M1"), split, split, TrainConfig(batch_size=16))


# ------------------------------------------------------- resumable runs


class _Interrupt(Exception):
    """Stands for a crash: raised from inside an epoch."""


def _crash_after(monkeypatch, steps):
    """Make the ``steps + 1``-th optimizer step raise (mid-epoch)."""
    real, calls = train_lib.sgd_step, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) > steps:
            raise _Interrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_lib, "sgd_step", step)


def _same_weights(a, b):
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), name


def _without_seconds(history):
    return [{**r.to_dict(), "seconds": 0.0} for r in history]


RESUME = TrainConfig(batch_size=16, epochs=3, seed=2, grad_norm_samples=32,
                     lr=0.05, lr_decay_every=2)


def test_resume_after_a_crash_mid_epoch_gives_the_same_weights(
        tmp_path, monkeypatch):
    train_split, test_split = _tiny_split(64, 0), _tiny_split(16, 1)
    reference = build_model("M1", seed=0)
    full = train(reference, train_split, test_split, RESUME)

    _crash_after(monkeypatch, steps=6)  # 4 steps per epoch: dies in epoch 2
    with pytest.raises(_Interrupt):
        train(build_model("M1", seed=0), train_split, test_split, RESUME,
              checkpoint_dir=tmp_path)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path, RESUME)["epoch"] == 1

    epochs_run = []
    resumed_model = build_model("M1", seed=7)  # other init: must be overwritten
    resumed = train(resumed_model, train_split, test_split, RESUME,
                    checkpoint_dir=tmp_path,
                    on_epoch_end=lambda m, r: epochs_run.append(r.epoch))
    assert resumed.resumed_from == 1 and epochs_run == [2, 3]
    _same_weights(resumed_model, reference)
    assert _without_seconds(resumed.history) == _without_seconds(full.history)


_KILLED_RUN = """
import os, signal, sys
import torch
import hesslib.train as train_lib
from hesslib.models import build_model
from hesslib.train import TrainConfig, train

folder = sys.argv[1]
torch.set_num_threads(int(sys.argv[2]))  # as the parent: same summation order
splits = torch.load(os.path.join(folder, "splits.pt"), weights_only=False)
config = TrainConfig(**torch.load(os.path.join(folder, "config.pt")))
real, calls = train_lib.sgd_step, []

def step(*args, **kwargs):
    calls.append(1)
    if len(calls) == 7:  # 4 steps per epoch: mid-epoch 2
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)

train_lib.sgd_step = step
train(build_model("M1", seed=0), *splits, config,
      checkpoint_dir=os.path.join(folder, "ckpt"))
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_resume_after_sigkill_mid_epoch_gives_the_same_weights(tmp_path):
    train_split, test_split = _tiny_split(64, 0), _tiny_split(16, 1)
    torch.save((train_split, test_split), tmp_path / "splits.pt")
    torch.save(RESUME.to_dict(), tmp_path / "config.pt")
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    command = [sys.executable, "-c", textwrap.dedent(_KILLED_RUN), str(tmp_path),
               str(torch.get_num_threads())]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert load_checkpoint(tmp_path / "ckpt", RESUME)["epoch"] == 1

    reference = build_model("M1", seed=0)
    train(reference, train_split, test_split, RESUME)
    resumed_model = build_model("M1", seed=3)
    resumed = train(resumed_model, train_split, test_split, RESUME,
                    checkpoint_dir=tmp_path / "ckpt")
    assert resumed.resumed_from == 1
    _same_weights(resumed_model, reference)


def test_a_finished_run_trains_nothing_when_started_again(tmp_path):
    train_split, test_split = _tiny_split(64, 0), _tiny_split(16, 1)
    first = build_model("M1", seed=0)
    train(first, train_split, test_split, RESUME, checkpoint_dir=tmp_path)
    again = build_model("M1", seed=3)
    calls = []
    result = train(again, train_split, test_split, RESUME,
                   checkpoint_dir=tmp_path, on_epoch_end=lambda *a: calls.append(1))
    assert result.resumed_from == RESUME.epochs and not calls
    _same_weights(first, again)


def test_non_finite_loss_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    train_split, test_split = _tiny_split(64, 0), _tiny_split(16, 1)
    one_epoch = TrainConfig(**{**RESUME.to_dict(), "epochs": 1})
    reference = build_model("M1", seed=0)
    train(reference, train_split, test_split, one_epoch)
    real, calls = train_lib.accumulated_step_gradient, []

    def poisoned(*args, **kwargs):
        calls.append(1)
        loss, correct = real(*args, **kwargs)
        return (math.nan if len(calls) == 6 else loss), correct

    monkeypatch.setattr(train_lib, "accumulated_step_gradient", poisoned)
    with pytest.raises(NonFiniteLossError, match="at epoch 2, step 2"):
        train(build_model("M1", seed=0), train_split, test_split, RESUME,
              checkpoint_dir=tmp_path)
    state = load_checkpoint(tmp_path, RESUME)
    assert state["epoch"] == 1 and len(state["history"]) == 1
    for name, value in reference.state_dict().items():  # the epoch-1 weights
        assert torch.equal(state["model"][name], value), name


def test_snapshots_are_kept_and_survive_resume(tmp_path, monkeypatch):
    train_split, test_split = _tiny_split(64, 0), _tiny_split(16, 1)
    full = train(build_model("M1", seed=0), train_split, test_split, RESUME,
                 snapshot_every=1)
    assert sorted(full.snapshots) == [1, 2, 3]
    _crash_after(monkeypatch, steps=10)  # dies in epoch 3
    with pytest.raises(_Interrupt):
        train(build_model("M1", seed=0), train_split, test_split, RESUME,
              checkpoint_dir=tmp_path, snapshot_every=1)
    monkeypatch.undo()
    resumed = train(build_model("M1", seed=0), train_split, test_split, RESUME,
                    checkpoint_dir=tmp_path, snapshot_every=1)
    assert resumed.resumed_from == 2 and sorted(resumed.snapshots) == [1, 2, 3]
    for epoch, state in full.snapshots.items():
        for name, value in state.items():
            assert torch.equal(resumed.snapshots[epoch][name], value), (epoch, name)
    with pytest.raises(ValueError, match="snapshot_every must be a positive"):
        train(build_model("M1"), train_split, test_split, RESUME, snapshot_every=0)


def test_callback_extras_are_recorded_and_survive_resume(tmp_path):
    train_split, test_split = _tiny_split(64, 0), _tiny_split(16, 1)
    seen = []

    def track(model, record):
        # called after the epoch's checkpoint is written
        assert load_checkpoint(tmp_path, RESUME)["epoch"] == record.epoch
        seen.append(record.epoch)
        if record.epoch == 2 and seen.count(2) == 1:
            raise _Interrupt  # dies inside the callback, after the checkpoint
        return {"lambda_1": 10.0 * record.epoch}

    with pytest.raises(_Interrupt):
        train(build_model("M1", seed=0), train_split, test_split, RESUME,
              checkpoint_dir=tmp_path, on_epoch_end=track)
    state = load_checkpoint(tmp_path, RESUME)
    assert state["epoch"] == 2 and state["callback_pending"]
    result = train(build_model("M1", seed=0), train_split, test_split, RESUME,
                   checkpoint_dir=tmp_path, on_epoch_end=track)
    assert seen == [1, 2, 2, 3]  # epoch 2 trained once, its callback redone
    assert [r.extras for r in result.history] == [
        {"lambda_1": 10.0}, {"lambda_1": 20.0}, {"lambda_1": 30.0}]
    stored = load_checkpoint(tmp_path, RESUME)["history"]
    assert [r["extras"] for r in stored] == [r.extras for r in result.history]


def test_bad_callback_results_and_foreign_checkpoints_are_refused(tmp_path):
    train_split, test_split = _tiny_split(64, 0), _tiny_split(16, 1)
    one = TrainConfig(batch_size=16, epochs=1, grad_norm_samples=32)
    with pytest.raises(TypeError, match="on_epoch_end returned 'x': 'big'"):
        train(build_model("M1"), train_split, test_split, one,
              on_epoch_end=lambda m, r: {"x": "big"})
    train(build_model("M1"), train_split, test_split, one, checkpoint_dir=tmp_path)
    other = TrainConfig(batch_size=32, epochs=1, grad_norm_samples=32)
    with pytest.raises(CheckpointMismatchError, match="differs in batch_size"):
        train(build_model("M1"), train_split, test_split, other,
              checkpoint_dir=tmp_path)


# ------------------------------------------------------------ robust training


def _robust(**kwargs):
    return TrainConfig(batch_size=40, chunk_size=16, epochs=1, seed=2, **kwargs)


def test_fgsm_mix_replaces_a_fifth_of_every_chunk_within_eps():
    model = build_model("M1", seed=0).train()
    x, y = _batch(40)
    config = _robust(robust="fgsm_mix", robust_eps=0.03)
    g = torch.Generator().manual_seed(0)
    out = adversarial_batch(model, x, y, config, generator=g)
    assert model.training
    changed = (out != x).flatten(1).any(1)
    # chunks of 16, 16 and 8 samples: round(0.2 * n) = 3, 3, 2 replaced
    assert [int(c.sum()) for c in changed.split(16)] == [3, 3, 2]
    assert (out - x).abs().max() <= 0.03 + 1e-7
    assert out.min() >= 0 and out.max() <= 1


def test_pgd_training_batch_stays_in_the_ball_and_box():
    model = build_model("M1", seed=0).train()
    x, y = _batch(20)
    config = _robust(robust="pgd", robust_eps=0.05, robust_steps=3)
    out = adversarial_batch(model, x, y, config,
                            generator=torch.Generator().manual_seed(0))
    assert (out != x).flatten(1).any(1).all()
    assert (out - x).abs().max() <= 0.05 + 1e-7
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("robust", ["fgsm_mix", "pgd"])
def test_robust_training_is_deterministic_and_differs_from_plain(robust):
    train_split, test_split = _tiny_split(80, 0), _tiny_split(16, 1)
    config = _robust(robust=robust, robust_eps=0.1, robust_steps=2,
                     grad_norm_samples=32)
    weights = []
    for cfg in (config, config, _robust(grad_norm_samples=32)):
        model = build_model("M1", seed=0)
        train(model, train_split, test_split, cfg)
        weights.append(torch.cat([p.flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])


def test_bad_robust_settings_are_rejected():
    with pytest.raises(ValueError, match="robust must be 'none', 'fgsm_mix'"):
        TrainConfig(robust="trades")
    with pytest.raises(ValueError, match=r"robust_fraction must lie in \[0, 1\]"):
        TrainConfig(robust_fraction=1.5)
    with pytest.raises(ValueError, match="robust_eps must be a finite number"):
        TrainConfig(robust_eps=-0.1)
    with pytest.raises(ValueError, match="robust_norm must be 'linf' or 'l2'"):
        TrainConfig(robust_norm="l1")
