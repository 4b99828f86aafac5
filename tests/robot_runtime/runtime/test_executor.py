"""Chunk scheduling and the policy executor: latency compensation, blending, deadlines, hot swap."""
import threading
import time

import numpy as np
import pytest

from robot_runtime.runtime.executor import PolicyExecutor, SwapError
from robot_runtime.runtime.policy import PolicyRunner
from robot_runtime.runtime.scheduler import ChunkScheduler
from robot_runtime.sim.metaworld_robot import instruction_for

from bundle_factory import make_reference_bundle

TASK = instruction_for("push-v3")


def chunk(value, n=8):
    return np.full((n, 1), value, np.float32)


def test_late_chunk_skips_actions_already_due():
    s = ChunkScheduler(execution_horizon=4)
    s.accept(np.arange(8, dtype=np.float32)[:, None], obs_tick=0, now_tick=0)
    assert [s.action(k)[0] for k in range(3)] == [0, 1, 2]
    skipped = s.accept(np.arange(100, 108, dtype=np.float32)[:, None], obs_tick=3, now_tick=5)
    assert skipped == 2 and s.action(5)[0] == 102  # actions planned for ticks 3 and 4 are past
    assert s.action(10)[0] == 107 and s.action(11) is None  # then the plan runs out: a deadline miss


def test_blending_continues_the_committed_plan():
    s = ChunkScheduler(execution_horizon=4, blend_steps=3)
    s.accept(chunk(0.0), 0, 0)
    s.accept(chunk(1.0), 4, 4)
    executed = [s.action(k)[0] for k in range(4, 10)]
    assert executed[0] == pytest.approx(0.25) and executed[1] == pytest.approx(0.5)
    assert executed[2] == pytest.approx(0.75) and executed[3:] == [1.0, 1.0, 1.0]
    assert np.all(np.diff(executed) >= 0)  # no jump back and forth at the handover


def test_wants_chunk_early_by_the_expected_latency():
    s = ChunkScheduler(execution_horizon=4)
    assert s.wants_chunk(0)
    s.accept(chunk(0.0), 0, 0)
    assert not s.wants_chunk(1, lead_ticks=1) and s.wants_chunk(3, lead_ticks=1) and s.wants_chunk(4)


def images_for(runner):
    return {c.name: np.zeros((c.height, c.width, 3), np.uint8) for c in runner.manifest.cameras}


def run_ticks(executor, runner, n, period=0.05, state=None):
    results = []
    state = np.zeros(len(runner.manifest.state_names), np.float32) if state is None else state
    for _ in range(n):
        results.append(executor.tick(images_for(runner), state))
        time.sleep(period)
    return results


def test_background_inference_serves_every_tick(tmp_path):
    runner = PolicyRunner.load(make_reference_bundle(tmp_path / "b").path)
    executor = PolicyExecutor(runner, execution_horizon=4)
    executor.start_episode(TASK)
    results = run_ticks(executor, runner, 40, period=0.01)
    assert all(r.action is not None for r in results), [r.reason for r in results if r.action is None]
    assert executor.stats.chunks >= 40 // 4 - 1 and executor.stats.deadline_misses == 0
    executor.close()


def test_slow_inference_is_compensated_and_misses_are_counted(tmp_path):
    slow = PolicyRunner.load(make_reference_bundle(tmp_path / "slow", busy_matmuls=400).path)
    executor = PolicyExecutor(slow, execution_horizon=2)  # chunk of 8, replans after 2
    executor.start_episode(TASK)
    results = run_ticks(executor, slow, 30, period=0.002)  # ticks far faster than inference
    misses = [r for r in results if r.action is None]
    assert misses and all("deadline" in r.reason for r in misses)
    assert executor.stats.deadline_misses == len(misses)
    executor.close()


def test_hot_swap_happens_at_a_chunk_boundary_without_a_missed_tick(tmp_path):
    old = PolicyRunner.load(make_reference_bundle(tmp_path / "old", version="old").path)
    new = PolicyRunner.load(make_reference_bundle(tmp_path / "new", version="new", seed=1).path)
    executor = PolicyExecutor(old, execution_horizon=4)
    executor.start_episode(TASK)
    run_ticks(executor, old, 5, period=0.01)
    executor.stage(new)
    results = run_ticks(executor, old, 20, period=0.01)
    assert all(r.action is not None for r in results)
    assert executor.runner is new and executor.stats.swaps == 1
    assert any("swapped to reference@new" in e for r in results for e in r.events)
    executor.close()


