"""The model registry: one registered model per region, aliases, promotion and rollback.

`fraud-<region>` holds every model trained for the region. A new version becomes the
`challenger`; promotion moves `champion` to it. The registered model's tag
`meridian.champion_history` is the stack of champions (newest last) that a rollback pops.

A version is registered in two steps that a crash can separate: it is created with
`meridian.status=registering`, the `challenger` alias is moved to it, and only then is it
marked `ready`. Nothing reads a version that is not `ready`, and the next registration
deletes versions left `registering` by a run that died, so a killed training run leaves
the registry as it was.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from meridian.faults import failpoint

CHAMPION = "champion"
CHALLENGER = "challenger"
ROLLED_BACK = "rolled_back"  # the champion a rollback withdrew, kept to be tried again
STATUS_TAG = "meridian.status"
HISTORY_TAG = "meridian.champion_history"
HISTORY_LIMIT = 25  # MLflow caps tag values at a few kB; older entries stay in the lake's decision log


class RegistryError(RuntimeError):
    """A registry operation that cannot be done as asked."""


def model_name(region: str) -> str:
    return f"fraud-{region}"


@dataclass(frozen=True)
class ChampionChange:
    model: str
    previous: int | None
    current: int
    reason: str


def _is_missing(error: Exception) -> bool:
    return (
        "RESOURCE_DOES_NOT_EXIST" in str(getattr(error, "error_code", ""))
        or "not found" in str(error).lower()
    )


def alias_version(client, name: str, alias: str) -> int | None:
    """The version an alias points to, or None when the alias or the model does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return int(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as error:
        if _is_missing(error) or "alias" in str(error).lower():
            return None
        raise


def history(client, name: str) -> list[dict[str, object]]:
    tags = client.get_registered_model(name).tags
    return json.loads(tags.get(HISTORY_TAG, "[]"))


def _write_history(client, name: str, entries: list[dict[str, object]]) -> None:
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(entries[-HISTORY_LIMIT:]))


def ensure_registered_model(client, name: str, region: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as error:
        if not _is_missing(error):
            raise
        try:
            client.create_registered_model(
                name,
                tags={"region": region},
                description=f"LightGBM card-fraud model for {region}; aliases champion and challenger.",
            )
        except MlflowException as race:
            if "RESOURCE_ALREADY_EXISTS" not in str(race.error_code):
                raise


def discard_unfinished(client, name: str) -> list[int]:
    """Delete versions a dead run left half-registered; return their numbers."""
    stale = client.search_model_versions(f"name = '{name}' and tags.`{STATUS_TAG}` = 'registering'")
    for version in stale:
        client.delete_model_version(name, version.version)
    return sorted(int(v.version) for v in stale)


def register_challenger(client, region: str, model_uri: str, run_id: str, tags: dict[str, str]) -> int:
    """Register a logged model as a new version of `fraud-<region>` and make it the challenger."""
    import mlflow

    name = model_name(region)
    ensure_registered_model(client, name, region)
    discard_unfinished(client, name)
    version = mlflow.register_model(model_uri, name, tags={**tags, STATUS_TAG: "registering"})
    failpoint("registry.version_created")
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    client.set_model_version_tag(name, version.version, STATUS_TAG, "ready")
    return int(version.version)


def version_registered_by_run(client, name: str, dagster_run_id: str) -> int | None:
    """The ready version of `name` that the Dagster run `dagster_run_id` registered, if any."""
    try:
        versions = client.search_model_versions(
            f"name = '{name}' and tags.dagster_run_id = '{dagster_run_id}'"
        )
    except Exception as error:
        if _is_missing(error):
            return None
        raise
    ready = [int(v.version) for v in versions if v.tags.get(STATUS_TAG) == "ready"]
    return max(ready) if ready else None


def promote(client, region: str, version: int, reason: str, run_id: str) -> ChampionChange:
    """Point `champion` at `version` and push it on the champion history."""
    name = model_name(region)
    previous = alias_version(client, name, CHAMPION)
    entries = history(client, name)
    entries.append(
        {"version": version, "at": datetime.now(UTC).isoformat(), "reason": reason, "dagster_run_id": run_id}
    )
    _write_history(client, name, entries)
    client.set_registered_model_alias(name, CHAMPION, str(version))
    if alias_version(client, name, CHALLENGER) == version:
        client.delete_registered_model_alias(name, CHALLENGER)
    client.set_model_version_tag(name, str(version), "meridian.promoted_at", entries[-1]["at"])
    return ChampionChange(name, previous, version, reason)


def rollback(client, region: str, run_id: str, to_version: int | None = None) -> ChampionChange:
    """Return `champion` to the previous champion (or to `to_version`, a version that was champion)."""
    name = model_name(region)
    current = alias_version(client, name, CHAMPION)
    if current is None:
        raise RegistryError(f"{name} has no champion: there is nothing to roll back")
    entries = history(client, name)
    earlier = [int(e["version"]) for e in entries if int(e["version"]) != current]
    if to_version is None:
        if not earlier:
            raise RegistryError(
                f"{name}: version {current} is the only champion there has been; there is no previous "
                "champion to roll back to"
            )
        target = earlier[-1]
    elif to_version not in earlier:
        raise RegistryError(
            f"{name}: version {to_version} has never been champion (earlier champions: {earlier or 'none'}); "
            "roll back only to a version that served before"
        )
    else:
        target = to_version
    ready = client.get_model_version(name, str(target)).tags.get(STATUS_TAG)
    if ready != "ready":
        raise RegistryError(f"{name}: version {target} is not a ready version (status {ready!r})")
    # Pop the stack down to the target so that a second rollback goes further back.
    while entries and int(entries[-1]["version"]) != target:
        entries.pop()
    entries[-1] = {**entries[-1], "restored_at": datetime.now(UTC).isoformat(), "restored_from": current}
    _write_history(client, name, entries)
    client.set_registered_model_alias(name, CHAMPION, str(target))
    client.set_model_version_tag(name, str(current), "meridian.rolled_back_at", datetime.now(UTC).isoformat())
    # The withdrawn model keeps an alias: it can be tried again (set `challenger` to it, or
    # `models:/<name>@rolled_back`) without retraining.
    client.set_registered_model_alias(name, ROLLED_BACK, str(current))
    return ChampionChange(name, current, target, f"rollback from version {current} (run {run_id})")
