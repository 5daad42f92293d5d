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
    the executor's time between kernels (then rows + that time add up)."""
    total = profile.device_run_us if profile.timing == "device" else profile.inference_us
    error = abs(total - profile.layers_us) / total
    if error > ADD_UP_MARGIN:
        if any("between the" in note for note in profile.notes):
            assert abs(total - profile.layers_us - profile.between_kernels_us) <= ADD_UP_MARGIN * total
        else:
            assert any("runs were disturbed" in note for note in profile.notes), (error, list(profile.notes))
            assert profile.inference_p90_us > profile.inference_p10_us  # and the runs' spread shows it
