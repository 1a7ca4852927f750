"""Writers make folders below a region's root, never the root itself: only provisioning does.

Once a process has resolved a region's provisioned root (meridian.dr.provisioning), the
root is guarded here. A writer that must create a missing folder (an atomic lake write, a
lock file, the stream log) first checks that no guarded root on its way is gone or has lost
its marker: a run that resolved its paths before the region's storage failed would
otherwise recreate an empty root, which a probe would then call healthy. The check costs a
stat only when a folder is missing; a write into an existing folder costs nothing.
"""

from __future__ import annotations

import threading
from pathlib import Path


class RegionStorageUnavailable(RuntimeError):
    """The region's storage is gone or is not the volume that was provisioned for it."""


_GUARDED: dict[Path, str] = {}
_LOCK = threading.Lock()


def guard(root: Path, marker: str) -> None:
    """From now on no writer in this process creates `root`, or writes below it once the
    file `marker` is gone from it (an empty or replaced volume)."""
    with _LOCK:
        _GUARDED[Path(root).absolute()] = marker


def release(root: Path) -> None:
    """Forget `root`: the control plane holds no provisioning record for it (a new home)."""
    with _LOCK:
        _GUARDED.pop(Path(root).absolute(), None)


def _check(directory: Path) -> None:
    target = directory.absolute()
    for root, marker in list(_GUARDED.items()):
        if target == root or root in target.parents:
            if not root.is_dir():
                raise RegionStorageUnavailable(
                    f"storage root {root} is gone: not recreating it to write {target} "
                    "(only provisioning creates a region's root)"
                )
            if not (root / marker).is_file():
                raise RegionStorageUnavailable(
                    f"storage root {root} lost its marker {marker} (an empty or replaced volume): "
                    f"not writing {target} there"
                )


def make_dirs(directory: Path) -> None:
    """`directory` and its missing parents, unless that would recreate a guarded root."""
    directory = Path(directory)
    if directory.is_dir():
        return
    _check(directory)
    directory.mkdir(parents=True, exist_ok=True)
