"""Shared benchmark plumbing: run a phase in a child process, sample its memory."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent


def measure_child(script: str, args: list[str], python: str | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of `python script args`, its whole process tree."""
    started = time.perf_counter()
    proc = subprocess.Popen([python or sys.executable, script, *args], cwd=REPO_ROOT)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = proc.wait()
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    if code != 0:
        raise SystemExit(f"benchmark phase {args[:2]} failed with exit code {code}")
    return elapsed, peak / 2**20