def test_a_new_bundle_that_outputs_nan_is_rejected_and_the_old_one_keeps_driving(tmp_path):
    old = PolicyRunner.load(make_reference_bundle(tmp_path / "old", version="old").path)
    # Passes load-time warm-up (state 0), yields NaN once state[0] exceeds 0.5.
    bad = PolicyRunner.load(make_reference_bundle(tmp_path / "bad", version="bad", nan_above=0.5).path)
    executor = PolicyExecutor(old, execution_horizon=4)
    executor.start_episode(TASK)
    executor.stage(bad)
    results = run_ticks(executor, old, 20, period=0.01, state=np.ones(21, np.float32))
    assert executor.runner is old and executor.staged is None and executor.stats.rollbacks == 1
    assert any("rejected new bundle reference@bad" in e for r in results for e in r.events)
    assert sum(r.action is None for r in results) <= 1  # at most the tick the bad chunk was due
    executor.close()


def test_swap_to_a_different_signature_is_refused(tmp_path):
    old = PolicyRunner.load(make_reference_bundle(tmp_path / "old").path)
    other = PolicyRunner.load(make_reference_bundle(tmp_path / "other", cameras=()).path)
    executor = PolicyExecutor(old)
    with pytest.raises(SwapError, match="different cameras"):
        executor.stage(other)
    executor.close()


def test_replan_after_handback_plans_from_the_new_observation(tmp_path):
    runner = PolicyRunner.load(make_reference_bundle(tmp_path / "b").path)
    executor = PolicyExecutor(runner, execution_horizon=4)
    executor.start_episode(TASK)
    run_ticks(executor, runner, 3, period=0.01, state=np.zeros(21, np.float32))
    executor.replan()
    moved = np.full(21, 0.5, np.float32)  # the operator moved the robot meanwhile
    result = executor.tick(images_for(runner), moved)
    expected = runner.infer(images_for(runner), moved)[0]
    assert result.inline_ms > 0 and np.allclose(result.action, expected, atol=1e-6)
    executor.close()


def test_realtime_chunking_bundle_continues_the_committed_plan(tmp_path):
    """The executor hands the bundle what the current plan commits for the coming ticks; a
    real-time-chunking graph keeps those, so the plan does not jump when the new chunk lands."""
    from robot_runtime.runtime.executor import prefix_weights

    runner = PolicyRunner.load(make_reference_bundle(tmp_path / "rtc", realtime_chunking=True).path)
    runner.select_task(TASK)
    committed = np.tile(np.array([0.3, -0.2, 0.1, 0.5], np.float32), (8, 1))
    weights = prefix_weights(8, frozen=2)
    assert weights[:2].tolist() == [1.0, 1.0] and np.all(np.diff(weights[2:]) < 0) and weights[-1] > 0
    chunk = runner.infer(images_for(runner), np.full(21, 0.5, np.float32), committed, weights)
    np.testing.assert_allclose(chunk[:2], committed[:2], atol=1e-6)  # the frozen ticks are kept
    free = runner.infer(images_for(runner), np.full(21, 0.5, np.float32))
    assert np.abs(free[:2] - committed[:2]).max() > 0.05  # without a prefix the plan differs

    executor = PolicyExecutor(runner, execution_horizon=3)
    executor.start_episode(TASK)
    results = run_ticks(executor, runner, 12, period=0.01, state=np.full(21, 0.5, np.float32))
    assert all(r.action is not None for r in results)
    executor.close()


# -- synchronous mode (simulated time: rollouts, benchmarks) -------------------------------------

def sync_executor(runner, **kwargs):
    return PolicyExecutor(runner, realtime=False, **kwargs)


def record_inferences(runner):
    """Wrap `runner.infer` to keep (prefix, weights, chunk) of every call."""
    calls, infer = [], runner.infer

    def recording(images, state, prefix=None, weights=None):
        chunk = infer(images, state, prefix, weights)
        calls.append((prefix, weights, chunk))
        return chunk

    runner.infer = recording
    return calls


def test_synchronous_mode_starts_no_thread_and_infers_on_the_tick_that_asks(tmp_path):
    runner = PolicyRunner.load(make_reference_bundle(tmp_path / "b").path)
    before = set(threading.enumerate())
    executor = sync_executor(runner, execution_horizon=4)
    executor.start_episode(TASK)
    results = run_ticks(executor, runner, 20, period=0)
    assert set(threading.enumerate()) == before
    assert all(r.action is not None for r in results)
    assert [k for k, r in enumerate(results) if r.inline_ms > 0] == [0, 4, 8, 12, 16]  # no lead: lands at once
    assert executor.stats.chunks == 5 and executor.stats.holds == executor.stats.deadline_misses == 0
    executor.close()


