"""Checks shared by the profiling tests: ranks, and rows that add up (or a profile that says why not)."""

from __future__ import annotations

import numpy as np

from graphgen.profiling.summary import ADD_UP_MARGIN


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""

    def ranks(values: list[float]) -> np.ndarray:
        array = np.asarray(values, dtype=np.float64)
        order = np.argsort(array, kind="stable")
        out = np.empty(len(array))
        out[order] = np.arange(len(array), dtype=np.float64)
        for value in np.unique(array):  # ties share their mean rank
            tied = array == value
            out[tied] = out[tied].mean()
        return out

    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def check_adds_up(profile) -> None:
    """A ``graphgen.v1.Profile``: rows within ADD_UP_MARGIN of the median run, or a note saying why not: the
    runs were disturbed (a busy machine: the rows' medians leave out what the median run keeps), or the rest is
    the executor's time between kernels (then rows + that time add up). A profile whose rows are fastest runs
    (``headline`` "min": most runs waited for a CPU) says so instead."""
    if profile.headline == "min":  # most runs waited for a CPU: rows are fastest runs, and the profile says why
        assert any("runs were disturbed" in note for note in profile.notes), list(profile.notes)
        return
    total = profile.device_run_us if profile.timing == "device" else profile.inference_us
    error = abs(total - profile.layers_us) / total
    if error > ADD_UP_MARGIN:
        if any("between the" in note for note in profile.notes):
            assert abs(total - profile.layers_us - profile.between_kernels_us) <= ADD_UP_MARGIN * total
        else:
            assert any("runs were disturbed" in note for note in profile.notes), (error, list(profile.notes))
            assert profile.inference_p90_us > profile.inference_p10_us  # and the runs' spread shows it


def figure(profile, row) -> float:
    """A ``graphgen.v1.Profile`` row's headline figure: its median, or its fastest run (headline "min")."""
    return row.min_us if profile.headline == "min" else row.median_us


def top_group(profile) -> list[str]:
    """The slowest row and those tied with it, as graphgen ties them: each one's median within the other's
    p10–p90, or (headline "min") fastest runs within MIN_TIE of the slowest row's."""
    from graphgen.profiling.summary import MIN_TIE

    rows = sorted(profile.layers, key=lambda row: figure(profile, row), reverse=True)
    top = rows[0]
    if profile.headline == "min":
        return [row.layer for row in rows if row.min_us >= top.min_us * (1 - MIN_TIE)]
    return [row.layer for row in rows if row.median_us >= top.p10_us and row.p90_us >= top.median_us]
