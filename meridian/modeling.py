"""The fraud model: its inputs, tuning, training, evaluation and plots.

Inputs are the feature views' point-in-time values plus a few attributes of the
transaction itself (amount, channel, whether the card is used abroad, local hour). Both
are built by the same SQL for training and for scoring, so the two cannot drift apart.

Tuning is an Optuna TPE search over LightGBM parameters with median pruning driven by
the validation metric after every boosting round; a trial budget and a time budget bound
it. Training refits the best parameters with early stopping on the validation split and
reports the test split, which neither tuning nor early stopping has seen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from meridian.feature_store import FeatureView
from meridian.topology import Region

if TYPE_CHECKING:  # imported where used: loading the Dagster definitions (every run worker,
    # every `dagster` command) does not pay LightGBM, scikit-learn and Optuna (1.7 s here)
    import lightgbm as lgb
    import optuna

# Attributes of the transaction itself, known at scoring time ("request features").
TRANSACTION_FEATURES = ("amount_usd", "is_ecom", "is_contactless", "is_foreign", "local_hour")
LABEL = "label"
OBJECTIVE_METRIC = "average_precision"  # PR-AUC: the metric that matters at a ~1 % fraud rate


def transaction_entities_sql(region: Region, source: str, where: str, extra: str = "") -> str:
    """Transactions of `source` (a relation with stg_transactions' columns) with their request features.

    `extra` adds columns of `source` (for training, the label and when it matured).
    """
    countries = ", ".join(f"'{c}'" for c in region.countries)
    return (
        "select t.transaction_id, t.customer_id, t.merchant_id, t.event_time, t.event_day, "
        "t.amount_usd::double as amount_usd, "
        "(t.channel = 'ecom')::int as is_ecom, (t.channel = 'contactless')::int as is_contactless, "
        f"(t.country not in ({countries}))::int as is_foreign, "
        # event_time is naive UTC; reading it as UTC explicitly keeps the hour independent of
        # the connection's TimeZone setting (DuckDB defaults it to the host's zone).
        f"hour(timezone('{region.timezone}', timezone('UTC', t.event_time)))::int as local_hour"
        f"{', ' + extra if extra else ''} "
        f"from {source} as t where {where}"
    )


def feature_columns(views: tuple[FeatureView, ...]) -> list[str]:
    """Model inputs, in a fixed order: request features, then every view's features."""
    return [*TRANSACTION_FEATURES, *(view.column(f.name) for view in views for f in view.features)]


def design_matrix(frame: pl.DataFrame, columns: list[str]) -> np.ndarray:
    """A C-ordered float64 matrix, the layout LightGBM predicts from without copying.

    Booleans become 0/1; a missing value (a feature whose documented default is null,
    such as the time since a customer's previous transaction) stays NaN, which LightGBM
    routes as missing.
    """
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"the model needs columns that the dataset lacks: {missing}")
    return frame.select(pl.col(c).cast(pl.Float64) for c in columns).to_numpy(order="c")


