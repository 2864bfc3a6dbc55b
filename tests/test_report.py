"""Tables from code: architectures and training settings (hesslib.report)."""

import pytest
from torch import nn

from hesslib.models import MODELS, build_model, count_parameters
from hesslib.profiles import PROFILES, get_profile
from hesslib.report import INPUT_SHAPES, architecture_rows, model_rows, training_rows


@pytest.mark.parametrize("name, data", [("M1", "mnist"), ("C3", "cifar10")])
def test_architecture_rows_add_up_to_the_model(name, data):
    model = build_model(name, seed=0)
    rows = architecture_rows(model, INPUT_SHAPES[data])
    assert sum(r["parameters"] for r in rows) == count_parameters(model)
    assert rows[-1]["output shape"] == "10"
    assert model.training  # the mode is restored


def test_architecture_rows_describe_leaves_and_blocks():
    rows = architecture_rows(build_model("C3", seed=0), INPUT_SHAPES["cifar10"])
    assert rows[1]["module"].startswith("Conv2d(3, 16")
    assert rows[4]["module"].startswith("BasicBlock: Conv2d x2")
    assert rows[4]["output shape"] == "16 x 32 x 32"


def test_architecture_rows_refuse_a_leaf():
    with pytest.raises(ValueError, match="Linear has no child layers"):
        architecture_rows(nn.Linear(2, 2), (2,))


def test_model_rows_match_the_paper_sizes():
    rows = {r["model"]: r for r in model_rows(MODELS)}
    # PAPER.md section 3: about 1.76M (C1), 1.15M (C2), 0.27M (C3)
    assert rows["C1"]["parameters"] == pytest.approx(1.76e6, rel=0.02)
    assert rows["C2"]["parameters"] == pytest.approx(1.15e6, rel=0.02)
    assert rows["C3"]["parameters"] == pytest.approx(0.27e6, rel=0.02)
    assert rows["M1"]["convolutions"] == 2 and rows["M1"]["BatchNorm layers"] == 0


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_training_rows_follow_the_profile(profile):
    settings = get_profile(profile)
    rows = training_rows(settings, ["M1", "C3"])
    assert [r["model"] for r in rows] == ["M1", "C3"]
    assert rows[0]["epochs"] == settings.epochs
    assert rows[1]["lr scaling"] == settings.lr_scaling
    assert rows[0]["lr"] == 0.01 and rows[0]["momentum"] == 0.9


def test_training_rows_refuse_an_unknown_model():
    with pytest.raises(ValueError, match="no batch sizes for model 'X9'"):
        training_rows(get_profile("smoke"), ["X9"])
