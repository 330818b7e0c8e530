"""The drift statistics, computed from value counts, equal scipy's / Evidently's on raw samples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial import distance

from raylane.monitoring import stattests as st


def _num(values) -> st.Counts:
    return st.numeric_counts(np.asarray(values, dtype=float))


def _cat(values) -> st.Counts:
    vc = pd.Series(values).value_counts()
    return st.category_counts(vc.index.to_numpy(), vc.to_numpy())


@pytest.mark.parametrize("integral", [True, False])
def test_wasserstein_and_ks_match_scipy(integral):
    rng = np.random.default_rng(1)
    ref = rng.normal(50, 10, 800)
    cur = rng.normal(53, 12, 5000)
    if integral:
        ref, cur = np.round(ref), np.round(cur)
    r, c = _num(ref), _num(cur)
    expected = stats.wasserstein_distance(ref, cur) / max(np.std(ref), 0.001)
    assert st.wasserstein_norm(r, c) == pytest.approx(expected, rel=1e-9)
    assert st.ks_pvalue(r, c) == pytest.approx(stats.ks_2samp(ref, cur).pvalue, rel=1e-9)


def test_integral_fast_path_counts_like_unique():
    values = np.array([3.0, -2.0, 3.0, 7.0, 1e6, -2.0])
    c = st.numeric_counts(values)
    uniq, counts = np.unique(values, return_counts=True)
    np.testing.assert_array_equal(c.values, uniq)
    np.testing.assert_array_equal(c.counts, counts)
    halves = st.numeric_counts(np.array([0.5, 0.5, 1.0]))  # not integral: the sorting path
    np.testing.assert_array_equal(halves.values, [0.5, 1.0])


def test_chisquare_and_jensenshannon_match_evidently_definitions():
    ref = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    cur = ["a"] * 40 + ["b"] * 40 + ["c"] * 15 + ["d"] * 5  # "d" unseen: expected 0 -> p = 0
    r, c = _cat(ref), _cat(cur)
    f_exp = np.array([50, 30, 20]) * (100 / 100)
    assert st.chisquare_pvalue(r, _cat(cur[:-5] + ["a"] * 5)) == pytest.approx(
        stats.chisquare([45, 40, 15], f_exp)[1])
    assert st.chisquare_pvalue(r, c) == 0.0
    js = distance.jensenshannon([0.5, 0.3, 0.2, 0.0], [0.4, 0.4, 0.15, 0.05])
    assert st.jensenshannon(r, c) == pytest.approx(js)


def test_z_test():
    ref = ["no"] * 70 + ["yes"] * 30
    cur = ["no"] * 50 + ["yes"] * 50
    p1, p2, pooled = 0.3, 0.5, 0.4
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (2 / 100))
    assert st.z_pvalue(_cat(ref), _cat(cur)) == pytest.approx(2 * (1 - stats.norm.cdf(abs(z))))
    assert st.z_pvalue(_cat(["x"] * 5), _cat(["x"] * 9)) == 1.0


def test_psi_and_sturges_bins_match_numpy():
    rng = np.random.default_rng(2)
    ref = np.round(rng.gamma(2, 30, 3000))
    cur = np.round(rng.gamma(2, 36, 20000))
    r, c = _num(ref), _num(cur)
    edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
    np.testing.assert_allclose(st.sturges_edges(r, c), edges)
    rp = np.histogram(ref, edges)[0] / len(ref)
    cp = np.histogram(cur, edges)[0] / len(cur)
    for p in (rp, cp):
        nz = p[p != 0].min()
        p[p == 0] = nz / 1e6 if nz <= 1e-4 else 1e-4
    assert st.psi(r, c) == pytest.approx(np.sum((rp - cp) * np.log(rp / cp)))
    same = _num([5.0] * 10)  # one value: numpy's outer edges +-0.5, one bin
    np.testing.assert_allclose(st.sturges_edges(same, same),
                               np.histogram_bin_edges(np.full(20, 5.0), bins="sturges"))


def test_default_method_follows_evidently():
    small, big = _num(np.arange(900)), _num(np.arange(1500))
    few = _num([1, 2, 3, 1, 2])
    assert st.default_method("numeric", small, big) == "ks"
    assert st.default_method("numeric", big, small) == "wasserstein"  # reference size decides
    assert st.default_method("numeric", few, few) == "chisquare"
    assert st.default_method("numeric", _num([0, 1] * 900), _num([0, 1])) == "jensenshannon"
    assert st.default_method("categorical", _cat(["a", "b"]), _cat(["a"])) == "z"
    assert st.default_method("categorical", _cat(list("abc")), _cat(["a"])) == "chisquare"
    assert st.default_method("categorical", _cat(["a"] * 1001), _cat(["a"])) == "jensenshannon"


def test_drift_comparisons():
    assert st.drifted("ks", 0.05, 0.05) and not st.drifted("chisquare", 0.05, 0.05)
    assert st.drifted("wasserstein", 0.1, 0.1) and not st.drifted("jensenshannon", 0.09, 0.1)


def test_every_method_is_one_row_of_the_table():
    """Each method names its score kind, comparison and a threshold key the config has; the
    default choice only picks methods of the table."""
    from raylane.config import DriftConfig

    fields = set(DriftConfig.model_fields)
    for name, test in st.STATTESTS.items():
        assert test.name == name and test.threshold_key in fields, name
        assert test.p_value == (test.comparison in ("<=", "<")), name
    assert {"ks", "chisquare", "z"} == st.P_VALUE_METHODS
    rng = np.random.default_rng(0)
    for ref_n in (50, 5000):
        for values in ([0, 1], [0, 1, 2], list(range(30))):
            ref = rng.choice(values, ref_n)
            for kind in ("numeric", "categorical"):
                counts = _num(ref) if kind == "numeric" else _cat([str(v) for v in ref])
                assert st.default_method(kind, counts, counts) in st.STATTESTS


def test_a_new_method_is_one_row(monkeypatch):
    """A row added to the table is scored, compared and explained without another edit."""
    from raylane.console.monitoring import comparison_note

    hellinger = st.StatTest("hellinger", lambda r, c: 0.3, "distance", ">=",
                            "jensenshannon_threshold", "Hellinger distance")
    monkeypatch.setitem(st.STATTESTS, "hellinger", hellinger)
    assert st.drifted("hellinger", 0.3, 0.1) and not st.drifted("hellinger", 0.05, 0.1)
    assert "hellinger" in comparison_note()
