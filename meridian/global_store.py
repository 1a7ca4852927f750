"""Where the global services publish: the shared aggregates and the platform's reports.

The global services (sharing, residency audit, catalog, cost, health) hold no personal data,
so what they publish lives outside every zone: under MERIDIAN_HOME in the embedded default,
or in the platform's own bucket (`global_storage_root: s3://bucket/prefix` in regions.yaml),
reached through the `global` endpoint and credentials (`MERIDIAN_S3_ENDPOINT_GLOBAL`,
`MERIDIAN_S3_ACCESS_KEY_ID_GLOBAL`, `MERIDIAN_S3_SECRET_ACCESS_KEY_GLOBAL`, or `global:` in
the secrets file): never a zone's. Names are the same on both (`global/merchant_risk/data.parquet`,
`platform/health.json`), so a reader finds an object at one name whatever the deployment.

A write is whole or absent: a temporary file renamed locally, one PUT on a bucket.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from meridian.cost import dir_bytes
from meridian.lake import write_bytes_atomic
from meridian.object_store import S3Location, list_objects, region_location
from meridian.topology import Topology

# The credentials' and endpoint's name in MERIDIAN_S3_*_<NAME> (meridian.object_store).
GLOBAL_SITE = "global"


@dataclass(frozen=True)
class GlobalStore:
    root: Path | None = None  # the data root (embedded default), or
    s3: S3Location | None = None  # the platform's bucket

    @classmethod
    def of(cls, topology: Topology, home: Path) -> GlobalStore:
        url = topology.global_storage_root
        if url is None:
            return cls(root=home)
        purpose = f"the global services publish to object storage (global_storage_root {url})"
        return cls(s3=region_location(GLOBAL_SITE, url, os.environ, purpose))

    def url(self, name: str) -> str:
        """Where `name` is, for a reader (a path or an s3:// URL)."""
        if self.s3 is not None:
            return f"s3://{self.s3.bucket}/{self.s3.key(name)}"
        return str(self.root / name)

    def write(self, name: str, payload: bytes) -> int:
        if self.s3 is not None:
            self.s3.client().put_object(Bucket=self.s3.bucket, Key=self.s3.key(name), Body=payload)
        else:
            write_bytes_atomic(payload, self.root / name)
        return len(payload)

    def write_parquet(self, name: str, frame: pl.DataFrame) -> int:
        buffer = io.BytesIO()
        frame.write_parquet(buffer, compression="zstd", statistics=True)
        return self.write(name, buffer.getvalue())

    def read(self, name: str) -> bytes | None:
        """The object's bytes, or None when nothing was published under `name`."""
        if self.s3 is not None:
            client = self.s3.client()
            try:
                return client.get_object(Bucket=self.s3.bucket, Key=self.s3.key(name))["Body"].read()
            except client.exceptions.NoSuchKey:
                return None
        path = self.root / name
        return path.read_bytes() if path.is_file() else None

    def download(self, into: Path) -> list[tuple[str, Path]]:
        """Every object of the platform's bucket, copied under `into`: (its URL, the copy). Empty
        in the embedded default, whose objects are files under the data root already."""
        if self.s3 is None:
            return []
        client, out = self.s3.client(), []
        for item in list_objects(self.s3, client, ""):
            copy = into / item.key
            copy.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(self.s3.bucket, self.s3.key(item.key), str(copy))
            out.append((self.url(item.key), copy))
        return out

    def stored_bytes(self, *under: str) -> int:
        """Bytes published under the given top-level names (for the cost report)."""
        if self.s3 is not None:
            client = self.s3.client()
            return sum(o.size for name in under for o in list_objects(self.s3, client, name))
        return sum(dir_bytes(self.root / name) for name in under)
