"""Meridian: plain, Dagster-free logic of the multi-region fraud platform."""

import os

# LightGBM's OpenMP threads spin while they wait (GNU libgomp's default). With two
# regions training at once on a 2-core machine, the spinning threads of one process
# starve the other's: a 1 s training took over 300 s. Passive waiting yields the core
# instead (same run: 1.7 s). Read once when libgomp loads, so it is set before any
# import of lightgbm; an explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
