"""Cost pricing: bytes stored, bytes replicated per region pair and compute seconds, at regions.yaml's rates."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from meridian.topology import Topology


def dir_bytes(path: Path) -> int:
    """Bytes of every file under `path` (files removed while walking are skipped)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                continue
    return total


def compute_rate(topo: Topology, region: str) -> float | None:
    """USD per vCPU-hour of a region's pool, or of the global services' (regions.yaml global_cost)."""
    if region in {r.name for r in topo.regions}:
        return topo.region(region).cost.compute_vcpu_hour
    return topo.global_cost.compute_vcpu_hour if topo.global_cost else None


@dataclass(frozen=True)
class CostReport:
    per_region: list[dict]  # one row per region, then the global services
    per_pair: list[dict]  # replication transfer per (source, target)
    per_asset: list[dict]  # compute per (region, step), most expensive first
    unpriced: list[str]  # what had no rate, said in words

    @property
    def total_usd(self) -> float:
        return round(sum(r["total_usd"] for r in self.per_region), 6)


def price(
    topo: Topology,
    stored: dict[str, int],
    global_stored: int,
    replicated: dict[tuple[str, str], int],
    compute: dict[tuple[str, str], float],
) -> CostReport:
    """Price what was stored (bytes per region, and the global services'), replicated (bytes per
    source and target) and computed (seconds per region or "global", and step)."""
    names = [r.name for r in topo.regions]
    per_region = []
    for region in topo.regions:
        rates = region.cost
        gb = stored[region.name] / 1e9
        out_bytes = sum(b for (src, _t), b in replicated.items() if src == region.name)
        seconds = sum(s for (r, _step), s in compute.items() if r == region.name)
        row = {
            "region": region.name,
            "role": region.role,
            "stored_gb": round(gb, 4),
            "storage_usd_month": round(gb * rates.storage_gb_month, 6),
            "replicated_out_gb": round(out_bytes / 1e9, 4),
            "transfer_usd": round(out_bytes / 1e9 * rates.transfer_gb, 6),
            "compute_s": round(seconds, 1),
            "compute_usd": round(seconds / 3600 * rates.compute_vcpu_hour, 6),
        }
        row["total_usd"] = round(row["storage_usd_month"] + row["transfer_usd"] + row["compute_usd"], 6)
        per_region.append(row)
    per_pair = [
        {
            "source": src,
            "target": tgt,
            "zone": topo.zone_of(src),
            "replicated_gb": round(b / 1e9, 4),
            "transfer_usd": round(b / 1e9 * topo.region(src).cost.transfer_gb, 6),
        }
        for (src, tgt), b in sorted(replicated.items())
    ]
    per_asset = sorted(
        (
            {
                "region": r,
                "step": step,
                "compute_s": round(s, 1),
                "compute_usd": round(s / 3600 * rate, 6)
                if (rate := compute_rate(topo, r)) is not None
                else None,
            }
            for (r, step), s in compute.items()
        ),
        key=lambda x: -x["compute_s"],
    )
    global_seconds = sum(s for (r, _step), s in compute.items() if r not in names)
    global_rate = compute_rate(topo, "global")
    global_usd = round(global_seconds / 3600 * global_rate, 6) if global_rate is not None else 0.0
    per_region.append(
        {
            "region": "global",
            "role": "global services",
            "stored_gb": round(global_stored / 1e9, 4),
            "storage_usd_month": 0.0,
            "replicated_out_gb": 0.0,
            "transfer_usd": 0.0,
            "compute_s": round(global_seconds, 1),
            "compute_usd": global_usd,
            "total_usd": global_usd,
        }
    )
    unpriced = (
        []
        if global_rate is not None
        else [f"global compute {global_seconds:.0f} s: no global_cost in regions.yaml"]
    )
    return CostReport(per_region, per_pair, per_asset, unpriced)
