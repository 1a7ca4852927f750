"""When a region is down, per outage: the one rule behind the health loop and the health sensor.

`HealthTracker.observe` turns one probe of a region (and a count of its failed runs) into a
verdict. It keeps, per region:

- consecutive failed probes (`streak`): a failover is due after `probe_failures`;
- the outage in progress, named by when its first failed probe was seen: the failover's run
  key, so one outage is failed over once and a second outage in the same hour is failed
  over too (a key per clock hour would make the daemon drop it);
- when the region last recovered (its failback, or its first clean probe after a failed
  one): runs that failed before then failed because the region was down, and stop counting;
- the regions ever seen up: a region never provisioned or still being built is not "down".

The loop (`meridian health-loop`, probing every second: the RTO's cadence) keeps its
tracker in `$MERIDIAN_HOME/platform/health_loop.json` with a heartbeat; the sensor (the fallback
when no loop runs; the daemon ticks it every 5 s at best) keeps its own in its cursor and
stands aside while the loop's heartbeat is fresh, so one outage is failed over by one of them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from meridian.dr.state import load_state
from meridian.lake import write_bytes_atomic
from meridian.topology import Failover


@dataclass(frozen=True)
class Verdict:
    region: str
    problems: list[str]
    streak: int
    outage_id: str | None  # set while the region is in an outage
    due: bool  # a failover is due (the streak reached probe_failures)

    @property
    def reason(self) -> str:
        return f"{self.streak} failed probes: " + "; ".join(self.problems)


class HealthTracker:
    def __init__(self, policy: Failover, memory: dict | None = None):
        memory = memory or {}
        self.policy = policy
        self.streak: dict[str, int] = dict(memory.get("streak", {}))
        self.seen_up: set[str] = set(memory.get("seen_up", []))
        self.outage: dict[str, float] = dict(memory.get("outage", {}))
        self.recovered: dict[str, float] = dict(memory.get("recovered_at", {}))
        self.probe_down: set[str] = set(memory.get("probe_down", []))

    def to_json(self) -> dict:
        return {
            "streak": self.streak,
            "seen_up": sorted(self.seen_up),
            "outage": self.outage,
            "recovered_at": self.recovered,
            "probe_down": sorted(self.probe_down),
        }

    def failed_over(self, region: str) -> None:
        """The region is served by its DR site: nothing to probe until it fails back."""
        self.streak[region] = 0

    def recovered_at(self, home: Path, region: str) -> float:
        entry = load_state(home).get(region, {})
        failback = entry.get("since_ts", 0.0) if entry.get("previous_failover") else 0.0
        return max(failback, self.recovered.get(region, 0.0))

    def observe(
        self,
        home: Path,
        region: str,
        probe_problems: list[str],
        failed_runs_since: Callable[[float], int],
        now: float | None = None,
    ) -> Verdict:
        now = time.time() if now is None else now
        problems = list(probe_problems)
        if problems:
            self.probe_down.add(region)
        elif region in self.probe_down:
            # The site is back: its outage is over, and the runs it failed stop counting.
            self.probe_down.discard(region)
            self.outage.pop(region, None)
            self.recovered[region] = now
        window_start = now - self.policy.failed_runs_window_minutes * 60
        failed = failed_runs_since(max(window_start, self.recovered_at(home, region)))
        if failed >= self.policy.failed_runs:
            problems.append(f"{failed} failed runs in {self.policy.failed_runs_window_minutes:.0f} min")
        if not problems:
            self.seen_up.add(region)
            self.outage.pop(region, None)
        if region not in self.seen_up:
            return Verdict(region, problems, 0, None, False)
        self.streak[region] = self.streak.get(region, 0) + 1 if problems else 0
        if not problems:
            return Verdict(region, [], 0, None, False)
        started = self.outage.setdefault(region, now)
        return Verdict(
            region,
            problems,
            self.streak[region],
            f"{region}:{started:.3f}",
            self.streak[region] >= self.policy.probe_failures,
        )


def failover_lock(home: Path, region: str):
    """Held around a failover of `region` (the loop's, the sensor's run, an operator's):
    whoever comes second finds the region failed over and stops."""
    from meridian.locks import file_lock

    return file_lock(home / "platform" / "locks" / f"failover-{region}.lock", timeout_s=120)


def state_path(home: Path) -> Path:
    return home / "platform" / "health_loop.json"


def load(home: Path) -> dict:
    try:
        return orjson.loads(state_path(home).read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return {}


def save(home: Path, tracker: HealthTracker, *, loop_interval: float | None = None) -> None:
    doc = {"tracker": tracker.to_json(), "at": time.time()}
    if loop_interval is not None:
        doc["loop"] = {"pid": os.getpid(), "interval_seconds": loop_interval}
    write_bytes_atomic(orjson.dumps(doc), state_path(home))


def loop_alive(home: Path, now: float | None = None) -> dict | None:
    """The health loop's record when it probed within three of its intervals, else None."""
    doc = load(home)
    loop = doc.get("loop")
    now = time.time() if now is None else now
    if loop and now - doc.get("at", 0.0) <= max(3 * loop["interval_seconds"], 3.0):
        return loop
    return None
