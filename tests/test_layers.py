"""The import contract between the layers (docs/architecture.md), checked on the source.

    meridian/   plain logic: no Dagster at all, none of the packages above it
    resources/  infrastructure wrappers: meridian/ and Dagster's public API
    assets/     wiring: meridian/, resources/
    serving/    the scoring service: meridian/, resources/
    cli/        the `meridian` command: anything above, nothing imports it
    instance/   the Dagster instance's plug-ins: meridian/ and dagster._core (the only place)

Every import statement counts, also those inside functions: a lazy import is still a
dependency. Relative imports are not used in this project, so absolute names suffice.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("meridian", "resources", "assets", "serving", "cli", "instance")
# What each layer may import from the project. platform/definitions.py is loaded by path.
ALLOWED: dict[str, set[str]] = {
    "meridian": {"meridian"},
    "resources": {"meridian", "resources"},
    "assets": {"meridian", "resources", "assets"},
    "serving": {"meridian", "resources", "serving"},
    "cli": {"meridian", "resources", "assets", "serving", "cli"},
    "instance": {"meridian", "instance"},
}
# Third-party names a layer must not import.
FORBIDDEN_EXTERNAL: dict[str, tuple[str, ...]] = {
    "meridian": ("dagster", "dagster_dbt", "dagster_mlflow", "fastapi", "uvicorn"),
    "resources": ("dagster._", "fastapi", "uvicorn"),
    "assets": ("dagster._", "fastapi", "uvicorn"),
    "serving": ("dagster",),
    "cli": ("dagster._",),
    "instance": (),
}


def imported_names(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            names.append((node.lineno, node.module or ""))
    return names


def violations(package: str, root: Path = REPO_ROOT) -> list[str]:
    found = []
    for path in sorted((root / package).rglob("*.py")):
        for line, name in imported_names(path):
            top = name.split(".")[0]
            where = f"{path.relative_to(root)}:{line} imports {name}"
            if top in PACKAGES and top not in ALLOWED[package]:
                found.append(f"{where} ({package}/ may import only {sorted(ALLOWED[package])})")
            for banned in FORBIDDEN_EXTERNAL[package]:
                if name == banned or name.startswith(banned if banned.endswith("_") else banned + "."):
                    found.append(f"{where} ({package}/ must not import {banned})")
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_each_layer_imports_only_the_layers_below_it(package: str) -> None:
    assert violations(package) == []


def test_a_wrong_way_import_is_caught(tmp_path: Path) -> None:
    """The check itself can fail: a meridian/ module importing an asset or dagster is reported."""
    (tmp_path / "meridian").mkdir()
    (tmp_path / "meridian" / "bad.py").write_text(
        "import dagster as dg\n\ndef f():\n    from assets.ml import fraud_model\n"
    )
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "bad.py").write_text("from cli.runs import RunPlan\nimport dagster._core.events\n")
    assert [v.split(" (")[0] for v in violations("meridian", tmp_path)] == [
        "meridian/bad.py:1 imports dagster",
        "meridian/bad.py:4 imports assets.ml",
    ]
    assert [v.split(" (")[0] for v in violations("assets", tmp_path)] == [
        "assets/bad.py:1 imports cli.runs",
        "assets/bad.py:2 imports dagster._core.events",
    ]


def test_every_python_package_of_the_project_is_under_the_contract() -> None:
    packages = {p.parent.name for p in REPO_ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages == set(PACKAGES), "a new top-level package needs a row in ALLOWED"
