"""`meridian`: run the main job on the embedded default and print what it did.

    meridian run [--days 21] [--regions us-east,eu-west] [--rows-per-day 5000] [--trials 15]
    meridian rollback --region eu-west [--to-version 3]

For each active region, `run` launches three Dagster runs on the persistent instance
under $MERIDIAN_HOME/dagster: the pipeline over the whole window (one single-run
backfill), `ml_training` for the region (training set, tuning, model, promotion), and
`batch_inference` over the last days. The UI shows every run and materialization
afterwards. A region's failure is reported and does not stop the other regions.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from types import ModuleType

from assets.definitions_file import load_definitions_module
from cli.arguments import day, integer, names, number, window
from cli.runs import LAUNCHED_BY, RunPlan, exit_quickly, prepare_environment, quiet_libraries, run_all
from cli.summary import summarize
from meridian.global_store import GlobalStore
from meridian.paths import REPO_ROOT
from meridian.payment_world import MAX_ROWS_PER_DAY
from meridian.reference_data import HISTORY_START
from meridian.run_tags import REGION_TAG
from meridian.run_window import DEFAULT_DAYS, LABEL_MATURITY_DAYS, MIN_TRAINING_DAYS
from meridian.settings import SettingsError, settings
from meridian.topology import TopologyError


def cmd_run(args: argparse.Namespace) -> int:
    try:
        days = window(args.start, args.days, HISTORY_START)
    except ValueError as error:
        print(f"meridian: error: {error}", file=sys.stderr)
        return 2
    home = prepare_environment(Path(args.home) if args.home else None)
    from meridian.report import text_table
    from meridian.topology import load_topology

    topology = load_topology(settings().topology_path)
    regions = args.regions or topology.active_region_names
    if not _active_regions_or_error(regions):
        return 2
    train = not args.skip_ml and len(days) >= MIN_TRAINING_DAYS
    source_config = {"rows_per_day": args.rows_per_day, "malformed_rate": args.malformed_rate}
    # Progress comes from the event listener; the console shows errors only (full logs are in the UI).
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    tuning = {"n_trials": args.trials, "timeout_seconds": args.tuning_seconds}
    plan = RunPlan(
        pipeline_config={"resources": {"source": {"config": source_config}}, **quiet},
        training_config={"ops": {"fraud_model_hyperparameters": {"config": tuning}}, **quiet},
        quiet_config=quiet,
        train=train,
        score_days=min(args.score_days, len(days)) if train else 0,
    )
    print(f"Meridian home: {home}")
    print(
        f"Materializing {days[0]}..{days[-1]} ({len(days)} days) for {', '.join(regions)}; "
        f"{args.rows_per_day:,} transactions per region-day, {min(args.parallel, len(regions))} region(s) "
        "at a time\n",
        flush=True,
    )
    if not train and not args.skip_ml:
        print(
            f"Training and scoring skipped: {len(days)} days hold no trainable history (labels mature "
            f"{LABEL_MATURITY_DAYS} days after the transaction and the time split needs 3 matured days, "
            f"so at least {MIN_TRAINING_DAYS} days)\n",
            flush=True,
        )
    outcomes, glob = run_all(regions, days, plan, home / "logs", args.parallel, with_global=plan.train)
    print("\nSummary")
    print(text_table(summarize(outcomes, days, topology)))
    if glob is not None:
        audit = "passed" if glob.captured.get("passed") else "FAILED"
        print(
            f"\nGlobal: residency audit {audit} ({glob.captured.get('files_scanned', '?')} files scanned), "
            f"replication breaches: {glob.captured.get('breaches', '?')}, "
            f"cost report total: ${glob.captured.get('total_usd', '?')} "
            f"(catalog, audit and cost in {GlobalStore.of(topology, home).url('platform')})"
        )
    for o in [*outcomes, *([glob] if glob else [])]:
        if o.error:
            print(f"\n{o.region} failed: {o.error}")
    # Quoted for the shell: a data root may hold a space or a quote, and the lines are copied as they are.
    print(
        "\nBrowse the graph, runs and metadata in the Dagster UI:\n"
        f"  DAGSTER_HOME={shlex.quote(os.environ['DAGSTER_HOME'])} MERIDIAN_HOME={shlex.quote(str(home))} "
        ".venv/bin/dagster dev -w workspace.yaml   # then open http://127.0.0.1:3000"
    )
    if plan.train:
        store = shlex.quote(f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
        print(
            "Experiments and registered models (fraud-<region>, aliases champion/challenger) in the MLflow UI:\n"
            f"  .venv/bin/mlflow ui --backend-store-uri {store}"
            "   # then open http://127.0.0.1:5000"
        )
    exit_quickly()
    return 0 if all(o.success for o in outcomes) and (glob is None or glob.success) else 1


def _active_regions_or_error(regions: list[str]) -> bool:
    """False, with the error printed, when a region of a list is unknown or a standby."""
    from meridian.topology import load_topology

    active = load_topology(settings().topology_path).active_region_names
    unknown = [r for r in regions if r not in active]
    if unknown:
        print(
            f"meridian: error: unknown or standby region(s) {', '.join(map(repr, unknown))}; "
            f"active regions in regions.yaml: {', '.join(active)}",
            file=sys.stderr,
        )
        return False
    return True


def _active_region_or_error(region: str) -> bool:
    from meridian.topology import load_topology

    active = load_topology(settings().topology_path).active_region_names
    if region not in active:
        print(
            f"meridian: error: unknown or standby region {region!r}; active regions: {', '.join(active)}",
            file=sys.stderr,
        )
        return False
    return True


def _launch_op_job(module: ModuleType, job_name: str, op_name: str, config: dict, region: str, what: str):
    """Run a one-op job on the persistent instance (it shows in the UI); the result, or None
    after printing the step's error."""
    from dagster import DagsterInstance

    job = module.defs.resolve_job_def(job_name)
    with DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance,
            run_config={
                "ops": {op_name: {"config": config}},
                "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
            },
            tags={REGION_TAG: region, **LAUNCHED_BY},
            raise_on_error=False,
        )
    if result.success:
        return result
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failures[0].event_specific_data.error.message if failures else "run failed"
    message = message.strip().removeprefix("dagster._core.definitions.events.Failure: ")
    print(f"meridian: {what} failed: {message} (Dagster run {result.run_id})", file=sys.stderr)
    return None


