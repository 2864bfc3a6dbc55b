"""Weight and input Hessian operators against exact dense references (float64)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, hessian

from hesslib.hessian import (
    InputHessian,
    NondeterminismError,
    WeightHessian,
    flatten_like,
    hutchinson,
    hutchpp,
    lanczos,
    power_iteration,
    spectral_density,
)

DT = torch.float64
RTOL = 1e-10  # two exact float64 computations of the same Hessian
ATOL = 1e-12  # entries that should be zero
SOLVER_TOL = 1e-8  # eigen solver target: tiny operators, tight tolerance
EIG_RTOL = 1e-7  # eigenvalue vs eigh: far below the solver's residual budget
METHODS = ["forward_over_reverse", "double_backward"]


# ---------------------------------------------------------------- tiny models


class Residual(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(width, width), nn.Tanh())

    def forward(self, x):
        return x + self.body(x)


def mlp():
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))


def cnn_bn():
    """Conv, BatchNorm (eval, non-trivial running statistics), ReLU, max-pool."""
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3),
        nn.BatchNorm2d(2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * 2 * 2, 3),
    )
    bn = model[1]
    bn.running_mean.copy_(torch.tensor([0.3, -0.2]))
    bn.running_var.copy_(torch.tensor([0.5, 2.0]))
    return model


def resnet():
    return nn.Sequential(nn.Linear(4, 5), Residual(5), Residual(5), nn.Linear(5, 3))


MODELS = {"mlp": (mlp, (4,)), "cnn_bn": (cnn_bn, (1, 6, 6)), "resnet": (resnet, (4,))}


def make(name, n=10, seed=0):
    torch.manual_seed(seed)
    factory, shape = MODELS[name]
    model = factory().to(DT)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, *shape, generator=gen, dtype=DT)
    y = torch.randint(0, 3, (n,), generator=gen)
    return model, x, y


def dense_weight_hessian(model, x, y, params=None):
    """Exact Hessian of the mean cross-entropy over all samples, in one batch."""
    named = dict(model.named_parameters())
    names = [
        n for n, p in named.items() if params is None or any(p is q for q in params)
    ]
    flat = flatten_like([named[n].detach() for n in names])
    shapes = [named[n].shape for n in names]

    def loss(theta):
        chunks = theta.split([s.numel() for s in shapes])
        values = {n: c.view(s) for n, c, s in zip(names, chunks, shapes, strict=True)}
        return F.cross_entropy(functional_call(model, values, (x,)), y)

    was = model.training
    model.eval()
    h = hessian(loss)(flat)
    model.train(was)
    return h


def dense_input_blocks(model, x, y):
    """Each sample's [d, d] input Hessian of its own cross-entropy loss."""
    was = model.training
    model.eval()
    blocks = []
    for xi, yi in zip(x, y, strict=True):

        def loss(v, xi=xi, yi=yi):
            return F.cross_entropy(model(v.view(1, *xi.shape)), yi.view(1))

        blocks.append(hessian(loss)(xi.reshape(-1)))
    model.train(was)
    return torch.stack(blocks)


# ---------------------------------------------------------------- weight Hessian


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("method", METHODS)
def test_weight_hessian_matches_dense_with_uneven_batches(name, method):
    model, x, y = make(name)
    op = WeightHessian(model, F.cross_entropy, (x, y), batch_size=4, method=method)
    torch.testing.assert_close(
        op.to_dense(), dense_weight_hessian(model, x, y), rtol=RTOL, atol=ATOL
    )


