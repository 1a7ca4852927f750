"""Typed loader for platform/regions.yaml, the one source of truth for regions and zones."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

DEFAULT_TOPOLOGY_PATH = Path(__file__).resolve().parent.parent / "platform" / "regions.yaml"


class TopologyError(ValueError):
    """The topology file is unusable; the message names the file and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CostRates(_Strict):
    storage_gb_month: float = Field(ge=0, description="USD per GB-month of lake storage")
    transfer_gb: float = Field(ge=0, description="USD per GB moved across regions")
    compute_vcpu_hour: float = Field(ge=0, description="USD per vCPU-hour")


# A Kubernetes resource quantity: "500m", "2", "4Gi", "1.5".
_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"


class Compute(_Strict):
    """Where a region's steps run and how large they are (the production profile's step pods).

    `node_selector` pins every step pod of the region's runs to the region's own node pool:
    personal data is processed only on machines in the region's zone.
    """

    # Node labels as (key, value) pairs, written as a mapping in the file: kept hashable,
    # since a Region is (it keys caches).
    node_selector: tuple[tuple[str, str], ...] = Field(min_length=1)
    cpu: str = Field(default="1", pattern=_QUANTITY)
    memory: str = Field(default="4Gi", pattern=_QUANTITY)
    memory_limit: str | None = Field(default=None, pattern=_QUANTITY)

    @field_validator("node_selector", mode="before")
    @classmethod
    def _pairs(cls, labels: object) -> object:
        if isinstance(labels, dict):
            return tuple(sorted((str(k), str(v)) for k, v in labels.items()))
        return labels

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.node_selector)


class Zone(_Strict):
    name: str
    jurisdiction: str


class Region(_Strict):
    name: str = Field(pattern=r"^[a-z]+-[a-z]+$")
    zone: str
    role: Literal["active", "standby"]
    storage_root: str
    timezone: str
    currencies: tuple[str, ...] = Field(min_length=1)
    countries: tuple[str, ...] = Field(min_length=1)
    cost: CostRates
    dr_region: str | None = None
    read_replicas: tuple[str, ...] = ()
    compute: Compute | None = None

    @property
    def customer_prefix(self) -> str:
        """Every customer id of the region starts with this: the region's name without dashes."""
        return self.name.replace("-", "") + "-"

    @field_validator("currencies", "countries")
    @classmethod
    def _known_codes(cls, codes: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        """Upper-case codes the platform knows. A currency needs a USD rate: without one its
        transactions passed validation with no amount_usd, and every amount feature was null.
        A home country is an ISO 3166-1 alpha-2 code."""
        from meridian.countries import ISO_COUNTRIES
        from meridian.reference_data import USD_RATES

        bad = [c for c in codes if not (c.isupper() and c.isalpha())]
        if bad:
            raise ValueError(f"codes must be upper-case letters, got {bad}")
        if info.field_name == "currencies":
            known, problem = USD_RATES, f"no USD rate for {{}} (known: {', '.join(sorted(USD_RATES))})"
        else:
            known, problem = ISO_COUNTRIES, "not ISO 3166-1 alpha-2 codes: {}"
        unknown = [c for c in codes if c not in known]
        if unknown:
            raise ValueError(problem.format(unknown))
        return codes

    @field_validator("storage_root")
    @classmethod
    def _usable_storage_root(cls, root: str) -> str:
        from meridian.settings import unusable_local_path

        problem = None if "://" in root else unusable_local_path(root)
        if problem:
            raise ValueError(f"a local storage_root {problem}")
        return root

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, name: str) -> str:
        """The region's local hour (a model input) is computed in this zone: a name the
        time-zone database does not know failed the pipeline mid-run instead of here."""
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(name)
        except (KeyError, ValueError, OSError) as error:  # not found is a KeyError; '../x' a ValueError
            raise ValueError(f"unknown IANA time zone {name!r} (e.g. Europe/Dublin)") from error
        return name


