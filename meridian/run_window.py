"""How many days a run needs: feature warm-up, trainable days, label maturity.

A row is trainable once its feature windows are full (the longest warm-up after the
first day) and its label has matured (the chargeback window); the time split needs three
such days. `meridian run`, the tests and the benchmarks size their windows from here.
"""

from __future__ import annotations

from meridian.feature_store import warmup_of
from meridian.feature_views import feature_views

LABEL_MATURITY_DAYS = 10  # dbt var label_maturity_days
# Days of matured, fully warmed-up labels the default window trains, validates and tests on.
DEFAULT_TRAINING_DAYS = 12


def warmup_days() -> int:
    """The longest feature warm-up (meridian.feature_views): rows before it are never trained on."""
    return warmup_of(feature_views()).days


MIN_TRAINING_DAYS = warmup_days() + LABEL_MATURITY_DAYS + 3
# The default window: warm-up, then training + validation + test days, then their labels' maturity.
DEFAULT_DAYS = warmup_days() + DEFAULT_TRAINING_DAYS + LABEL_MATURITY_DAYS
