"""The models a region answers with: loaded by registry alias, swapped in by one reference."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

from meridian import registry

# LightGBM's C API constants (c_api.h).
_PREDICT_NORMAL = 0  # the probability, the objective's transform applied, as Booster.predict
_DTYPE_FLOAT64 = 1


class SingleRowPredictor:
    """One row at a time through LightGBM's single-row fast API, as `Booster.predict` scores it.

    `Booster.predict` builds a predictor, copies its parameters and converts a numpy matrix
    on every call: ~70 µs of a 100 µs request, for one row. The fast API sets up once (the
    iteration range, the parameters, the number of columns) and then takes a bare array of
    doubles: the same trees, the same transform, the same result (tests/test_serving.py
    compares it with `Booster.predict` on every row of a test set, exactly). LightGBM guards
    the configuration with its own mutex, so scoring threads may share one.
    """

    def __init__(self, booster):
        from lightgbm.basic import _LIB, _c_str, _safe_call

        self._lib = _LIB
        # The same library through PyDLL: its calls keep the GIL. A row's predict takes a few
        # microseconds; releasing the GIL for it let the service's background threads (push,
        # stream log) take it, and the request then waited to get it back.
        self._held = ctypes.PyDLL(_LIB._name)
        self._safe_call = _safe_call
        self.columns = booster.num_feature()
        self._row_type = ctypes.c_double * self.columns
        if booster.num_model_per_iteration() != 1:
            raise ValueError(
                "single-row scoring takes a one-output model (binary, regression); this one has "
                f"{booster.num_model_per_iteration()} outputs"
            )
        self._handle = ctypes.c_void_p()
        self._booster = booster  # the configuration points into the booster: keep it alive
        # Booster.predict's own default: the best iteration when training recorded one, else all.
        iterations = booster.best_iteration if booster.best_iteration > 0 else -1
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                ctypes.c_int(_PREDICT_NORMAL),
                ctypes.c_int(0),
                ctypes.c_int(iterations),
                ctypes.c_int(_DTYPE_FLOAT64),
                ctypes.c_int32(self.columns),
                _c_str("num_threads=1"),
                ctypes.byref(self._handle),
            )
        )

    def predict(self, row: list[float]) -> float:
        out_len = ctypes.c_int64(0)
        out = ctypes.c_double(0.0)
        self._safe_call(
            self._held.LGBM_BoosterPredictForMatSingleRowFast(
                self._handle, self._row_type(*row), ctypes.byref(out_len), ctypes.byref(out)
            )
        )
        return out.value

    def __del__(self):
        handle = getattr(self, "_handle", None)
        if handle is not None and handle.value:
            self._lib.LGBM_FastConfigFree(handle)


@dataclass(frozen=True)
class LoadedModel:
    version: int
    booster: object
    columns: list[str]
    _fast: SingleRowPredictor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.columns) != self.booster.num_feature():
            raise ValueError(
                f"model version {self.version}: {len(self.columns)} columns named, the booster takes "
                f"{self.booster.num_feature()}"
            )
        object.__setattr__(self, "_fast", SingleRowPredictor(self.booster))

    def predict(self, values: dict[str, object]) -> float:
        """The probability for one row of named values (None: missing, as NaN offline)."""
        return self._fast.predict([_number(values[c]) for c in self.columns])


class ModelHolder:
    """The region's models by alias; each is swapped atomically when its alias moves.

    `models` is replaced as a whole (one reference assignment), so a request reads one
    consistent {alias: model} snapshot even while a swap happens. A version already loaded
    under either alias is reused, not loaded again.
    """

    ALIASES = (registry.CHAMPION, registry.CHALLENGER)

    def __init__(self, region: str, client, load):
        self.region = region
        self._client = client
        self._load = load  # (region, version) -> booster
        self.models: dict[str, LoadedModel] = {}
        self.last_error: str | None = None

    @property
    def current(self) -> LoadedModel | None:
        return self.models.get(registry.CHAMPION)

    def refresh(self) -> bool:
        """Load every alias whose version moved; True when anything was swapped in."""
        name = registry.model_name(self.region)
        held = self.models
        by_version = {m.version: m for m in held.values()}
        fresh: dict[str, LoadedModel] = {}
        for alias in self.ALIASES:
            version = registry.alias_version(self._client, name, alias)
            if version is None:
                continue
            model = by_version.get(version)
            if model is None:
                booster = self._load(self.region, version)
                model = LoadedModel(version, booster, booster.feature_name())
                by_version[version] = model
            fresh[alias] = model
        if {a: m.version for a, m in fresh.items()} == {a: m.version for a, m in held.items()}:
            return False
        self.models = fresh
        return True


def _number(value: object) -> float:
    if value is None:
        return float("nan")
    return float(value)
