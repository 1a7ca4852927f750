"""The `meridian` command: runs, failover, rollback and the scoring service, on top of the assets."""
