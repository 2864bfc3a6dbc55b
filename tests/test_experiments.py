"""Training runs through the results store: keys, train once, resume."""

import dataclasses
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hesslib.train as train_lib
from hesslib.data import Split
from hesslib.experiments import (
    RUN_KIND,
    RunSpec,
    load_splits,
    run_config,
    run_key,
    run_training,
)
from hesslib.store import Store
from hesslib.train import TrainConfig

CONFIG = TrainConfig(batch_size=16, epochs=2, seed=1, grad_norm_samples=32)
SPEC = RunSpec("M1", 64, 16, CONFIG)


def _split(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g)
    return Split(x, torch.randint(0, 10, (n,), generator=g), torch.arange(n))


SPLITS = (_split(64, 0), _split(16, 1))


@pytest.fixture
def epochs_trained(monkeypatch):
    """Count the epochs actually trained (in this process)."""
    real, trained = train_lib._train_epoch, []

    def counted(*args, **kwargs):
        record = real(*args, **kwargs)
        trained.append(record.epoch)
        return record

    monkeypatch.setattr(train_lib, "_train_epoch", counted)
    return trained


def _assert_same_run(a, b):
    assert a.history == b.history  # seconds included: loaded from the record
    state_a, state_b = a.model.state_dict(), b.model.state_dict()
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), name


def test_a_stored_run_is_trained_once_then_loaded(tmp_path, epochs_trained, caplog):
    store = Store(tmp_path)
    with caplog.at_level(logging.INFO, logger="hesslib.experiments"):
        first = run_training(SPEC, splits=SPLITS, store=store)
        assert epochs_trained == [1, 2]
        second = run_training(SPEC, splits=SPLITS, store=store)
    assert epochs_trained == [1, 2]  # nothing trained the second time
    assert not first.from_store and second.from_store
    assert first.key == second.key == run_key(SPEC, "cpu")
    assert not second.model.training
    _assert_same_run(first, second)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith(f"trained run {first.key}")
    assert messages[1].startswith(f"loaded run {first.key} from the store")
    assert [info.key for info in store.list(RUN_KIND)] == [first.key]
    assert not any((tmp_path / ".work" / RUN_KIND).iterdir())  # workdir removed


def test_without_a_store_every_call_trains(epochs_trained):
    result = run_training(SPEC, splits=SPLITS)
    run_training(SPEC, splits=SPLITS)
    assert epochs_trained == [1, 2, 1, 2]
    assert result.key is None and not result.from_store


class _Interrupt(Exception):
    pass


def test_an_interrupted_stored_run_resumes_from_its_last_epoch(
        tmp_path, epochs_trained, monkeypatch):
    store = Store(tmp_path)
    spec = dataclasses.replace(SPEC, config=dataclasses.replace(CONFIG, epochs=3))
    real = train_lib.sgd_step
    steps = []

    def crashing(*args, **kwargs):
        steps.append(1)
        if len(steps) == 6:  # 4 steps per epoch: dies in epoch 2
            raise _Interrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_lib, "sgd_step", crashing)
    with pytest.raises(_Interrupt):
        run_training(spec, splits=SPLITS, store=store)
    assert store.get(RUN_KIND, run_config(spec, "cpu")) is None
    monkeypatch.setattr(train_lib, "sgd_step", real)
    resumed = run_training(spec, splits=SPLITS, store=store)
    assert epochs_trained == [1, 2, 3]  # finished epochs; epoch 1 not redone
    uninterrupted = run_training(spec, splits=SPLITS)
    _assert_same_run(resumed, dataclasses.replace(
        uninterrupted, history=[dataclasses.replace(r, seconds=s.seconds)
                                for r, s in zip(uninterrupted.history,
                                                resumed.history)]))


