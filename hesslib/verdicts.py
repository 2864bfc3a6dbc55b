"""Claim verdicts: the paper's claims judged against thresholds fixed beforehand.

A page states a claim of the paper (C1 to C6, see :data:`CLAIMS`), fixes its
thresholds in its ``parameters`` cell, runs the experiment, and ends with a
:class:`Verdict`: whether the claim held on this run, the evidence and the
thresholds. The verdict is shown on the page (a Jupyter notebook renders its
``_repr_html_`` as an admonition) and stored in the results store, from which
the introduction's scoreboard is filled when the book is built.

A verdict never fails the build: a claim that does not hold is a result. What
must hold for a page to be valid at all (residuals, finite values, a model's
mode restored) is checked with plain ``assert`` statements on the page.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hesslib.store import Store

__all__ = [
    "CLAIMS",
    "VERDICT_KIND",
    "Claim",
    "Verdict",
    "judge_accuracy_drop",
    "judge_high_curvature",
    "judge_robustness",
    "judge_sharpness",
    "load_verdicts",
    "scoreboard_rows",
    "store_verdict",
]

VERDICT_KIND = "verdict"
"""The store kind under which verdicts are kept."""


@dataclass(frozen=True)
class Claim:
    """One claim of the paper and the page of the book that judges it.

    Attributes:
        name: ``"C1"`` to ``"C6"``.
        summary: The claim in one sentence.
        page: The page (its file stem in ``notebooks/``) that judges it.

    """

    name: str
    summary: str
    page: str


CLAIMS: dict[str, Claim] = {
    c.name: c
    for c in (
        Claim("C1", "Larger batches end in sharper regions (larger lambda_1 of the "
              "weight Hessian) with lower test accuracy.", "04_large_batch"),
        Claim("C2", "Large-batch training is not stuck at saddle points but in "
              "areas of high curvature.", "04_large_batch"),
        Claim("C3", "Points of large spectrum are less robust to adversarial "
              "perturbations; lambda_1 of the input Hessian is larger.",
              "05_robustness"),
        Claim("C4", "Robust (adversarial) training ends in flatter regions.",
              "06_robust_training"),
        Claim("C5", "For ReLU networks the loss is a saddle-free function of the "
              "input almost everywhere (Theorem 1).", "07_saddle_free"),
        Claim("C6", "These findings hold across architectures and data sets.",
              "08_appendix"),
    )
}
"""The paper's claims (PAPER.md section 1) and the page planned to judge each."""


@dataclass(frozen=True)
class Verdict:
    """Whether one claim held on one page's run, with what evidence.

    Attributes:
        claim: The claim's name, ``"C1"`` to ``"C6"``.
        held: Whether the evidence met every threshold.
        statement: The judged statement, with its thresholds, in words.
        evidence: The measured numbers (or short strings) the judgment used.
        thresholds: The thresholds, as fixed in the page's parameters.
        page: The page (file stem) that computed it.
        profile: The profile the page ran with.

    Example:
        >>> v = Verdict("C1", True, "acc drops", {"drop": 0.01},
        ...             {"min_drop": 0.005}, "01_x", "smoke")
        >>> Verdict.from_dict(v.to_dict()) == v
        True

    """

    claim: str
    held: bool
    statement: str
    evidence: dict[str, float | str] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)
    page: str = ""
    profile: str = ""

    def __post_init__(self) -> None:
        if self.claim not in CLAIMS:
            raise ValueError(
                f"unknown claim {self.claim!r}; use one of {sorted(CLAIMS)}"
            )
        if not isinstance(self.held, bool):
            raise TypeError(
                f"held is {self.held!r} of type {type(self.held).__name__}; pass a "
                "bool, e.g. bool(drop >= threshold)"
            )

    def to_dict(self) -> dict[str, Any]:
        """The verdict as plain JSON-able data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        """Rebuild a verdict from :meth:`to_dict`'s output."""
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})

    @property
    def label(self) -> str:
        """``"held"`` or ``"not held"``."""
        return "held" if self.held else "not held"

    def _repr_html_(self) -> str:
        """An admonition: green when the claim held, orange when it did not."""
        kind = "tip" if self.held else "warning"
        title = f"{self.claim} {self.label} ({self.profile} profile)"
        items = [*_items("evidence", self.evidence),
                 *_items("threshold", self.thresholds)]
        return (
            f'<div class="admonition {kind} verdict">'
            f'<p class="admonition-title">{html.escape(title)}</p>'
            f"<p>{html.escape(self.statement)}</p>"
            f"<ul>{''.join(items)}</ul></div>"
        )

    def _repr_markdown_(self) -> str:
        return f"**{self.claim} {self.label}.** {self.statement}"


