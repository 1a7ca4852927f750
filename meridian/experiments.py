"""A/B and canary analysis: per-variant evidence from the decision log, and a decision.

Inputs: the region's scoring decisions of one experiment (meridian.stream_log → the
`scoring_decisions` lake table) and, where they have matured, the transactions' labels.

Per variant: requests, mean score, share flagged at the threshold, latency p50/p99,
fallbacks (challenger requested but answered by the champion), matured rows, fraud rate
and PR-AUC when both classes are present. Tests at 95 %:
- Mann–Whitney U on the two variants' scores (does the challenger score differently?);
- two-proportion z-test on the matured outcome among flagged transactions (precision:
  of the transactions each model flags, are more of them fraud?).

Decision, in this order:
1. `rollback` when a guardrail fails: the challenger's fallback rate above
   `max_fallback_rate`, its latency p99 above `latency_factor` × the champion's plus
   `latency_slack_ms` (0 by default: a fixed slack would let any factor pass at
   sub-millisecond latencies), or — once labels have matured on both
   sides — its PR-AUC more than `max_pr_auc_drop` below the champion's;
2. `hold` while either variant has fewer than `min_requests` requests;
3. canary: `advance` to the next ramp step when the current step passed the guardrails
   with enough requests; at the last step (100 %), `promote`;
4. A/B: `promote` when the precision test is significant in the challenger's favour,
   otherwise `hold` (a difference that is not significant is not a reason to switch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats

from meridian import modeling


class GuardrailError(ValueError):
    """A guardrail setting that cannot mean anything; the message names it and its range."""


@dataclass(frozen=True)
class Guardrails:
    min_requests: int = 100
    max_fallback_rate: float = 0.01
    latency_factor: float = 1.5
    latency_slack_ms: float = 0.0
    max_pr_auc_drop: float = 0.02
    threshold: float = 0.5
    alpha: float = 0.05

    def __post_init__(self) -> None:
        problems = [
            f"{name}={value!r}: {rule}"
            for name, value, ok, rule in (
                (
                    "min_requests",
                    self.min_requests,
                    _int(self.min_requests) and self.min_requests >= 1,
                    "an integer >= 1",
                ),
                (
                    "max_fallback_rate",
                    self.max_fallback_rate,
                    _within(self.max_fallback_rate, 0, 1),
                    "a share in [0, 1]",
                ),
                (
                    "latency_factor",
                    self.latency_factor,
                    _within(self.latency_factor, 0, math.inf) and self.latency_factor > 0,
                    "a finite factor > 0",
                ),
                (
                    "latency_slack_ms",
                    self.latency_slack_ms,
                    _within(self.latency_slack_ms, 0, math.inf),
                    "finite milliseconds >= 0",
                ),
                (
                    "max_pr_auc_drop",
                    self.max_pr_auc_drop,
                    _within(self.max_pr_auc_drop, 0, 1),
                    "a PR-AUC difference in [0, 1]",
                ),
                (
                    "threshold",
                    self.threshold,
                    _within(self.threshold, 0, 1) and 0 < self.threshold < 1,
                    "a score in (0, 1)",
                ),
                (
                    "alpha",
                    self.alpha,
                    _within(self.alpha, 0, 1) and 0 < self.alpha < 1,
                    "a significance level in (0, 1)",
                ),
            )
            if not ok
        ]
        if problems:
            raise GuardrailError("invalid guardrails: " + "; ".join(problems))


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _within(value: object, low: float, high: float) -> bool:
    """A finite real number (not a bool, NaN or an infinity) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and low <= value <= high


def variant_stats(frame: pl.DataFrame, threshold: float) -> dict[str, object]:
    latency = frame["latency_ms"].to_numpy()
    out: dict[str, object] = {
        "requests": frame.height,
        "model_versions": sorted(set(frame["model_version"].to_list())),
        "mean_score": float(frame["score"].mean()) if frame.height else None,
        "flagged_share": float((frame["score"] >= threshold).mean()) if frame.height else None,
        "latency_p50_ms": float(np.percentile(latency, 50)) if frame.height else None,
        "latency_p99_ms": float(np.percentile(latency, 99)) if frame.height else None,
        "fallbacks": int(frame["fallback"].is_not_null().sum()) if "fallback" in frame.columns else 0,
    }
    matured = frame.filter(pl.col("label").is_not_null()) if "label" in frame.columns else frame.clear()
    out["matured"] = matured.height
    out["fraud_rate"] = float(matured["label"].mean()) if matured.height else None
    labels = matured["label"].to_numpy() if matured.height else np.array([])
    out["pr_auc"] = None
    if matured.height and 0 < labels.sum() < len(labels):
        out["pr_auc"] = modeling.evaluate(labels, matured["score"].to_numpy(), threshold)["pr_auc"]
    flagged = matured.filter(pl.col("score") >= threshold) if matured.height else matured
    out["flagged_matured"] = flagged.height
    out["flagged_fraud"] = int(flagged["label"].sum()) if flagged.height else 0
    return out


