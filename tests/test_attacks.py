"""Tests for hesslib.attacks on tiny float64 models trained for a few steps."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hesslib import attacks
from hesslib.attacks import (
    RobustnessCurve,
    adversarial_mix,
    attack_dataset,
    fgsm,
    pgd,
    pgd_batch,
    robustness_curve,
)

# float64 round-off on [0, 1] pixels: x + eps - x differs from eps by a few ulps.
BALL_ATOL = 1e-12
# The same in float32 (an ulp of 1.0 is 1.2e-7).
BALL_ATOL_FLOAT32 = 1e-6
N_SAMPLES = 48
N_CLASSES = 3
SHAPE = (1, 4, 4)
EPS_VALUES = (0.0, 1e-3, 0.03, 0.1, 0.5, 2.0)
NORMS = ("linf", "l2")


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes whose pixel means differ, clipped to [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(N_SAMPLES) % N_CLASSES
    centers = torch.rand(N_CLASSES, *SHAPE, generator=g, dtype=torch.float64)
    # Overlapping classes keep the trained model's loss away from zero (no saturation).
    noise = 0.5 * torch.randn(N_SAMPLES, *SHAPE, generator=g, dtype=torch.float64)
    return (centers[y] + noise).clamp(0, 1), y


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    model.train()
    for _ in range(40):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    return _data()


@pytest.fixture(scope="module")
def mlp(data: tuple[torch.Tensor, torch.Tensor]) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))
    return _train(model.double(), *data).eval()


@pytest.fixture(scope="module")
def cnn(data: tuple[torch.Tensor, torch.Tensor]) -> nn.Module:
    """A CNN with BatchNorm and dropout, left in train mode after training."""
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(64, N_CLASSES),
    )
    return _train(model.double(), *data)


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return F.cross_entropy(model(x), y).item()


def _assert_feasible(x_adv, x, eps, norm, atol=BALL_ATOL) -> None:
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)
    assert size.max().item() <= eps + atol, f"left the {norm} ball of {eps}"
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0, "left the box"


# ---------------------------------------------------------------- ball and box


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("eps", EPS_VALUES)
@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_stays_in_ball_and_box(mlp, data, norm, eps, random_start):
    x, y = data
    g = torch.Generator().manual_seed(0)
    # A large step size pushes every iterate against the ball and the box.
    x_adv = pgd(
        mlp, x, y, eps, norm=norm, steps=3, step_size=3 * eps + 0.1,
        random_start=random_start, generator=g,
    )  # fmt: skip
    _assert_feasible(x_adv, x, eps, norm)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype


@pytest.mark.parametrize("norm", NORMS)
def test_float32_stays_in_ball_and_box(mlp, data, norm):
    x, y = data
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    x32 = x.float()
    for eps in EPS_VALUES:
        g = torch.Generator().manual_seed(0)
        x_adv = pgd(model, x32, y, eps, norm=norm, steps=3, generator=g)
        assert x_adv.dtype == torch.float32
        _assert_feasible(x_adv, x32, eps, norm, atol=BALL_ATOL_FLOAT32)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("eps", EPS_VALUES)
def test_fgsm_stays_in_ball_and_box(mlp, data, norm, eps):
    x, y = data
    _assert_feasible(fgsm(mlp, x, y, eps, norm=norm), x, eps, norm)


def test_callback_iterates_stay_feasible(mlp, data):
    x, y = data
    seen = []

    def record(step, x_adv):
        assert not mlp.training, "callback must run in eval mode"
        seen.append((step, x_adv.clone()))

    g = torch.Generator().manual_seed(0)
    out = pgd(mlp, x, y, 0.3, norm="l2", steps=4, generator=g, callback=record)
    assert [step for step, _ in seen] == [0, 1, 2, 3, 4]
    for _, iterate in seen:
        _assert_feasible(iterate, x, 0.3, "l2")
    assert torch.equal(seen[-1][1], out)


def test_l2_clamp_after_ball_never_leaves_the_ball():
    """Box clamping moves each coordinate towards x's box, so the distance shrinks."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 8, generator=g, dtype=torch.float64)
    far = x + 3 * torch.randn(200, 8, generator=g, dtype=torch.float64)
    eps = 0.7
    delta = far - x
    on_ball = x + delta * (eps / delta.norm(dim=1, keepdim=True)).clamp(max=1.0)
    clamped = on_ball.clamp(0, 1)
    before = (on_ball - x).norm(dim=1)
    after = (clamped - x).norm(dim=1)
    assert (after <= before + BALL_ATOL).all()
    assert (clamped != on_ball).any(), "the test must exercise the clamp"
    projected = attacks._project(far, x, eps, "l2")
    assert torch.equal(projected, clamped)
    assert ((projected - x).norm(dim=1) <= eps + BALL_ATOL).all()