def _items(what: str, values: Mapping[str, Any]) -> list[str]:
    return [f"<li>{what} <code>{html.escape(name)}</code>: "
            f"{html.escape(_format(value))}</li>" for name, value in values.items()]


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def judge_accuracy_drop(
    accuracy_small: float,
    accuracy_large: float,
    *,
    small_batch: int,
    large_batch: int,
    min_accuracy_drop: float,
    page: str,
    profile: str,
) -> Verdict:
    """Judge the accuracy part of C1: the large batch loses enough accuracy.

    The claim holds when ``accuracy_small - accuracy_large >= min_accuracy_drop``.

    Args:
        accuracy_small: Test accuracy (in [0, 1]) at the small batch.
        accuracy_large: Test accuracy at the large batch.
        small_batch: The small batch size (128 in the paper).
        large_batch: The large batch size.
        min_accuracy_drop: The smallest drop, in accuracy units, that counts.
        page: The page judging it.
        profile: The profile it ran with.

    Raises:
        ValueError: An accuracy is not a finite number in [0, 1].

    Example:
        >>> judge_accuracy_drop(0.99, 0.97, small_batch=128, large_batch=1000,
        ...                     min_accuracy_drop=0.005, page="01", profile="smoke"
        ...                     ).held
        True

    """
    for name, value in (("accuracy_small", accuracy_small),
                        ("accuracy_large", accuracy_large)):
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(
                f"{name} is {value!r}; pass a test accuracy in [0, 1] "
                "(a fraction, not a percentage)"
            )
    drop = accuracy_small - accuracy_large
    return Verdict(
        claim="C1",
        held=bool(drop >= min_accuracy_drop),
        statement=(
            f"Test accuracy at batch {large_batch:,} is lower than at batch "
            f"{small_batch:,} by at least {min_accuracy_drop:.2%}."
        ),
        evidence={
            f"accuracy at batch {small_batch}": float(accuracy_small),
            f"accuracy at batch {large_batch}": float(accuracy_large),
            "accuracy drop": float(drop),
        },
        thresholds={"min_accuracy_drop": float(min_accuracy_drop)},
        page=page,
        profile=profile,
    )


def _check_finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} is {value!r}; pass a finite number (a failed or "
                         "diverged measurement cannot be judged)")


def _check_accuracy(name: str, value: float) -> None:
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} is {value!r}; pass an accuracy in [0, 1] (a "
                         "fraction, not a percentage)")


def _count_needed(min_models: int | None, total: int) -> int:
    if total == 0:
        raise ValueError("no models to judge; pass at least one")
    needed = total if min_models is None else min_models
    if not 1 <= needed <= total:
        raise ValueError(f"min_models is {min_models!r} for {total} models; use "
                         f"1 to {total}, or None for all of them")
    return needed


