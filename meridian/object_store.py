"""A region's object store: where, with which credentials, and the few calls Meridian makes.

Each region has its own S3-compatible endpoint, bucket and credentials; nothing here ever
holds two regions' credentials in one client. Configuration comes from the environment
(or a secrets file it names), read per region and validated when loaded, with a message
naming what is missing:

| variable | what |
|---|---|
| MERIDIAN_LANDING_URL_<REGION> | the region's landing zone, `s3://bucket/prefix` (unset: the local folder) |
| MERIDIAN_S3_ENDPOINT_<REGION> | the region's S3-compatible endpoint (unset: AWS's) |
| MERIDIAN_S3_ACCESS_KEY_ID_<REGION>, MERIDIAN_S3_SECRET_ACCESS_KEY_<REGION> | the region's credentials |
| MERIDIAN_S3_SECRETS_FILE | a YAML file `{<region>: {access_key_id, secret_access_key}}` instead of the two above |
| MERIDIAN_MLFLOW_ARTIFACTS_<ZONE> | the zone's MLflow artifact bucket, `s3://bucket/prefix` (meridian.artifact_store) |

`<REGION>` is the region's name in capitals with `_` for `-` (`EU_WEST`).
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

# A frozen endpoint still accepts connections (the kernel completes them): the read timeout
# bounds what it costs a caller. Listings and small objects answer well inside it.
CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 5.0


class ObjectStoreConfigError(ValueError):
    """A region's object store is configured incompletely; the message says what to set."""


def _suffix(region: str) -> str:
    return region.upper().replace("-", "_")


@dataclass(frozen=True)
class S3Location:
    """One region's bucket and prefix, the endpoint serving it and the credentials for it."""

    region: str
    bucket: str
    prefix: str
    endpoint_url: str | None
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    signing_region: str = "us-east-1"

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def relative(self, key: str) -> str:
        return key[len(self.prefix) + 1 :] if self.prefix else key

    def client(self):
        """The S3 client for this endpoint and these credentials: made once per process and shared
        (botocore clients are thread-safe). Making one costs ~0.2 s of loading botocore's models:
        made per call, it was half of a day's ingestion on object storage."""
        return _client(
            os.getpid(), self.endpoint_url, self.access_key_id, self.secret_access_key, self.signing_region
        )


_CLIENTS_LOCK = threading.Lock()


@functools.lru_cache(maxsize=64)
def _session(pid: int):
    import boto3

    return boto3.session.Session()


@functools.lru_cache(maxsize=64)
def _client(
    pid: int, endpoint_url: str | None, access_key_id: str, secret_access_key: str, signing_region: str
):
    """Keyed by process too: a client made before a fork is never used in the child (its pool's
    sockets belong to the parent)."""
    from botocore.config import Config

    with _CLIENTS_LOCK:  # a boto3 session is not thread-safe
        return _session(pid).client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=signing_region,
            config=Config(
                connect_timeout=CONNECT_TIMEOUT_S,
                read_timeout=READ_TIMEOUT_S,
                retries={"max_attempts": 2, "mode": "standard"},
                s3={"addressing_style": "path"},
                max_pool_connections=16,
            ),
        )


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of `s3://bucket/prefix`."""
    if not url.startswith("s3://") or len(url) <= len("s3://"):
        raise ObjectStoreConfigError(f"{url!r} is not an object-store URL (s3://bucket/prefix)")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise ObjectStoreConfigError(f"{url!r} names no bucket")
    return bucket, prefix.strip("/")


def landing_location(region: str, environ: Mapping[str, str] | None = None) -> S3Location | None:
    """The region's landing zone on object storage, or None when it is the local folder."""
    env = os.environ if environ is None else environ
    url = env.get(f"MERIDIAN_LANDING_URL_{_suffix(region)}")
    if not url:
        return None
    return region_location(
        region,
        url,
        env,
        f"{region}'s landing zone is on object storage (MERIDIAN_LANDING_URL_{_suffix(region)})",
    )


def region_location(region: str, url: str, env: Mapping[str, str], purpose: str) -> S3Location:
    """`url` (s3://bucket/prefix) reached through region's endpoint with region's credentials;
    `purpose` says, in an error, why they are needed."""
    bucket, prefix = parse_s3_url(url)
    key_id, secret = _credentials(region, env, purpose)
    return S3Location(
        region=region,
        bucket=bucket,
        prefix=prefix,
        endpoint_url=env.get(f"MERIDIAN_S3_ENDPOINT_{_suffix(region)}") or None,
        access_key_id=key_id,
        secret_access_key=secret,
    )


def _credentials(region: str, env: Mapping[str, str], purpose: str) -> tuple[str, str]:
    suffix = _suffix(region)
    key_id = env.get(f"MERIDIAN_S3_ACCESS_KEY_ID_{suffix}")
    secret = env.get(f"MERIDIAN_S3_SECRET_ACCESS_KEY_{suffix}")
    secrets_file = env.get("MERIDIAN_S3_SECRETS_FILE")
    if not (key_id and secret) and secrets_file:
        import yaml

        path = Path(secrets_file)
        if not path.is_file():
            raise ObjectStoreConfigError(f"MERIDIAN_S3_SECRETS_FILE={secrets_file}: no such file")
        entry = (yaml.safe_load(path.read_text()) or {}).get(region) or {}
        key_id, secret = key_id or entry.get("access_key_id"), secret or entry.get("secret_access_key")
    missing = [
        name
        for name, value in (
            (f"MERIDIAN_S3_ACCESS_KEY_ID_{suffix}", key_id),
            (f"MERIDIAN_S3_SECRET_ACCESS_KEY_{suffix}", secret),
        )
        if not value
    ]
    if missing:
        raise ObjectStoreConfigError(
            f"{purpose} but {region}'s credentials are missing: set {' and '.join(missing)}, or give "
            f"them under {region!r} in the file MERIDIAN_S3_SECRETS_FILE names"
        )
    return str(key_id), str(secret)


@dataclass(frozen=True)
class StoredObject:
    key: str  # relative to the location's prefix
    size: int
    etag: str  # the store's: MD5 of the content for a single-part upload
    last_modified: datetime


def list_objects(location: S3Location, client, under: str) -> Iterator[StoredObject]:
    """Every object under `under` (relative to the location's prefix), paged."""
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=location.bucket, Prefix=location.key(under)):
        for item in page.get("Contents", []):
            yield StoredObject(
                key=location.relative(item["Key"]),
                size=int(item["Size"]),
                etag=item["ETag"].strip('"'),
                last_modified=item["LastModified"],
            )