@pytest.mark.parametrize("norm", NORMS)
def test_random_start_is_uniform_in_the_ball(norm):
    """Inside the box, (radius / eps)^d (L2) and each coordinate (linf) are uniform."""
    n, eps = 4000, 0.2
    x = torch.full((n, 1, 2, 2), 0.5, dtype=torch.float64)  # the box never binds
    starts = []
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).double()
    pgd(
        model, x, torch.zeros(n, dtype=torch.long), eps, norm=norm, steps=1,
        generator=torch.Generator().manual_seed(0),
        callback=lambda step, x_adv: starts.append(x_adv) if step == 0 else None,
    )  # fmt: skip
    delta = (starts[0] - x).flatten(1) / eps
    u = delta.norm(dim=1) ** 4 if norm == "l2" else (delta + 1) / 2
    # Mean and variance of U(0, 1) are 1/2 and 1/12; 4000 draws give ~0.005 error.
    assert u.mean().item() == pytest.approx(0.5, abs=0.03)
    assert u.var().item() == pytest.approx(1 / 12, abs=0.01)


@pytest.mark.parametrize("norm", NORMS)
def test_eps_zero_returns_x(mlp, data, norm):
    x, y = data
    assert torch.equal(fgsm(mlp, x, y, 0.0, norm=norm), x)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(pgd(mlp, x, y, 0.0, norm=norm, generator=g), x)


# ---------------------------------------------------------------------- strength


@pytest.mark.parametrize("norm", NORMS)
def test_fgsm_does_not_lower_the_loss(mlp, data, norm):
    x, y = data
    eps = 0.05 if norm == "linf" else 0.2
    assert _loss(mlp, fgsm(mlp, x, y, eps, norm=norm), y) > _loss(mlp, x, y)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_at_least_as_strong_as_fgsm(mlp, data, norm, random_start):
    x, y = data
    eps = 0.1 if norm == "linf" else 0.4
    loss_fgsm = _loss(mlp, fgsm(mlp, x, y, eps, norm=norm), y)
    for seed in range(3):  # a random start may land worse: check several
        g = torch.Generator().manual_seed(seed)
        x_adv = pgd(
            mlp, x, y, eps, norm=norm, steps=20, random_start=random_start, generator=g
        )
        assert _loss(mlp, x_adv, y) >= loss_fgsm


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_targeted_attack_raises_target_probability(mlp, data, attack):
    x, y = data
    target = (y + 1) % N_CLASSES
    if attack == "fgsm":
        x_adv = fgsm(mlp, x, target, 0.05, targeted=True)
    else:
        x_adv = pgd(mlp, x, target, 0.05, targeted=True, random_start=False)
    with torch.no_grad():
        before = mlp(x).softmax(1).gather(1, target[:, None])
        after = mlp(x_adv).softmax(1).gather(1, target[:, None])
    assert after.mean() > before.mean()
    assert (after >= before).float().mean() > 0.9


def test_iterative_fgsm_is_pgd_without_random_start(mlp, data):
    x, y = data
    step = 0.02
    x_manual = x
    for _ in range(3):
        x_manual = fgsm(mlp, x_manual, y, step)
        x_manual = torch.minimum(torch.maximum(x_manual, x - 0.05), x + 0.05)
    x_pgd = pgd(mlp, x, y, 0.05, steps=3, step_size=step, random_start=False)
    torch.testing.assert_close(x_pgd, x_manual, rtol=0, atol=BALL_ATOL)


# ------------------------------------------------------------ randomness, hygiene


@pytest.mark.parametrize("norm", NORMS)
def test_same_seed_same_examples(mlp, data, norm):
    x, y = data

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return pgd(mlp, x, y, 0.1, norm=norm, steps=2, generator=g)

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_pgd_batch_is_pgd():
    assert pgd_batch is pgd


