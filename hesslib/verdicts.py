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
