"""Typed loader for platform/regions.yaml, the one source of truth for regions and zones."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_TOPOLOGY_PATH = Path(__file__).resolve().parent.parent / "platform" / "regions.yaml"


class TopologyError(ValueError):
    """The topology file is unusable; the message names the file and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CostRates(_Strict):
    storage_gb_month: float = Field(ge=0, description="USD per GB-month of lake storage")
    transfer_gb: float = Field(ge=0, description="USD per GB moved across regions")
    compute_vcpu_hour: float = Field(ge=0, description="USD per vCPU-hour")


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

    @field_validator("currencies", "countries")
    @classmethod
    def _upper_codes(cls, codes: tuple[str, ...]) -> tuple[str, ...]:
        bad = [c for c in codes if not (c.isupper() and c.isalpha())]
        if bad:
            raise ValueError(f"codes must be upper-case letters, got {bad}")
        return codes


class Topology(_Strict):
    zones: tuple[Zone, ...] = Field(min_length=1)
    regions: tuple[Region, ...] = Field(min_length=1)

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
    return problems


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
    """Load and validate the topology file (default: platform/regions.yaml)."""
    path = Path(path) if path else DEFAULT_TOPOLOGY_PATH
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise TopologyError(f"{path}: topology file not found") from None
    except yaml.YAMLError as exc:
        raise TopologyError(f"{path}: not valid YAML: {exc}") from None
    return parse_topology(raw, source=str(path))