def judge_sharpness(
    models: Mapping[str, Mapping[str, float]],
    *,
    min_sharpness_ratio: float,
    min_models: int | None = None,
    page: str,
    profile: str,
) -> Verdict:
    r"""Judge C1: the largest batch ends sharper, with lower test accuracy.

    Per model, with :math:`\lambda_1(	heta)` at the small and the large
    batch, the model holds when
    ``lambda_large >= min_sharpness_ratio * lambda_small`` and
    ``accuracy_large < accuracy_small``. The claim holds when at least
    ``min_models`` models hold (``None``: all of them).

    Args:
        models: Per model name, a mapping with ``small_batch``,
            ``large_batch``, ``lambda_small``, ``lambda_large``,
            ``accuracy_small`` and ``accuracy_large``.
        min_sharpness_ratio: Least ratio lambda_large / lambda_small, > 0.
        min_models: Models that must hold; ``None``: all.
        page: The page judging it.
        profile: The profile it ran with.

    Raises:
        ValueError: A value is missing or not finite, an accuracy is outside
            [0, 1], a small-batch lambda_1 is not positive, or ``min_models``
            is out of range.

    Example:
        >>> row = dict(small_batch=128, large_batch=2048, lambda_small=10.0,
        ...            lambda_large=30.0, accuracy_small=0.9, accuracy_large=0.8)
        >>> judge_sharpness({"M1": row}, min_sharpness_ratio=2.0, page="04",
        ...                 profile="smoke").held
        True

    """
    if not (math.isfinite(min_sharpness_ratio) and min_sharpness_ratio > 0):
        raise ValueError(f"min_sharpness_ratio is {min_sharpness_ratio!r}; pass a "
                         "positive number such as 2.0")
    needed = _count_needed(min_models, len(models))
    evidence: dict[str, float | str] = {}
    holding = 0
    for name, row in models.items():
        for field_name in ("lambda_small", "lambda_large"):
            _check_finite(f"{name} {field_name}", row[field_name])
        for field_name in ("accuracy_small", "accuracy_large"):
            _check_accuracy(f"{name} {field_name}", row[field_name])
        if row["lambda_small"] <= 0:
            raise ValueError(f"{name} lambda_small is {row['lambda_small']!r}; the "
                             "top Hessian eigenvalue of a trained model must be > 0 "
                             "for a ratio (check the solve's convergence)")
        ratio = row["lambda_large"] / row["lambda_small"]
        drop = row["accuracy_small"] - row["accuracy_large"]
        held = ratio >= min_sharpness_ratio and drop > 0
        holding += held
        evidence[f"{name} lambda_1 ratio (B={int(row['large_batch'])} / "
                 f"B={int(row['small_batch'])})"] = float(ratio)
        evidence[f"{name} accuracy drop"] = float(drop)
        evidence[f"{name}"] = "held" if held else "not held"
    return Verdict(
        claim="C1",
        held=bool(holding >= needed),
        statement=(
            f"For at least {needed} of {len(models)} models "
            f"({', '.join(models)}), lambda_1(theta) at the largest batch is at "
            f"least {min_sharpness_ratio:g} times that at the smallest, and the "
            "test accuracy is lower."
        ),
        evidence=evidence,
        thresholds={"min_sharpness_ratio": float(min_sharpness_ratio),
                    "min_models": needed},
        page=page,
        profile=profile,
    )


