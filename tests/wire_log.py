"""What a region's S3 endpoint logs of every object written to it (`python -m tests.s3_server PORT DIR`).

moto's own server application (tests.s3_server), behind a WSGI layer
that, after each successful write (PUT of an object, a server-side copy, the completion of a
multipart upload), appends `{bucket, key, bytes, sha256, copy}` to `DIR/writes.jsonl` and keeps
the stored object's bytes in `DIR/objects/<copy>` (a number and the key's suffix). The bytes are read from the store after it
accepted them (decoded, whatever the transfer encoding), and kept even if the object is later
deleted or overwritten: what crossed the wire, not what is left at the end.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from urllib.parse import parse_qs, unquote


def _stored(bucket: str, key: str) -> bytes | None:
    from moto.s3.models import s3_backends

    for partitions in s3_backends.values():
        for backend in partitions.values():
            if bucket in backend.buckets:
                return bytes(backend.get_object(bucket, key).value)
    return None


class WireLog:
    def __init__(self, app, directory: Path) -> None:
        self.app, self.directory, self.lock = app, directory, threading.Lock()
        (directory / "objects").mkdir(parents=True, exist_ok=True)
        self.count = 0

    def __call__(self, environ, start_response):
        status: list[str] = []

        def recording_start_response(code, headers, exc_info=None):
            status.append(code)
            return start_response(code, headers, exc_info)

        response = self.app(environ, recording_start_response)
        if status and status[0].startswith("200"):
            self._log(environ)
        return response

    def _log(self, environ) -> None:
        method = environ["REQUEST_METHOD"]
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        bucket, _, key = unquote(environ.get("PATH_INFO", "")).lstrip("/").partition("/")
        if not key or bucket == "moto-api":
            return  # a bucket's own calls (creation, policy), moto's dashboard
        whole_put = method == "PUT" and "partNumber" not in query and not (query.keys() - {"x-id"})
        completed = method == "POST" and "uploadId" in query
        if not (whole_put or completed):
            return
        payload = _stored(bucket, key)
        if payload is None:
            return
        digest = hashlib.sha256(payload).hexdigest()
        with self.lock:
            self.count += 1
            copy = f"{self.count:06d}{Path(key).suffix}"  # the key's suffix says what it holds
            (self.directory / "objects" / copy).write_bytes(payload)
            line = {"bucket": bucket, "key": key, "bytes": len(payload), "sha256": digest, "copy": copy}
            with open(self.directory / "writes.jsonl", "a") as log:
                log.write(json.dumps(line) + "\n")
