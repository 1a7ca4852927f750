"""Meridian: plain, Dagster-free logic of the multi-region fraud platform."""
