"""Where each run's steps execute in the production profile: Kubernetes placement per region.

Plain dictionaries in the shape of dagster-k8s's user-defined config (`pod_spec_config`,
`container_config`), built from `compute:` in platform/regions.yaml. instance/k8s_executor.py
applies them to every step pod by the run's region; Dagster's config system validates them
when the definitions load.
"""

from __future__ import annotations

from typing import Any

from meridian.topology import Compute, Topology

GLOBAL_PLACEMENT = "global"


def k8s_config(compute: Compute) -> dict[str, Any]:
    """The step-pod config of one region: its node pool, CPU and memory."""
    resources: dict[str, dict[str, str]] = {"requests": {"cpu": compute.cpu, "memory": compute.memory}}
    if compute.memory_limit is not None:
        resources["limits"] = {"memory": compute.memory_limit}
    return {
        "pod_spec_config": {"node_selector": compute.labels},
        "container_config": {"resources": resources},
        # Replace, never deep-merge: a node selector key from an op tag must not survive
        # beside the region's (it could match another region's pool).
        "merge_behavior": "SHALLOW",
    }


def step_placements(topology: Topology) -> dict[str, dict[str, Any]]:
    """Step-pod config per region name, and under "global" for runs of no single region.

    A region without `compute:` is left out: its steps get the executor's defaults. That is
    refused for a region that holds personal data, so a forgotten entry cannot put a
    region's steps on another zone's nodes.
    """
    missing = [r.name for r in topology.regions if r.compute is None]
    if missing:
        raise ValueError(
            f"platform/regions.yaml: regions {missing} have no `compute:` (node_selector, cpu, memory); "
            "every region's steps must be pinned to its own node pool"
        )
    placements = {r.name: k8s_config(r.compute) for r in topology.regions if r.compute is not None}
    if topology.global_compute is not None:
        placements[GLOBAL_PLACEMENT] = k8s_config(topology.global_compute)
    return placements
