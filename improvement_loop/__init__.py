"""The workstation half: datasets, RECAP training, evaluation, export, the demo and benchmarks.

Torch's OpenMP threads spin while they wait for work. On a machine shared with
the robot graph or another job that made training 10-60x slower (measured: a
small MLP step went from ~750 to ~57 it/s beside one busy core), so they sleep
instead. This must happen before torch is first imported, hence here.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
