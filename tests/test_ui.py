"""The Dagster UI in a real browser: Debian's headless Chromium driven by Playwright.

dagster-webserver serves the code location from workspace.yaml on loopback. The test
checks the lineage of a replica back to the regional lake, the region x day partitions
of a regional asset, then launches a materialization with the UI's own button and sees
it succeed. Screenshots (ui-asset-lineage.png, ui-partitioned-asset.png,
ui-materialized-from-the-ui.png) go to a temporary folder, where the test checks them; the
tests never write tracked files. `scripts/screenshots.sh` refreshes docs/ with them
(MERIDIAN_SCREENSHOTS_DIR=docs).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from meridian.paths import REPO_ROOT
from tests.servers import free_port

pytestmark = pytest.mark.e2e
CHROMIUM = "/usr/bin/chromium"
# Flags for a machine with no network but loopback (background services would hang on DNS).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS_ENV = "MERIDIAN_SCREENSHOTS_DIR"


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """Where screenshots go: a temporary folder, or $MERIDIAN_SCREENSHOTS_DIR (scripts/screenshots.sh)."""
    wanted = os.environ.get(SHOTS_ENV)
    return Path(wanted).resolve() if wanted else tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def webserver(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/ensure-servers.sh installs Debian's chromium")
    root = tmp_path_factory.mktemp("ui")
    home = root / "home"
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    # The UI launches runs itself (no daemon here): the default run coordinator.
    (dagster_home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\nrun_coordinator:\n"
        "  module: dagster._core.run_coordinator\n  class: DefaultRunCoordinator\n"
    )
    port = free_port()
    env = {
        **os.environ,
        "MERIDIAN_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "MERIDIAN_PROFILE": "local",
    }
    log = open(root / "webserver.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster-webserver"),
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((root / "webserver.log").read_text()[-3000:]) from None
            time.sleep(0.5)
    yield {"url": url, "dagster_home": dagster_home, "env": env}
    os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
    log.close()


@pytest.fixture
def page(webserver):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(60_000)
        yield page
        browser.close()


def _open(page, url: str) -> None:
    page.goto(url, wait_until="networkidle")
    skip = page.get_by_role("button", name="Skip")  # the first-visit community dialog
    if skip.count():
        skip.first.click()


def _shot(page, folder: Path, name: str) -> None:
    target = folder / name
    tmp = target.with_name(f".{name}.tmp.png")
    page.screenshot(path=str(tmp))
    shutil.move(tmp, target)
    assert target.read_bytes().startswith(b"\x89PNG") and target.stat().st_size > 10_000, target


def test_the_graph_shows_regional_partitions_and_lineage_in_a_browser(webserver, page, shots):
    url = webserver["url"]
    _open(page, f"{url}/assets/raw_lake_replica?view=lineage&lineageScope=upstream&lineageDepth=1")
    for upstream in ("raw_lake_replica", "raw_transactions", "raw_labels", "scoring_decisions"):
        page.get_by_text(upstream, exact=True).first.wait_for()
    _shot(page, shots, "ui-asset-lineage.png")
    _open(page, f"{url}/assets/raw_transactions?view=partitions")
    page.get_by_text("Partitions Selected").first.wait_for()
    body = page.inner_text("body")
    for region in ("us-east", "eu-west", "ap-southeast"):
        assert region in body
    assert "2026-01-01" in body  # the day dimension starts with the history
    _shot(page, shots, "ui-partitioned-asset.png")


def test_a_materialization_launched_from_the_ui_succeeds(webserver, page, shots):
    url = webserver["url"]
    _open(page, f"{url}/assets/replication_status")
    page.get_by_role("button").filter(has_text=re.compile(r"^Materialize$")).first.click()
    # Its upstream replicas were never materialized here: the UI asks first, as it should.
    confirm = page.get_by_role("button", name="Confirm")
    confirm.wait_for(timeout=15_000)
    confirm.click()
    with dg.DagsterInstance.from_config(str(webserver["dagster_home"])) as instance:
        deadline = time.monotonic() + 180
        while True:
            runs = instance.get_runs()
            if runs and runs[0].status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE):
                break
            assert time.monotonic() < deadline, "the run launched from the UI did not finish"
            time.sleep(1)
        (run,) = runs
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert instance.get_latest_materialization_event(dg.AssetKey("replication_status")) is not None
    # The UI itself shows the run as a success.
    _open(page, f"{url}/runs/{run.run_id}")
    page.get_by_text("Success").first.wait_for()
    _open(page, f"{url}/assets/replication_status")
    page.get_by_text("Latest materialization").first.wait_for()
    _shot(page, shots, "ui-materialized-from-the-ui.png")
