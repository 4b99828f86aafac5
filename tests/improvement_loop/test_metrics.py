"""The statistics that score values and labels, on cases whose answers are known by hand."""
import itertools

import numpy as np
import pytest

from robot_runtime.improvement_loop.metrics import (
    calibration,
    explained_variance,
    newcombe_interval,
    rank_auc,
    spearman,
    wilson_interval,
)


def pairwise_auc(scores, positive):
    """The definition, by brute force: the share of (positive, negative) pairs ordered right, ties half."""
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    return np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg)])


def test_auc_of_perfect_reversed_and_uninformative_scores():
    positive = np.array([False, False, True, True])
    assert rank_auc([1, 2, 3, 4], positive) == 1.0
    assert rank_auc([4, 3, 2, 1], positive) == 0.0
    assert rank_auc([7, 7, 7, 7], positive) == 0.5
    # One misordered pair of four: 3/4.
    assert rank_auc([1, 3, 2, 4], positive) == 0.75


def test_auc_counts_ties_half_and_matches_the_pairwise_definition():
    # positives {2, 2, 5}, negatives {1, 2}: pairs (2>1, 2=2, 2>1, 2=2, 5>1, 5>2) -> (1 + .5 + 1 + .5 + 1 + 1) / 6
    assert rank_auc([2, 2, 5, 1, 2], [True, True, True, False, False]) == pytest.approx(5 / 6)
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.integers(0, 5, 30).astype(float)          # many ties
        positive = rng.random(30) < 0.4
        assert rank_auc(scores, positive) == pytest.approx(pairwise_auc(scores, positive))


def test_spearman_is_scale_free_counts_ties_and_refuses_what_it_cannot_rank():
    progress = np.array([1, 1, 2, 4, 5])
    assert spearman(progress, 10 * progress ** 3) == pytest.approx(1.0)      # any increasing map: 1
    assert spearman(progress, -np.exp(progress)) == pytest.approx(-1.0)
    # Ties at their mean rank: ranks (1.5, 1.5, 3, 4, 5) against (1, 2, 3, 4, 5).
    tied = np.array([1.5, 1.5, 3, 4, 5])
    assert spearman(progress, np.arange(5)) == pytest.approx(np.corrcoef(tied, np.arange(5))[0, 1])
    assert spearman(progress, np.full(5, 3.0)) is None                      # a constant score ranks nothing
    assert spearman(progress[:2], progress[:2]) is None


def test_newcombe_interval_matches_the_published_example_and_is_symmetric_for_equal_arms():
    # Newcombe (1998), Stat Med 17:873, method 10: 56/70 vs 48/80 -> 0.0524 to 0.3339.
    low, high = newcombe_interval(56, 70, 48, 80)
    assert (low, high) == (pytest.approx(0.0524, abs=5e-4), pytest.approx(0.3339, abs=5e-4))
    low, high = newcombe_interval(20, 50, 20, 50)
    assert low == pytest.approx(-high) and low < 0 < high


def test_auc_of_a_binary_indicator_is_balanced_accuracy():
    positive = np.array([True] * 4 + [False] * 6)
    labels = np.array([1, 1, 1, 0] + [1, 1, 0, 0, 0, 0])       # TPR 3/4, TNR 4/6
    assert rank_auc(labels, positive) == pytest.approx((3 / 4 + 4 / 6) / 2)


def test_auc_is_undefined_without_both_classes():
    assert rank_auc([1, 2, 3], [True, True, True]) is None
    assert rank_auc([], []) is None


def test_calibration_of_a_perfect_and_a_biased_prediction():
    observed = np.linspace(-1, 0, 100)
    perfect = calibration(observed, observed)
    assert perfect["ece"] == pytest.approx(0, abs=1e-12)
    assert [row["steps"] for row in perfect["bins"]] == [10] * 10
    # Deciles of the prediction: the first holds the 10 lowest.
    assert perfect["bins"][0]["predicted"] == pytest.approx(observed[:10].mean())
    biased = calibration(observed + 0.1, observed)              # too optimistic by 0.1 everywhere
    assert biased["ece"] == pytest.approx(0.1)
    assert all(row["predicted"] - row["observed"] == pytest.approx(0.1) for row in biased["bins"])


def test_calibration_bins_follow_the_prediction_not_the_outcome():
    predicted = np.array([0.0, 0.0, -1.0, -1.0])
    observed = np.array([-1.0, -1.0, 0.0, 0.0])                 # exactly backwards
    result = calibration(predicted, observed, bins=2)
    assert [(row["predicted"], row["observed"]) for row in result["bins"]] == [(-1.0, 0.0), (0.0, -1.0)]
    assert result["ece"] == 1.0
    assert len(calibration(np.zeros(3), np.zeros(3), bins=10)["bins"]) == 3     # never an empty bin


def test_explained_variance():
    returns = np.array([-1.0, -0.5, 0.0])
    assert explained_variance(returns, returns) == 1.0
    assert explained_variance(returns, np.full(3, -0.5)) == 0.0
    assert explained_variance(np.zeros(3), returns) is None


def test_the_wilson_interval_holds_the_observed_rate_even_at_the_ends():
    for n in (1, 7, 50, 100, 500):
        for successes in (0, 1, n // 2, n - 1, n):
            low, high = wilson_interval(successes, n)
            assert 0.0 <= low <= successes / n <= high <= 1.0, (successes, n, low, high)
    assert wilson_interval(100, 100)[1] == 1.0 and wilson_interval(0, 100)[0] == 0.0
