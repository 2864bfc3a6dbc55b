"""Tests for hesslib.landscape on tiny float64 models with closed-form references."""

from __future__ import annotations

import copy
import dataclasses
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hesslib.landscape import (
    LossCurve,
    LossSurface,
    interpolate,
    loss_along_line,
    loss_surface,
    random_direction,
)

# float64 round-off of O(1) losses summed over a few dozen samples.
EXACT_ATOL = 1e-10
N_SAMPLES = 24
N_IN, N_OUT = 5, 3
ALPHAS = (-1.5, -0.3, 0.0, 0.4, 2.0)
BETAS = (-1.0, 0.0, 0.7)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Deep copies of every parameter and buffer."""
    return {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}


def _identities(model: nn.Module) -> dict[str, int]:
    return {k: id(v) for k, v in model.state_dict(keep_vars=True).items()}


def _assert_bitwise_equal(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict(keep_vars=True)
    assert after.keys() == before.keys()
    for name, tensor in before.items():
        assert after[name].dtype == tensor.dtype, name
        assert torch.equal(after[name].detach(), tensor), f"{name} changed"


def _modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def _classification(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(N_SAMPLES, 1, 4, 4, generator=g, dtype=torch.float64)
    y = torch.randint(N_OUT, (N_SAMPLES,), generator=g)
    return x, y


def _bn_net(seed: int) -> nn.Module:
    """A CNN with BatchNorm and dropout whose running statistics are not trivial."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(64, N_OUT),
    ).double()
    x, _ = _classification(seed + 100)
    model.train()
    with torch.no_grad():
        for _ in range(3):  # fill the running statistics with data
            model(x)
    return model


def _eval_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    was = _modes(model)
    model.eval()
    with torch.no_grad():
        loss = F.cross_entropy(model(x), y).item()
    for m, training in zip(model.modules(), was):
        m.training = training
    return loss


# ------------------------------------------------------------------ quadratic oracle


