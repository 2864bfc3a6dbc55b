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
        max_negative_ratio: Largest |lambda_min| / lambda_max, >= 0.
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