class ReplicationClass(_Strict):
    mode: Literal["sync", "async"]
    max_lag_minutes: float = Field(ge=0, description="RPO target; 0 for sync classes")
    paths: tuple[str, ...] = Field(min_length=1, description="under the region root")

    @field_validator("paths")
    @classmethod
    def _relative(cls, paths: tuple[str, ...]) -> tuple[str, ...]:
        bad = [p for p in paths if p.startswith("/") or ".." in p.split("/")]
        if bad:
            raise ValueError(f"replicated paths must be relative to the region root, got {bad}")
        return paths


REPLICATION_CLASSES = (
    "raw_lake",
    "features",
    "predictions",
    "online_store",
    "model_registry",
    "deployment_config",
)


class Replication(_Strict):
    classes: dict[str, ReplicationClass]

    @field_validator("classes")
    @classmethod
    def _known(cls, classes: dict[str, ReplicationClass]) -> dict[str, ReplicationClass]:
        missing = [c for c in REPLICATION_CLASSES if c not in classes]
        unknown = [c for c in classes if c not in REPLICATION_CLASSES]
        if missing or unknown:
            raise ValueError(
                f"replication classes must be {list(REPLICATION_CLASSES)}; missing {missing}, unknown {unknown}"
            )
        for name in ("model_registry", "deployment_config"):
            if classes[name].mode != "sync":
                raise ValueError(
                    f"{name} must replicate synchronously: a failed-over region must never serve "
                    "a model or config it does not have"
                )
        return classes


class Failover(_Strict):
    mode: Literal["automated", "manual"] = "automated"
    probe_failures: int = Field(default=2, ge=1)
    heartbeat_timeout_seconds: float = Field(default=120, gt=0)
    failed_runs: int = Field(default=3, ge=1)
    failed_runs_window_minutes: float = Field(default=30, gt=0)


DEFAULT_REPLICATION = {
    "raw_lake": {
        "mode": "async",
        "max_lag_minutes": 90,
        "paths": ["lake/raw_transactions", "lake/raw_labels"],
    },
    "features": {"mode": "async", "max_lag_minutes": 180, "paths": ["warehouse.duckdb"]},
    "predictions": {"mode": "async", "max_lag_minutes": 180, "paths": ["lake/predictions"]},
    "online_store": {"mode": "async", "max_lag_minutes": 30, "paths": ["online"]},
    "model_registry": {"mode": "sync", "max_lag_minutes": 0, "paths": ["models"]},
    "deployment_config": {"mode": "sync", "max_lag_minutes": 0, "paths": ["deployment"]},
}


class Topology(_Strict):
    zones: tuple[Zone, ...] = Field(min_length=1)
    regions: tuple[Region, ...] = Field(min_length=1)
    replication: Replication = Replication.model_validate({"classes": DEFAULT_REPLICATION})
    failover: Failover = Failover()
    # Where the global services (governance, catalog, cost, health) run, and at what rates.
    # Without it, their compute is reported unpriced, never priced at a made-up rate.
    global_cost: CostRates | None = None
    # Where the global services' steps run (no personal data: aggregates and metadata only).
    global_compute: Compute | None = None
    # Where the global services publish (meridian.global_store): MERIDIAN_HOME when unset,
    # else the platform's own bucket, `s3://bucket/prefix`, outside every zone.
    global_storage_root: str | None = None

    @field_validator("global_storage_root")
    @classmethod
    def _object_store_url(cls, value: str | None) -> str | None:
        if value is not None and not (value.startswith("s3://") and len(value) > len("s3://")):
            raise ValueError(f"{value!r}: give an object-store URL, s3://bucket/prefix (or leave it unset)")
        return value

    def zone_of(self, region: str) -> str:
        return self.region(region).zone

    def dr_region(self, region: str) -> Region:
        name = self.region(region).dr_region
        if name is None:
            raise KeyError(f"region {region!r} has no dr_region in regions.yaml")
        return self.region(name)

    @property
    def active_regions(self) -> tuple[Region, ...]:
        return tuple(r for r in self.regions if r.role == "active")

    @property
    def active_region_names(self) -> list[str]:
        return [r.name for r in self.active_regions]

    def region(self, name: str) -> Region:
        for region in self.regions:
            if region.name == name:
                return region
        known = ", ".join(r.name for r in self.regions)
        raise KeyError(f"unknown region {name!r}; regions.yaml defines: {known}")


