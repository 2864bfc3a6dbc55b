import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hesslib.data import Split
from hesslib.models import build_model
from hesslib.train import (
    NonFiniteLossError,
    TrainConfig,
    accumulated_step_gradient,
    evaluate,
    gradient_norm,
    learning_rate,
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
        history = train(model, train_split, test_split, config)
        runs.append((model, history))
    (a, ha), (b, hb) = runs
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert [r.epoch for r in ha] == [1, 2, 3]
    assert [r.steps for r in ha] == [3, 3, 3]
    assert ha == [r.__class__(**{**vars(r), "seconds": s.seconds})
                  for r, s in zip(hb, ha)]


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
