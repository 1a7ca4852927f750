"""An S3-compatible server per region on loopback: `moto[server]` run as a network server (a
process of its own, never in-process patching), with IAM authentication on, one bucket and
one set of credentials of its own. Another region's credentials are unknown to it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers import free_port

# The eu zone's MLflow artifact bucket in the production fixture (tests/conftest.py).
EU_ARTIFACT_BUCKET = "meridian-eu-mlflow"
# The set-up below makes exactly this many calls before authentication starts.
SETUP_CALLS = 4


@dataclass
class RegionObjectStore:
    region: str
    endpoint: str
    bucket: str
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    process: subprocess.Popen = field(repr=False)

    def env(self, prefix: str = "incoming") -> dict[str, str]:
        suffix = self.region.upper().replace("-", "_")
        return {
            f"MERIDIAN_LANDING_URL_{suffix}": f"s3://{self.bucket}/{prefix}",
            f"MERIDIAN_S3_ENDPOINT_{suffix}": self.endpoint,
            f"MERIDIAN_S3_ACCESS_KEY_ID_{suffix}": self.access_key_id,
            f"MERIDIAN_S3_SECRET_ACCESS_KEY_{suffix}": self.secret_access_key,
        }

    def client(self, access_key_id: str | None = None, secret_access_key: str | None = None):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=access_key_id or self.access_key_id,
            aws_secret_access_key=secret_access_key or self.secret_access_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


def start_region_store(region: str, workdir: Path) -> RegionObjectStore:
    port = free_port()
    log = open(workdir / f"moto-{region}.log", "w")  # noqa: SIM115 - the server's output, kept with it
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={
            **os.environ,
            "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_CALLS),
            "MOTO_ALLOW_NONEXISTENT_REGION": "1",
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"moto server for {region} exited: {(workdir / f'moto-{region}.log').read_text()}"
            )
        try:
            # moto's own dashboard API: answers without counting as an AWS action.
            with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"moto server for {region} did not start") from None
            time.sleep(0.1)
    import boto3

    setup = {"endpoint_url": endpoint, "region_name": "us-east-1"}
    iam = boto3.client("iam", aws_access_key_id="setup", aws_secret_access_key="setup", **setup)
    user = f"meridian-{region}"
    iam.create_user(UserName=user)  # 1
    key = iam.create_access_key(UserName=user)["AccessKey"]  # 2
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName=user, PolicyName="region-bucket", PolicyDocument=json.dumps(policy))  # 3
    store = RegionObjectStore(
        region, endpoint, f"meridian-{region}-landing", key["AccessKeyId"], key["SecretAccessKey"], process
    )
    store.client().create_bucket(Bucket=store.bucket)  # 4: from here on every call is authenticated
    return store
