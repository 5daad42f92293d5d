"""Profiles written as Chrome trace-event JSON, for Perfetto (ui.perfetto.dev) and chrome://tracing.

The JSON Object Format of the Trace Event Format (Google's "Trace Event Format" document, the one
Perfetto's JSON importer and Catapult's trace viewer read): ``{"traceEvents": [...],
"displayTimeUnit": "ms", "otherData": {...}}``. Each profiled form of a model is one *process*
(``pid``; its name, from a ``process_name`` metadata event, says the form and its runtime); in it
one *thread* track holds the measured runs (``run 1``, ``run 2``, … as complete ``"X"`` events)
and one track per OS thread that ran kernels holds each run's kernels, named after the graphgen
layers they compute, with ``args``: MACs, bytes moved, kind, parameters, kernel and op, nodes.
Times are µs (``ts``, ``dur``), from the first measured run's start; runs keep their real gaps.

onnxruntime gives each kernel's start; OpenVINO gives durations only, so its kernels are laid end
to end from the run's start (the track's name says so; where a run's laid nodes would reach past
the next run's start, that run's are laid after them).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from graphgen.profiling.summary import Profile

RUNS_TRACK = 0  # tid of the runs' track in every process
SEQUENTIAL_THREAD = 1  # tid for kernels whose thread the runtime does not say (OpenVINO)


def _metadata(name: str, pid: int, args: dict[str, Any], tid: int = 0) -> dict[str, Any]:
    return {"name": name, "ph": "M", "pid": pid, "tid": tid, "args": args}


def _kernel_args(profile: Profile, row_index: int, run: int) -> dict[str, Any]:
    row = profile.rows[row_index]
    return {
        "run": run,
        "macs": row.macs,
        "bytes": row.bytes,
        "kind": row.kind or (row.kernel_op if row.mapped else f"inserted by {profile.runtime}"),
        "params": row.params,
        "kernel": row.kernel,
        "kernel_op": row.kernel_op,
        "nodes": list(row.nodes),
        "op_types": list(row.op_types),
        "provider": row.provider,
        "median_us": row.time.median,
        "share": profile.share(row),
    }


def trace_events(forms: Sequence[tuple[str, Profile]]) -> dict[str, Any]:
    """The trace of each ``(label, profile)``'s measured runs, one process per form."""
    events: list[dict[str, Any]] = []
    for pid, (label, profile) in enumerate(forms, start=1):
        if not profile.timeline:
            raise ValueError(f"{label}: the profile has no per-run timeline to write")
        events.append(_metadata("process_name", pid, {"name": f"{label} — {profile.provider}"}))
        events.append(_metadata("process_sort_index", pid, {"sort_index": pid}))
        events.append(_metadata("thread_name", pid, {"name": "runs"}, RUNS_TRACK))
        threads = sorted({span.thread for run in profile.timeline for span in run.spans})
        for thread in threads:
            name = (
                f"{profile.runtime} kernels, thread {thread}"
                if thread
                else f"{profile.runtime} nodes (durations only: laid end to end)"
            )
            events.append(_metadata("thread_name", pid, {"name": name}, thread or SEQUENTIAL_THREAD))
        laid_end = 0.0  # where the last end-to-end span ended: a run's laid nodes never overlap the last run's
        for number, run in enumerate(profile.timeline, start=1):
            shift = max(0.0, laid_end - run.start_us)
            events.append(
                {
                    "name": f"run {number}",
                    "cat": "run",
                    "ph": "X",
                    "ts": run.start_us,
                    "dur": run.dur_us,
                    "pid": pid,
                    "tid": RUNS_TRACK,
                    "args": {
                        "run": number,
                        "of": len(profile.timeline),
                        "batch": profile.batch,
                        "timing": profile.timing,
                    },
                }
            )
            for span in run.spans:
                row = profile.rows[span.row]
                start = run.start_us + span.start_us + (0.0 if span.thread else shift)
                if not span.thread:
                    laid_end = max(laid_end, start + span.dur_us)
                events.append(
                    {
                        "name": row.layer,
                        "cat": row.kind or row.kernel_op or "kernel",
                        "ph": "X",
                        "ts": start,
                        "dur": span.dur_us,
                        "pid": pid,
                        "tid": span.thread or SEQUENTIAL_THREAD,
                        "args": _kernel_args(profile, span.row, number),
                    }
                )
    other = {
        "generator": "graphgen profile",
        "forms": [
            {"label": label, "runtime": p.runtime, "provider": p.provider, "runs": p.runs, "batch": p.batch}
            for label, p in forms
        ],
    }
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": other}


def trace_path_argument(text: str) -> Path:
    """An argparse ``type=`` for ``--trace``: a writable path ending in .json."""
    from graphgen.argtypes import output_file

    path = output_file(text)
    if path.suffix.lower() != ".json":
        raise argparse.ArgumentTypeError(f"{text}: traces are written as JSON; give a path ending in .json")
    return path


def write_trace(path: str | Path, forms: Sequence[tuple[str, Profile]]) -> Path:
    """Write :func:`trace_events` to ``path`` (JSON); the path is returned."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(trace_events(forms)))
    return path