def judge_high_curvature(
    models: Mapping[str, Mapping[str, float]],
    *,
    max_grad_ratio: float,
    max_negative_ratio: float,
    min_models: int | None = None,
    page: str,
    profile: str,
) -> Verdict:
    r"""Judge C2: large-batch training ends at high curvature, not a saddle.

    Per model (trained at a large batch), with the gradient norm after the
    first and the last epoch and the extreme eigenvalues
    :math:`\lambda_{max} > 0` and :math:`\lambda_{min}` of the weight Hessian
    at the end, the model holds when
    ``grad_end <= max_grad_ratio * grad_start`` (the gradient has shrunk) and
    ``max(0, -lambda_min) / lambda_max <= max_negative_ratio`` (negative
    curvature, the mark of a saddle, is small beside the positive). The claim
    holds when at least ``min_models`` models hold (``None``: all).

    Args:
        models: Per model name: ``grad_start``, ``grad_end``, ``lambda_max``,
            ``lambda_min``.
        max_grad_ratio: Largest grad_end / grad_start, > 0.
        max_negative_ratio: Largest ``|lambda_min| / lambda_max``, >= 0.
        min_models: Models that must hold; ``None``: all.
        page: The page judging it.
        profile: The profile it ran with.

    Raises:
        ValueError: A value is not finite, ``grad_start`` or ``lambda_max`` is
            not positive, or a threshold or ``min_models`` is out of range.

    Example:
        >>> row = dict(grad_start=2.0, grad_end=0.2, lambda_max=50.0,
        ...            lambda_min=-0.5)
        >>> judge_high_curvature({"M1": row}, max_grad_ratio=0.5,
        ...                      max_negative_ratio=0.1, page="04",
        ...                      profile="smoke").held
        True

    """
    if not (math.isfinite(max_grad_ratio) and max_grad_ratio > 0):
        raise ValueError(f"max_grad_ratio is {max_grad_ratio!r}; pass a positive "
                         "number such as 0.5")
    if not (math.isfinite(max_negative_ratio) and max_negative_ratio >= 0):
        raise ValueError(f"max_negative_ratio is {max_negative_ratio!r}; pass a "
                         "number >= 0 such as 0.1")
    needed = _count_needed(min_models, len(models))
    evidence: dict[str, float | str] = {}
    holding = 0
    for name, row in models.items():
        for field_name in ("grad_start", "grad_end", "lambda_max", "lambda_min"):
            _check_finite(f"{name} {field_name}", row[field_name])
        for field_name in ("grad_start", "lambda_max"):
            if row[field_name] <= 0:
                raise ValueError(f"{name} {field_name} is {row[field_name]!r}; it "
                                 "must be > 0 to form a ratio")
        grad_ratio = row["grad_end"] / row["grad_start"]
        negative = max(0.0, -row["lambda_min"]) / row["lambda_max"]
        held = grad_ratio <= max_grad_ratio and negative <= max_negative_ratio
        holding += held
        evidence[f"{name} gradient norm end / start"] = float(grad_ratio)
        evidence[f"{name} |lambda_min| / lambda_max"] = float(negative)
        evidence[f"{name}"] = "held" if held else "not held"
    return Verdict(
        claim="C2",
        held=bool(holding >= needed),
        statement=(
            f"For at least {needed} of {len(models)} large-batch models "
            f"({', '.join(models)}), the gradient norm at the end is at most "
            f"{max_grad_ratio:g} times that after the first epoch, and the most "
            f"negative Hessian eigenvalue is at most {max_negative_ratio:g} times "
            "the largest in magnitude: high curvature, not a saddle point."
        ),
        evidence=evidence,
        thresholds={"max_grad_ratio": float(max_grad_ratio),
                    "max_negative_ratio": float(max_negative_ratio),
                    "min_models": needed},
        page=page,
        profile=profile,
    )


def judge_robustness(
    models: Mapping[str, Mapping[str, float]],
    *,
    min_models: int | None = None,
    page: str,
    profile: str,
) -> Verdict:
    """Judge C3: the largest batch is less robust, with larger lambda_1(x).

    Per model, the model holds when its largest-batch run has lower accuracy
    under the chosen attack (``attacked_large < attacked_small``) and a larger
    lambda_1(x) (``input_large > input_small``) than its smallest-batch run.
    The claim holds when at least ``min_models`` models hold (``None``: all).

    Args:
        models: Per model name: ``attacked_small``, ``attacked_large``
            (accuracies under attack), ``input_small``, ``input_large``
            (lambda_1(x)).
        min_models: Models that must hold; ``None``: all.
        page: The page judging it.
        profile: The profile it ran with.

    Raises:
        ValueError: An accuracy is outside [0, 1], a lambda_1(x) is not
            finite, or ``min_models`` is out of range.

    Example:
        >>> row = dict(attacked_small=0.6, attacked_large=0.4, input_small=0.1,
        ...            input_large=0.3)
        >>> judge_robustness({"C1": row}, page="05", profile="smoke").held
        True

    """
    needed = _count_needed(min_models, len(models))
    evidence: dict[str, float | str] = {}
    holding = 0
    for name, row in models.items():
        for field_name in ("attacked_small", "attacked_large"):
            _check_accuracy(f"{name} {field_name}", row[field_name])
        for field_name in ("input_small", "input_large"):
            _check_finite(f"{name} {field_name}", row[field_name])
        loss = row["attacked_small"] - row["attacked_large"]
        held = loss > 0 and row["input_large"] > row["input_small"]
        holding += held
        evidence[f"{name} attacked accuracy, small minus large batch"] = float(loss)
        evidence[f"{name} lambda_1(x) ratio large / small"] = (
            float(row["input_large"] / row["input_small"])
            if row["input_small"] > 0 else "n/a")
        evidence[f"{name}"] = "held" if held else "not held"
    return Verdict(
        claim="C3",
        held=bool(holding >= needed),
        statement=(
            f"For at least {needed} of {len(models)} models "
            f"({', '.join(models)}), the largest-batch run has lower accuracy "
            "under attack and larger lambda_1(x) than the smallest-batch run."
        ),
        evidence=evidence,
        thresholds={"min_models": needed},
        page=page,
        profile=profile,
    )