def rpo_summary(report: dict, shown: int = 5) -> str:
    """What a failback found lost, every class counted; the file list cut at `shown`, saying so."""
    files = report["rpo_files"]
    online = report.get("rpo_online_rows")
    text = (
        f"RPO {report['rpo_partitions']} partition(s), {len(files)} file(s), "
        f"{'unmeasured' if online is None else online} online row(s) lost"
    )
    if files:
        text += ": " + ", ".join(files[:shown])
    if len(files) > shown:
        text += f" and {len(files) - shown} more not shown (all in the run's `report` metadata)"
    return text


def cmd_health_loop(args: argparse.Namespace) -> int:
    from cli.health import main as health_main

    argv = ["--interval", str(args.interval)]
    argv += ["--max-seconds", str(args.max_seconds)] if args.max_seconds else []
    argv += ["--home", args.home] if args.home else []
    return health_main(argv)


def cmd_failover(args: argparse.Namespace) -> int:
    """Launch `region_failover` (failover or failback) on the persistent instance."""
    prepare_environment(Path(args.home) if args.home else None)
    if not _active_region_or_error(args.region):
        return 2
    action = "failback" if args.failback else "failover"
    config = {"region": args.region, "action": action, "reason": args.reason}
    result = _launch_op_job(
        load_definitions_module(), "region_failover", "region_failover_op", config, args.region, action
    )
    if result is None:
        return 1
    report = result.output_for_node("region_failover_op")
    detail = (
        f"replica versions {report['replica_versions']}"
        if action == "failover"
        else f"reconciled {report['reconciled']}, {rpo_summary(report)}"
    )
    print(
        f"{args.region}: {action} done in {report['seconds']:.2f}s, served from {report['serving_region']}; {detail}"
    )
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """Launch the `rollback_champion` job on the persistent instance (it shows in the UI)."""
    prepare_environment(Path(args.home) if args.home else None)
    if not _active_region_or_error(args.region):
        return 2
    config = {"region": args.region, **({"to_version": args.to_version} if args.to_version else {})}
    module = load_definitions_module()
    result = _launch_op_job(
        module, "rollback_champion", "rollback_champion_op", config, args.region, "rollback"
    )
    if result is None:
        return 1
    from meridian import registry

    client = module.build_resources(settings().profile)["mlflow_tracking"].client()
    champion = registry.alias_version(client, registry.model_name(args.region), registry.CHAMPION)
    print(
        f"{registry.model_name(args.region)}: champion is now version {champion} (Dagster run {result.run_id})"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The scoring service (serving/) on the embedded default, after `meridian run`."""
    home = prepare_environment(Path(args.home) if args.home else None)
    if args.regions and not _active_regions_or_error(args.regions):
        return 2  # before: a ValueError traceback from the app factory
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    import uvicorn
    from dagster import DagsterInstance

    from cli.health import operations_warnings
    from serving.main import build_app

    with DagsterInstance.get() as instance:
        for warning in operations_warnings(home, instance):
            print(f"meridian serve: warning: {warning}", file=sys.stderr, flush=True)
    regions = args.regions or None
    app = build_app(poll_seconds=args.poll_seconds, regions=regions, scoring_threads=args.scoring_threads)
    print(
        f"Meridian scoring service on http://{args.host}:{args.port} (OpenAPI: /docs, /openapi.json)",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    parser = argparse.ArgumentParser(prog="meridian", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="materialize the regional graph for a window of days")
    run.add_argument("--start", type=day, default=HISTORY_START.isoformat(), help="first day (YYYY-MM-DD)")
    run.add_argument("--days", type=integer(1), default=DEFAULT_DAYS, help="number of days")
    run.add_argument("--regions", type=names, help="comma-separated regions (default: every active region)")
    run.add_argument(
        "--rows-per-day",
        type=integer(1, MAX_ROWS_PER_DAY),
        default=5_000,
        help=f"transactions per region-day (at most {MAX_ROWS_PER_DAY:,})",
    )
    run.add_argument(
        "--malformed-rate",
        type=number(0, 0.5, inclusive_maximum=False),
        default=0.002,
        help="share of malformed rows injected",
    )
    run.add_argument("--home", help="data root (default $MERIDIAN_HOME or .meridian/)")
    run.add_argument(
        "--parallel",
        type=integer(1),
        # One more worker than cores: a region's run waits on the instance's SQLite event writes
        # (fsync per event) about a third of the time, which another region's work fills.
        default=min(3, (os.cpu_count() or 1) + 1),
        help="regions run at once (default: cores + 1, at most 3)",
    )
    run.add_argument("--trials", type=integer(1), default=15, help="hyperparameter trials per region")
    run.add_argument(
        "--tuning-seconds",
        type=number(0, inclusive_minimum=False),
        default=90.0,
        help="time budget of the search per region",
    )
    run.add_argument(
        "--score-days",
        type=integer(0),
        default=12,
        help="last days of the window to score (12: the matured test days, whose performance shows, and after)",
    )
    run.add_argument("--skip-ml", action="store_true", help="ingest and transform only")
    run.set_defaults(func=cmd_run)
    back = sub.add_parser("rollback", help="return a region's champion model to the previous champion")
    back.add_argument("--region", required=True, help="active region whose champion to roll back")
    back.add_argument(
        "--to-version", type=integer(1), help="an earlier champion version (default: the previous one)"
    )
    back.add_argument("--home", help="data root (default $MERIDIAN_HOME or .meridian/)")
    back.set_defaults(func=cmd_rollback)
    fo = sub.add_parser("failover", help="serve a region from its DR region (or --failback)")
    fo.add_argument("--region", required=True, help="active region to fail over")
    fo.add_argument("--failback", action="store_true", help="reconcile and return the region to its own site")
    fo.add_argument("--reason", default="manual failover from the CLI")
    fo.add_argument("--home", help="data root (default $MERIDIAN_HOME or .meridian/)")
    fo.set_defaults(func=cmd_failover)
    hl = sub.add_parser(
        "health-loop",
        help="probe every region each second and fail over when one is down (run beside the daemon)",
    )
    hl.add_argument(
        "--interval",
        type=number(0, inclusive_minimum=False),
        default=1.0,
        help="seconds between probes of every region",
    )
    hl.add_argument(
        "--max-seconds", type=number(0, inclusive_minimum=False), help="stop after this long (drills, tests)"
    )
    hl.add_argument("--home", help="data root (default $MERIDIAN_HOME or .meridian/)")
    hl.set_defaults(func=cmd_health_loop)
    srv = sub.add_parser("serve", help="start the scoring service (after `meridian run`)")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=integer(0, 65535), default=8000)
    srv.add_argument(
        "--regions", type=names, help="comma-separated regions to serve (default: every active region)"
    )
    srv.add_argument(
        "--poll-seconds",
        type=number(0, inclusive_minimum=False),
        default=2.0,
        help="how often model aliases are checked",
    )
    srv.add_argument(
        "--scoring-threads",
        type=integer(0),
        help="threads that score off the event loop (default 0: on the loop, the lower latency; see serving/app.py)",
    )
    srv.add_argument("--home", help="data root (default $MERIDIAN_HOME or .meridian/)")
    srv.set_defaults(func=cmd_serve)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (SettingsError, TopologyError) as error:  # no usable deployment described: say which setting
        print(f"meridian {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
