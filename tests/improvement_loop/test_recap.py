"""RECAP label arithmetic on small episodes whose answers are known by hand."""
import numpy as np
import pytest

from robot_runtime.improvement_loop.recap import (
    NEGATIVE,
    NUM_BINS,
    POSITIVE,
    bin_centers,
    episode_rewards,
    gae_advantages,
    indicators,
    mc_advantages,
    mc_returns,
    n_step_advantages,
    normalized_returns,
    outcome_indicators,
    task_thresholds,
    to_bins,
    youden_thresholds,
)


def flat_index(lengths):
    """Per-step episode_index, step_index, episode_length of contiguous episodes."""
    episode = np.repeat(np.arange(len(lengths)), lengths)
    step = np.concatenate([np.arange(n) for n in lengths])
    return episode, step, np.repeat(lengths, lengths)


def test_rewards_and_returns_of_success_and_failure():
    assert episode_rewards(4, True, 10).tolist() == [-1, -1, -1, 0]
    assert mc_returns(episode_rewards(4, True, 10)).tolist() == [-3, -2, -1, 0]
    assert episode_rewards(3, False, 5).tolist() == [-1, -1, -5]
    assert mc_returns(episode_rewards(3, False, 5)).tolist() == [-7, -6, -5]
    assert mc_returns(episode_rewards(1, True, 5)).tolist() == [0]
    with pytest.raises(ValueError, match="length"):
        episode_rewards(0, True, 5)


def test_normalized_returns_per_task_default_c_fail():
    # Task 0: a 4-step success and a 2-step failure -> max length 4, C_fail 4, divisor 8.
    # Task 1: one 2-step success -> divisor 4.
    returns, normalizer = normalized_returns([4, 2, 2], [0, 0, 1], [True, False, True])
    assert normalizer.tolist() == [8, 4]
    expected = [-3 / 8, -2 / 8, -1 / 8, 0, -5 / 8, -4 / 8, -1 / 4, 0]
    np.testing.assert_allclose(returns, expected)
    assert returns.min() >= -1 and returns.max() <= 0


def test_failures_land_below_every_success_and_near_minus_one():
    lengths = np.array([50, 80, 100, 30, 100])
    success = np.array([True, True, True, False, False])
    returns, _ = normalized_returns(lengths, np.zeros(5, int), success)
    episode, step, _ = flat_index(lengths)
    ok, failed = returns[success[episode]], returns[~success[episode]]
    assert ok.min() > -0.5 >= failed.max()
    assert failed.min() == pytest.approx(-(99 + 100) / 200)        # first step of the longest failure
    assert returns[(episode == 2) & (step == 99)] == 0


def test_explicit_c_fail_and_clipping():
    returns, normalizer = normalized_returns([3], [0], [False], c_fail=1000)
    assert normalizer.tolist() == [1003]
    np.testing.assert_allclose(returns, np.array([-1002, -1001, -1000]) / 1003)


def test_bins_cover_minus_one_to_zero():
    centers = bin_centers()
    assert len(centers) == NUM_BINS == 201
    assert centers[0] == -1 and centers[-1] == 0
    assert to_bins(np.array([-1.0, 0.0, -2.0, 0.5])).tolist() == [0, 200, 0, 200]
    values = np.random.default_rng(0).uniform(-1, 0, 1000)
    assert np.abs(centers[to_bins(values)] - values).max() <= 0.5 / 200 + 1e-12


def test_n_step_advantage_bootstraps_inside_and_falls_back_to_mc_near_the_end():
    lengths = np.array([6, 3])
    episode, step, length = flat_index(lengths)
    returns, _ = normalized_returns(lengths, [0, 0], [True, False])
    values = np.random.default_rng(1).uniform(-1, 0, len(returns))
    adv = n_step_advantages(returns, values, episode, step, length, n=2)
    for i in range(len(returns)):
        if step[i] + 2 < length[i]:
            # sum of the next two rewards (normalized) + V(o_{t+2}) - V(o_t)
            expected = (returns[i] - returns[i + 2]) + values[i + 2] - values[i]
        else:
            expected = returns[i] - values[i]
        assert adv[i] == pytest.approx(expected)
    # The 2-step reward sum inside episode 0 (success, divisor 12) is exactly -2/12.
    assert returns[0] - returns[2] == pytest.approx(-2 / 12)
    # A value function equal to the MC return gives zero advantage everywhere.
    np.testing.assert_allclose(n_step_advantages(returns, returns, episode, step, length, n=2), 0, atol=1e-12)
    # N longer than the episode is the Monte Carlo advantage.
    np.testing.assert_allclose(n_step_advantages(returns, values, episode, step, length, n=100), returns - values)


def test_n_step_rejects_non_contiguous_episodes():
    episode = np.array([0, 1, 0, 1])
    step = np.array([0, 0, 1, 1])
    length = np.array([2, 2, 2, 2])
    with pytest.raises(ValueError, match="contiguous"):
        n_step_advantages(np.zeros(4), np.zeros(4), episode, step, length, n=1)


