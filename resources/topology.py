"""The region topology as a Dagster resource (platform/regions.yaml by default)."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from meridian.topology import Topology, load_topology


class RegionTopologyResource(dg.ConfigurableResource):
    """Regions, zones, DR pairs and cost rates, validated on load."""

    path: str | None = Field(default=None, description="Topology file; default platform/regions.yaml")

    def load(self) -> Topology:
        return load_topology(self.path)
