"""Judges of claims C4 to C6 (hesslib.verdicts)."""

import math

import pytest

from hesslib.verdicts import (
    Verdict,
    judge_generality,
    judge_robust_flatter,
    judge_saddle_free,
    sharper_at_large_batch,
)

WHERE = {"page": "0x_test", "profile": "smoke"}


def test_robust_flatter_holds_when_every_batch_is_flatter():
    v = judge_robust_flatter({128: 40.0, 2048: 90.0}, {128: 20.0, 2048: 80.0},
                             max_ratio=1.0, **WHERE)
    assert v.held and v.claim == "C4"
    assert v.evidence["robust / plain, batch 2048"] == pytest.approx(80 / 90)


def test_robust_flatter_fails_when_one_batch_is_sharper():
    v = judge_robust_flatter({128: 40.0, 2048: 90.0}, {128: 20.0, 2048: 95.0},
                             max_ratio=1.0, **WHERE)
    assert not v.held


def test_robust_flatter_margin():
    v = judge_robust_flatter({128: 40.0}, {128: 38.0}, max_ratio=0.9, **WHERE)
    assert not v.held
    assert v.thresholds == {"max_ratio": 0.9}


def test_robust_flatter_refuses_mismatched_batches():
    with pytest.raises(ValueError, match="same, non-empty set"):
        judge_robust_flatter({128: 1.0}, {256: 1.0}, max_ratio=1.0, **WHERE)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_robust_flatter_refuses_bad_eigenvalues(bad):
    with pytest.raises(ValueError, match="finite positive"):
        judge_robust_flatter({128: bad}, {128: 1.0}, max_ratio=1.0, **WHERE)


def _saddle(relu, smooth, error):
    return judge_saddle_free(relu, smooth, error, relu_floor=-1e-6,
                             smooth_ceiling=-1e-3, max_gauss_newton_error=1e-10,
                             **WHERE)


def test_saddle_free_holds():
    v = _saddle({"M1": -1e-9, "C3": 0.0}, {"M1 (tanh)": -0.05}, 1e-15)
    assert v.held and v.claim == "C5"
    assert v.evidence["min ratio, C3"] == 0.0


@pytest.mark.parametrize("relu, smooth, error", [
    ({"M1": -1e-3}, {"t": -0.05}, 1e-15),   # a ReLU model with negative curvature
    ({"M1": -1e-9}, {"t": -1e-5}, 1e-15),   # the twin not negative enough
    ({"M1": -1e-9}, {"t": -0.05}, 1e-4),    # the identity off
])
def test_saddle_free_fails_on_each_condition(relu, smooth, error):
    assert not _saddle(relu, smooth, error).held


def test_saddle_free_without_a_twin_judges_the_relu_models():
    assert _saddle({"M1": 0.0}, {}, 0.0).held


def test_saddle_free_refuses_nan_and_empty():
    with pytest.raises(ValueError, match="solve failed"):
        _saddle({"M1": math.nan}, {}, 0.0)
    with pytest.raises(ValueError, match="at least one ReLU model"):
        _saddle({}, {"t": -1.0}, 0.0)


def test_sharper_at_large_batch():
    assert sharper_at_large_batch(10.0, 10.0, min_sharpness_ratio=1.0)
    assert not sharper_at_large_batch(10.0, 14.0, min_sharpness_ratio=1.5)
    with pytest.raises(ValueError, match="small_top is 0.0"):
        sharper_at_large_batch(0.0, 1.0, min_sharpness_ratio=1.0)


def test_generality_fraction_and_skipped_models():
    tops = {"M1": (10.0, 30.0), "C2": (5.0, 4.0), "C3": (2.0, 3.0)}
    v = judge_generality(tops, min_sharpness_ratio=1.2, min_fraction=0.6,
                         skipped=["C4"], **WHERE)
    assert v.held and v.claim == "C6"
    assert v.evidence["fraction of models sharper"] == pytest.approx(2 / 3)
    assert v.evidence["not run"] == "C4"
    assert not judge_generality(tops, min_sharpness_ratio=1.2, min_fraction=0.9,
                                **WHERE).held


def test_generality_refuses_bad_arguments():
    with pytest.raises(ValueError, match="tops is empty"):
        judge_generality({}, min_sharpness_ratio=1.0, min_fraction=0.5, **WHERE)
    with pytest.raises(ValueError, match="min_fraction is 0"):
        judge_generality({"M1": (1.0, 2.0)}, min_sharpness_ratio=1.0,
                         min_fraction=0, **WHERE)


def test_new_verdicts_round_trip():
    v = _saddle({"M1": 0.0}, {"t": -0.5}, 1e-16)
    assert Verdict.from_dict(v.to_dict()) == v
