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
