"""`torchrun --nproc_per_node=2` runs the same CLI and trains the same weights as one process.

Each step's global batch (rows, image shifts, flow noise) is a function of (seed,
step), the two ranks take 32 of its 64 rows each and DDP averages their
gradients, so the only difference from one process is float summation order.
Tolerance: relative L2 difference of all weights <= 1e-5 and no weight off by
more than 1e-4 (weights are ~0.1). Measured after 12 value / 6 policy steps:
relative L2 1.3e-7 (value) and 1.8e-8 (policy), max abs 1.5e-6 and 2.0e-7. The
largest single differences are in attention key biases, whose true gradient is
zero, so Adam turns rounding noise into full-size steps there.
"""
import json
import sys

import pytest

from robot_runtime.improvement_loop.training.distributed import World

from training_runs import command, difference, make_store, run, work_dirs

VALUE_STEPS, POLICY_STEPS = 12, 6


def test_two_processes_train_what_one_process_trains(tmp_path):
    store = make_store(tmp_path / "store")
    one, two = work_dirs(tmp_path, "one", "two")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    log = run(torchrun + command(store, two, VALUE_STEPS, POLICY_STEPS), timeout=180)
    run(command(store, one, VALUE_STEPS, POLICY_STEPS))
    for name in ("value", "policy"):
        worst, l2 = difference(one / "pretrain" / f"{name}.safetensors", two / "pretrain" / f"{name}.safetensors")
        assert l2 <= 1e-5 and worst <= 1e-4, f"{name}: relative L2 {l2:.2e}, max abs {worst:.2e}"
    single = json.loads((one / "pretrain" / "result.json").read_text())["metrics"]
    double = json.loads((two / "pretrain" / "result.json").read_text())["metrics"]
    assert double["value"]["processes"] == 2 and single["value"]["processes"] == 1
    assert double["policy"]["loss_final"] == pytest.approx(single["policy"]["loss_final"], rel=1e-5)
    # Rank 0 alone wrote the bundle, the TensorBoard logs and the progress bars.
    assert len(list((two / "bundles").iterdir())) == 1
    assert len(list((two / "pretrain" / "tb").glob("events.*"))) == 2         # value and policy writers
    assert log.count("value: 100%") == 1


def test_ranks_take_contiguous_shares_of_the_global_batch():
    assert [World(rank, 2).rows(64) for rank in (0, 1)] == [slice(0, 32), slice(32, 64)]
    assert World().rows(64) == slice(0, 64)
    with pytest.raises(ValueError, match="batch size 64 does not split over 3 processes"):
        World(0, 3).rows(64)