def _verdict_config(verdict: Verdict) -> dict[str, str]:
    return {"claim": verdict.claim, "page": verdict.page, "profile": verdict.profile}


def store_verdict(verdict: Verdict, store: Store) -> None:
    """Put ``verdict`` into ``store``, replacing an older one of the same key.

    The key is the claim, the page and the profile: a rerun of the page with
    the same profile replaces its verdict.
    """
    config = _verdict_config(verdict)
    store.remove(VERDICT_KIND, store.key(VERDICT_KIND, config))
    store.put_json(VERDICT_KIND, config, verdict.to_dict())


def load_verdicts(store: Store, *, profile: str | None = None) -> list[Verdict]:
    """Every verdict in ``store`` (of one ``profile``), oldest first."""
    verdicts = []
    for info in store.list(VERDICT_KIND):
        if profile is not None and info.config.get("profile") != profile:
            continue
        data = store.get_json(VERDICT_KIND, info.config)
        if data is not None:
            verdicts.append(Verdict.from_dict(data))
    return verdicts


def scoreboard_rows(
    verdicts: Iterable[Verdict], *, claims: Mapping[str, Claim] = CLAIMS
) -> list[dict[str, str]]:
    """One row per claim for the introduction's table, in claim order.

    A claim judged by several pages gets one row per verdict; a claim with
    none says "not yet computed" and names the page planned to compute it.
    The ``page`` column holds the page's file stem.

    Example:
        >>> rows = scoreboard_rows([])
        >>> rows[0]["verdict"], rows[0]["page"]
        ('not yet computed', '04_large_batch')

    """
    by_claim: dict[str, list[Verdict]] = {}
    for verdict in verdicts:
        by_claim.setdefault(verdict.claim, []).append(verdict)
    rows = []
    for name, claim in claims.items():
        found = by_claim.get(name, [])
        for verdict in found:
            evidence = "; ".join(f"{k} {_format(v)}"
                                 for k, v in verdict.evidence.items())
            rows.append({"claim": name, "statement": verdict.statement,
                         "verdict": f"{verdict.label} ({verdict.profile})",
                         "evidence": evidence, "page": verdict.page})
        if not found:
            rows.append({"claim": name, "statement": claim.summary,
                         "verdict": "not yet computed", "evidence": "",
                         "page": claim.page})
    return rows


# --------------------------------------------------------------------------
# C4 to C6: robust training, Theorem 1, generality (pages 06 to 08)


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(
            f"{name} is {value!r}; pass a finite positive number (a top Hessian "
            "eigenvalue of a trained model is positive)"
        )