def _mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Half the squared error, summed over outputs, averaged over the batch."""
    return 0.5 * (outputs - targets).pow(2).sum(dim=1).mean()


@pytest.fixture(scope="module")
def regression() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Linear(N_IN, N_OUT).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N_SAMPLES, N_IN, generator=g, dtype=torch.float64)
    y = torch.randn(N_SAMPLES, N_OUT, generator=g, dtype=torch.float64)
    return model, x, y


def _quadratic(model: nn.Linear, x: torch.Tensor, y: torch.Tensor, step: list):
    r"""Closed form of the mean loss at theta + step, without autograd.

    With z_i = [x_i, 1], the model's outputs are W z_i with W = [weight, bias],
    so for a step E = [dW, db]:
    L(theta + step) = L0 + (1/N) sum_i r_i^T E z_i + (1/(2N)) sum_i |E z_i|^2,
    the last two terms being g^T d and (1/2) d^T H d.
    """
    z = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    w = torch.cat([model.weight.detach(), model.bias.detach()[:, None]], dim=1)
    e = torch.cat([step[0], step[1][:, None]], dim=1)
    r = z @ w.T - y
    n = len(x)
    l0 = 0.5 * r.pow(2).sum() / n
    g_d = (r * (z @ e.T)).sum() / n
    d_h_d = (z @ e.T).pow(2).sum() / n
    return float(l0 + g_d + 0.5 * d_h_d)


def _directions(model: nn.Module, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    params = model.parameters()
    return [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]


def test_line_matches_the_quadratic_closed_form(regression):
    model, x, y = regression
    d = _directions(model, 2)
    curve = loss_along_line(model, d, ALPHAS, x, y, loss_fn=_mse, batch_size=7)
    expected = [_quadratic(model, x, y, [a * t for t in d]) for a in ALPHAS]
    torch.testing.assert_close(
        curve.loss, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=EXACT_ATOL
    )
    assert curve.alphas.tolist() == list(ALPHAS)
    assert curve.n_samples == N_SAMPLES
    assert curve.accuracy.isnan().all()  # regression: no accuracy


def test_line_accepts_a_flat_vector(regression):
    model, x, y = regression
    d = _directions(model, 3)
    flat = torch.cat([t.flatten() for t in d])
    by_list = loss_along_line(model, d, ALPHAS, x, y, loss_fn=_mse)
    alphas = torch.tensor(ALPHAS, dtype=torch.float64)
    by_flat = loss_along_line(model, flat, alphas, x, y, loss_fn=_mse)
    assert torch.equal(by_list.loss, by_flat.loss)


def test_surface_matches_the_quadratic_closed_form(regression):
    model, x, y = regression
    d1, d2 = _directions(model, 4), _directions(model, 5)
    surface = loss_surface(
        model, d1, d2, ALPHAS, BETAS, x, y, loss_fn=_mse, batch_size=5
    )
    expected = torch.tensor(
        [
            [
                _quadratic(model, x, y, [a * u + b * v for u, v in zip(d1, d2)])
                for b in BETAS
            ]
            for a in ALPHAS
        ],
        dtype=torch.float64,
    )
    assert surface.loss.shape == (len(ALPHAS), len(BETAS))
    torch.testing.assert_close(surface.loss, expected, rtol=0, atol=EXACT_ATOL)
    assert surface.alphas.tolist() == list(ALPHAS)
    assert surface.betas.tolist() == list(BETAS)
    # The column at beta = 0 is the line along d1.
    line = loss_along_line(model, d1, ALPHAS, x, y, loss_fn=_mse)
    torch.testing.assert_close(surface.loss[:, 1], line.loss, rtol=0, atol=EXACT_ATOL)


def test_unit_normalization_measures_alpha_in_distance(regression):
    model, x, y = regression
    d = _directions(model, 6)
    norm = torch.cat([t.flatten() for t in d]).norm().item()
    unit = loss_along_line(model, d, ALPHAS, x, y, loss_fn=_mse, normalize="unit")
    scaled = loss_along_line(
        model, [t / norm for t in d], ALPHAS, x, y, loss_fn=_mse
    )
    torch.testing.assert_close(unit.loss, scaled.loss, rtol=0, atol=EXACT_ATOL)


# ------------------------------------------------------------ loss at alpha = 0


def test_loss_and_accuracy_at_zero_equal_the_models():
    model = _bn_net(0)
    x, y = _classification(1)
    d = random_direction(model, generator=torch.Generator().manual_seed(0),
                         normalization="none")  # fmt: skip
    curve = loss_along_line(model, d, [0.0, 1.0], x, y, batch_size=5)
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert curve.loss[0].item() == pytest.approx(
        F.cross_entropy(logits, y).item(), abs=EXACT_ATOL
    )
    assert curve.accuracy[0].item() == (logits.argmax(1) == y).double().mean().item()
    assert curve.loss[1].item() != pytest.approx(curve.loss[0].item())


def test_batch_size_does_not_change_the_result():
    model = _bn_net(0)
    x, y = _classification(1)
    d = _directions(model, 0)
    one = loss_along_line(model, d, ALPHAS, x, y, batch_size=N_SAMPLES)
    many = loss_along_line(model, d, ALPHAS, x, y, batch_size=5)
    torch.testing.assert_close(one.loss, many.loss, rtol=0, atol=EXACT_ATOL)
    assert torch.equal(one.accuracy, many.accuracy)


# ------------------------------------------------------------- restoration


def test_sweeps_leave_a_train_mode_bn_model_untouched():
    model = _bn_net(0)
    model[4].eval()  # a submodule in another mode than its parent
    modes, before, ids = _modes(model), _state(model), _identities(model)
    x, y = _classification(1)
    d1, d2 = _directions(model, 1), _directions(model, 2)
    loss_along_line(model, d1, ALPHAS, x, y, batch_size=5)
    loss_surface(model, d1, d2, ALPHAS, BETAS, x, y, normalize="filter")
    _assert_bitwise_equal(model, before)  # running stats and num_batches_tracked too
    assert _identities(model) == ids
    assert _modes(model) == modes
    assert model.training and not model[4].training
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_dropout_is_off_during_a_sweep():
    model = _bn_net(0)  # in train mode: dropout would make repeats differ
    x, y = _classification(1)
    d = _directions(model, 1)
    first = loss_along_line(model, d, [0.5, 0.5], x, y)
    assert first.loss[0] == first.loss[1]


class _FailsOnThirdCall(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _bn_net(3)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("forward failed on purpose")
        return self.net(x)


@pytest.mark.parametrize("sweep", ["line", "surface", "interpolate"])
def test_restoration_after_an_exception_mid_sweep(sweep):
    model = _FailsOnThirdCall()
    model.net[1].eval()
    modes, before, ids = _modes(model), _state(model), _identities(model)
    x, y = _classification(1)
    d = _directions(model, 1)
    with pytest.raises(RuntimeError, match="on purpose"):
        if sweep == "line":
            loss_along_line(model, d, ALPHAS, x, y, batch_size=10)
        elif sweep == "surface":
            loss_surface(model, d, d, ALPHAS, BETAS, x, y, batch_size=10)
        else:
            other = _FailsOnThirdCall()
            interpolate(model, other, ALPHAS, x, y, batch_size=10)
    assert model.calls == 3
    _assert_bitwise_equal(model, before)
    assert _identities(model) == ids
    assert _modes(model) == modes


# --------------------------------------------------------------- random directions


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.flatten() for t in tensors])


def test_random_direction_global_has_the_norm_of_like():
    model = _bn_net(0)
    like = _directions(model, 9)
    g = torch.Generator().manual_seed(0)
    d = random_direction(model, like=like, generator=g, normalization="global")
    assert [t.shape for t in d] == [p.shape for p in model.parameters()]
    assert _flat(d).norm().item() == pytest.approx(_flat(like).norm().item(), rel=1e-12)
    flat_like = _flat(like) / _flat(like).norm()  # a unit vector, as v1
    g = torch.Generator().manual_seed(0)
    unit = random_direction(model, like=flat_like, generator=g, normalization="global")
    assert _flat(unit).norm().item() == pytest.approx(1.0, rel=1e-12)
    torch.testing.assert_close(_flat(unit), _flat(d) / _flat(d).norm())


def test_random_direction_global_defaults_to_the_weights_norm():
    model = _bn_net(0)
    g = torch.Generator().manual_seed(0)
    d = random_direction(model, generator=g, normalization="global")
    theta = _flat([p.detach() for p in model.parameters()])
    assert _flat(d).norm().item() == pytest.approx(theta.norm().item(), rel=1e-12)


def test_random_direction_filter_has_the_weights_filter_norms():
    model = _bn_net(0)
    g = torch.Generator().manual_seed(0)
    d = random_direction(model, generator=g, normalization="filter")
    for (name, p), t in zip(model.named_parameters(), d):
        assert t.dtype == p.dtype
        if p.dim() <= 1:  # biases and BatchNorm: zero, as Li et al.
            assert not t.any(), name
        else:
            torch.testing.assert_close(
                t.flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1),
                rtol=1e-12, atol=0,
            )  # fmt: skip


def test_random_direction_is_reproducible_and_gaussian():
    model = nn.Linear(200, 50).double()
    first = random_direction(
        model, generator=torch.Generator().manual_seed(5), normalization="none"
    )
    again = random_direction(
        model, generator=torch.Generator().manual_seed(5), normalization="none"
    )
    other = random_direction(
        model, generator=torch.Generator().manual_seed(6), normalization="none"
    )
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])
    # 10050 standard normal entries: mean within 5 / sqrt(n), variance near 1.
    flat = _flat(first)
    assert abs(flat.mean().item()) < 5 / flat.numel() ** 0.5
    assert flat.var().item() == pytest.approx(1.0, abs=0.1)


def test_filter_normalize_of_a_given_direction_matches_random_direction():
    model = _bn_net(0)
    x, y = _classification(1)
    g = torch.Generator().manual_seed(0)
    raw = random_direction(model, generator=g, normalization="none")
    g = torch.Generator().manual_seed(0)
    filtered = random_direction(model, generator=g, normalization="filter")
    by_option = loss_along_line(model, raw, ALPHAS, x, y, normalize="filter")
    by_hand = loss_along_line(model, filtered, ALPHAS, x, y)
    torch.testing.assert_close(by_option.loss, by_hand.loss, rtol=0, atol=EXACT_ATOL)


def test_random_direction_errors():
    model = _bn_net(0)
    g = torch.Generator().manual_seed(0)
    like = _directions(model, 0)
    with pytest.raises(ValueError, match="normalization must be one of .*'layer'"):
        random_direction(model, generator=g, normalization="layer")
    with pytest.raises(ValueError, match="like is only used with .*'filter'"):
        random_direction(model, like=like, generator=g, normalization="filter")
    with pytest.raises(ValueError, match="like has norm 0"):
        zeros = [torch.zeros_like(t) for t in like]
        random_direction(model, like=zeros, generator=g, normalization="global")
    with pytest.raises(ValueError, match=re.escape("like for parameter '0.weight'")):
        bad = [torch.zeros(3)] + like[1:]
        random_direction(model, like=bad, generator=g, normalization="global")


# ------------------------------------------------------------------- interpolation


def test_interpolation_endpoints_are_the_two_models():
    a, b = _bn_net(0), _bn_net(1)
    x, y = _classification(2)
    curve = interpolate(a, b, [-0.5, 0.0, 0.5, 1.0, 1.5], x, y, batch_size=7)
    assert curve.loss[1].item() == pytest.approx(_eval_loss(a, x, y), abs=EXACT_ATOL)
    assert curve.loss[3].item() == pytest.approx(_eval_loss(b, x, y), abs=EXACT_ATOL)
    assert curve.loss.isfinite().all()
    assert curve.alphas.tolist() == [-0.5, 0.0, 0.5, 1.0, 1.5]


def _blend(a: nn.Module, b: nn.Module, alpha: float, buffers: str) -> nn.Module:
    """A third model holding the interpolation, built from state dicts."""
    state_a, state_b = a.state_dict(), b.state_dict()
    buffer_names = {name for name, _ in a.named_buffers()}
    blended = {}
    for name, t in state_a.items():
        keep = not t.is_floating_point() or (buffers == "a" and name in buffer_names)
        blended[name] = t if keep else (1 - alpha) * t + alpha * state_b[name]
    model = copy.deepcopy(a)
    model.load_state_dict(blended)
    return model


@pytest.mark.parametrize("buffers", ["interpolate", "a"])
def test_interpolation_buffer_policy(buffers):
    a, b = _bn_net(0), _bn_net(1)
    assert not torch.equal(a[1].running_mean, b[1].running_mean)
    x, y = _classification(2)
    alphas = [-0.5, 0.3, 1.0, 1.5]
    curve = interpolate(a, b, alphas, x, y, buffers=buffers)
    expected = [_eval_loss(_blend(a, b, alpha, buffers), x, y) for alpha in alphas]
    torch.testing.assert_close(
        curve.loss, torch.tensor(expected, dtype=torch.float64),
        rtol=0, atol=EXACT_ATOL,
    )  # fmt: skip
    at_b = curve.loss[2].item()
    if buffers == "a":  # model b's weights with model a's statistics: not model b
        assert at_b != pytest.approx(_eval_loss(b, x, y), abs=1e-6)
    else:
        assert at_b == pytest.approx(_eval_loss(b, x, y), abs=EXACT_ATOL)


def test_interpolation_leaves_both_models_untouched():
    a, b = _bn_net(0), _bn_net(1)
    b.eval()
    modes_a, modes_b = _modes(a), _modes(b)
    state_a, state_b = _state(a), _state(b)
    x, y = _classification(2)
    interpolate(a, b, ALPHAS, x, y)
    _assert_bitwise_equal(a, state_a)
    _assert_bitwise_equal(b, state_b)
    assert _modes(a) == modes_a and _modes(b) == modes_b


def test_interpolation_warns_on_negative_variance():
    a, b = _bn_net(0), _bn_net(1)
    with torch.no_grad():
        b[1].running_var.copy_(a[1].running_var / 10)  # (1 - 1.5) va + 1.5 vb < 0
    x, y = _classification(2)
    with pytest.warns(RuntimeWarning, match=r"alpha=1\.5.*'1\.running_var'"):
        curve = interpolate(a, b, [0.0, 1.5], x, y)
    assert curve.loss[1].isnan()
    kept = interpolate(a, b, [0.0, 1.5], x, y, buffers="a")
    assert kept.loss.isfinite().all()


def test_interpolation_refuses_different_architectures():
    x, y = _classification(2)
    a = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).double()
    wider = nn.Sequential(nn.Flatten(), nn.Linear(16, 4)).double()
    deeper = nn.Sequential(nn.Flatten(), nn.Linear(16, 3), nn.Linear(3, 3)).double()
    with pytest.raises(ValueError, match=r"'1\.weight' has shape \(3, 16\) in model_a "
                       r"but \(4, 16\) in model_b"):  # fmt: skip
        interpolate(a, wider, [0.0], x, y)
    with pytest.raises(ValueError, match=r"only in model_b \['2\.bias', '2\.weight'\]"):
        interpolate(a, deeper, [0.0], x, y)
    with pytest.raises(ValueError, match="buffers must be one of .*'b'"):
        interpolate(a, a, [0.0], x, y, buffers="b")


# --------------------------------------------------------------------------- errors


def test_direction_of_the_wrong_shape_names_the_parameter_and_both_shapes():
    model = _bn_net(0)
    x, y = _classification(1)
    d = _directions(model, 0)
    bad = d[:2] + [torch.zeros(5)] + d[3:]  # '1.weight' is BatchNorm's, shape (4,)
    with pytest.raises(
        ValueError,
        match=re.escape("for parameter '1.weight' has shape (5,) but the parameter "
                        "has shape (4,)"),
    ):  # fmt: skip
        loss_along_line(model, bad, ALPHAS, x, y)
    with pytest.raises(ValueError, match=re.escape("d2 for parameter '1.weight'")):
        loss_surface(model, d, bad, ALPHAS, BETAS, x, y)
    with pytest.raises(ValueError, match="has 5 tensors but the model has 6 trainable"):
        loss_along_line(model, d[:5], ALPHAS, x, y)
    total = sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match=f"flat vector of the {total} trainable .*"
                       rf"got shape \({total + 1},\)"):  # fmt: skip
        loss_along_line(model, torch.zeros(total + 1), ALPHAS, x, y)
    with pytest.raises(ValueError, match=rf"got shape \(1, {total}\)"):
        loss_along_line(model, torch.zeros(1, total), ALPHAS, x, y)


def test_frozen_parameters_are_not_part_of_the_direction():
    model = _bn_net(0)
    model[0].weight.requires_grad_(False)
    x, y = _classification(1)
    trainable = [p for p in model.parameters() if p.requires_grad]
    d = [torch.ones_like(p) for p in trainable]
    curve = loss_along_line(model, d, [0.0, 0.1], x, y)
    assert curve.loss.isfinite().all()
    with pytest.raises(ValueError, match="has 6 tensors but the model has 5"):
        loss_along_line(model, d + [torch.ones(1)], [0.0], x, y)


def test_argument_errors():
    model = _bn_net(0)
    x, y = _classification(1)
    d = _directions(model, 0)
    with pytest.raises(ValueError, match="alphas is empty"):
        loss_along_line(model, d, [], x, y)
    with pytest.raises(ValueError, match="betas must be finite numbers, got nan"):
        loss_surface(model, d, d, [0.0], [float("nan")], x, y)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        loss_along_line(model, d, [0.0], x, y, batch_size=0)
    with pytest.raises(ValueError, match="normalize must be one of .*'filterwise'"):
        loss_along_line(model, d, [0.0], x, y, normalize="filterwise")
    with pytest.raises(ValueError, match="x and y must hold the same number"):
        loss_along_line(model, d, [0.0], x, y[:-1])
    with pytest.raises(ValueError, match="loss_fn must return the batch mean"):
        loss_along_line(
            model, d, [0.0], x, y,
            loss_fn=lambda out, t: F.cross_entropy(out, t, reduction="none"),
        )  # fmt: skip
    with pytest.raises(ValueError, match="norm 0, so normalize='unit'"):
        loss_along_line(model, [torch.zeros_like(t) for t in d], [0.0], x, y,
                        normalize="unit")  # fmt: skip
    no_stats = nn.Sequential(
        nn.Flatten(), nn.BatchNorm1d(16, track_running_stats=False)
    )
    with pytest.raises(ValueError, match="BatchNorm layer '1' has track_running_stats"):
        loss_along_line(no_stats, _directions(no_stats, 0), [0.0], x.float(), y)


def test_results_are_frozen():
    model = _bn_net(0)
    x, y = _classification(1)
    d = _directions(model, 0)
    curve = loss_along_line(model, d, [0.0], x, y)
    surface = loss_surface(model, d, d, [0.0], [0.0], x, y)
    assert isinstance(curve, LossCurve) and isinstance(surface, LossSurface)
    with pytest.raises(dataclasses.FrozenInstanceError):
        curve.loss = torch.zeros(1)  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        surface.betas = torch.zeros(1)  # type: ignore[misc]
