"""The judges of C1 (sharpness), C2 and C3: thresholds, counting, errors."""

import math

import pytest

from hesslib.verdicts import judge_high_curvature, judge_robustness, judge_sharpness

PAGE = dict(page="04_large_batch", profile="smoke")


def _sharp(lam_small=10.0, lam_large=20.0, acc_small=0.9, acc_large=0.85):
    return dict(small_batch=128, large_batch=2048, lambda_small=lam_small,
                lambda_large=lam_large, accuracy_small=acc_small,
                accuracy_large=acc_large)


def test_sharpness_holds_exactly_at_the_ratio():
    verdict = judge_sharpness({"M1": _sharp()}, min_sharpness_ratio=2.0, **PAGE)
    assert verdict.held and verdict.claim == "C1"
    assert verdict.evidence["M1 lambda_1 ratio (B=2048 / B=128)"] == 2.0
    assert not judge_sharpness({"M1": _sharp(lam_large=19.9)},
                               min_sharpness_ratio=2.0, **PAGE).held


def test_sharpness_needs_lower_accuracy_too():
    flat_acc = _sharp(lam_large=50.0, acc_large=0.9)
    assert not judge_sharpness({"M1": flat_acc}, min_sharpness_ratio=2.0,
                               **PAGE).held


def test_sharpness_counts_models_against_min_models():
    models = {"M1": _sharp(), "C1": _sharp(lam_large=11.0)}
    assert not judge_sharpness(models, min_sharpness_ratio=2.0, **PAGE).held
    verdict = judge_sharpness(models, min_sharpness_ratio=2.0, min_models=1, **PAGE)
    assert verdict.held and verdict.evidence["C1"] == "not held"
    assert verdict.thresholds["min_models"] == 1


@pytest.mark.parametrize("bad, match", [
    (dict(lam_small=0.0), "must be > 0"),
    (dict(lam_large=math.nan), "finite"),
    (dict(acc_small=98.0), r"\[0, 1\]"),
])
def test_sharpness_refuses_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        judge_sharpness({"M1": _sharp(**bad)}, min_sharpness_ratio=2.0, **PAGE)


@pytest.mark.parametrize("kwargs, match", [
    (dict(min_sharpness_ratio=0.0), "positive"),
    (dict(min_sharpness_ratio=2.0, min_models=3), "1 to 1"),
])
def test_sharpness_refuses_bad_thresholds(kwargs, match):
    with pytest.raises(ValueError, match=match):
        judge_sharpness({"M1": _sharp()}, **kwargs, **PAGE)


def _curv(grad_end=0.5, lambda_min=-1.0):
    return dict(grad_start=1.0, grad_end=grad_end, lambda_max=10.0,
                lambda_min=lambda_min)


def test_high_curvature_at_the_thresholds():
    kwargs = dict(max_grad_ratio=0.5, max_negative_ratio=0.1, **PAGE)
    verdict = judge_high_curvature({"M1": _curv()}, **kwargs)
    assert verdict.held and verdict.claim == "C2"
    assert not judge_high_curvature({"M1": _curv(grad_end=0.51)}, **kwargs).held
    assert not judge_high_curvature({"M1": _curv(lambda_min=-1.01)}, **kwargs).held
    # no negative eigenvalue at all: no saddle
    positive = judge_high_curvature({"M1": _curv(lambda_min=0.3)}, **kwargs)
    assert positive.evidence["M1 |lambda_min| / lambda_max"] == 0.0


def test_high_curvature_refuses_bad_input():
    kwargs = dict(max_grad_ratio=0.5, max_negative_ratio=0.1, **PAGE)
    with pytest.raises(ValueError, match="lambda_max is -1"):
        judge_high_curvature({"M1": {**_curv(), "lambda_max": -1.0}}, **kwargs)
    with pytest.raises(ValueError, match="max_negative_ratio"):
        judge_high_curvature({"M1": _curv()}, max_grad_ratio=0.5,
                             max_negative_ratio=-0.1, **PAGE)
    with pytest.raises(ValueError, match="no models"):
        judge_high_curvature({}, **kwargs)


def test_robustness_needs_both_lower_attacked_accuracy_and_larger_input_lambda():
    good = dict(attacked_small=0.6, attacked_large=0.5, input_small=0.1,
                input_large=0.2)
    assert judge_robustness({"C1": good}, **PAGE).held
    assert not judge_robustness({"C1": {**good, "input_large": 0.1}}, **PAGE).held
    assert not judge_robustness({"C1": {**good, "attacked_large": 0.6}}, **PAGE).held
    verdict = judge_robustness({"C1": good, "M1": {**good, "input_large": 0.05}},
                               min_models=1, **PAGE)
    assert verdict.held and verdict.claim == "C3"
    assert verdict.evidence["M1"] == "not held"


def test_robustness_refuses_percentages():
    bad = dict(attacked_small=60.0, attacked_large=0.5, input_small=0.1,
               input_large=0.2)
    with pytest.raises(ValueError, match="fraction"):
        judge_robustness({"C1": bad}, **PAGE)
