"""Which site answers for each served region, kept current by one background poller.

A region is served from its own site, or from its DR region's after a failover
(meridian.dr's control-plane state). The poller follows that state: when a region moves,
its service is rebuilt on the new site — the read replica of its online store, the
registry replica's models (loaded from the replica's files, not from MLflow), the
replicated deployment config, a stream log there — and swapped in as one reference, so
requests in flight finish where they started. It also re-checks every store, model alias,
feature history and deployment config each interval; a failure of one never stops it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from meridian import dr
from meridian.push import PushQueue
from meridian.stream_log import StreamLogWriter, stream_dir
from meridian.topology import Region, Topology
from serving.models import ModelHolder
from serving.region_service import RegionService
from serving.store import ServedStore

log = logging.getLogger("meridian.serving")


class RegionSites:
    """The live RegionService of every served region, and the poller that keeps them current."""

    def __init__(
        self,
        topology: Topology,
        home: Path,
        served: list[str],
        open_store: Callable,
        mlflow_client,
        load_model: Callable,
        rates: dict[str, float],
        stream_log: bool = True,
        push: bool = True,
    ):
        self.topology, self.home = topology, home
        self._open_store, self._client, self._load_model = open_store, mlflow_client, load_model
        self._rates, self._stream_log, self._push = rates, stream_log, push
        self.services: dict[str, RegionService] = {name: self.build(topology.region(name)) for name in served}
        self._stamp = self._failover_stamp()
        self.stop = threading.Event()

    def build(self, region: Region) -> RegionService:
        """The region's service on the site the control plane says serves it now."""
        paths = dr.active_paths(self.topology, self.home, region.name)
        if paths.host == region.name:
            holder = ModelHolder(region.name, self._client, self._load_model)
        else:  # failed over: models from the registry replica at the DR site
            holder = ModelHolder(
                region.name,
                dr.ReplicaRegistryClient(paths.root),
                lambda _region, version, root=paths.root: dr.load_replica_booster(root, version),
            )
        try:
            holder.refresh()
        except Exception as error:  # not ready until a model loads; /readyz says why
            holder.last_error = f"{type(error).__name__}: {error}"
        store = ServedStore(lambda: self._open_store(paths))
        return RegionService(
            region,
            store,
            holder,
            self._rates,
            paths.root,
            StreamLogWriter(stream_dir(paths.root)) if self._stream_log else None,
            PushQueue(store) if self._push else None,
            site=paths.host,
        )

    @staticmethod
    def retire(service: RegionService) -> None:
        """Drain a replaced service's pushes and stream log."""
        if service.push:
            service.push.close()
        if service.stream:
            service.stream.close()

    def _failover_stamp(self) -> tuple[int, int] | None:
        try:
            stat = dr.state_path(self.home).stat()
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_mtime_ns

    def follow_failover(self) -> None:
        """Swap a region's service when the control plane moved it to another site."""
        current = self._failover_stamp()
        for name, service in list(self.services.items()):
            if current != self._stamp:
                site = dr.active_paths(self.topology, self.home, name).host
                if site != service.site:
                    self.services[name] = self.build(
                        service.region
                    )  # one reference: requests in flight keep the old one
                    log.warning("%s is now served from %s", name, site)
                    threading.Thread(target=self.retire, args=(service,), daemon=True).start()
                    continue
            # The region's own site lost its storage: stop answering from what is left open.
            service.down = (
                None
                if service.region_root.is_dir()
                else f"storage of {service.site} at {service.region_root} is unreachable; failover pending"
            )
        self._stamp = current

    def refresh(self) -> None:
        """One poll: failover state, then every region's store, models, history and deployment."""
        try:
            self.follow_failover()
        except Exception as error:  # keep serving where we are
            log.error("failover state unreadable: %s", error)
        for service in self.services.values():
            try:
                service.store.check()  # a lost, corrupt or returned store within one interval
            except Exception as error:  # never let the poller die
                log.error("online store check of %s failed: %s", service.region.name, error)
            try:
                service.models.refresh()
                service.models.last_error = None
            except Exception as error:  # keep serving the models we have
                service.models.last_error = f"{type(error).__name__}: {error}"
            try:
                service.refresh_history()
            except Exception as error:  # keep what we knew
                log.error("feature history of %s unreadable: %s", service.region.name, error)
            try:
                service.refresh_deployment()
            except Exception as error:  # keep the config we have
                log.error(
                    "deployment config of %s unreadable, keeping the last one: %s", service.region.name, error
                )

    def start_polling(self, poll_seconds: float) -> None:
        def poll() -> None:
            while not self.stop.wait(poll_seconds):
                self.refresh()

        threading.Thread(target=poll, name="alias-poller", daemon=True).start()

    def shutdown(self) -> None:
        self.stop.set()
        for service in self.services.values():
            self.retire(service)