def test_synchronous_mode_executes_what_realtime_executes_when_inference_is_instant(tmp_path):
    """Real time asks a tick early (lead 1) and skips the action already due; in simulated time the
    chunk is asked for and lands on the same tick. With the state changing only between chunk
    boundaries both see the same observation, so the robot gets the same actions, blending included."""
    runner = PolicyRunner.load(make_reference_bundle(tmp_path / "b").path)
    states = [np.full(21, 0.1 * ((k + 2) // 4), np.float32) for k in range(16)]
    actions = {}
    for realtime in (True, False):
        executor = PolicyExecutor(runner, execution_horizon=4, blend_steps=2, realtime=realtime)
        executor.start_episode(TASK)
        actions[realtime] = []
        for state in states:
            actions[realtime].append(executor.tick(images_for(runner), state).action)
            time.sleep(0.03 if realtime else 0)  # long enough for every background chunk to land
        assert executor.stats.chunks == 4 and executor.stats.holds == 0
        executor.close()
    np.testing.assert_allclose(np.array(actions[False]), np.array(actions[True]), atol=1e-6)
    assert np.abs(np.diff(np.array(actions[False]), axis=0)).max() > 0.01  # the plan did change


def test_synchronous_replan_after_handback_plans_from_the_new_observation(tmp_path):
    runner = PolicyRunner.load(make_reference_bundle(tmp_path / "b").path)
    executor = sync_executor(runner, execution_horizon=4)
    executor.start_episode(TASK)
    run_ticks(executor, runner, 3, period=0)
    executor.replan()
    moved = np.full(21, 0.5, np.float32)  # the operator moved the robot meanwhile
    result = executor.tick(images_for(runner), moved)
    expected = runner.infer(images_for(runner), moved)[0]
    assert result.inline_ms > 0 and np.allclose(result.action, expected, atol=1e-6)  # not blended with the old plan
    executor.close()


def test_synchronous_mode_gives_a_realtime_chunking_bundle_the_committed_prefix(tmp_path):
    from robot_runtime.runtime.executor import prefix_weights

    runner = PolicyRunner.load(make_reference_bundle(tmp_path / "rtc", realtime_chunking=True).path)
    calls = record_inferences(runner)
    executor = sync_executor(runner, execution_horizon=4, blend_steps=2)
    executor.start_episode(TASK)
    run_ticks(executor, runner, 4, period=0, state=np.zeros(21, np.float32))
    later = run_ticks(executor, runner, 4, period=0, state=np.full(21, 0.5, np.float32))
    (first_prefix, _, first), (prefix, weights, second) = calls
    assert len(first_prefix) == 0  # episode start: nothing committed
    np.testing.assert_array_equal(prefix, first[4:8])  # what chunk 0 plans for ticks 4..7
    np.testing.assert_array_equal(weights, prefix_weights(4, frozen=0))  # it lands at once: nothing frozen
    # Nothing skipped: past the 2 blend steps, tick 4 + m executes the new chunk's action m.
    np.testing.assert_allclose([r.action for r in later[2:]], second[2:4], atol=1e-6)
    executor.close()


def test_synchronous_hot_swap_happens_at_the_next_chunk_boundary(tmp_path):
    old = PolicyRunner.load(make_reference_bundle(tmp_path / "old", version="old").path)
    new = PolicyRunner.load(make_reference_bundle(tmp_path / "new", version="new", seed=1).path)
    executor = sync_executor(old, execution_horizon=4)
    executor.start_episode(TASK)
    run_ticks(executor, old, 2, period=0)
    executor.stage(new)
    results = run_ticks(executor, old, 6, period=0)  # ticks 2..7; the boundary is tick 4
    assert [e for r in results for e in r.events] == ["swapped to reference@new at tick 4"]
    assert executor.runner is new and executor.stats.swaps == 1
    np.testing.assert_allclose(results[-1].action, new.infer(images_for(new), np.zeros(21, np.float32))[0],
                               atol=1e-6)
    executor.close()


def test_synchronous_mode_keeps_the_old_bundle_on_the_same_tick_when_the_new_one_fails(tmp_path):
    old = PolicyRunner.load(make_reference_bundle(tmp_path / "old", version="old").path)
    bad = PolicyRunner.load(make_reference_bundle(tmp_path / "bad", version="bad", nan_above=0.5).path)
    executor = sync_executor(old, execution_horizon=4)
    executor.start_episode(TASK)
    executor.stage(bad)
    results = run_ticks(executor, old, 12, period=0, state=np.ones(21, np.float32))
    assert executor.runner is old and executor.staged is None and executor.stats.rollbacks == 1
    assert any("rejected new bundle reference@bad" in e for e in results[0].events)
    assert all(r.action is not None for r in results)  # the old bundle planned in its place: no hold
    executor.close()
