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


# ------------------------------------------------------------ pages' summaries

def _dense_weight_hessian(model, x, y):
    from hesslib.hessian import WeightHessian

    return WeightHessian(model, torch.nn.functional.cross_entropy, (x, y)).to_dense()


def _bn_net():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.BatchNorm1d(6),
                        nn.ReLU(), nn.Linear(6, 3)).double()
    net.train()
    with torch.no_grad():  # running statistics away from their initial values
        net(torch.rand(20, 1, 3, 4, dtype=torch.float64))
    return net.eval()


def test_spectrum_summary_matches_dense_at_both_ends_and_is_cached(tmp_path):
    model, data = _net(), _split(30, 4)
    dense = torch.linalg.eigvalsh(_dense_weight_hessian(model, data.x, data.y))
    store = Store(tmp_path)
    kwargs = dict(samples=30, tol=1e-8, max_iter=200, store=store,
                  run_key="0123456789abcdef")
    top = analysis.spectrum_summary(model, data, k=3, **kwargs)
    low = analysis.spectrum_summary(model, data, k=2, which="smallest", **kwargs)
    as_tensor = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    torch.testing.assert_close(as_tensor(top["eigenvalues"]),
                               dense[-3:].flip(0), rtol=1e-6, atol=1e-10)
    torch.testing.assert_close(as_tensor(low["eigenvalues"]), dense[:2],
                               rtol=1e-6, atol=1e-10)
    assert top["converged"] and max(top["residuals"]) <= 1e-8
    assert analysis.spectrum_summary(model, data, k=3, **kwargs) == top
    assert len(store.list("spectrum")) == 2


def test_summaries_with_a_store_need_the_run_key(tmp_path):
    model, data = _net(), _split(12, 0)
    with pytest.raises(ValueError, match="needs run_key"):
        analysis.spectrum_summary(model, data, samples=12, k=1, store=Store(tmp_path))


def test_density_summary_is_a_probability_density():
    model, data = _net(), _split(20, 5)
    result = analysis.density_summary(model, data, samples=20, num_runs=2,
                                      num_steps=10)
    grid, density = torch.tensor(result["grid"]), torch.tensor(result["density"])
    assert abs(torch.trapezoid(density, grid).item() - 1.0) < 1e-3
    assert abs(sum(result["weights"]) - 2.0) < 1e-9  # one per run
    assert result["products"] == 20


def test_landscape_leaves_parameters_and_buffers_and_follows_the_curvature():
    model, data = _bn_net(), _split(24, 6)
    before = analysis.state_copy(model)
    radius = 1e-3  # small: the loss is quadratic to round-off there
    result = analysis.landscape_summary(model, data, samples=24, points=3,
                                        radius=radius, tol=1e-8)
    assert analysis.state_unchanged(model, before)
    assert not model.training  # its mode is kept
    loss = result["line_v1"]
    curvature = (loss[0] - 2 * loss[1] + loss[2]) / radius**2
    assert abs(curvature - result["eigenvalues"][0]) <= 1e-3 * result["eigenvalues"][0]
    assert result["surface_v"][1][1] == loss[1] == result["line_random"][1]
    random = result["line_random"]
    assert (random[0] - 2 * random[1] + random[2]) / radius**2 < curvature


def test_landscape_refuses_a_bad_radius():
    model, data = _net(), _split(6, 0)
    with pytest.raises(ValueError, match="radius > 0"):
        analysis.landscape_summary(model, data, samples=6, points=3, radius=0.0)


def test_attack_summary_starts_at_the_clean_accuracy():
    model, data = _net(), _split(20, 7)
    result = analysis.attack_summary(model, data, attack="pgd", eps=[0.0, 0.2],
                                     samples=20, steps=3)
    assert result["accuracy"][0] == result["clean_accuracy"]
    assert result["accuracy"][1] <= result["clean_accuracy"]
    assert result["samples"] == 20 and result["steps"] == 3


def test_state_unchanged_sees_a_buffer_change():
    model = _bn_net()
    before = analysis.state_copy(model)
    model[2].running_mean.add_(1e-12)
    assert not analysis.state_unchanged(model, before)


# ------------------------------------------------------ tracking during training

def test_tracker_gives_the_top_eigenvalue_and_warm_starts():
    model, data = _net(), _split(30, 8)
    top = torch.linalg.eigvalsh(_dense_weight_hessian(model, data.x, data.y))[-1]
    tracker = analysis.TopEigenvalueTracker(data.x, data.y, tol=1e-8,
                                            max_iter=200)
    first = tracker(model, _record(1))
    second = tracker(model, _record(2))
    assert abs(first["lambda_1"] - top.item()) <= 1e-6 * top
    assert first["lambda_1_residual"] <= 1e-8
    # started from the converged eigenvector, it needs far fewer products
    assert second["lambda_1_products"] < first["lambda_1_products"]
    assert "samples=30" in tracker.name and "tol=1e-08" in tracker.name


def _record(epoch):
    from hesslib.train import EpochRecord

    return EpochRecord(epoch=epoch, lr=0.01, train_loss=1.0, train_accuracy=0.5,
                       test_loss=1.0, test_accuracy=0.5, grad_norm=1.0,
                       seconds=0.0, steps=1)


def test_tracker_refuses_mismatched_samples():
    with pytest.raises(ValueError, match="as many labels"):
        analysis.TopEigenvalueTracker(torch.rand(3, 2), torch.zeros(2))


def test_tracked_run_records_lambda_1_and_trains_the_same_weights(
        data_dir, tmp_path):
    import dataclasses

    from hesslib.experiments import profile_spec, profile_splits, run_training
    from hesslib.profiles import get_profile

    smoke = get_profile("smoke")
    tiny = dataclasses.replace(smoke, train_size={"mnist": 200},
                               test_size={"mnist": 100}, epochs=2,
                               hessian_samples={"M1": 40})
    splits = profile_splits(tiny, "mnist", root=data_dir)
    store = Store(tmp_path)
    tracked = analysis.tracked_run(tiny, "M1", 100, splits=splits, store=store,
                                   tol=1e-3)
    assert [sorted(r.extras) for r in tracked.history] == [
        ["lambda_1", "lambda_1_products", "lambda_1_residual"]] * 2
    assert all(r.extras["lambda_1"] > 0 for r in tracked.history)
    plain = run_training(profile_spec(tiny, "M1", 100, train_size=200),
                         splits=splits, store=store)
    assert plain.key != tracked.key
    for name, value in plain.model.state_dict().items():
        assert torch.equal(value, tracked.model.state_dict()[name]), name
    again = analysis.tracked_run(tiny, "M1", 100, splits=splits, store=store,
                                 tol=1e-3)
    assert again.from_store and again.history == tracked.history


def test_a_new_measurement_revision_recomputes_what_older_code_stored(
        tmp_path, monkeypatch):
    store = Store(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"value": len(calls)}

    first = analysis.cached_json(store, "spectrum", {"k": 1}, compute)
    again = analysis.cached_json(store, "spectrum", {"k": 1}, compute)
    assert first == again == {"value": 1}
    monkeypatch.setattr(analysis, "MEASUREMENT_REVISION",
                        analysis.MEASUREMENT_REVISION + 1)
    assert analysis.cached_json(store, "spectrum", {"k": 1}, compute) == {"value": 2}
