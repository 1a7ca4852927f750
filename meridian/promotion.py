"""The promotion rule: when a challenger model replaces the champion."""

from __future__ import annotations

from typing import Protocol


class PromotionRule(Protocol):
    min_pr_auc_gain: float  # the challenger must beat the champion's test PR-AUC by this much
    calibration_tolerance: float  # ... and its ECE may exceed the champion's by at most this


def decide(
    challenger: dict[str, float], champion: dict[str, float] | None, config: PromotionRule
) -> tuple[bool, str]:
    """The promotion rule: better PR-AUC by the margin and no worse calibration (ECE) beyond the tolerance."""
    if champion is None:
        return True, "no champion yet: the first model is promoted"
    gain = challenger["pr_auc"] - champion["pr_auc"]
    ece_delta = challenger["ece"] - champion["ece"]
    if gain < config.min_pr_auc_gain:
        return False, f"PR-AUC gain {gain:+.4f} is below the required margin {config.min_pr_auc_gain:+.4f}"
    if ece_delta > config.calibration_tolerance:
        return False, (
            f"PR-AUC gain {gain:+.4f} passes, but calibration is worse: ECE {ece_delta:+.4f} beyond the "
            f"tolerance {config.calibration_tolerance:.4f}"
        )
    return (
        True,
        f"PR-AUC gain {gain:+.4f} ≥ {config.min_pr_auc_gain:+.4f} and ECE change {ece_delta:+.4f} within tolerance",
    )
