"""dagster-k8s's `k8s_job_executor`, with every step pod placed in its run's region.

`k8s_job_executor` takes a step pod's Kubernetes config from the executor's run config and
from op tags, both fixed per job; it ignores the run's own `dagster-k8s/config` tag
(`include_run_tags=False` in `K8sStepHandler`). Meridian's jobs are partitioned by region,
so one op runs for us-east in one run and for eu-west in the next: the placement has to
follow the run. This executor takes the region from the run's tags (`meridian/region`,
which instance/run_coordinator.py sets on every launch path, or the partition key) and
merges that region's `compute:` from platform/regions.yaml into each step pod last, so
neither an op tag nor run config can move a region's step off the region's node pool.
Runs of no single region (the global services) land on the `global` placement.

The placements are a config field whose default is built from the topology; Dagster
validates the default when the definitions load (a bad node selector or resource fails
`dagster definitions validate`), and the launchpad shows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster._core.definitions.executor_definition import multiple_process_executor_requirements
from dagster._core.executor.step_delegating import StepDelegatingExecutor, StepHandlerContext
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.executor import _K8S_EXECUTOR_CONFIG_SCHEMA, K8sStepHandler, k8s_job_executor
from dagster_k8s.job import USER_DEFINED_K8S_JOB_CONFIG_SCHEMA, UserDefinedDagsterK8sConfig

from meridian.placement import GLOBAL_PLACEMENT
from meridian.run_tags import region_of_run_tags

PLACEMENT_FIELD = "region_step_k8s_config"


def placed_container_context(
    context: K8sContainerContext, run_tags: Mapping[str, str], placements: Mapping[str, Mapping[str, Any]]
) -> K8sContainerContext:
    """`context` with the run's region placement merged over it (last, so it wins)."""
    regions = [name for name in placements if name != GLOBAL_PLACEMENT]
    region = region_of_run_tags(run_tags, regions)
    placement = placements.get(region or GLOBAL_PLACEMENT)
    if placement is None:
        return context
    return context.merge(K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(placement)))


class RegionalK8sStepHandler(K8sStepHandler):
    """`K8sStepHandler` that places each step pod by its run's region."""

    def __init__(self, base: K8sStepHandler, placements: Mapping[str, Mapping[str, Any]]):
        # Adopt the handler k8s_job_executor configured (image, container context, per-step
        # config, API clients) rather than re-reading its config here.
        self.__dict__.update(vars(base))
        self._placements = dict(placements)

    def _get_container_context(self, step_handler_context: StepHandlerContext) -> K8sContainerContext:
        context = super()._get_container_context(step_handler_context)
        return placed_container_context(context, step_handler_context.dagster_run.tags, self._placements)


def regional_k8s_job_executor(placements: Mapping[str, Mapping[str, Any]]) -> dg.ExecutorDefinition:
    """`k8s_job_executor`'s config plus the per-region placements (default: `placements`)."""
    schema = {
        **_K8S_EXECUTOR_CONFIG_SCHEMA,
        PLACEMENT_FIELD: dg.Field(
            dg.Map(str, USER_DEFINED_K8S_JOB_CONFIG_SCHEMA, key_label_name="region"),
            is_required=False,
            default_value={name: dict(p) for name, p in placements.items()},
            description="Step-pod config per region (and 'global'), merged last into each step pod.",
        ),
    }

    @dg.executor(
        name="k8s_regional", config_schema=schema, requirements=multiple_process_executor_requirements()
    )
    def _executor(init_context: dg.InitExecutorContext) -> StepDelegatingExecutor:
        base = k8s_job_executor.executor_creation_fn(init_context)
        assert isinstance(base, StepDelegatingExecutor) and isinstance(base._step_handler, K8sStepHandler)
        base._step_handler = RegionalK8sStepHandler(
            base._step_handler, init_context.executor_config[PLACEMENT_FIELD]
        )
        return base

    return _executor
