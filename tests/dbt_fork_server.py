"""dbt's command line without its start-up cost, for the tests: `python -m tests.dbt_fork_server`.

A `dbt build` of the tests' small lakes spends about a third of its CPU importing dbt-core,
dbt-duckdb and the lake plugin before it reads a file (py-spy: 2.1 s of 6-7 s here). This server
imports them once and answers each request by forking a child that runs the `dbt` console
script's own entry point (`dbt.cli.main.cli`) with the request's arguments, environment and
working directory, its output written to the request's file. Every invocation is still a fresh
process to dbt: its flags, adapters and DuckDB handles live and die with the child, as they
would with `dbt` on the command line. The server is single-threaded, so forking it is safe.

Protocol: one JSON object per line on stdin, `{"args": [...], "env": {...}, "cwd": "...",
"out": "path"}`; the answer is one line on stdout, `{"returncode": N}`. The server exits
when its stdin closes (the test process ended).
"""

from __future__ import annotations

import json
import os
import sys

# What every invocation would import first: dbt's CLI and core, the DuckDB adapter, and the
# lake plugin the profile names (with its Delta and Arrow dependencies).
import dbt.adapters.duckdb
import dbt.adapters.duckdb.plugins
import dbt.cli.main

import meridian.dbt_lake  # noqa: F401


def _child(request: dict) -> None:
    """Runs in the forked child and never returns: it exits as `dbt` does, finalizers and all."""
    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        out = os.open(request["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        sys.argv = ["dbt", *request["args"]]
        try:
            dbt.cli.main.cli.main(args=request["args"], prog_name="dbt")  # exits, as the script does
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except Exception as error:
        print(f"dbt fork server: {error!r}", file=sys.stderr)
    sys.exit(code)


def main() -> None:
    answers = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        _, status = os.waitpid(pid, 0)
        answers.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")
        answers.flush()


if __name__ == "__main__":
    main()
