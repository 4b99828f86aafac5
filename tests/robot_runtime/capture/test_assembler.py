"""Step assembly: states, frames and commands joined by stamp into the episode's rows."""
import numpy as np
import pytest

from robot_runtime.capture.assembler import StepAssembler
from robot_runtime.episode import EpisodeLayout
from robot_runtime.teleop.arbiter import HOLD, OPERATOR, POLICY

LAYOUT = EpisodeLayout(cameras={"cam": (4, 4)}, state_names=("s",), action_names=("a",))
IMG = np.zeros((4, 4, 3), np.uint8)


def observe(asm, stamp, with_image=True):
    asm.add_state(stamp, np.array([stamp], np.float32))
    if with_image:
        asm.add_image("cam", stamp, IMG)


def test_assembler_joins_by_stamp_and_waits_one_step():
    asm = StepAssembler(LAYOUT)
    observe(asm, 100)
    asm.add_policy_command(100, np.array([0.5], np.float32))
    asm.add_command(100, np.array([1.0], np.float32), POLICY)
    assert asm.ready() == []  # could still be overridden until a newer command arrives
    asm.add_command(100, np.array([2.0], np.float32), OPERATOR)  # the operator took this step over
    observe(asm, 200)
    asm.add_command(200, np.array([3.0], np.float32), HOLD)
    [step] = asm.ready()
    assert step.timestamp == pytest.approx(100e-9) and step.action[0] == 2.0 and step.intervention
    assert not step.held
    assert step.policy_action[0] == 0.5
    observe(asm, 300)  # the final observation: never commanded, and it may be the next episode's first
    [last] = asm.ready(final=True)
    assert last.policy_action is None and last.state[0] == 200 and last.held and not last.intervention
    assert asm.counts.steps == 2
    asm.restart(250)  # the next episode began at 250: its first observation is still there
    asm.add_command(300, np.array([1.0], np.float32), POLICY)
    [first] = asm.ready(final=True)
    assert first.state[0] == 300


def test_assembler_counts_commands_without_complete_observation():
    asm = StepAssembler(LAYOUT)
    observe(asm, 100, with_image=False)
    asm.add_command(100, np.array([1.0], np.float32), POLICY)
    observe(asm, 200)
    asm.add_command(200, np.array([1.0], np.float32), POLICY)
    assert [s.timestamp for s in asm.ready(final=True)] == [pytest.approx(200e-9)]
    assert asm.counts.incomplete_steps == 1
    asm.add_state(150, np.array([0.0], np.float32))  # late message for a finished stamp is ignored
    assert asm.ready(final=True) == []


def test_each_step_is_credited_to_the_bundle_that_proposed_it():
    asm = StepAssembler(LAYOUT)
    for stamp, version in ((100, "m@1"), (200, "m@2"), (300, "m@2"), (400, "")):
        observe(asm, stamp)
        asm.add_policy_command(stamp, np.array([0.0], np.float32), version)
        asm.add_command(stamp, np.array([0.0], np.float32), POLICY)
    observe(asm, 500)  # an operator step: no proposal
    asm.add_command(500, np.array([0.0], np.float32), OPERATOR)
    assert len(asm.ready(final=True)) == 5
    assert asm.counts.policy_versions == {"m@1": 1, "m@2": 2}
    asm.restart(600)
    assert asm.counts.policy_versions == {}


def test_a_frame_that_trails_the_next_command_still_completes_its_step():
    """On a busy computer a big frame can arrive after the small command of the step after it."""
    asm = StepAssembler(LAYOUT, grace_ns=250)
    asm.add_state(100, np.array([100], np.float32))  # frame of 100 still in flight
    asm.add_command(100, np.array([1.0], np.float32), POLICY)
    observe(asm, 200)
    asm.add_command(200, np.array([2.0], np.float32), POLICY)
    observe(asm, 300)
    asm.add_command(300, np.array([3.0], np.float32), POLICY)
    assert asm.ready() == []  # 100 waits for its frame, and 200 waits behind it: rows stay in order
    asm.add_image("cam", 100, IMG)
    assert [s.action[0] for s in asm.ready()] == [1.0, 2.0]
    assert asm.counts.incomplete_steps == 0 and asm.counts.late_messages == 0
    assert asm.counts.completed_in_grace == 1


def test_a_step_whose_frame_never_comes_is_given_up_after_the_grace_and_counted():
    asm = StepAssembler(LAYOUT, grace_ns=250)
    asm.add_state(100, np.array([100], np.float32))
    asm.add_command(100, np.array([1.0], np.float32), POLICY)
    for stamp in (200, 300):
        observe(asm, stamp)
        asm.add_command(stamp, np.array([stamp], np.float32), POLICY)
    assert asm.ready() == []  # 300 - 100 < 250: still waiting
    observe(asm, 400)
    asm.add_command(400, np.array([4.0], np.float32), POLICY)
    assert [s.timestamp for s in asm.ready()] == [pytest.approx(200e-9), pytest.approx(300e-9)]
    assert asm.counts.incomplete_steps == 1 and asm.counts.completed_in_grace == 0
    asm.add_image("cam", 100, IMG)  # too late now: counted, not written
    assert asm.counts.late_messages == 1
    assert [s.timestamp for s in asm.ready(final=True)] == [pytest.approx(400e-9)]