def two_proportion_pvalue(success_a: int, n_a: int, success_b: int, n_b: int) -> float | None:
    """Two-sided p-value of H0: p_a == p_b (pooled z-test); None when it is undefined."""
    if n_a == 0 or n_b == 0:
        return None
    pooled = (success_a + success_b) / (n_a + n_b)
    if pooled in (0.0, 1.0):
        return None
    z = (success_a / n_a - success_b / n_b) / math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    return float(2 * stats.norm.sf(abs(z)))


def analyze(
    decisions: pl.DataFrame,
    strategy: str,
    ramp: tuple[int, ...] = (),
    step: int = 0,
    guardrails: Guardrails | None = None,
) -> dict[str, object]:
    """Evidence per variant, the tests and the decision (with its reason) for one experiment."""
    g = guardrails or Guardrails()
    champ = decisions.filter(pl.col("variant") == "champion")
    chall = decisions.filter(pl.col("variant") == "challenger")
    evidence = {
        "champion": variant_stats(champ, g.threshold),
        "challenger": variant_stats(chall, g.threshold),
    }
    tests: dict[str, object] = {"mann_whitney_p": None, "precision_p": None}
    if champ.height and chall.height:
        tests["mann_whitney_p"] = float(
            stats.mannwhitneyu(
                chall["score"].to_numpy(), champ["score"].to_numpy(), alternative="two-sided"
            ).pvalue
        )
    a, b = evidence["challenger"], evidence["champion"]
    tests["precision_p"] = two_proportion_pvalue(
        a["flagged_fraud"], a["flagged_matured"], b["flagged_fraud"], b["flagged_matured"]
    )

    def decide(decision: str, reason: str) -> dict[str, object]:
        return {
            "decision": decision,
            "reason": reason,
            "evidence": evidence,
            "tests": tests,
            "strategy": strategy,
        }

    if strategy not in ("ab", "canary"):
        return decide("none", f"strategy {strategy!r} has no challenger answering: nothing to decide")
    if a["requests"]:
        fallback_rate = a["fallbacks"] / a["requests"]
        if fallback_rate > g.max_fallback_rate:
            return decide("rollback", f"challenger fallback rate {fallback_rate:.3f} > {g.max_fallback_rate}")
    if a["requests"] and b["requests"]:
        limit = g.latency_factor * b["latency_p99_ms"] + g.latency_slack_ms
        if a["latency_p99_ms"] > limit:
            return decide(
                "rollback",
                f"challenger latency p99 {a['latency_p99_ms']:.2f} ms > {g.latency_factor} x champion's "
                f"{b['latency_p99_ms']:.2f} ms + {g.latency_slack_ms} ms",
            )
    if a["pr_auc"] is not None and b["pr_auc"] is not None and a["pr_auc"] < b["pr_auc"] - g.max_pr_auc_drop:
        return decide(
            "rollback",
            f"challenger PR-AUC {a['pr_auc']:.3f} < champion's {b['pr_auc']:.3f} - {g.max_pr_auc_drop}",
        )
    if min(a["requests"], b["requests"]) < g.min_requests and not (
        strategy == "canary" and ramp[step] == 100
    ):
        return decide(
            "hold",
            f"not enough requests yet: challenger {a['requests']}, champion {b['requests']} (need {g.min_requests})",
        )
    if strategy == "canary":
        if ramp[step] >= 100:
            if a["requests"] < g.min_requests:
                return decide(
                    "hold", f"last step: {a['requests']} challenger requests, need {g.min_requests}"
                )
            return decide(
                "promote", f"the canary passed every step up to {ramp[step]} % with guardrails intact"
            )
        return decide("advance", f"step {ramp[step]} % passed the guardrails; next {ramp[step + 1]} %")
    p = tests["precision_p"]
    if (
        p is not None
        and p < g.alpha
        and a["flagged_fraud"] / a["flagged_matured"] > b["flagged_fraud"] / b["flagged_matured"]
    ):
        return decide("promote", f"challenger precision higher, p = {p:.3g} < {g.alpha}")
    return decide(
        "hold", f"no significant difference in outcomes yet (p = {p if p is not None else 'undefined'})"
    )
