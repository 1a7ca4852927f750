"""Disaster recovery of a region: replicas per asset class, health probes, failover, failback.

Replicas (meridian.replication) of active region R live in its DR region D (same
residency zone, enforced when the topology loads and again before every transfer):

    <D root>/replicas/<R>/<class>/          one replica per asset class (regions.yaml)
    <D root>/failover/<R>/                  R's root while R is failed over to D

    state.py             the control plane's failover state; where a region's data lives now
    replicas.py          replication of each class to the DR region, replica lag
    registry_replica.py  the registry replica, read like MLflow's while failed over
    provisioning.py      a region's storage identity: only provisioning creates a root
    probes.py            health probes of a site
    failover.py          failover, and failback with reconciliation

Callers use the package (`from meridian import dr; dr.active_paths(...)`): the names
below are its interface.
"""

from meridian.dr.failover import FailoverReport, fail_back, fail_over
from meridian.dr.probes import Probe, probe, probe_all
from meridian.dr.provisioning import (
    RegionStorageUnavailable,
    ensure_provisioned,
    provision,
    site_down,
    storage_problem,
)
from meridian.dr.registry_replica import ReplicaRegistryClient, load_replica_booster
from meridian.dr.replicas import (
    ClassReplication,
    class_sources,
    publish_deployment,
    read_replica_staleness,
    replicate_class,
    replication_lag,
    sync_model_registry,
    sync_write_deployment,
)
from meridian.dr.state import (
    HEARTBEAT,
    STAGING,
    FailoverError,
    active_paths,
    failover_root,
    is_failed_over,
    load_state,
    primary_paths,
    replica,
    save_state,
    state_path,
)

__all__ = [
    "HEARTBEAT",
    "STAGING",
    "ClassReplication",
    "FailoverError",
    "FailoverReport",
    "Probe",
    "RegionStorageUnavailable",
    "ReplicaRegistryClient",
    "active_paths",
    "class_sources",
    "ensure_provisioned",
    "fail_back",
    "fail_over",
    "failover_root",
    "is_failed_over",
    "load_replica_booster",
    "load_state",
    "primary_paths",
    "probe",
    "probe_all",
    "provision",
    "publish_deployment",
    "read_replica_staleness",
    "replica",
    "replicate_class",
    "replication_lag",
    "save_state",
    "site_down",
    "state_path",
    "storage_problem",
    "sync_model_registry",
    "sync_write_deployment",
]
