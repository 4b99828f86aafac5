"""The workstation half: `data/` -> `models/` -> `training/` -> `cycle/` (RECAP rounds), `fleet/` to come.

`recap` holds the recipe's arithmetic (pure numpy) that every room shares; `metrics` the success rates
and intervals that the demo and benchmarks report; `demo` the whole loop on the simulated robot. Each
room imports only the rooms before it, and the robot half only through its contracts.

Torch's OpenMP threads spin while they wait for work. On a machine shared with
the robot graph or another job that made training 10-60x slower (measured: a
small MLP step went from ~750 to ~57 it/s beside one busy core), so they sleep
instead. This must happen before torch is first imported, hence here.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