def judge_robust_flatter(
    plain_top: Mapping[int, float],
    robust_top: Mapping[int, float],
    *,
    max_ratio: float,
    page: str,
    profile: str,
) -> Verdict:
    """Judge C4: robust training ends with a smaller lambda_1(theta).

    For every batch size judged, ``robust_top[b] <= max_ratio * plain_top[b]``
    must hold (``max_ratio`` below 1 asks for a margin).

    Args:
        plain_top: lambda_1(theta) of plain training, by batch size.
        robust_top: lambda_1(theta) of robust training (same seeds), by batch.
        max_ratio: The largest robust/plain ratio that counts as flatter.
        page: The page judging it.
        profile: The profile it ran with.

    Raises:
        ValueError: The batch sizes differ, none is given, or an eigenvalue
            is not a finite positive number.

    Example:
        >>> judge_robust_flatter({128: 40.0}, {128: 25.0}, max_ratio=1.0,
        ...                      page="06", profile="smoke").held
        True

    """
    if set(plain_top) != set(robust_top) or not plain_top:
        raise ValueError(
            f"plain_top has batches {sorted(plain_top)} and robust_top "
            f"{sorted(robust_top)}; pass the same, non-empty set of batch sizes"
        )
    _check_positive("max_ratio", max_ratio)
    evidence: dict[str, float | str] = {}
    ratios = []
    for batch in sorted(plain_top):
        _check_positive(f"plain_top[{batch}]", plain_top[batch])
        _check_positive(f"robust_top[{batch}]", robust_top[batch])
        ratio = robust_top[batch] / plain_top[batch]
        ratios.append(ratio)
        evidence[f"lambda_1 plain, batch {batch}"] = float(plain_top[batch])
        evidence[f"lambda_1 robust, batch {batch}"] = float(robust_top[batch])
        evidence[f"robust / plain, batch {batch}"] = float(ratio)
    batches = ", ".join(f"{b:,}" for b in sorted(plain_top))
    return Verdict(
        claim="C4",
        held=bool(max(ratios) <= max_ratio),
        statement=(
            f"At batch {batches}, robust (FGSM-mix) training ends with a top "
            f"weight-Hessian eigenvalue at most {max_ratio:g} times that of plain "
            "training from the same initial weights."
        ),
        evidence=evidence,
        thresholds={"max_ratio": float(max_ratio)},
        page=page,
        profile=profile,
    )


def judge_saddle_free(
    relu_min_ratio: Mapping[str, float],
    smooth_min_ratio: Mapping[str, float],
    gauss_newton_error: float,
    *,
    relu_floor: float,
    smooth_ceiling: float,
    max_gauss_newton_error: float,
    page: str,
    profile: str,
) -> Verdict:
    """Judge C5 (Theorem 1): no negative input curvature for ReLU networks.

    Each ratio is the smallest, over every step of the attack paths and every
    sample, of the smallest input-Hessian eigenvalue over the largest one at
    the same point. The claim holds when every ReLU model's ratio is at least
    ``relu_floor`` (zero up to round-off), every smooth twin's is below
    ``smooth_ceiling`` (the contrast: the theorem needs piecewise-linear
    activations), and the Gauss-Newton identity holds to
    ``max_gauss_newton_error``.

    Args:
        relu_min_ratio: The ratio per ReLU model, e.g. ``{"M1": -1e-9}``.
        smooth_min_ratio: The ratio per smooth twin, e.g. ``{"M1 (tanh)": -0.2}``.
        gauss_newton_error: Relative Frobenius error of the identity for a
            ReLU model (float64).
        relu_floor: Least ratio that counts as zero (e.g. ``-1e-6``).
        smooth_ceiling: Ratio below which the twin counts as negative.
        max_gauss_newton_error: Largest error that counts as round-off.
        page: The page judging it.
        profile: The profile it ran with.

    Raises:
        ValueError: No ReLU model, or a ratio or the error is not finite.

    Example:
        >>> judge_saddle_free({"M1": -1e-9}, {"M1 (tanh)": -0.1}, 1e-14,
        ...                   relu_floor=-1e-6, smooth_ceiling=-1e-3,
        ...                   max_gauss_newton_error=1e-10, page="07",
        ...                   profile="smoke").held
        True

    """
    if not relu_min_ratio:
        raise ValueError("relu_min_ratio is empty; pass the ratio of at least one "
                         "ReLU model, e.g. {'M1': -1e-9}")
    values = {**relu_min_ratio, **smooth_min_ratio,
              "gauss_newton_error": gauss_newton_error}
    for name, value in values.items():
        if not math.isfinite(value):
            raise ValueError(f"{name} is {value!r}; pass finite numbers (a NaN "
                             "eigenvalue means the solve failed: check its residual)")
    held = (min(relu_min_ratio.values()) >= relu_floor
            and all(v < smooth_ceiling for v in smooth_min_ratio.values())
            and gauss_newton_error <= max_gauss_newton_error)
    evidence: dict[str, float | str] = {
        **{f"min ratio, {k}": float(v) for k, v in relu_min_ratio.items()},
        **{f"min ratio, {k}": float(v) for k, v in smooth_min_ratio.items()},
        "Gauss-Newton relative error": float(gauss_newton_error),
    }
    return Verdict(
        claim="C5",
        held=bool(held),
        statement=(
            "Along PGD paths the smallest input-Hessian eigenvalue of every ReLU "
            f"model is at least {relu_floor:g} times the largest (zero up to "
            f"round-off), that of every smooth twin is below {smooth_ceiling:g} "
            "times it, and the Gauss-Newton identity holds to "
            f"{max_gauss_newton_error:g}."
        ),
        evidence=evidence,
        thresholds={"relu_floor": float(relu_floor),
                    "smooth_ceiling": float(smooth_ceiling),
                    "max_gauss_newton_error": float(max_gauss_newton_error)},
        page=page,
        profile=profile,
    )


