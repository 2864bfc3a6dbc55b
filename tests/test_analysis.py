import pytest
import torch
from torch import nn

from hesslib import analysis
from hesslib.analysis import input_top_eigenvalues, measure, weight_spectrum
from hesslib.data import Split
from hesslib.store import Store
from hesslib.theory import input_hessian_extremes


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(),
                         nn.Linear(6, 3)).double()


def _split(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 3, 4, generator=g, dtype=torch.float64)
    y = torch.arange(n) % 3
    return Split(x, y, torch.arange(n))


def test_weight_spectrum_matches_the_dense_hessian():
    model, data = _net(), _split(30, 0)
    params = dict(model.named_parameters())

    def loss(*values):
        named = dict(zip(params, values))
        out = torch.func.functional_call(model, named, (data.x,))
        return torch.nn.functional.cross_entropy(out, data.y)

    flat = torch.cat([p.reshape(-1) for p in params.values()])
    sizes = [p.numel() for p in params.values()]
    shapes = [p.shape for p in params.values()]

    def flat_loss(v):
        return loss(*[c.view(s) for c, s in zip(v.split(sizes), shapes)])

    dense = torch.autograd.functional.hessian(flat_loss, flat)
    top = torch.linalg.eigvalsh(dense)[-3:].flip(0)
    result = weight_spectrum(model, data.x, data.y, k=3, batch_size=7)
    torch.testing.assert_close(result.eigenvalues, top, rtol=1e-6, atol=1e-10)
    assert result.converged and (result.residuals <= 1e-4).all()


def test_input_top_eigenvalues_match_dense_per_sample_hessians():
    model, data = _net(), _split(10, 1)
    tops, converged = input_top_eigenvalues(model, data.x, data.y, batch_size=4)
    dense = input_hessian_extremes(model, data.x, data.y, method="dense")
    torch.testing.assert_close(tops, dense.top, rtol=1e-6, atol=1e-10)
    assert converged.all()


def test_measure_is_computed_once_with_a_store(tmp_path, monkeypatch):
    model, train, test = _net(), _split(30, 2), _split(24, 3)
    store = Store(tmp_path)
    kwargs = dict(test_accuracy=0.5, hessian_samples=30, input_samples=6,
                  attack_samples=12, attack_eps=(0.01, 0.1), store=store,
                  run_key="0123456789abcdef")
    first = measure(model, train, test, **kwargs)
    calls = []
    monkeypatch.setattr(analysis, "_measure",
                        lambda *a: calls.append(a) or pytest.fail("recomputed"))
    second = measure(model, train, test, **kwargs)
    assert first == second and not calls
    assert first.attack_eps == (0.01, 0.1)
    assert len(first.attack_accuracy) == 2
    assert first.weight_residual <= 1e-4
    assert first.input_top_mean > 0 and first.input_converged == 1.0


def test_measure_with_a_store_needs_the_run_key(tmp_path):
    model, data = _net(), _split(12, 0)
    with pytest.raises(ValueError, match="needs run_key"):
        measure(model, data, data, test_accuracy=0.5, hessian_samples=12,
                input_samples=3, attack_samples=3, attack_eps=(0.1,),
                store=Store(tmp_path))