def _check_references(topology: Topology) -> list[str]:
    problems: list[str] = []
    zone_names = [z.name for z in topology.zones]
    region_names = [r.name for r in topology.regions]
    for dup in sorted({n for n in zone_names if zone_names.count(n) > 1}):
        problems.append(f"duplicate zone {dup!r}")
    for dup in sorted({n for n in region_names if region_names.count(n) > 1}):
        problems.append(f"duplicate region {dup!r}")
    by_name = {r.name: r for r in topology.regions}
    roots = [r.storage_root for r in topology.regions]
    for dup in sorted({s for s in roots if roots.count(s) > 1}):
        problems.append(f"storage_root {dup!r} is shared by several regions")
    for region in topology.regions:
        if region.zone not in zone_names:
            problems.append(
                f"region {region.name!r} names unknown zone {region.zone!r} (zones: {', '.join(zone_names)})"
            )
        if region.role == "active" and region.dr_region is None:
            problems.append(f"active region {region.name!r} has no dr_region")
        targets = ([region.dr_region] if region.dr_region else []) + list(region.read_replicas)
        for target in targets:
            other = by_name.get(target)
            if other is None:
                problems.append(f"region {region.name!r} replicates to unknown region {target!r}")
            elif other.name == region.name:
                problems.append(f"region {region.name!r} replicates to itself")
            elif other.zone != region.zone:
                problems.append(
                    f"DR pair {region.name!r} -> {target!r} crosses zones "
                    f"({region.zone} -> {other.zone}); personal data must stay in its zone"
                )
    if not topology.active_regions:
        problems.append("no active region")
    if topology.global_storage_root is not None:
        bucket = _bucket(topology.global_storage_root)
        for region in topology.regions:
            if "://" in region.storage_root and _bucket(region.storage_root) == bucket:
                problems.append(
                    f"global_storage_root {topology.global_storage_root!r} is in the bucket of region {region.name!r}: "
                    f"the global services publish outside every zone, in a bucket of their own"
                )
    return problems


def _bucket(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[0]


def parse_topology(raw: object, source: str = "<memory>") -> Topology:
    """Validate a parsed YAML document; raise TopologyError naming every problem found."""
    if not isinstance(raw, dict):
        raise TopologyError(f"{source}: expected a mapping with 'zones' and 'regions'")
    try:
        topology = Topology.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            what = "missing field" if err["type"] == "missing" else err["msg"]
            lines.append(f"{where}: {what}")
        raise TopologyError(f"{source}: invalid topology:\n  " + "\n  ".join(lines)) from None
    problems = _check_references(topology)
    if problems:
        raise TopologyError(f"{source}: invalid topology:\n  " + "\n  ".join(problems))
    return topology


def load_topology(path: str | Path | None = None) -> Topology:
    """Load and validate the topology file (default: platform/regions.yaml).

    Parsed once per version of the file: the result is cached on the file's path, size and
    modification time (a `Topology` is immutable), so callers may ask for it wherever they
    need it, and an edited file is read again.
    """
    path = Path(path) if path else DEFAULT_TOPOLOGY_PATH
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise TopologyError(f"{path}: topology file not found") from None
    version = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    return _load_topology(str(path), version)


@functools.lru_cache(maxsize=16)
def _load_topology(path: str, version: tuple) -> Topology:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise TopologyError(f"{path}: topology file not found") from None
    except yaml.YAMLError as exc:
        raise TopologyError(f"{path}: not valid YAML: {exc}") from None
    return parse_topology(raw, source=path)
