"""dbt's command line without its start-up cost, for the tests: `python -m tests.dbt_fork_server`.

A `dbt build` of the tests' small lakes spends about half of its CPU before it reads a file
of the project: importing dbt-core, dbt-duckdb and the lake plugin (py-spy: about 2 s of
6-7 s here), and building the JSON schemas it validates the project's and profile's
configuration with (0.9 s, `dbtClassMixin.json_schema`, cached per class once built). This
server does both once. It then answers each request by forking a child that runs the `dbt`
console script's own entry point (`dbt.cli.main.cli`) with the request's arguments,
environment, working directory and standard streams. Every invocation is still a fresh
process to dbt: its flags, adapters and DuckDB handles live and die with the child, as they
would with `dbt` on the command line. The server is single-threaded, so forking it is safe.

`start(folder)` starts it, listening on the Unix socket `folder/socket`, and writes the
`dbt` launcher `folder/dbt` at once: a command that takes `dbt`'s arguments, hands them to
the server with its environment, working directory and standard streams (passed as file
descriptors), and exits with the child's exit status; SIGINT and SIGTERM it receives are
passed on to the child (dagster-dbt interrupts a cancelled invocation with SIGINT). A
launcher started before the server listens waits for it. `MERIDIAN_DBT_EXECUTABLE`
(meridian.settings) pointed at the launcher makes the resources run dbt through it. The
server exits when its standard input closes (the process that started it ended).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

from meridian.paths import REPO_ROOT

# The classes a `dbt build` of this project validates against their JSON schema (logged from
# one build): each schema is built on first use and cached on the class, so a child forked
# after this finds them built. A class a later dbt no longer has is skipped: this only
# warms a cache.
VALIDATED = (
    "dbt.contracts.graph.nodes.ModelNode",
    "dbt.contracts.graph.nodes.SeedNode",
    "dbt.contracts.graph.nodes.GenericTestNode",
    "dbt.contracts.graph.nodes.SingularTestNode",
    "dbt.contracts.graph.unparsed.UnparsedSourceDefinition",
    "dbt.contracts.graph.unparsed.UnparsedModelUpdate",
    "dbt.contracts.graph.unparsed.UnparsedNodeUpdate",
    "dbt.contracts.project.Project",
    "dbt.contracts.project.Configuration",
    "dbt.contracts.project.ProjectFlags",
    "dbt.contracts.project.PackageConfig",
    "dbt.contracts.project.ProfileConfig",
    "dbt.contracts.selection.SelectorFile",
    "dbt.adapters.duckdb.credentials.DuckDBCredentials",
    "dbt.artifacts.resources.v1.model.ModelConfig",
    "dbt.artifacts.resources.v1.seed.SeedConfig",
    "dbt.artifacts.resources.v1.config.TestConfig",
    "dbt.artifacts.resources.v1.source_definition.SourceConfig",
    "dbt.artifacts.resources.v1.components.Contract",
    "dbt.task.test.TestResultData",
)

LAUNCHER = """
import json, os, signal, socket, struct, sys, time

def main():
    request = json.dumps({"args": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}).encode()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + 120
    while True:  # the server may still be importing dbt
        try:
            server.connect(SOCKET)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                sys.exit(f"dbt (tests.dbt_fork_server): no server listens on {SOCKET}")
            time.sleep(0.05)
    socket.send_fds(server, [struct.pack("!I", len(request))], [0, 1, 2])
    server.sendall(request)
    answers = server.makefile("r")
    pid = int(answers.readline() or 0)
    if pid:
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, lambda n, _: os.kill(pid, n))
    status = answers.readline().strip()
    if not status:
        print("dbt (tests.dbt_fork_server): the dbt process ended without an exit status", file=sys.stderr)
    sys.exit(int(status) if status else 1)

main()
"""


def start(folder: Path) -> tuple[subprocess.Popen, Path]:
    """The server (`python -m tests.dbt_fork_server folder`) and its launcher, written now."""
    folder.mkdir(parents=True, exist_ok=True)
    launcher = folder / "dbt"
    launcher.write_text(f"#!{sys.executable} -IS\nSOCKET = {str(folder / 'socket')!r}\n{LAUNCHER}")
    launcher.chmod(0o755)
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.dbt_fork_server", str(folder)],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
    )
    return server, launcher


def warm_schemas() -> None:
    for name in VALIDATED:
        module, _, cls = name.rpartition(".")
        with contextlib.suppress(ImportError, AttributeError):
            getattr(importlib.import_module(module), cls).json_schema()


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    header, fds, _, _ = socket.recv_fds(conn, 4, 3)
    (size,) = struct.unpack("!I", header)
    body = b""
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise ConnectionError("the launcher hung up mid-request")
        body += chunk
    return json.loads(body), fds


def _serve(cli, conn: socket.socket, request: dict, fds: list[int]) -> None:
    """Runs in a forked child of the server and never returns: it forks the dbt process, tells
    the launcher its pid, waits for it to end and answers its exit status. The status is sent
    only once that process is gone, as a shell's `$?` is: whatever it held (the warehouse's
    DuckDB lock) is released when the launcher returns."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # waited for here, not reaped by the kernel
    pid = os.fork()
    if pid == 0:
        conn.close()
        _dbt(cli, request, fds)
    for fd in fds:
        os.close(fd)
    code = 1
    with contextlib.suppress(OSError):
        conn.sendall(f"{pid}\n".encode())
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        conn.sendall(f"{code if code >= 0 else 128 - code}\n".encode())
    os._exit(0)  # a copy of the server: nothing of its own to finalize


def _dbt(cli, request: dict, fds: list[int]) -> None:
    """The dbt process: never returns, it exits as `dbt` does, finalizers and all."""
    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["dbt", *request["args"]]
        try:
            cli.main(args=request["args"], prog_name="dbt")  # exits, as the script does
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except Exception as error:
        print(f"dbt fork server: {error!r}", file=sys.stderr)
    sys.exit(code)


def main(folder: Path) -> None:
    # What every invocation would import first: dbt's CLI and core, the DuckDB adapter, and
    # the lake plugin the profile names (with its Delta and Arrow dependencies).
    import dbt.adapters.duckdb
    import dbt.adapters.duckdb.plugins  # noqa: F401
    from dbt.cli.main import cli

    import meridian.dbt_lake  # noqa: F401

    warm_schemas()
    path = folder / "socket"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # each child is reaped when it exits
    server = os.getpid()  # a child leaves through this function's `finally` too, as it exits
    events = selectors.DefaultSelector()
    events.register(listener, selectors.EVENT_READ)
    events.register(sys.stdin, selectors.EVENT_READ)
    try:
        while True:
            for key, _ in events.select():
                if key.fileobj is sys.stdin:
                    if not sys.stdin.readline():
                        return  # the test process ended
                    continue
                conn, _ = listener.accept()
                with conn:
                    try:
                        request, fds = _receive(conn)
                    except (OSError, ValueError) as error:
                        print(f"dbt fork server: a bad request: {error!r}", file=sys.stderr)
                        continue
                    if os.fork() == 0:
                        listener.close()
                        _serve(cli, conn, request, fds)
                    for fd in fds:
                        os.close(fd)
    finally:
        listener.close()
        if os.getpid() == server:
            with contextlib.suppress(OSError):
                path.unlink()
                (folder / "dbt").unlink()
                folder.rmdir()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
