"""onnxruntime's profiling trace, read into runs of kernel events.

A session with ``enable_profiling`` records every run until ``end_profiling()``: one
``model_run`` session event per run (its ``dur`` is onnxruntime's own time of the run) and, per
kernel of the optimised graph, a node event named ``<kernel>_kernel_time`` whose ``dur`` is the
time of ``OpKernel::Compute()`` on the host, in µs, with ``args.provider``, ``args.op_name`` and
the sizes in bytes of its inputs (``activation_size``), weights (``parameter_size``) and outputs
(``output_size``). Event times (``ts``) are µs since ``get_profiling_start_time_ns()``, which is
wall-clock time (CLOCK_REALTIME); ``tid`` is the OS thread id of the thread that ran the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

KERNEL_SUFFIX = "_kernel_time"


@dataclass(frozen=True)
class KernelEvent:
    """One kernel of one run."""

    kernel: str  # node name in onnxruntime's optimised graph
    op: str
    provider: str
    start_us: int  # since the profiling start
    dur_us: int
    thread_id: int
    io_bytes: int  # inputs + outputs, as onnxruntime sizes them
    param_bytes: int  # weights still inputs of the kernel (pre-packed weights, e.g. Gemm's, are not)


@dataclass(frozen=True)
class RunTrace:
    start_us: int
    dur_us: int
    kernels: list[KernelEvent]  # in execution order


def _size(args: dict, key: str) -> int:
    try:
        return int(args.get(key, 0))
    except (TypeError, ValueError):
        return 0


def read_runs(events: list[dict]) -> list[RunTrace]:
    """Every run of the trace, oldest first, each with its kernel events in execution order."""
    runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"), key=lambda e: e["ts"]
    )
    if not runs:
        raise ValueError("the onnxruntime trace has no model_run event")
    kernels = sorted(
        (e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith(KERNEL_SUFFIX)),
        key=lambda e: e["ts"],
    )
    out, position = [], 0
    for run in runs:
        start, end = run["ts"], run["ts"] + run["dur"]
        while position < len(kernels) and kernels[position]["ts"] < start:
            position += 1  # kernels outside any run (none expected): skipped
        inside = []
        while position < len(kernels) and kernels[position]["ts"] <= end:
            event, args = kernels[position], kernels[position].get("args", {})
            inside.append(
                KernelEvent(
                    kernel=event["name"][: -len(KERNEL_SUFFIX)],
                    op=args.get("op_name", ""),
                    provider=args.get("provider", ""),
                    start_us=int(event["ts"]),
                    dur_us=int(event["dur"]),
                    thread_id=int(event.get("tid", 0)),
                    io_bytes=_size(args, "activation_size") + _size(args, "output_size"),
                    param_bytes=_size(args, "parameter_size"),
                )
            )
            position += 1
        out.append(RunTrace(int(start), int(run["dur"]), inside))
    return out
