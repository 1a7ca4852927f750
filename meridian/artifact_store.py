"""Where MLflow keeps a region's model files: its zone's artifact bucket.

A tracking server serving artifacts itself (`mlflow server --serve-artifacts`) keeps every
experiment's files in its one artifact store, wherever that is: models trained on one
zone's personal data would sit beside another zone's. With `MERIDIAN_MLFLOW_ARTIFACTS_<ZONE>`
(`s3://bucket/prefix`, e.g. `MERIDIAN_MLFLOW_ARTIFACTS_EU`), region R's experiment is
created with its artifact location at `<its zone's root>/<R>`, so the client writes R's
runs and models straight into R's zone's bucket and the server stores only their metadata.

The bucket is reached through R's own endpoint with R's own credentials (the
`MERIDIAN_S3_*_<REGION>` of meridian.object_store): `install()` registers an MLflow
artifact repository for `s3://` that picks them from the URI (root, then region), so two
regions' credentials are never mixed in one process-wide setting. A URI under no
configured root is left to MLflow's own S3 repository.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache

from meridian.object_store import ObjectStoreConfigError, S3Location, parse_s3_url, region_location

PREFIX = "MERIDIAN_MLFLOW_ARTIFACTS_"


def zone_roots(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """{zone: s3://bucket/prefix} of every MERIDIAN_MLFLOW_ARTIFACTS_<ZONE> set."""
    env = os.environ if environ is None else environ
    return {
        name.removeprefix(PREFIX).lower().replace("_", "-"): value.rstrip("/")
        for name, value in env.items()
        if name.startswith(PREFIX) and value
    }


def experiment_location(topology, region: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Where region's experiment keeps its artifacts: `<zone root>/<region>`, or None (MLflow's default)."""
    root = zone_roots(environ).get(topology.zone_of(region))
    return f"{root}/{region}" if root else None


def check_settings(topology, environ: Mapping[str, str] | None = None) -> None:
    """Refuse, naming the variable, zone roots that name no zone, share a bucket with another
    zone's, or belong to a zone whose regions have no credentials for them."""
    env = os.environ if environ is None else environ
    roots = zone_roots(env)
    zones = {z.name for z in topology.zones}
    problems = []
    buckets: dict[str, str] = {}
    for zone, url in sorted(roots.items()):
        var = f"{PREFIX}{zone.upper().replace('-', '_')}"
        if zone not in zones:
            problems.append(f"{var} names no zone of the topology (zones: {', '.join(sorted(zones))})")
            continue
        try:
            bucket, _ = parse_s3_url(url)
        except ObjectStoreConfigError as error:
            problems.append(f"{var}: {error}")
            continue
        if bucket in buckets:
            problems.append(
                f"{var}: bucket {bucket} is also the artifact bucket of zone {buckets[bucket]}; "
                "each zone's models need a bucket of their own"
            )
        buckets[bucket] = zone
        for region in topology.active_regions:  # the regions that train (a standby never does)
            if region.zone == zone:
                try:
                    region_location(
                        region.name, url, env, f"{region.name}'s MLflow artifacts are in {url} ({var})"
                    )
                except ObjectStoreConfigError as error:
                    problems.append(str(error))
    if problems:
        raise ObjectStoreConfigError("; ".join(problems))


def location_for(uri: str, environ: Mapping[str, str] | None = None) -> S3Location | None:
    """The region endpoint and credentials for an artifact URI under a zone root, or None."""
    env = os.environ if environ is None else environ
    for zone, root in zone_roots(env).items():
        if uri == root or not uri.startswith(root + "/"):
            continue
        region = uri[len(root) + 1 :].split("/", 1)[0]
        if not region:
            return None
        return region_location(region, uri, env, f"MLflow artifacts at {uri} (zone {zone})")
    return None


@cache
def _zone_repository_class():
    from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository, _get_s3_client

    class ZoneS3ArtifactRepository(S3ArtifactRepository):
        """MLflow's S3 repository on a region's endpoint with that region's credentials."""

        def __init__(self, artifact_uri: str, location: S3Location, **kwargs):
            super().__init__(
                artifact_uri,
                access_key_id=location.access_key_id,
                secret_access_key=location.secret_access_key,
                **kwargs,
            )
            self._location = location

        def _get_s3_client(self):
            return _get_s3_client(
                access_key_id=self._location.access_key_id,
                secret_access_key=self._location.secret_access_key,
                region_name=self._location.signing_region,
                s3_endpoint_url=self._location.endpoint_url,
                addressing_style="path" if self._location.endpoint_url else None,
            )

    return S3ArtifactRepository, ZoneS3ArtifactRepository


def _repository(artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None):
    plain, zone = _zone_repository_class()
    location = location_for(artifact_uri)
    if location is None:
        return plain(artifact_uri, tracking_uri=tracking_uri, registry_uri=registry_uri)
    return zone(artifact_uri, location, tracking_uri=tracking_uri, registry_uri=registry_uri)


def install() -> None:
    """Route MLflow's `s3://` artifact URIs through `_repository` (idempotent; every process
    that logs or loads models calls it before its first MLflow call)."""
    from mlflow.store.artifact.artifact_repository_registry import _artifact_repository_registry

    _artifact_repository_registry.register("s3", _repository)
