"""The per-region run limit holds on every launch path: the coordinator tags runs with their region."""

from __future__ import annotations

import uuid

import dagster as dg
import pytest
import yaml
from dagster._core.run_coordinator import SubmitRunContext
from dagster._core.storage.dagster_run import DagsterRun
from dagster._utils.tags import TagConcurrencyLimitsCounter

from instance.run_coordinator import RegionRunCoordinator
from meridian.paths import REPO_ROOT
from meridian.run_tags import REGION_TAG, region_of_run_tags

REGIONS = ["us-east", "eu-west", "ap-southeast", "us-west"]
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
# The tags each launch path gives a run of eu-west (as Dagster and Meridian set them).
LAUNCH_PATHS = {
    "ui launchpad, region partition (ml_training)": {"dagster/partition": "eu-west"},
    "ui launchpad, region-day partition": {
        "dagster/partition": "2026-02-01|eu-west",
        "dagster/partition/day": "2026-02-01",
        "dagster/partition/region": "eu-west",
    },
    "ui backfill, one run over a range of days": {
        RANGE_START: "2026-02-01|eu-west",
        RANGE_END: "2026-02-09|eu-west",
    },
    "sensor": {"meridian/region": "eu-west", "meridian/trigger": "drift", "dagster/partition": "eu-west"},
    "schedule": {"dagster/partition": "eu-west", "dagster/schedule_name": "weekly_retraining_schedule"},
}


@pytest.mark.parametrize("path", list(LAUNCH_PATHS))
def test_every_launch_path_resolves_to_the_runs_region(path):
    assert region_of_run_tags(LAUNCH_PATHS[path], REGIONS) == "eu-west"


@pytest.mark.parametrize(
    "tags",
    [
        {},
        {"dagster/partition": "2026-02-01"},  # a day, not a region
        {RANGE_START: "2026-02-01|us-east", RANGE_END: "2026-02-09|eu-west"},  # several regions
        {"dagster/partition": "mars-north"},
    ],
)
def test_runs_of_no_single_known_region_get_no_region(tags):
    assert region_of_run_tags(tags, REGIONS) is None


def _run(tags: dict[str, str], job_name: str = "ml_training", **kwargs) -> DagsterRun:
    """A run as the webserver, a sensor or a schedule creates it: with its job's origin."""
    from dagster._core.remote_origin import (
        RegisteredCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )

    origin = RemoteJobOrigin(
        RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("meridian"), "__repository__"), job_name
    )
    return DagsterRun(
        job_name=job_name, run_id=str(uuid.uuid4()), tags=tags, remote_job_origin=origin, **kwargs
    )


def _limits() -> list[dict]:
    config = yaml.safe_load((REPO_ROOT / "platform" / "dagster.yaml").read_text())["run_coordinator"]
    assert (config["module"], config["class"]) == ("instance.run_coordinator", "RegionRunCoordinator")
    return config["config"]["tag_concurrency_limits"]


def test_a_ui_launched_training_queues_behind_a_sensor_launched_one_of_the_same_region(tmp_path):
    """Regression: the queue's per-region limit keyed on tags a UI-launched, region-partitioned
    run did not carry, so two trainings of one region could run at once and race on the
    registry aliases."""
    overrides = {
        "run_coordinator": {
            "module": "instance.run_coordinator",
            "class": "RegionRunCoordinator",
            "config": {"tag_concurrency_limits": _limits()},
        }
    }
    with dg.instance_for_test(overrides=overrides, temp_dir=str(tmp_path)) as instance:
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, RegionRunCoordinator)
        submitted = {}
        for path, tags in LAUNCH_PATHS.items():
            run = _run(tags)
            instance.add_run(run)
            submitted[path] = coordinator.submit_run(SubmitRunContext(run, workspace=None))
        for path, run in submitted.items():
            assert run.status == dg.DagsterRunStatus.QUEUED, path
            assert run.tags[REGION_TAG] == "eu-west", path
        # Dagster's own limit counter: with one of them in progress, every other is held.
        for running in submitted.values():
            counter = TagConcurrencyLimitsCounter(_limits(), [running])
            others = [r for r in submitted.values() if r.run_id != running.run_id]
            assert all(counter.is_blocked(r) for r in others)
        # ... and a run of another region is not.
        other = _run({"dagster/partition": "us-east"})
        instance.add_run(other)
        other = coordinator.submit_run(SubmitRunContext(other, workspace=None))
        counter = TagConcurrencyLimitsCounter(_limits(), [submitted["sensor"]])
        assert not counter.is_blocked(other)


def test_the_retraining_sensor_sees_a_training_run_however_it_was_launched(tmp_path):
    from assets.monitoring_sensors import _retraining_state

    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        # A UI launch not yet through the coordinator: only Dagster's partition tag.
        instance.add_run(_run({"dagster/partition": "eu-west"}, status=dg.DagsterRunStatus.QUEUED))
        # An asset run that materializes the model directly (not the ml_training job).
        instance.add_run(
            _run(
                {"dagster/partition": "ap-southeast"},
                job_name="__ASSET_JOB",
                asset_selection=frozenset({dg.AssetKey("fraud_model")}),
                status=dg.DagsterRunStatus.STARTED,
            )
        )
        assert _retraining_state(instance, "eu-west")[0]
        assert _retraining_state(instance, "ap-southeast")[0]
        assert not _retraining_state(instance, "us-east")[0]


def test_the_range_tags_the_cli_sets_are_dagsters_own() -> None:
    from dagster._core.storage import tags

    from meridian.run_tags import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG

    assert (PARTITION_RANGE_START_TAG, PARTITION_RANGE_END_TAG) == (
        tags.ASSET_PARTITION_RANGE_START_TAG,
        tags.ASSET_PARTITION_RANGE_END_TAG,
    )
