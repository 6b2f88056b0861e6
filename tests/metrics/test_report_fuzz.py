"""Random inputs: fairness_report either works or raises ReprogramError, nothing else."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reprogram.errors import ReprogramError
from reprogram.metrics import fairness_report

elements = st.sampled_from(
    [
        st.integers(-3, 3),
        st.sampled_from(["a", "b", "c", ""]),
        st.booleans(),
        st.floats(allow_nan=True, allow_infinity=True, width=32),
        st.one_of(st.none(), st.integers(0, 2), st.text(max_size=3)),
    ]
)
score_elements = st.one_of(st.floats(-0.5, 1.5), st.just(float("nan")), st.just(float("inf")))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), n=st.integers(0, 30), n_bins=st.sampled_from([15, 1, 7, 20, 0, -1]))
def test_random_inputs_work_or_raise_reprogram_error(data, n, n_bins):
    def column(optional=False, size=n):
        if optional and data.draw(st.integers(0, 4)) == 4:
            return None
        # mostly aligned with y, sometimes one row off
        size = size + data.draw(st.sampled_from([0] * 10 + [1, -1]))
        return data.draw(st.lists(data.draw(elements), min_size=max(size, 0), max_size=max(size, 0)))

    y, p, g = column(), column(optional=True), column()
    g2 = column() if data.draw(st.booleans()) else None
    s = None
    if data.draw(st.booleans()):
        s = data.draw(st.lists(score_elements, min_size=n, max_size=n))
    sensitive = g if g2 is None else {"a": np.asarray(g, dtype=object), "b": np.asarray(g2, dtype=object)}
    try:
        report = fairness_report(y, p, s, sensitive, n_bins=n_bins)
    except ReprogramError as e:
        assert "\n" not in str(e)
        return
    # a report that comes back is internally consistent
    assert report.by_group["count"].sum() == len(y)
    assert 0.0 <= report.overall["accuracy"] <= 1.0
    assert len(report.groups) >= 2
    report.to_json()


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(2, 200),
    k=st.integers(2, 5),
    n_groups=st.integers(2, 6),
    seed=st.integers(0, 2**31),
)
def test_group_figures_agree_with_a_plain_loop(n, k, n_groups, seed):
    rng = np.random.default_rng(seed)
    y, p, g = rng.integers(0, k, n), rng.integers(0, k, n), rng.integers(0, n_groups, n)
    g[:n_groups] = np.arange(n_groups)[: min(n, n_groups)]  # every group present
    r = fairness_report(y, p, sensitive=g, classes=list(range(k)), min_group_size=0)
    for gi in np.unique(g):
        m = g == gi
        row = r.by_group.loc[str(gi)]
        assert row["count"] == m.sum()
        assert abs(row["accuracy"] - (y[m] == p[m]).mean()) < 1e-12
        if k > 2:
            for c in range(k):
                assert abs(row[f"selection_rate[{c}]"] - (p[m] == c).mean()) < 1e-12