def sharper_at_large_batch(
    small_top: float, large_top: float, *, min_sharpness_ratio: float
) -> bool:
    """Whether the large batch's lambda_1(theta) is ``min_sharpness_ratio``-fold.

    Example:
        >>> sharper_at_large_batch(10.0, 25.0, min_sharpness_ratio=1.5)
        True

    """
    _check_positive("small_top", small_top)
    _check_positive("large_top", large_top)
    return bool(large_top >= min_sharpness_ratio * small_top)


def judge_generality(
    tops: Mapping[str, tuple[float, float]],
    *,
    min_sharpness_ratio: float,
    min_fraction: float,
    skipped: Iterable[str] = (),
    page: str,
    profile: str,
) -> Verdict:
    """Judge C6: the C1 sharpness relation holds across the models that ran.

    A model shows the relation when its lambda_1(theta) at the largest batch
    is at least ``min_sharpness_ratio`` times that at the smallest
    (:func:`sharper_at_large_batch`). The claim holds when at least
    ``min_fraction`` of the models that ran show it.

    Args:
        tops: Per model, ``(lambda_1 at the smallest batch, at the largest)``.
        min_sharpness_ratio: Large/small ratio that counts as sharper.
        min_fraction: Fraction of models, in (0, 1], that must show it.
        skipped: Models that could not run (e.g. C4 without CIFAR-100); named
            in the evidence, not counted.
        page: The page judging it.
        profile: The profile it ran with.

    Raises:
        ValueError: No model ran, ``min_fraction`` is outside (0, 1], or an
            eigenvalue is not a finite positive number.

    Example:
        >>> judge_generality({"M1": (10.0, 30.0), "C2": (5.0, 4.0)},
        ...                  min_sharpness_ratio=1.0, min_fraction=0.5,
        ...                  page="08", profile="smoke").held
        True

    """
    if not tops:
        raise ValueError("tops is empty; pass lambda_1 pairs of at least one "
                         "model that ran, e.g. {'M1': (10.0, 30.0)}")
    if not 0.0 < min_fraction <= 1.0:
        raise ValueError(f"min_fraction is {min_fraction!r}; pass a fraction in "
                         "(0, 1], e.g. 0.75")
    shown = {name: sharper_at_large_batch(small, large,
                                          min_sharpness_ratio=min_sharpness_ratio)
             for name, (small, large) in tops.items()}
    fraction = sum(shown.values()) / len(shown)
    evidence: dict[str, float | str] = {
        f"large / small, {name}": float(large / small)
        for name, (small, large) in tops.items()}
    evidence["fraction of models sharper"] = float(fraction)
    skipped = list(skipped)
    if skipped:
        evidence["not run"] = ", ".join(skipped)
    return Verdict(
        claim="C6",
        held=bool(fraction >= min_fraction),
        statement=(
            f"For at least {min_fraction:.0%} of the models that ran "
            f"({', '.join(tops)}), lambda_1(theta) at the largest batch is at "
            f"least {min_sharpness_ratio:g} times that at the smallest."
        ),
        evidence=evidence,
        thresholds={"min_sharpness_ratio": float(min_sharpness_ratio),
                    "min_fraction": float(min_fraction)},
        page=page,
        profile=profile,
    )


__all__ += [
    "judge_generality",
    "judge_robust_flatter",
    "judge_saddle_free",
    "sharper_at_large_batch",
]
