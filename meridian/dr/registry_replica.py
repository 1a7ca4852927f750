"""The registry replica at the DR site, read like MLflow's registry while a region is failed over."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

from meridian.dr.state import FailoverError


class ReplicaRegistryClient:
    """The subset of MlflowClient the serving layer uses, answered from a registry replica."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _doc(self) -> dict:
        return orjson.loads((self.root / "models" / "registry.json").read_bytes())

    def get_model_version_by_alias(self, name: str, alias: str):
        from mlflow.exceptions import MlflowException

        doc = self._doc()
        if doc["name"] != name or alias not in doc["aliases"]:
            raise MlflowException(f"alias {alias!r} of {name} not found in the replica")
        return _Version(str(doc["aliases"][alias]))

    def model_dir(self, version: int) -> Path:
        return self.root / "models" / f"v{version}"


@dataclass(frozen=True)
class _Version:
    version: str


def load_replica_booster(root: Path, version: int):
    import lightgbm

    path = ReplicaRegistryClient(root).model_dir(version)
    found = sorted(path.rglob("*.lgb"))
    if not found:
        raise FailoverError(f"{path}: the replica has no LightGBM model file for v{version}")
    return lightgbm.Booster(model_file=str(found[0]))
