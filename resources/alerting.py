"""One alerting resource for every region: severities, deduplication, sinks.

An alert is (severity, region, source, key, message, details). Sinks:
- a JSON-lines file, `$MERIDIAN_HOME/alerts/alerts.jsonl` by default, always written;
- a webhook (production: `MERIDIAN_ALERT_WEBHOOK_URL`), POSTed the same JSON; a webhook
  that fails is logged and recorded in the file entry (`webhook_error`), never raised:
  an alerting outage must not fail the pipeline that noticed the problem.
Deduplication: an alert with the same (key, severity) as one sent less than
`dedup_minutes` ago is not sent again (counted in the state file); a worse severity for
the same key is always sent. State lives beside the file, updated under a file lock, so
concurrent runs do not double-send.
"""

from __future__ import annotations

import json
import os
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field

from meridian.lake import write_bytes_atomic
from meridian.locks import file_lock
from meridian.paths import meridian_home

Severity = Literal["INFO", "WARN", "ERROR"]
SEVERITY_RANK = {"INFO": 0, "WARN": 1, "ERROR": 2}


class AlertingResource(dg.ConfigurableResource):
    path: str | None = Field(
        default=None, description="JSON-lines sink (default $MERIDIAN_HOME/alerts/alerts.jsonl)"
    )
    webhook_url: str | None = Field(default=None, description="POST every alert here too (production)")
    dedup_minutes: int = Field(default=60, description="same key and severity within this window: sent once")

    def sink(self) -> Path:
        return Path(self.path) if self.path else meridian_home() / "alerts" / "alerts.jsonl"

    def send(
        self,
        severity: Severity,
        region: str,
        source: str,
        key: str,
        message: str,
        details: dict[str, object] | None = None,
        now: datetime | None = None,
    ) -> bool:
        """Record and deliver one alert; False when it was a duplicate inside the window."""
        now = now or datetime.now(UTC)
        sink = self.sink()
        sink.parent.mkdir(parents=True, exist_ok=True)
        state_path = sink.with_suffix(".state.json")
        with file_lock(sink.with_suffix(".lock")):
            state = json.loads(state_path.read_text()) if state_path.exists() else {}
            seen = state.get(f"{key}|{severity}")
            if seen and now - datetime.fromisoformat(seen["at"]) < timedelta(minutes=self.dedup_minutes):
                seen["suppressed"] = seen.get("suppressed", 0) + 1
                write_bytes_atomic(json.dumps(state, indent=1).encode(), state_path)
                return False
            entry = {
                "at": now.isoformat(),
                "severity": severity,
                "region": region,
                "source": source,
                "key": key,
                "message": message,
                "details": details or {},
            }
            if self.webhook_url:
                entry["webhook_error"] = _post(self.webhook_url, entry)
            with open(sink, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry, default=str) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            state[f"{key}|{severity}"] = {"at": now.isoformat(), "suppressed": 0}
            write_bytes_atomic(json.dumps(state, indent=1).encode(), state_path)
        return True

    def read(self) -> list[dict]:
        sink = self.sink()
        if not sink.exists():
            return []
        return [json.loads(line) for line in sink.read_text().splitlines() if line.strip()]


def _post(url: str, entry: dict) -> str | None:
    request = urllib.request.Request(
        url, json.dumps(entry, default=str).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return None if 200 <= response.status < 300 else f"HTTP {response.status}"
    except OSError as error:
        return f"{type(error).__name__}: {error}"
