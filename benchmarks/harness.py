"""Shared benchmark plumbing: run a phase in a child process, sample its memory."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent


def sample_tree_rss(pid: int, done: threading.Event, samples: list[tuple[float, int]]) -> None:
    """Append (time.time(), RSS of the process and its descendants) every 50 ms until `done`."""
    root = psutil.Process(pid)
    while not done.is_set():
        try:
            tree = [root, *root.children(recursive=True)]
            samples.append((time.time(), sum(p.memory_info().rss for p in tree if p.is_running())))
        except psutil.Error:
            pass
        time.sleep(0.05)


def measure_child(script: str, args: list[str], python: str | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of `python script args`, its whole process tree."""
    started = time.perf_counter()
    proc = subprocess.Popen([python or sys.executable, script, *args], cwd=REPO_ROOT)
    samples: list[tuple[float, int]] = []
    done = threading.Event()
    sampler = threading.Thread(target=sample_tree_rss, args=(proc.pid, done, samples), daemon=True)
    sampler.start()
    code = proc.wait()
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    peak = max((rss for _, rss in samples), default=0)
    if code != 0:
        raise SystemExit(f"benchmark phase {args[:2]} failed with exit code {code}")
    return elapsed, peak / 2**20