def test_attacks_run_in_eval_mode_and_restore_modes(cnn, data):
    x, y = data
    cnn.train()
    cnn[1].eval()  # a mixed pattern must come back exactly
    modes = [m.training for m in cnn.modules()]
    g = torch.Generator().manual_seed(0)
    # Dropout off and BatchNorm frozen: two runs give identical results.
    first = pgd(cnn, x, y, 0.05, steps=2, generator=g.manual_seed(0))
    second = pgd(cnn, x, y, 0.05, steps=2, generator=g.manual_seed(0))
    assert torch.equal(first, second)
    assert [m.training for m in cnn.modules()] == modes
    buffers = {k: v.clone() for k, v in cnn.state_dict().items()}
    fgsm(cnn, x, y, 0.05)
    for key, value in cnn.state_dict().items():
        assert torch.equal(value, buffers[key]), f"{key} changed (BatchNorm stats?)"


class _Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(16, 3).double()

    def forward(self, x):
        raise RuntimeError("boom in forward")


def test_mode_restored_after_exception(data):
    x, y = data
    model = _Exploding().train()
    with pytest.raises(RuntimeError, match="boom in forward"):
        pgd(model, x, y, 0.1)
    assert model.training and model.inner.training
    with pytest.raises(RuntimeError, match="boom in forward"):
        robustness_curve(model, x, y, [0.1])
    assert model.training and model.inner.training


def test_no_parameter_gradients_left_behind(cnn, data):
    x, y = data
    params = list(cnn.parameters())
    params[0].grad = torch.full_like(params[0], 7.0)
    for p in params[1:]:
        p.grad = None
    pgd(cnn, x, y, 0.1, steps=2)
    adversarial_mix(cnn, x, y, fraction=0.5, eps=0.1)
    robustness_curve(cnn, x, y, [0.1], attack="pgd", steps=2)
    assert torch.equal(params[0].grad, torch.full_like(params[0], 7.0))
    assert all(p.grad is None for p in params[1:])


def test_caller_tensors_not_mutated(mlp, data):
    x, y = data
    x_before, y_before = x.clone(), y.clone()
    pgd(mlp, x, y, 0.1, steps=2, callback=lambda step, x_adv: None)
    fgsm(mlp, x, y, 0.1)
    adversarial_mix(mlp, x, y, fraction=1.0, eps=0.1)
    attack_dataset(mlp, x, y, functools.partial(fgsm, eps=0.1), batch_size=7)
    assert torch.equal(x, x_before) and torch.equal(y, y_before)
    assert not x.requires_grad


def test_works_under_no_grad(mlp, data):
    x, y = data
    with torch.no_grad():
        x_adv = fgsm(mlp, x, y, 0.05)
    assert not torch.equal(x_adv, x)


def test_inference_tensors_are_accepted_but_inference_mode_is_refused(mlp, data):
    x, y = data
    with torch.inference_mode():
        x_inf, y_inf = x.clone(), y.clone()
    torch.testing.assert_close(fgsm(mlp, x_inf, y_inf, 0.05), fgsm(mlp, x, y, 0.05))
    with (
        torch.inference_mode(),
        pytest.raises(RuntimeError, match=r"outside torch\.inference_mode"),
    ):
        pgd(mlp, x, y, 0.05)


