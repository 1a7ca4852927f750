"""The models a region answers with: loaded by registry alias, swapped in by one reference."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from meridian import registry


@dataclass(frozen=True)
class LoadedModel:
    version: int
    booster: object
    columns: list[str]

    def predict(self, values: dict[str, object]) -> float:
        row = np.array([[_number(values[c]) for c in self.columns]], dtype=np.float64)
        return float(self.booster.predict(row, num_threads=1)[0])


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
