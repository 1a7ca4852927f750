"""A region's S3 endpoint that logs every object written to it: `python -m tests.wire_log PORT DIR`.

moto's own server application (the same one `python -m moto.server` runs), behind a WSGI layer
that, after each successful write (PUT of an object, a server-side copy, the completion of a
multipart upload), appends `{bucket, key, bytes, sha256, copy}` to `DIR/writes.jsonl` and keeps
the stored object's bytes in `DIR/objects/<copy>` (a number and the key's suffix). The bytes are read from the store after it
accepted them (decoded, whatever the transfer encoding), and kept even if the object is later
deleted or overwritten: what crossed the wire, not what is left at the end.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from pathlib import Path
from urllib.parse import parse_qs, unquote

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple


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


def main(port: int, directory: Path) -> None:
    app = DomainDispatcherApplication(create_backend_app)
    run_simple("127.0.0.1", port, WireLog(app, directory), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]))
