import pytest
import torch

from hesslib.models import MODELS, build_model, count_parameters

EXPECTED = {
    # name: (parameters, input shape, classes)
    "M1": (431_080, (1, 28, 28), 10),
    "C1": (1_756_682, (3, 32, 32), 10),
    "C2": (1_148_746, (3, 32, 32), 10),
    "C3": (272_474, (3, 32, 32), 10),
    "C4": (1_171_876, (3, 32, 32), 100),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_parameter_counts_and_output_shapes(name):
    params, shape, classes = EXPECTED[name]
    model = build_model(name, seed=0).eval()
    assert count_parameters(model) == params
    assert model(torch.rand(3, *shape)).shape == (3, classes)


def test_c1_first_linear_layer_takes_4096_inputs():
    model = build_model("C1", seed=0)
    linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert linear.in_features == 4096


def test_c3_shortcuts_are_1x1_convolutions_with_batchnorm():
    model = build_model("C3", seed=0)
    shortcuts = [m.shortcut for m in model.modules() if hasattr(m, "shortcut")]
    projections = [s for s in shortcuts if isinstance(s, torch.nn.Sequential)]
    assert len(shortcuts) == 9 and len(projections) == 2
    for projection in projections:
        conv, norm = projection
        assert conv.kernel_size == (1, 1) and isinstance(norm, torch.nn.BatchNorm2d)


def test_seed_fixes_weights_without_touching_global_state():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_model("M1", seed=7)
    after = torch.rand(1)
    b = build_model("M1", seed=7)
    assert torch.equal(before, after)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_normalization_is_inside_the_model():
    model = build_model("M1", seed=0).eval()
    first = next(iter(model.children()))
    x = torch.full((1, 1, 28, 28), 0.1307)
    assert torch.allclose(first(x), torch.zeros_like(x), atol=1e-6)


@pytest.mark.parametrize("activation", ["tanh", "gelu"])
def test_smooth_twins_have_no_relu(activation):
    model = build_model("C3", seed=0, activation=activation)
    assert not any(isinstance(m, torch.nn.ReLU) for m in model.modules())


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="unknown model 'C9'"):
        build_model("C9")
    with pytest.raises(ValueError, match="unknown activation 'elu'"):
        build_model("M1", activation="elu")
