"""One region's service at one site: its store, models, deployment config, stream log and push queue."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from meridian import deployment
from meridian.feature_store import feature_history_path, read_complete_from
from meridian.online_store import OnlineRow, serve, to_micros
from meridian.push import PushQueue, fold
from meridian.stream_log import StreamLogWriter
from meridian.topology import Region
from serving.models import ModelHolder
from serving.schemas import VIEWS, Transaction
from serving.store import ServedStore


class ScoringRefused(Exception):
    """A request the region will not score, with the HTTP status that says why (404, 422, 503)."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


class RegionService:
    def __init__(
        self,
        region: Region,
        store: ServedStore,
        models: ModelHolder,
        rates: dict[str, float],
        region_root,
        stream: StreamLogWriter | None,
        push: PushQueue | None,
        site: str | None = None,
    ):
        self.region = region
        self.site = site or region.name
        self.down: str | None = None  # why the region's own storage is unusable, while it is
        self.store = store
        self.models = models
        self.rates = rates
        self.zone = ZoneInfo(region.timezone)
        self.region_root = region_root
        self.stream = stream
        self.push = push
        self.deployment = deployment.load(region_root, region.name)
        self._deployment_stamp = self._config_stamp()
        self.complete_from_us: int | None = None  # first event time whose feature windows are full
        self._history_stamp: tuple[int, int] | None = None
        self.refresh_history()

    def refresh_history(self) -> bool:
        """Re-read when the region's feature windows are complete (written by `online_features`)."""
        try:
            stat = feature_history_path(self.region_root).stat()
            stamp = (stat.st_ino, stat.st_mtime_ns)
        except FileNotFoundError:
            stamp = None
        if stamp == self._history_stamp:
            return False
        warm_from = read_complete_from(self.region_root)
        self.complete_from_us = to_micros(warm_from.replace(tzinfo=UTC)) if warm_from else None
        self._history_stamp = stamp
        return True

    def unavailable(self) -> str | None:
        """Why the region cannot answer now (its storage is gone, its store is lost), else None."""
        return self.down or self.store.error

    def features_complete(self, at_us: int) -> bool:
        """The transaction's feature windows are covered by history (unknown history: no)."""
        return self.complete_from_us is not None and at_us >= self.complete_from_us

    def _config_stamp(self) -> tuple[int, int] | None:
        """(inode, mtime): every atomic rewrite is a new inode, even within one clock tick."""
        try:
            stat = deployment.config_path(self.region_root).stat()
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_mtime_ns

    def refresh_deployment(self) -> bool:
        """Re-read the deployment config when its file changed (written atomically by the asset)."""
        stamp = self._config_stamp()
        if stamp == self._deployment_stamp:
            return False
        self.deployment = deployment.load(self.region_root, self.region.name)
        self._deployment_stamp = stamp
        return True

    def request_features(self, txn: Transaction, at: datetime) -> dict[str, float]:
        """TRANSACTION_FEATURES, computed as meridian.modeling.transaction_entities_sql does (tested)."""
        if txn.currency not in self.rates:
            raise ScoringRefused(422, f"currency: unknown currency {txn.currency!r}")
        return {
            "amount_usd": round(txn.amount / self.rates[txn.currency], 4),
            "is_ecom": float(txn.channel == "ecom"),
            "is_contactless": float(txn.channel == "contactless"),
            "is_foreign": float(txn.country not in self.region.countries),
            "local_hour": float(at.astimezone(self.zone).hour),
        }

    def customer_row(self, customer_id: str) -> OnlineRow | None:
        """The customer's latest row: a push not yet written, else the store's."""
        view = VIEWS["customer_spend"].name
        return self._latest(view, customer_id, self.store.read(view, customer_id))

    def _latest(self, view: str, customer_id: str, stored: OnlineRow | None) -> OnlineRow | None:
        pending = self.push.latest(view, customer_id) if self.push else None
        if pending is None or (stored is not None and stored.event_time_us > pending.event_time_us):
            return stored
        return pending

    def view_features(
        self, txn: Transaction, amount_usd: float, at_us: int
    ) -> tuple[dict[str, object], dict[str, str], OnlineRow | None]:
        """Every view's features for this transaction, and the folded customer row to push.

        The customer's row is folded with this transaction (meridian.push.fold), as the
        offline row of a transaction includes it. A transaction older than the stored row
        (out of order) is scored on the stored row and pushes nothing.
        """
        spend_view, risk_view = VIEWS["customer_spend"], VIEWS["merchant_risk"]
        # The customer's and the merchant's rows in one read (one round trip to Redis).
        stored, risk_row = self.store.read_keys(
            [(spend_view.name, txn.customer_id), (risk_view.name, txn.merchant_id)]
        )
        base = self._latest(spend_view.name, txn.customer_id, stored)
        if base is None:
            raise ScoringRefused(404, f"customer {txn.customer_id!r} is unknown in {self.region.name}")
        folded = None
        if base.event_time_us <= at_us:
            folded = fold(
                base,
                spend_view.name,
                spend_view.version,
                txn.customer_id,
                at_us,
                amount_usd,
                txn.merchant_id,
                txn.device_id,
            )
            spend = serve(spend_view, folded, at_us)
        else:
            spend = serve(spend_view, base, base.event_time_us)
        values: dict[str, object] = {spend_view.column(n): v for n, v in spend.items()}
        for name, value in serve(risk_view, risk_row, at_us).items():
            values[risk_view.column(name)] = value
        # A merchant the store has not seen is served the view's defaults, of the current version.
        versions = {
            spend_view.name: folded.version if folded else base.version,
            risk_view.name: risk_row.version if risk_row else risk_view.version,
        }
        return values, versions, folded