def test_batches_as_a_list_of_uneven_pairs_are_weighted_by_size():
    model, x, y = make("mlp", n=9)
    batches = [(x[:2], y[:2]), (x[2:8], y[2:8]), (x[8:], y[8:])]
    op = WeightHessian(model, F.cross_entropy, batches)
    torch.testing.assert_close(
        op.to_dense(), dense_weight_hessian(model, x, y), rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize("name", list(MODELS))
def test_spectra_of_weight_hessian_match_eigh(name):
    model, x, y = make(name)
    op = WeightHessian(model, F.cross_entropy, (x, y), batch_size=4)
    ref = torch.linalg.eigvalsh(dense_weight_hessian(model, x, y))
    top = lanczos(op, k=3, tol=SOLVER_TOL)
    torch.testing.assert_close(top.eigenvalues, ref.flip(0)[:3], rtol=EIG_RTOL, atol=0)
    bottom = lanczos(op, k=2, which="smallest", tol=SOLVER_TOL)
    torch.testing.assert_close(bottom.eigenvalues, ref[:2], rtol=EIG_RTOL, atol=0)
    assert bottom.eigenvalues[0] < 0  # the weight Hessian is indefinite
    power = power_iteration(op, k=2, tol=1e-6)
    by_mag = ref[torch.argsort(ref.abs(), descending=True)][:2]
    torch.testing.assert_close(power.eigenvalues, by_mag, rtol=1e-6, atol=0)
    assert (
        top.num_products == op.num_products - bottom.num_products - power.num_products
    )


def test_trace_and_density_of_weight_hessian():
    model, x, y = make("cnn_bn")
    op = WeightHessian(model, F.cross_entropy, (x, y), batch_size=4)
    dense = dense_weight_hessian(model, x, y)
    exact = torch.trace(dense).item()
    res = hutchinson(op, rtol=0.2, max_samples=300)
    assert res.converged
    assert abs(res.estimate - exact) <= 4 * res.std_error
    full = hutchpp(op, num_products=3 * op.size)  # sketch spans everything: exact
    assert abs(full.estimate - exact) <= RTOL * abs(exact)
    dens = spectral_density(op, num_runs=3, num_steps=op.size, sigma=0.01)
    ref = torch.linalg.eigvalsh(dense)
    torch.testing.assert_close(dens.nodes[0], ref, rtol=1e-6, atol=1e-8)
    m2 = (dens.weights * dens.nodes**2).sum(1)
    exact = torch.trace(dense @ dense) / op.size
    assert abs(m2.mean() - exact) <= 4 * m2.std() / 3**0.5 + 1e-12


def test_softmax_regression_closed_form_oracle():
    """H = mean_i (diag(p_i) - p_i p_i^T) kron x~_i x~_i^T, x~ = [x, 1]."""
    torch.manual_seed(3)
    d, c, n = 3, 4, 7
    model = nn.Linear(d, c).to(DT)
    x = torch.randn(n, d, dtype=DT)
    y = torch.randint(0, c, (n,))
    p = torch.softmax(model(x), dim=1).detach()
    xt = torch.cat([x, torch.ones(n, 1, dtype=DT)], dim=1)
    oracle = (
        sum(
            torch.kron(torch.diag(pi) - torch.outer(pi, pi), torch.outer(xi, xi))
            for pi, xi in zip(p, xt, strict=True)
        )
        / n
    )
    # oracle order: (class, feature-or-bias); ours: weight [c, d] then bias [c]
    order = [k * (d + 1) + j for k in range(c) for j in range(d)]
    order += [k * (d + 1) + d for k in range(c)]
    oracle = oracle[order][:, order]
    op = WeightHessian(model, F.cross_entropy, (x, y), batch_size=3)
    torch.testing.assert_close(op.to_dense(), oracle, rtol=RTOL, atol=ATOL)


def test_parameter_subset_is_the_sub_block():
    model, x, y = make("mlp")
    last = list(model[2].parameters())
    op = WeightHessian(model, F.cross_entropy, (x, y), params=last, batch_size=4)
    assert op.size == sum(p.numel() for p in last)
    full = dense_weight_hessian(model, x, y)
    torch.testing.assert_close(
        op.to_dense(), full[-op.size :, -op.size :], rtol=RTOL, atol=ATOL
    )
    torch.testing.assert_close(
        op.to_dense(), dense_weight_hessian(model, x, y, last), rtol=RTOL, atol=ATOL
    )


def test_flat_and_parameter_shapes_round_trip():
    model, x, y = make("cnn_bn")
    op = WeightHessian(model, F.cross_entropy, (x, y))
    vec = torch.arange(op.size, dtype=DT)
    parts = op.unflatten(vec)
    assert [p.shape for p in parts] == [p.shape for p in model.parameters()]
    assert torch.equal(op.flatten(parts), vec)
    res = lanczos(op, k=1, tol=1e-6)
    assert op.unflatten(res.eigenvectors[:, 0])[0].shape == model[0].weight.shape


def test_reduce_sums_products_and_counts_over_ranks():
    model, x, y = make("mlp")
    seen = []

    def two_identical_ranks(t):
        seen.append(t.dtype)
        return 2 * t

    op = WeightHessian(model, F.cross_entropy, (x, y), reduce=two_identical_ranks)
    torch.testing.assert_close(
        op.to_dense(), dense_weight_hessian(model, x, y), rtol=RTOL, atol=ATOL
    )
    assert torch.int64 in seen and DT in seen


def test_model_modes_and_parameters_untouched_also_after_an_exception():
    model, x, y = make("cnn_bn")
    model.train()
    model[1].eval()  # mixed modes must come back as they were
    before = [p.detach().clone() for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    op = WeightHessian(model, F.cross_entropy, (x, y), batch_size=4)
    op.matvec(torch.ones(op.size, dtype=DT))
    assert [m.training for m in model.modules()] == modes

    def failing_loss(out, target):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        WeightHessian(model, failing_loss, (x, y))
    assert [m.training for m in model.modules()] == modes
    assert all(
        torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)
    )
    assert all(p.grad is None for p in model.parameters())


class AlwaysDropout(nn.Module):
    """Dropout that ignores eval mode (as in Monte Carlo dropout)."""

    def forward(self, x):
        return F.dropout(x, p=0.5, training=True)


def test_refuses_dropout_active_in_eval_mode():
    model, x, y = make("mlp")
    model.insert(2, AlwaysDropout())
    with pytest.raises(NondeterminismError, match="differ by .* dropout"):
        WeightHessian(model, F.cross_entropy, (x, y))
    WeightHessian(model, F.cross_entropy, (x, y), check_determinism=False)


def test_refuses_batchnorm_that_uses_batch_statistics():
    model, x, y = make("cnn_bn")
    model[1] = nn.BatchNorm2d(2, track_running_stats=False).to(DT)
    with pytest.raises(ValueError, match=r"'1' has no running statistics.*batched"):
        WeightHessian(model, F.cross_entropy, (x, y))


class Augmented:
    """A re-iterable data source that adds fresh noise on every pass."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __iter__(self):
        yield self.x + 0.1 * torch.randn_like(self.x), self.y


def test_refuses_data_that_changes_between_passes():
    model, x, y = make("mlp")
    with pytest.raises(NondeterminismError, match="augmentation"):
        WeightHessian(model, F.cross_entropy, Augmented(x, y))


def test_weight_hessian_errors_name_value_and_fix():
    model, x, y = make("mlp")
    with pytest.raises(TypeError, match="one-shot iterator"):
        WeightHessian(model, F.cross_entropy, iter([(x, y)]))
    with pytest.raises(ValueError, match="not parameters of the model.*themselves"):
        WeightHessian(model, F.cross_entropy, (x, y), params=[torch.ones(2)])
    with pytest.raises(ValueError, match="method must be .* got 'fast'"):
        WeightHessian(model, F.cross_entropy, (x, y), method="fast")
    with pytest.raises(ValueError, match="disagree .* 10 vs 9"):
        WeightHessian(model, F.cross_entropy, (x, y[:9]))
    with pytest.raises(ValueError, match="no samples"):
        WeightHessian(model, F.cross_entropy, [])
    op = WeightHessian(model, F.cross_entropy, (x, y))
    with pytest.raises(ValueError, match=r"matmat expects shape \[n, k\]"):
        op.matmat(torch.ones(3, 2, dtype=DT))


# ---------------------------------------------------------------- input Hessian


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("method", METHODS)
def test_input_hessian_blocks_are_each_samples_dense_hessian(name, method):
    model, x, y = make(name, n=4)
    model.train()
    op = InputHessian(model, F.cross_entropy, x, y, method=method)
    blocks = dense_input_blocks(model, x, y)
    n, d = op.batch_shape
    full = op.to_dense().view(n, d, n, d)
    for i in range(n):
        torch.testing.assert_close(full[i, :, i], blocks[i], rtol=RTOL, atol=ATOL)
        off = torch.cat([full[i, :, :i], full[i, :, i + 1 :]], dim=1)
        assert off.abs().max() <= ATOL
    vecs = torch.randn_like(x)
    expect = torch.einsum("bij,bj->bi", blocks, vecs.view(n, d)).view_as(x)
    torch.testing.assert_close(op.block_matvec(vecs), expect, rtol=RTOL, atol=ATOL)
    assert model.training  # the caller's mode is back


def test_input_hessian_sum_and_mean_conventions_agree():
    model, x, y = make("mlp", n=5)

    def summed(out, target):
        return F.cross_entropy(out, target, reduction="sum")

    mean_op = InputHessian(model, F.cross_entropy, x, y)
    sum_op = InputHessian(model, summed, x, y, loss_reduction="sum")
    v = torch.randn_like(x)
    torch.testing.assert_close(mean_op.block_matvec(v), sum_op.block_matvec(v))


@pytest.mark.parametrize("name", list(MODELS))
def test_input_hessian_extremes_per_sample(name):
    model, x, y = make(name, n=5)
    op = InputHessian(model, F.cross_entropy, x, y)
    res = op.extremes(which="both", tol=SOLVER_TOL)
    ref = torch.linalg.eigvalsh(dense_input_blocks(model, x, y))
    torch.testing.assert_close(res.top, ref[:, -1], rtol=EIG_RTOL, atol=1e-12)
    scale = ref.abs().amax(dim=1)
    assert ((res.bottom - ref[:, 0]).abs() <= EIG_RTOL * scale).all()
    assert res.converged.all() and res.top.shape == (5,)
    assert op.num_batched_products == res.num_products


def test_input_hessian_errors():
    model, x, y = make("mlp", n=3)
    with pytest.raises(ValueError, match=r"batch \[N, \*input_shape\], got \(4,\)"):
        InputHessian(model, F.cross_entropy, x[0], y)
    with pytest.raises(ValueError, match="loss_reduction must be .* got 'none'"):
        InputHessian(model, F.cross_entropy, x, y, loss_reduction="none")
    op = InputHessian(model, F.cross_entropy, x, y)
    with pytest.raises(ValueError, match=r"shape of x \(3, 4\), got \(3, 5\)"):
        op.block_matvec(torch.ones(3, 5, dtype=DT))


def test_float32_model_reaches_its_tolerance():
    model, x, y = make("mlp")
    ref = torch.linalg.eigvalsh(dense_weight_hessian(model, x, y))
    model32 = model.float()
    op = WeightHessian(model32, F.cross_entropy, (x.float(), y))
    assert op.dtype == torch.float32
    res = lanczos(op, k=2, which="both", tol=1e-4)
    assert res.converged and res.eigenvectors.dtype == torch.float32
    expect = torch.stack([ref[-1], ref[-2], ref[1], ref[0]]).float()
    # eigenvalue error <= residual, relative to the spectral scale
    assert ((res.eigenvalues - expect).abs() <= 1e-4 * ref.abs().max()).all()


def test_auto_method_rule_and_progress_bars():
    model, x, y = make("mlp")
    op = WeightHessian(model, F.cross_entropy, (x, y), progress=True)
    assert op.method == "double_backward"  # the documented rule on CPU
    quiet = lanczos(op, k=1, tol=1e-6)
    loud = lanczos(op, k=1, tol=1e-6, progress=True)
    assert torch.equal(quiet.eigenvalues, loud.eigenvalues)
    assert loud.num_products == quiet.num_products
    assert hutchinson(op, rtol=0.5, progress=True).num_products >= 10


def test_loaders_shuffling_order_pass_but_resampling_ones_are_refused():
    from torch.utils.data import DataLoader, RandomSampler, TensorDataset

    model, x, y = make("mlp", n=12)
    dataset = TensorDataset(x, y)
    gen = torch.Generator().manual_seed(0)
    shuffled = DataLoader(dataset, batch_size=5, shuffle=True, generator=gen)
    op = WeightHessian(model, F.cross_entropy, shuffled)  # same matrix every pass
    torch.testing.assert_close(
        op.to_dense(), dense_weight_hessian(model, x, y), rtol=RTOL, atol=ATOL
    )
    sampler = RandomSampler(dataset, replacement=True, generator=gen)
    resampled = DataLoader(dataset, batch_size=5, sampler=sampler)
    with pytest.raises(NondeterminismError, match="resamples between passes"):
        WeightHessian(model, F.cross_entropy, resampled)


# ---------------------------------------------------------------- speed paths


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("cache", [0, 2, 100])
def test_kept_graph_and_recomputed_graph_both_match_dense(name, cache):
    """cache=2 < 3 batches: recomputed; 100: kept graph; 0: cache disabled."""
    model, x, y = make(name)
    op = WeightHessian(
        model, F.cross_entropy, (x, y), batch_size=4, graph_cache_batches=cache
    )
    dense = dense_weight_hessian(model, x, y)
    torch.testing.assert_close(op.to_dense(), dense, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(op.to_dense(), dense, rtol=RTOL, atol=ATOL)
    assert (op._graph is not None) == (cache == 100)


def test_kept_graph_is_rebuilt_when_the_model_changes_in_place():
    model, x, y = make("cnn_bn")
    op = WeightHessian(model, F.cross_entropy, (x, y), batch_size=4)
    op.to_dense()
    with torch.no_grad():
        model[0].weight.mul_(1.5)  # an optimizer step, in place
        model[1].running_var.add_(0.25)  # a buffer too
    torch.testing.assert_close(
        op.to_dense(), dense_weight_hessian(model, x, y), rtol=RTOL, atol=ATOL
    )
    model[5].weight.data = model[5].weight.data * 2  # new storage, old version
    torch.testing.assert_close(
        op.to_dense(), dense_weight_hessian(model, x, y), rtol=RTOL, atol=ATOL
    )
    op.clear_graph_cache()
    assert op._graph is None


def test_kept_graph_for_data_without_a_length_and_too_many_batches():
    model, x, y = make("mlp", n=9)

    class Batches:  # re-iterable, no __len__
        def __iter__(self):
            return iter([(x[:4], y[:4]), (x[4:8], y[4:8]), (x[8:], y[8:])])

    dense = dense_weight_hessian(model, x, y)
    for cache, kept in [(3, True), (2, False)]:
        op = WeightHessian(model, F.cross_entropy, Batches(), graph_cache_batches=cache)
        torch.testing.assert_close(op.to_dense(), dense, rtol=RTOL, atol=ATOL)
        assert (op._graph is not None) == kept


def test_graph_cache_batches_must_be_a_non_negative_int():
    model, x, y = make("mlp")
    with pytest.raises(ValueError, match="graph_cache_batches .* got -1"):
        WeightHessian(model, F.cross_entropy, (x, y), graph_cache_batches=-1)


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (nn.BatchNorm1d(3), (5, 3)),
        (nn.BatchNorm1d(3, affine=False), (5, 3, 4)),
        (nn.BatchNorm2d(3), (5, 3, 4, 4)),
        (nn.BatchNorm3d(3), (5, 3, 2, 2, 2)),
    ],
)
def test_affine_batchnorm_is_eval_batchnorm_and_is_removed(layer, shape):
    from hesslib.hessian.operators import _affine_batchnorm

    layer = layer.to(DT)
    gen = torch.Generator().manual_seed(0)
    layer.running_mean.copy_(torch.randn(3, generator=gen, dtype=DT))
    layer.running_var.copy_(torch.rand(3, generator=gen, dtype=DT) + 0.5)
    if layer.affine:
        with torch.no_grad():
            layer.weight.copy_(torch.randn(3, generator=gen, dtype=DT))
            layer.bias.copy_(torch.randn(3, generator=gen, dtype=DT))
    x = torch.randn(shape, generator=gen, dtype=DT)
    layer.eval()
    expect = layer(x)
    with _affine_batchnorm(layer):
        assert "forward" in vars(layer)
        torch.testing.assert_close(layer(x), expect, rtol=RTOL, atol=ATOL)
    assert "forward" not in vars(layer)
    layer.train()
    with _affine_batchnorm(layer):  # train mode: batch statistics, not patched
        assert "forward" not in vars(layer)
    with pytest.raises(RuntimeError, match="boom"), _affine_batchnorm(layer.eval()):
        raise RuntimeError("boom")
    assert "forward" not in vars(layer)
