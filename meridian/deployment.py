"""Deployment strategies: which model answers a region's requests.

A region's deployment config (written by the `deployment_config` asset, read by the
scoring service) names one strategy:

    champion   every request is scored and answered by the `champion` alias
    ab         a share `challenger_weight` of customers is answered by `challenger`
    canary     like ab, with the share taken from a ramp (5 → 25 → 50 → 100 %) at `canary_step`
    shadow     every request is answered by `champion`; `challenger` is also scored and
               logged, never returned

Assignment is sticky and deterministic: a customer's bucket is a 64-bit keyed hash of
(experiment id, customer id) mapped to [0, 1), and the customer gets the challenger when
the bucket is below the challenger's share. The same customer always sees the same
variant within an experiment; a canary that ramps up keeps every customer it already
had (the buckets do not move, only the threshold); a new experiment id reshuffles.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from meridian.lake import write_bytes_atomic

Strategy = Literal["champion", "ab", "canary", "shadow"]
CHAMPION = "champion"
CHALLENGER = "challenger"
DEFAULT_RAMP = (5, 25, 50, 100)


class DeploymentConfig(BaseModel):
    region: str
    strategy: Strategy = "champion"
    experiment_id: str = Field(min_length=1, default="none")
    challenger_weight: float = Field(default=0.0, ge=0.0, le=1.0, description="ab only")
    canary_ramp: tuple[int, ...] = DEFAULT_RAMP
    canary_step: int = Field(default=0, ge=0)
    champion_version: int | None = None  # the versions the aliases held when written (display)
    challenger_version: int | None = None
    written_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    # The experiment that ended last, and why (a promotion, a rollback, the analysis): shown
    # on /readyz and platform_health, so a strategy never silently stops scoring.
    ended_experiment: str | None = None
    ended_strategy: Strategy | None = None
    ended_reason: str | None = None

    @model_validator(mode="after")
    def _check(self) -> DeploymentConfig:
        ramp = self.canary_ramp
        if not ramp or any(not 0 < p <= 100 for p in ramp) or list(ramp) != sorted(set(ramp)):
            raise ValueError(f"canary_ramp must be strictly increasing percentages in (0, 100]; got {ramp}")
        if self.canary_step >= len(ramp):
            raise ValueError(f"canary_step {self.canary_step} is past the ramp {list(ramp)}")
        if self.strategy == "ab" and not 0 < self.challenger_weight < 1:
            raise ValueError(f"an ab test needs 0 < challenger_weight < 1; got {self.challenger_weight}")
        return self

    @property
    def challenger_share(self) -> float:
        """The share of customers answered by the challenger."""
        if self.strategy == "ab":
            return self.challenger_weight
        if self.strategy == "canary":
            return self.canary_ramp[self.canary_step] / 100
        return 0.0

    @property
    def scores_challenger(self) -> bool:
        return self.strategy != "champion"

    def variant(self, customer_id: str) -> str:
        """The variant that answers this customer (shadow and champion: always the champion)."""
        share = self.challenger_share
        if share <= 0.0:
            return CHAMPION
        return CHALLENGER if bucket(self.experiment_id, customer_id) < share else CHAMPION


def bucket(experiment_id: str, customer_id: str) -> float:
    """A uniform, deterministic number in [0, 1) for (experiment, customer)."""
    digest = hashlib.blake2b(
        customer_id.encode(), key=experiment_id.encode()[:64], digest_size=8, person=b"meridian-ab"
    ).digest()
    return int.from_bytes(digest, "big") / 2**64


def end_experiment(config: DeploymentConfig, reason: str) -> DeploymentConfig | None:
    """The champion-only config that ends `config`'s running experiment, saying why; None when
    none runs. A promotion or a champion rollback changes the models an A/B test, canary or
    shadow compares: the experiment ends explicitly instead of running on without its challenger."""
    if config.strategy == "champion":
        return None
    return DeploymentConfig(
        region=config.region,
        strategy="champion",
        experiment_id=f"{config.experiment_id}-ended",
        canary_ramp=config.canary_ramp,
        ended_experiment=config.experiment_id,
        ended_strategy=config.strategy,
        ended_reason=reason,
    )


def config_path(region_root: Path) -> Path:
    return region_root / "deployment" / "config.json"


def save(config: DeploymentConfig, region_root: Path) -> Path:
    """Write the config file under `region_root`. Only for the synchronous write: a region's
    live config changes through `meridian.dr.publish_deployment`, which mirrors it to DR first."""
    path = config_path(region_root)
    write_bytes_atomic(config.model_dump_json(indent=2).encode(), path)
    return path


def load(region_root: Path, region: str) -> DeploymentConfig:
    """The region's config; champion-only when none was ever written."""
    path = config_path(region_root)
    if not path.exists():
        return DeploymentConfig(region=region)
    config = DeploymentConfig.model_validate(json.loads(path.read_text()))
    if config.region != region:
        raise ValueError(f"{path} is the deployment config of {config.region}, not {region}")
    return config