def test_snapshots_and_callback_values_come_back_from_the_store(
        tmp_path, epochs_trained):
    store = Store(tmp_path)
    spec = dataclasses.replace(SPEC, snapshot_every=1)

    def track(model, record):
        return {"weight_norm": sum(p.norm().item() for p in model.parameters())}

    first = run_training(spec, splits=SPLITS, store=store, on_epoch_end=track,
                         callback_name="probe")
    second = run_training(spec, splits=SPLITS, store=store, on_epoch_end=track,
                          callback_name="probe")
    assert epochs_trained == [1, 2] and second.from_store
    assert sorted(second.snapshots) == [1, 2]
    for epoch, state in first.snapshots.items():
        for name, value in state.items():
            assert torch.equal(second.snapshots[epoch][name], value)
    assert all("weight_norm" in r.extras for r in second.history)
    _assert_same_run(first, second)
    other = run_training(spec, splits=SPLITS, store=store)  # no callback
    assert not other.from_store and other.key != first.key


def _changed(**changes):
    config = {k: v for k, v in changes.items() if k in CONFIG.to_dict()}
    spec = {k: v for k, v in changes.items() if k not in config}
    return dataclasses.replace(SPEC, config=dataclasses.replace(CONFIG, **config),
                               **spec)


@pytest.mark.parametrize("change", [
    {"batch_size": 32}, {"seed": 2}, {"lr_scaling": "sqrt"}, {"lr": 0.02},
    {"epochs": 3}, {"chunk_size": 8}, {"train_size": 128}, {"test_size": 32},
    {"subset_seed": 1}, {"model": "C1"}, {"snapshot_every": 1},
], ids=lambda change: next(iter(change)))
def test_the_store_key_changes_with_every_field_of_the_spec(change):
    assert run_key(_changed(**change), "cpu") != run_key(SPEC, "cpu")


def test_the_store_key_is_stable_and_names_device_and_torch():
    same = RunSpec("M1", 64, 16, TrainConfig(batch_size=16, epochs=2, seed=1,
                                             grad_norm_samples=32))
    assert run_key(same, "cpu") == run_key(SPEC, torch.device("cpu"))
    assert run_key(SPEC, "cuda") != run_key(SPEC, "cpu")
    environment = run_config(SPEC, "cpu")["environment"]
    assert environment["torch"] == torch.__version__
    assert environment["device_type"] == "cpu"
    assert run_key(SPEC, "cpu", callback_name="x") != run_key(SPEC, "cpu")


def test_bad_arguments_are_refused_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match="the train split has 64 samples but "
                                         "spec.train_size is 128"):
        run_training(_changed(train_size=128), splits=SPLITS)
    with pytest.raises(ValueError, match="callback_name is None"):
        run_training(SPEC, splits=SPLITS, store=Store(tmp_path),
                     on_epoch_end=lambda m, r: None)


@pytest.mark.slow
def test_real_mnist_run_is_loaded_from_the_store(tmp_path, data_dir, epochs_trained):
    spec = RunSpec("M1", 300, 200, TrainConfig(batch_size=20, epochs=2, lr=0.05,
                                               grad_norm_samples=100))
    splits = load_splits("mnist", 300, 200, root=data_dir)
    store = Store(tmp_path)
    first = run_training(spec, splits=splits, store=store)
    second = run_training(spec, splits=splits, store=store)
    assert epochs_trained == [1, 2] and second.from_store
    assert first.final.test_accuracy > 0.5  # chance is 0.1
    _assert_same_run(first, second)


_RACE = """
import sys
import torch
from hesslib.data import Split
from hesslib.experiments import RunSpec, run_training
from hesslib.store import Store
from hesslib.train import TrainConfig

g = torch.Generator().manual_seed(0)
x, y = torch.rand(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g)
split = Split(x, y, torch.arange(64))
spec = RunSpec("M1", 64, 64, TrainConfig(batch_size=16, epochs=2, grad_norm_samples=32))
result = run_training(spec, splits=(split, split), store=Store(sys.argv[1]))
print("loaded" if result.from_store else "trained", result.key)
"""


def test_two_processes_train_a_run_once(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    command = [sys.executable, "-c", _RACE, str(tmp_path)]
    racers = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
              for _ in range(2)]
    outputs = [racer.communicate(timeout=300) for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0], outputs
    words = sorted(out.split()[0] for out, _ in outputs)
    assert words == ["loaded", "trained"]
    assert len({out.split()[1] for out, _ in outputs}) == 1
