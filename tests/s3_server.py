"""A region's S3 endpoint for the tests: `python -m tests.s3_server PORT [WIRE_DIR]`.

moto's own server application, started as `python -m moto.server` starts it, without two costs
of moto's that the tests paid on every request (about a sixth of the endpoints' CPU in the
wire-residency run, py-spy):

- moto finds the service of a request by listing its package's folders (`os.listdir` and
  `isdir` on ~150 entries) every time; the list is the installed package's, so it is read once;
- werkzeug writes a line per request to the endpoint's log, which no test reads; warnings and
  errors are still written.

With WIRE_DIR, every object written is logged and kept there (tests.wire_log).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

from moto import backends
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

_MODULES = tuple(backends.list_of_moto_modules())


def main(port: int, wire: Path | None) -> None:
    os.environ.setdefault("MOTO_PORT", str(port))
    backends.list_of_moto_modules = lambda: _MODULES
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True  # as moto.server sets it
    if wire is not None:
        from tests.wire_log import WireLog

        app = WireLog(app, wire)
    print(f"moto S3 endpoint on http://127.0.0.1:{port}", flush=True)
    run_simple("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
