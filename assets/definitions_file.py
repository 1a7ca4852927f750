"""platform/definitions.py, loaded by path as workspace.yaml loads it.

`platform/` is deliberately not a package (it would shadow the standard library), so
whoever needs the assembled definitions outside a code location (the CLI, the catalog
asset in an in-process run, the benchmarks, the tests) loads the file with this.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from meridian.paths import REPO_ROOT


def load_definitions_module() -> ModuleType:
    """platform/definitions.py, loaded by path as workspace.yaml does."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    spec = importlib.util.spec_from_file_location(
        "meridian_definitions", REPO_ROOT / "platform" / "definitions.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
