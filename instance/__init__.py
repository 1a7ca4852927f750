"""Plug-ins of the Dagster instance (platform/dagster*.yaml): the run coordinator and run launcher.

The only package built on Dagster's internal APIs (`dagster._core`): instance plug-ins
have no public base classes. Nothing in meridian/, assets/ or serving/ imports it.
"""
