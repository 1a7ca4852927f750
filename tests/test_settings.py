"""One settings object: the definitions, the service, the CLI and the partitions read the same environment."""

from __future__ import annotations

import pytest

from meridian.settings import SettingsError, settings

PRODUCTION = {
    "MERIDIAN_PROFILE": "production",
    "MERIDIAN_MLFLOW_TRACKING_URI": "http://127.0.0.1:5999",
    "MERIDIAN_REDIS_URL": "redis://127.0.0.1:6999/0",
    "DAGSTER_PG_URL": "postgresql+psycopg2://dagster@127.0.0.1:5999/dagster",
}


def test_the_service_reads_the_online_store_the_production_definitions_write(monkeypatch):
    """Regression: `meridian serve` read MERIDIAN_ONLINE_STORE (default SQLite) while the
    production definitions forced Redis, so in production it answered 404 from an empty store."""
    from assets.definitions_file import load_definitions_module
    from serving.main import online_store_resource

    for name, value in {**PRODUCTION, "MERIDIAN_ONLINE_STORE": "sqlite"}.items():
        monkeypatch.setenv(name, value)
    config = settings()
    served = online_store_resource(config)
    written = load_definitions_module().build_resources("production")["online_store"]
    assert served.backend == written.backend == "redis"
    assert served.redis_url == written.redis_url == PRODUCTION["MERIDIAN_REDIS_URL"]


def test_the_local_profile_honours_the_chosen_store_and_the_data_root(monkeypatch, tmp_path):
    monkeypatch.delenv("MERIDIAN_PROFILE", raising=False)
    monkeypatch.setenv("MERIDIAN_ONLINE_STORE", "redis")
    monkeypatch.setenv("MERIDIAN_HOME", str(tmp_path))
    config = settings()
    assert config.profile == "local" and config.online_store == "redis" and config.home == tmp_path.resolve()
    from meridian.paths import meridian_home

    assert meridian_home() == tmp_path.resolve()


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MERIDIAN_PROFILE": "staging"}, "MERIDIAN_PROFILE='staging' is not a known profile"),
        ({"MERIDIAN_ONLINE_STORE": "memcached"}, "MERIDIAN_ONLINE_STORE='memcached'"),
    ],
)
def test_a_setting_with_no_meaning_is_refused_by_name(environ, message):
    with pytest.raises(SettingsError, match=message):
        settings(environ)


@pytest.mark.parametrize("root", ["/data/run #1", "/data/run?1"])
def test_a_data_root_dbt_duckdb_would_read_as_a_url_is_refused_and_a_space_is_not(root, tmp_path):
    """A '#' in MERIDIAN_HOME made every region's dbt build fail with 'Catalog Error: "ünï" is not
    a catalog or schema' (dbt-duckdb names the database after the path read as a URL)."""
    with pytest.raises(
        SettingsError, match=r"\(MERIDIAN_HOME\) holds '[#?]', which dbt-duckdb reads as part of a URL"
    ):
        settings({"MERIDIAN_HOME": root})
    assert settings({"MERIDIAN_HOME": str(tmp_path / "cli home ü")}).home.name == "cli home ü"


def test_production_names_every_missing_setting():
    with pytest.raises(
        SettingsError, match=r"needs: MERIDIAN_MLFLOW_TRACKING_URI .*MERIDIAN_REDIS_URL .*DAGSTER_PG_URL"
    ):
        settings({"MERIDIAN_PROFILE": "production"}).require_production_settings()
    settings(PRODUCTION).require_production_settings()  # complete: no error


def test_nothing_but_the_settings_module_reads_meridians_environment():
    """The one place: no other module of the platform reads a MERIDIAN_* variable itself."""
    import re

    from meridian.paths import REPO_ROOT

    allowed = {"meridian/settings.py", "meridian/faults.py", "meridian/governance.py"}
    offenders = []
    for folder in ("meridian", "assets", "resources", "serving", "platform"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            relative = str(path.relative_to(REPO_ROOT))
            if relative in allowed:
                continue
            text = path.read_text()
            reads = r"os\.environ\.get\(\s*[\"'](MERIDIAN_|DAGSTER_PG)|os\.environ\[[\"'](MERIDIAN_|DAGSTER_PG)\w*[\"']\](?!\s*=)"
            if re.search(reads, text):
                offenders.append(relative)
    assert not offenders, offenders
