"""Theorem 1: the input Hessian of a piecewise-linear network is PSD a.e."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hesslib.theory import (
    gauss_newton_identity,
    input_hessian_extremes,
    path_min_eigenvalues,
)

DT = torch.float64
PSD_RTOL = 1e-8  # ReLU nets: smallest eigenvalue >= -1e-8 * largest (round-off)
SMOOTH_RTOL = 1e-3  # smooth twins: smallest eigenvalue below -1e-3 * largest
IDENTITY_RTOL = 1e-8  # Gauss-Newton identity to round-off for ReLU nets
EIG_RTOL = 1e-7  # iterative vs dense eigenvalues, relative to the largest


def conv_net(act):
    """Conv, eval BatchNorm, activation, max-pool, MLP head: C1 in miniature."""
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.BatchNorm2d(3),
        act(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(3 * 2 * 2, 8),
        act(),
        nn.Linear(8, 4),
    )
    bn = model[1]
    bn.running_mean.copy_(torch.tensor([0.2, -0.1, 0.3]))
    bn.running_var.copy_(torch.tensor([0.5, 1.5, 0.8]))
    return model


def mlp(act):
    return nn.Sequential(
        nn.Linear(6, 10), act(), nn.Linear(10, 10), act(), nn.Linear(10, 4)
    )


NETS = {"conv": (conv_net, (1, 6, 6)), "mlp": (mlp, (6,))}


def make(net, act, n=6, seed=0):
    torch.manual_seed(seed)
    factory, shape = NETS[net]
    model = factory(act).to(DT).eval()
    with torch.no_grad():  # larger weights: pronounced curvature of smooth nets
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(2.0)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, *shape, generator=gen, dtype=DT)
    y = torch.randint(0, 4, (n,), generator=gen)
    return model, x, y


@pytest.mark.parametrize("net", list(NETS))
@pytest.mark.parametrize("method", ["iterative", "dense"])
def test_relu_maxpool_bn_nets_have_no_negative_input_curvature(net, method):
    model, x, y = make(net, nn.ReLU)
    res = input_hessian_extremes(model, x, y, method=method)
    assert (res.top > 0).all()
    assert (res.bottom >= -PSD_RTOL * res.top).all(), res.bottom / res.top
    assert res.converged.all()


@pytest.mark.parametrize("net", list(NETS))
@pytest.mark.parametrize("act", [nn.Tanh, nn.GELU])
def test_smooth_twins_have_negative_input_curvature(net, act):
    model, x, y = make(net, act)
    res = input_hessian_extremes(model, x, y)
    ratio = res.bottom / res.top
    assert (ratio < -SMOOTH_RTOL).all(), ratio


@pytest.mark.parametrize("net", list(NETS))
@pytest.mark.parametrize("act", [nn.ReLU, nn.Tanh])
def test_iterative_matches_dense(net, act):
    model, x, y = make(net, act, n=3)
    it = input_hessian_extremes(model, x, y, tol=1e-9)
    de = input_hessian_extremes(model, x, y, method="dense")
    scale = de.top.abs()
    assert ((it.top - de.top).abs() <= EIG_RTOL * scale).all()
    assert ((it.bottom - de.bottom).abs() <= EIG_RTOL * scale).all()


@pytest.mark.parametrize("net", list(NETS))
def test_gauss_newton_identity_holds_for_relu_and_fails_for_tanh(net):
    model, x, y = make(net, nn.ReLU, n=2)
    for xi, yi in zip(x, y, strict=True):
        check = gauss_newton_identity(model, xi, yi)
        assert check.relative_error <= IDENTITY_RTOL
        eig = torch.linalg.eigvalsh(check.gauss_newton)
        assert eig[0] >= -PSD_RTOL * eig[-1]
    smooth, x, y = make(net, nn.Tanh, n=1)
    assert gauss_newton_identity(smooth, x[0], y[0]).relative_error > 1e-2


def test_path_min_eigenvalues_per_step_and_sample():
    model, x, y = make("conv", nn.ReLU, n=3)
    gen = torch.Generator().manual_seed(5)
    step = 0.05 * torch.randn(x.shape, generator=gen, dtype=DT)
    path = [x + t * step for t in range(4)]
    res = path_min_eigenvalues(model, path, y)
    assert res.bottom.shape == res.top.shape == (4, 3)
    assert (res.bottom >= -PSD_RTOL * res.top).all()
    dense = input_hessian_extremes(model, path[2], y, method="dense")
    assert ((res.top[2] - dense.top).abs() <= EIG_RTOL * dense.top).all()
    assert res.converged.all()


def test_model_mode_restored_and_errors():
    model, x, y = make("mlp", nn.ReLU, n=2)
    model.train()
    input_hessian_extremes(model, x, y)
    gauss_newton_identity(model, x[0], y[0])
    assert model.training
    with pytest.raises(ValueError, match="method must be 'iterative' or 'dense'"):
        input_hessian_extremes(model, x, y, method="exact")
    with pytest.raises(ValueError, match="path is empty"):
        path_min_eigenvalues(model, [], y)


def test_custom_loss_is_used():
    model, x, y = make("mlp", nn.Tanh, n=2)

    def twice(out, target):
        return 2 * F.cross_entropy(out, target, reduction="sum")

    base = input_hessian_extremes(model, x, y, method="dense")
    doubled = input_hessian_extremes(model, x, y, loss_fn=twice, method="dense")
    torch.testing.assert_close(doubled.top, 2 * base.top)