# ------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eps": -0.1}, r"eps must be a finite number >= 0, got -0\.1"),
        ({"eps": float("nan")}, r"eps must be .* got nan"),
        ({"norm": "l1"}, r"norm must be one of \('linf', 'l2'\), got 'l1'"),
        ({"steps": 0}, r"steps must be an integer >= 1, got 0"),
        ({"step_size": -1.0}, r"step_size must be .* >= 0, got -1\.0"),
    ],
)
def test_pgd_rejects_bad_arguments(mlp, data, kwargs, match):
    x, y = data
    kwargs = {"eps": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        pgd(mlp, x, y, **kwargs)


def test_rejects_inputs_outside_the_box(mlp, data):
    x, y = data
    normalized = (x - 0.5) / 0.25
    with pytest.raises(ValueError, match=r"span \[-2, 2\].*normalization inside"):
        fgsm(mlp, normalized, y, 0.1)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        attack_dataset(mlp, normalized, y, fgsm, batch_size=8)


def test_rejects_mismatched_lengths(mlp, data):
    x, y = data
    with pytest.raises(ValueError, match=r"same number of samples.*\(48, 1, 4, 4\).*"):
        pgd(mlp, x, y[:-1], 0.1)
    with pytest.raises(ValueError, match=r"same number of samples"):
        robustness_curve(mlp, x, y[:5], [0.1])


def test_rejects_integer_pixels(mlp, data):
    _, y = data
    with pytest.raises(ValueError, match=r"floating-point .* torch\.uint8"):
        fgsm(mlp, torch.zeros(N_SAMPLES, *SHAPE, dtype=torch.uint8), y, 0.1)


def test_rejects_non_scalar_loss(mlp, data):
    x, y = data

    def per_sample(logits, y):
        return F.cross_entropy(logits, y, reduction="none")

    with pytest.raises(ValueError, match=r"loss_fn must return a scalar"):
        fgsm(mlp, x, y, 0.1, loss_fn=per_sample)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"attack": "cw"}, r"attack must be one of \('fgsm', 'pgd'\), got 'cw'"),
        ({"eps_list": []}, r"eps_list is empty"),
        ({"eps_list": [0.1, -1.0]}, r"got -1\.0"),
        ({"batch_size": 0}, r"batch_size must be an integer >= 1, got 0"),
        ({"step_size_factor": 0.0}, r"step_size_factor must be .* > 0, got 0\.0"),
        ({"norm": "linf2"}, r"got 'linf2'"),
    ],
)
def test_robustness_curve_rejects_bad_arguments(mlp, data, kwargs, match):
    x, y = data
    kwargs = {"eps_list": [0.1], **kwargs}
    with pytest.raises(ValueError, match=match):
        robustness_curve(mlp, x, y, **kwargs)


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_adversarial_mix_rejects_bad_fraction(mlp, data, fraction):
    x, y = data
    with pytest.raises(
        ValueError, match=rf"fraction must lie in \[0, 1\], got {fraction}"
    ):
        adversarial_mix(mlp, x, y, fraction=fraction)


# ---------------------------------------------------------- data sets and curves


@pytest.mark.parametrize(
    ("batch_size", "device"), [(1, None), (7, "cpu"), (48, None), (100, None)]
)
def test_attack_dataset_matches_one_big_batch(mlp, data, batch_size, device):
    x, y = data
    attack = functools.partial(fgsm, eps=0.05)
    batched = attack_dataset(mlp, x, y, attack, batch_size=batch_size, device=device)
    torch.testing.assert_close(batched, attack(mlp, x, y), rtol=0, atol=BALL_ATOL)


def test_attack_dataset_progress_bar_is_opt_in(mlp, data, capsys):
    x, y = data
    attack = functools.partial(fgsm, eps=0.05)
    attack_dataset(mlp, x, y, attack, batch_size=16)
    assert capsys.readouterr().err == ""
    attack_dataset(mlp, x, y, attack, batch_size=16, progress=True)
    assert "attack" in capsys.readouterr().err


@pytest.mark.parametrize(("attack", "norm"), [("fgsm", "linf"), ("pgd", "l2")])
def test_robustness_curve(mlp, data, attack, norm):
    x, y = data
    g = torch.Generator().manual_seed(0)
    eps_list = [0.0, 0.05, 0.5]
    curve = robustness_curve(
        mlp, x, y, eps_list, attack=attack, norm=norm, steps=5, batch_size=10,
        generator=g,
    )  # fmt: skip
    with torch.no_grad():
        clean = (mlp(x).argmax(1) == y).double().mean().item()
    assert curve.clean_accuracy == pytest.approx(clean)
    assert curve.accuracy[0] == curve.clean_accuracy
    assert curve.accuracy[-1] < curve.clean_accuracy
    assert curve.eps == tuple(eps_list) and curve.n_samples == N_SAMPLES
    assert curve.steps == (1 if attack == "fgsm" else 5)
    rows = curve.as_table()
    assert [row["eps"] for row in rows] == eps_list
    assert rows[1]["accuracy"] == curve.accuracy[1] and rows[1]["norm"] == norm
    with pytest.raises(dataclasses.FrozenInstanceError):
        curve.clean_accuracy = 1.0  # type: ignore[misc]
    assert isinstance(curve, RobustnessCurve)


