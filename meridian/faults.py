"""Fail points: named places where a test can kill the process, as a crash would.

`MERIDIAN_FAILPOINT=<name>` makes the process SIGKILL itself when it reaches `<name>`;
`<name>:<n>` when it reaches it for the n-th time (a crash midway through a loop). No
exception handler, `finally` block or atexit hook runs, exactly as when a worker is
killed by the OOM killer or a node dies. Unset (always, outside tests) it costs one
dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_hits: Counter[str] = Counter()


def failpoint(name: str) -> None:
    wanted = os.environ.get("MERIDIAN_FAILPOINT")
    if not wanted:
        return
    target, _, nth = wanted.partition(":")
    if target != name:
        return
    _hits[name] += 1
    if not nth or _hits[name] >= int(nth):
        os.kill(os.getpid(), signal.SIGKILL)