@pytest.mark.parametrize("fraction", [0.3, 0.4])
def test_threshold_hits_the_target_fraction_per_task(fraction):
    rng = np.random.default_rng(2)
    task = np.repeat([0, 1], [500, 300])
    adv = np.where(task == 0, rng.normal(0, 1, 800), rng.normal(-5, 0.01, 800))   # very different scales
    labels, thresholds = indicators(adv, task, np.zeros(800, bool), fraction)
    assert set(thresholds) == {0, 1}
    for t, n in ((0, 500), (1, 300)):
        share = np.mean(labels[task == t] == POSITIVE)
        assert abs(share - fraction) <= 1 / n
    assert set(np.unique(labels)) == {NEGATIVE, POSITIVE}


def test_interventions_are_forced_positive_and_do_not_shift_the_threshold():
    rng = np.random.default_rng(3)
    adv = rng.normal(0, 1, 1000)
    task = np.zeros(1000, int)
    intervention = np.zeros(1000, bool)
    intervention[:200] = True
    adv[:200] = -100.0                      # operator corrections with terrible advantage estimates
    labels, _ = indicators(adv, task, intervention, 0.4)
    assert np.all(labels[:200] == POSITIVE)
    assert abs(np.mean(labels[200:] == POSITIVE) - 0.4) <= 1 / 800
    eps_all = task_thresholds(adv, task, np.ones(1000, bool), 0.4)[0]
    eps_decided = task_thresholds(adv, task, ~intervention, 0.4)[0]
    assert eps_decided > eps_all


def test_threshold_rejects_bad_fraction():
    with pytest.raises(ValueError, match="positive_fraction"):
        indicators(np.zeros(3), np.zeros(3, int), np.zeros(3, bool), 1.0)


def test_monte_carlo_advantage_is_return_minus_value():
    returns, values = np.array([-0.5, -0.25, 0.0]), np.array([-0.4, -0.5, 0.1])
    np.testing.assert_allclose(mc_advantages(returns, values), [-0.1, 0.25, -0.1])


def test_gae_by_hand_and_its_limits():
    # A 3-step success (normalizer 6: R = -2/6, -1/6, 0) then a 2-step failure (its own episode).
    lengths = np.array([3, 2])
    episode, step, length = flat_index(lengths)
    returns, _ = normalized_returns(lengths, [0, 0], [True, False])
    values = np.array([-0.5, -0.1, -0.2, -0.9, -0.6])
    # delta = r_t + V(o_t+1) - V(o_t), the value after the last step 0:
    delta = [-1 / 6 - 0.1 + 0.5, -1 / 6 - 0.2 + 0.1, 0 + 0.2]
    # lambda 0.5: A_2 = d_2, A_1 = d_1 + 0.5 A_2, A_0 = d_0 + 0.5 A_1 (= 0.15 and -1/6).
    a2 = delta[2]
    a1 = delta[1] + 0.5 * a2
    a0 = delta[0] + 0.5 * a1
    adv = gae_advantages(returns, values, episode, step, length, 0.5)
    np.testing.assert_allclose(adv[:3], [a0, a1, a2])
    assert adv[0] == pytest.approx(0.15) and adv[1] == pytest.approx(-1 / 6)
    # The failure is its own episode: nothing of it leaks into the success's last step and back.
    np.testing.assert_allclose(adv[3:], gae_advantages(returns[3:], values[3:], episode[3:] - 1, step[3:],
                                                       length[3:], 0.5))
    # lambda = 1 is Monte Carlo, lambda = 0 the 1-step advantage.
    np.testing.assert_allclose(gae_advantages(returns, values, episode, step, length, 1.0),
                               mc_advantages(returns, values), atol=1e-12)
    np.testing.assert_allclose(gae_advantages(returns, values, episode, step, length, 0.0),
                               n_step_advantages(returns, values, episode, step, length, 1), atol=1e-12)
    with pytest.raises(ValueError, match="lambda"):
        gae_advantages(returns, values, episode, step, length, 1.5)


def test_youden_threshold_maximizes_tpr_minus_fpr_per_task():
    # Task 0: successes 0.5 0.6 0.7 0.1, failures 0.0 0.2 0.3 -> epsilon 0.3 (TPR 3/4, FPR 0).
    # Task 1: successes only -> left to the fraction rule. Task 2: reversed (J <= 0) -> left too.
    adv = np.array([0.5, 0.6, 0.7, 0.1, 0.0, 0.2, 0.3, 9.0, 0.4, 0.5, 0.0, 1.0])
    task = np.array([0] * 8 + [1, 1] + [2, 2])
    success = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0], bool)
    intervention = np.zeros(12, bool)
    intervention[7] = True                      # an operator step of a failure with a huge advantage: not decided
    thresholds = youden_thresholds(adv, task, ~intervention, success)
    assert thresholds == {0: 0.3}
    labels, used = indicators(adv, task, intervention, 0.5, thresholds)
    assert used[0] == 0.3 and set(used) == {0, 1, 2}
    assert labels[:8].tolist() == [POSITIVE] * 3 + [NEGATIVE] * 4 + [POSITIVE]
    # Without a chosen threshold the same call is the fraction rule.
    assert indicators(adv, task, intervention, 0.5)[1][0] == task_thresholds(adv, task, ~intervention, 0.5)[0]


def test_outcome_indicators_are_the_filtered_rows():
    success = np.array([1, 1, 0, 0, 0], bool)
    intervention = np.array([0, 1, 1, 0, 0], bool)
    assert outcome_indicators(success, intervention).tolist() == [POSITIVE, POSITIVE, POSITIVE, NEGATIVE, NEGATIVE]
