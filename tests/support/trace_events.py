"""What the Trace Event Format asks of a JSON trace, checked (the rules Perfetto and Chrome's viewers read by).

From Google's "Trace Event Format" document (JSON Object Format): a ``traceEvents`` array of events,
optional ``displayTimeUnit`` ("ms" or "ns") and free ``otherData``. Every event has ``ph``, ``pid`` and
``tid``; a complete event (``"X"``) has a ``name``, ``ts`` and ``dur`` in µs (numbers, ``dur`` ≥ 0);
metadata events (``"M"``) are named ``process_name``, ``process_labels``, ``process_sort_index``,
``thread_name`` or ``thread_sort_index`` and carry ``args.name`` or ``args.sort_index``; ``args`` is an
object. Complete events on one thread must nest: two either do not overlap or one holds the other.
"""

from __future__ import annotations

import json
from typing import Any

METADATA = {
    "process_name": "name",
    "process_labels": "labels",
    "process_sort_index": "sort_index",
    "thread_name": "name",
    "thread_sort_index": "sort_index",
}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def format_errors(trace: Any) -> list[str]:
    """Every way ``trace`` breaks the format (empty: it follows it)."""
    if not isinstance(trace, dict) or not isinstance(trace.get("traceEvents"), list):
        return ["not a JSON object with a traceEvents array"]
    errors = []
    if trace.get("displayTimeUnit", "ms") not in ("ms", "ns"):
        errors.append(f"displayTimeUnit {trace['displayTimeUnit']!r} is neither ms nor ns")
    slices: dict[tuple[int, int], list[tuple[float, float, str]]] = {}
    for index, event in enumerate(trace["traceEvents"]):
        where = f"event {index}"
        if not isinstance(event, dict):
            errors.append(f"{where}: not an object")
            continue
        phase = event.get("ph")
        if not all(isinstance(event.get(key), int) for key in ("pid", "tid")):
            errors.append(f"{where}: pid and tid must be integers")
        if "args" in event and not isinstance(event["args"], dict):
            errors.append(f"{where}: args must be an object")
        if phase == "X":
            if not isinstance(event.get("name"), str) or not event["name"]:
                errors.append(f"{where}: a complete event needs a name")
            if not (_number(event.get("ts")) and _number(event.get("dur")) and event["dur"] >= 0):
                errors.append(f"{where}: a complete event needs numeric ts and dur >= 0 (µs)")
            else:
                slices.setdefault((event["pid"], event["tid"]), []).append(
                    (event["ts"], event["ts"] + event["dur"], event["name"])
                )
        elif phase == "M":
            key = METADATA.get(event.get("name", ""))
            if key is None or key not in event.get("args", {}):
                errors.append(f"{where}: unknown metadata event or args without {key or 'its field'}")
        else:
            errors.append(f"{where}: phase {phase!r} is not one this writer should produce (X or M)")
    for (pid, tid), spans in slices.items():
        spans.sort(key=lambda span: (span[0], -span[1]))
        open_spans: list[tuple[float, float, str]] = []
        for start, end, name in spans:
            while open_spans and open_spans[-1][1] <= start:
                open_spans.pop()
            if open_spans and end > open_spans[-1][1]:
                errors.append(f"pid {pid} tid {tid}: {name!r} overlaps {open_spans[-1][2]!r} without nesting")
            open_spans.append((start, end, name))
    try:
        json.dumps(trace, allow_nan=False)
    except ValueError as error:
        errors.append(f"not strict JSON: {error}")
    return errors