def test_robustness_curve_fgsm_matches_attack_dataset(mlp, data):
    x, y = data
    curve = robustness_curve(mlp, x, y, [0.1], batch_size=16)
    x_adv = attack_dataset(mlp, x, y, functools.partial(fgsm, eps=0.1), batch_size=16)
    with torch.no_grad():
        expected = (mlp(x_adv).argmax(1) == y).double().mean().item()
    assert curve.accuracy[0] == pytest.approx(expected)


# ------------------------------------------------------------- robust training


@pytest.mark.parametrize(("fraction", "expected"), [(0.2, 10), (0.0, 0), (1.0, 48)])
def test_adversarial_mix_replaces_exactly_the_chosen_samples(
    cnn, data, fraction, expected
):
    x, y = data
    cnn.train()
    mixed = adversarial_mix(
        cnn,
        x,
        y,
        fraction=fraction,
        eps=0.05,
        generator=torch.Generator().manual_seed(5),
    )
    assert cnn.training, "the caller's train mode must come back"
    assert round(fraction * N_SAMPLES) == expected
    chosen = torch.randperm(N_SAMPLES, generator=torch.Generator().manual_seed(5))
    chosen, kept = chosen[:expected], chosen[expected:]
    assert torch.equal(mixed[kept], x[kept])
    if expected:
        torch.testing.assert_close(
            mixed[chosen], fgsm(cnn, x[chosen], y[chosen], 0.05), rtol=0, atol=0
        )
        changed = (mixed[chosen] != x[chosen]).flatten(1).any(dim=1)
        assert changed.all(), "every chosen sample must be perturbed"
    _assert_feasible(mixed, x, 0.05, "linf")


def test_adversarial_mix_defaults_follow_the_paper(mlp, data):
    x, y = data
    mixed = adversarial_mix(mlp, x, y, generator=torch.Generator().manual_seed(0))
    changed = (mixed != x).flatten(1).any(dim=1)
    assert attacks.ROBUST_FRACTION == 0.2 and attacks.ROBUST_EPS == 0.005
    assert changed.sum().item() == round(0.2 * N_SAMPLES)
    _assert_feasible(mixed, x, 0.005, "linf")


# -------------------------------------------- optional cross-check: torchattacks

# torchattacks divides the gradient of the *mean* loss by its L2 norm plus 1e-10, so
# on confidently classified samples (norm ~1e-10) its L2 steps shrink; ours do not.
# The L2 comparison keeps samples whose gradient is far above that floor.
L2_CROSS_MIN_GRAD_NORM = 1e-2
L2_CROSS_ATOL = 1e-6


@pytest.mark.parametrize("targeted", [False, True])
def test_matches_torchattacks(mlp, data, targeted):
    """Same iterates as torchattacks without random start (it is not a dependency)."""
    ta = pytest.importorskip("torchattacks")
    x, y = data
    labels = (y + 1) % N_CLASSES if targeted else y
    grad = attacks._input_grad(mlp, x, labels, attacks._default_loss)
    steep = grad.flatten(1).norm(dim=1) > L2_CROSS_MIN_GRAD_NORM
    assert steep.sum() >= 10, "too few samples to compare the L2 attack on"
    x_l2, labels_l2 = x[steep], labels[steep]
    eps, alpha, steps = 0.1, 0.03, 5
    cases = [
        (ta.FGSM(mlp, eps=eps), fgsm(mlp, x, labels, eps, targeted=targeted), 0.0),
        (
            ta.PGD(mlp, eps=eps, alpha=alpha, steps=steps, random_start=False),
            pgd(mlp, x, labels, eps, steps=steps, step_size=alpha,
                random_start=False, targeted=targeted),
            BALL_ATOL,
        ),
        (
            ta.PGDL2(mlp, eps=4 * eps, alpha=4 * alpha, steps=steps,
                     random_start=False),
            pgd(mlp, x_l2, labels_l2, 4 * eps, norm="l2", steps=steps,
                step_size=4 * alpha, random_start=False, targeted=targeted),
            L2_CROSS_ATOL,
        ),
    ]  # fmt: skip
    for attack, ours, atol in cases:
        if targeted:
            attack.set_mode_targeted_by_label(quiet=True)
        is_l2 = isinstance(attack, ta.PGDL2)
        theirs = attack(x_l2, labels_l2) if is_l2 else attack(x, labels)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=atol, msg=str(attack))