# ---------------------------------------------------------------- evaluation


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate − predicted probability| over equal-count score bins, weighted by size.

    Equal-count bins, because at a ~1 % positive rate almost every score falls in the
    lowest equal-width bin and such an ECE says nothing.
    """
    if len(y) == 0:
        return float("nan")
    order = np.argsort(p, kind="stable")
    total = 0.0
    for chunk in np.array_split(order, min(bins, len(order))):
        total += len(chunk) * abs(float(y[chunk].mean()) - float(p[chunk].mean()))
    return total / len(y)


def evaluate(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Discrimination and calibration of scores `p` against labels `y`."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = y.astype(np.int8)
    positives = int(y.sum())
    if positives == 0 or positives == len(y):
        raise ValueError(
            f"cannot evaluate on {len(y)} rows with {positives} positives: both classes are needed"
        )
    predicted = p >= threshold
    true_pos = int((predicted & (y == 1)).sum())
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(np.mean((p - y) ** 2)),
        "ece": expected_calibration_error(y, p),
        "log_loss": float(
            -np.mean(y * np.log(np.clip(p, 1e-12, 1)) + (1 - y) * np.log(np.clip(1 - p, 1e-12, 1)))
        ),
        "precision_at_threshold": true_pos / max(int(predicted.sum()), 1),
        "recall_at_threshold": true_pos / positives,
        "rows": float(len(y)),
        "positives": float(positives),
    }


# ---------------------------------------------------------------- tuning and training

BASE_PARAMS: dict[str, object] = {
    "objective": "binary",
    "metric": OBJECTIVE_METRIC,
    "verbosity": -1,
    "feature_pre_filter": False,
    "seed": 7,
    # Same data, same model: `deterministic` alone is not enough, because LightGBM picks
    # row- or column-wise histograms by timing them, and the pick changes under load.
    "deterministic": True,
    "force_col_wise": True,
}


# LightGBM's threads follow the size of the data. Its threads meet after every histogram;
# on a region's training set that costs more than it saves. Measured on this 2-core machine
# (idle), 100 rounds of the training set's 22 features: 40k rows 0.47 s on one thread, 1.32 s
# on two; 200k rows 1.98 s / 2.26 s; 1M rows 8.79 s / 6.06 s. Tuning (15 trials) of the
# default run's 40k rows: 13.3 s on two threads, 2.7 s on one, the same trials and best score.
PARALLEL_FROM_ROWS = 300_000


def lgb_threads(rows: int) -> int:
    """Threads for LightGBM training or prediction over `rows` rows."""
    return 1 if rows < PARALLEL_FROM_ROWS else 2


@dataclass
class Splits:
    """Design matrices and labels of the three time splits."""

    columns: list[str]
    x: dict[str, np.ndarray] = field(default_factory=dict)
    y: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, columns: list[str]) -> Splits:
        splits = cls(columns)
        for name in ("train", "validation", "test"):
            part = frame.filter(pl.col("split") == name)
            splits.x[name] = design_matrix(part, columns)
            splits.y[name] = part[LABEL].to_numpy().astype(np.int8)
            if splits.y[name].sum() == 0:
                raise ValueError(
                    f"the {name} split has {len(part)} rows and no fraud: it cannot train or evaluate a "
                    "model; ingest more days"
                )
        return splits

    def dataset(self, name: str, reference: lgb.Dataset | None = None) -> lgb.Dataset:
        import lightgbm as lgb

        return lgb.Dataset(
            self.x[name], self.y[name], feature_name=self.columns, reference=reference, free_raw_data=False
        )


# Parameters the search pins rather than samples (bagging every iteration).
FIXED_SEARCH_PARAMS: dict[str, object] = {"bagging_freq": 1}


def _search_space(trial: optuna.Trial) -> dict[str, object]:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 8, 128, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 10, 200, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
        **FIXED_SEARCH_PARAMS,
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
        "scale_pos_weight": trial.suggest_float("scale_pos_weight", 1.0, 10.0, log=True),
    }


def _pruning_callback(trial: optuna.Trial, metric: str):
    """Report the validation metric to Optuna after each round; stop the trial if it is pruned.

    optuna-integration's LightGBMPruningCallback does the same; this is its ten lines
    without another dependency.
    """
    import optuna

    def callback(env: lgb.callback.CallbackEnv) -> None:
        for data_name, name, value, _ in env.evaluation_result_list:
            if data_name == "validation" and name == metric:
                trial.report(value, step=env.iteration)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at round {env.iteration} ({metric}={value:.4f})")

    callback.order = 40  # after early stopping's bookkeeping
    return callback


@dataclass(frozen=True)
class TuningResult:
    best_params: dict[str, object]
    best_value: float
    best_iteration: int
    trials: list[dict[str, object]]
    seconds: float
    stopped_by: str  # "trials" or "timeout"


def tune(
    splits: Splits, n_trials: int, timeout_seconds: float, max_rounds: int = 400, seed: int = 7
) -> TuningResult:
    """Optuna TPE search maximising validation PR-AUC, with median pruning per boosting round."""
    import lightgbm as lgb
    import optuna

    if n_trials < 1:
        raise ValueError(f"n_trials must be at least 1, got {n_trials}")
    train = splits.dataset("train")
    valid = splits.dataset("validation", reference=train)
    threads = lgb_threads(len(splits.y["train"]))
    best_rounds: dict[int, int] = {}

    def objective(trial: optuna.Trial) -> float:
        params = {**BASE_PARAMS, "num_threads": threads, **_search_space(trial)}
        booster = lgb.train(
            params,
            train,
            num_boost_round=max_rounds,
            valid_sets=[valid],
            valid_names=["validation"],
            callbacks=[lgb.early_stopping(30, verbose=False), _pruning_callback(trial, OBJECTIVE_METRIC)],
        )
        best_rounds[trial.number] = booster.best_iteration or max_rounds
        return float(booster.best_score["validation"][OBJECTIVE_METRIC])

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(5, n_trials)),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=20),
    )
    started = time.perf_counter()
    study.optimize(objective, n_trials=n_trials, timeout=timeout_seconds)
    seconds = time.perf_counter() - started
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise RuntimeError(
            f"no tuning trial completed within {timeout_seconds:g} s ({len(study.trials)} started): "
            "raise the time budget"
        )
    trials = [
        {
            "trial": t.number,
            "state": t.state.name.lower(),
            "value": t.value,
            "rounds": best_rounds.get(t.number, len(t.intermediate_values)),
            "seconds": round((t.datetime_complete - t.datetime_start).total_seconds(), 3)
            if t.datetime_complete
            else None,
            **t.params,
        }
        for t in study.trials
    ]
    return TuningResult(
        best_params={**FIXED_SEARCH_PARAMS, **study.best_params},
        best_value=float(study.best_value),
        best_iteration=best_rounds[study.best_trial.number],
        trials=trials,
        seconds=seconds,
        stopped_by="trials" if len(study.trials) >= n_trials else "timeout",
    )


@dataclass
class TrainedModel:
    booster: lgb.Booster
    params: dict[str, object]
    history: dict[str, list[float]]  # per-iteration metric on train and validation
    metrics: dict[str, dict[str, float]]  # split -> evaluate()
    test_scores: np.ndarray


def train(splits: Splits, params: dict[str, object], max_rounds: int = 1000) -> TrainedModel:
    """Fit with early stopping on validation; evaluate on every split."""
    import lightgbm as lgb

    train_set = splits.dataset("train")
    valid_set = splits.dataset("validation", reference=train_set)
    history: dict[str, dict[str, list[float]]] = {}
    full_params = {
        **BASE_PARAMS,
        "num_threads": lgb_threads(len(splits.y["train"])),
        **params,
        "metric": [OBJECTIVE_METRIC, "auc", "binary_logloss"],
    }
    booster = lgb.train(
        full_params,
        train_set,
        num_boost_round=max_rounds,
        valid_sets=[train_set, valid_set],
        valid_names=["train", "validation"],
        callbacks=[
            lgb.early_stopping(50, first_metric_only=True, verbose=False),
            lgb.record_evaluation(history),
        ],
    )
    rounds = booster.best_iteration or booster.current_iteration()
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=rounds))
    scores = {
        name: booster.predict(splits.x[name], num_threads=lgb_threads(len(splits.x[name])))
        for name in splits.x
    }
    metrics = {name: evaluate(splits.y[name], scores[name]) for name in splits.x}
    flat_history = {
        f"{split}_{metric}": values for split, by in history.items() for metric, values in by.items()
    }
    return TrainedModel(
        booster=booster,
        params={**full_params, "num_boost_round": rounds},
        history=flat_history,
        metrics=metrics,
        test_scores=scores["test"],
    )


def feature_importance(booster: lgb.Booster) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "feature": booster.feature_name(),
            "gain": booster.feature_importance("gain"),
            "splits": booster.feature_importance("split").astype(np.int64),
        }
    ).sort("gain", descending=True)


# What a logged model needs to be loaded again. Given explicitly, MLflow does not infer it by
# importing the model in a subprocess: 3.2 s per logged model measured here, 0.02 s given.
MODEL_PACKAGES = ("mlflow", "lightgbm", "numpy", "pandas", "scikit-learn", "scipy")


def model_pip_requirements() -> list[str]:
    """MODEL_PACKAGES pinned to the versions installed here (the ones the model was trained with)."""
    from importlib.metadata import version

    return [f"{package}=={version(package)}" for package in MODEL_PACKAGES]
