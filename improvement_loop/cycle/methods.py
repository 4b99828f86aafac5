"""What a round of the loop may train, and what it trains unless told otherwise.

Torch-free, so the daemon checks its configuration and the CLI offers the choices without the training code.
"""

# RECAP (advantage-conditioned), or an offline baseline on the same rows (cycle/baselines.py); the nightly gate
# judges the candidate whichever trained it.
ROUND_METHODS = ("recap", "bc", "filtered_bc", "awr")

# The measured winner, which the demo and the daemon train: on benchmarks/results/recap_table (5 MetaWorld tasks,
# 3 seeds, 3 rounds, the same data, start and step budget for every method) filtered BC had the highest average
# success and successes per robot hour; RECAP, AWR and BC stay options (`--method`, daemon.yaml training.method)
# and the benchmark keeps measuring them, so the default changes when its table says so.
DEFAULT_METHOD = "filtered_bc"
