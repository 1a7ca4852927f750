"""Fail points: named places where a test can kill the process, as a crash would.

`MERIDIAN_FAILPOINT=<name>` makes the process SIGKILL itself when it reaches `<name>`:
no exception handler, `finally` block or atexit hook runs, exactly as when a worker
is killed by the OOM killer or a node dies. Unset (always, outside tests) it costs one
dictionary lookup.
"""

from __future__ import annotations

import os
import signal


def failpoint(name: str) -> None:
    if os.environ.get("MERIDIAN_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
