"""Repeated runs made into one profile: per row the median and a spread, the run as a whole beside them.

A single run is noise: two profiles of EfficientNet-Lite0 in a row named different bottlenecks.
So a profile measures ``runs`` runs after warm-up runs it does not count, and reports per kernel
the **median** time over the runs and the **p10–p90 spread** (10th and 90th percentiles,
numpy's linear interpolation; min and max are kept too). The total is the median of the whole
runs (onnxruntime's ``model_run``), not the sum of the rows' medians: the difference is the
executor's time between kernels plus the rounding of medians, and is reported as ``overhead``;
:data:`ADD_UP_MARGIN` is the margin within which rows must add up to the median run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from graphgen.profiling.disturbance import DISTURBED_SHARE
from graphgen.profiling.layermap import LayerMap
from graphgen.profiling.trace import RunTrace

SPREAD = "p10-p90"
# A row's headline figure. The median while the runs had their CPU; its fastest run when most runs
# waited for one: measured on a 2-CPU machine serving ResNet-50 to 8 looping clients (load 11),
# rows' medians were 24–64% off the same layers' figures without the clients, their minima 3–4%
# (p10 5–6%); bench/profile_under_load.py.
HEADLINE_MEDIAN, HEADLINE_MIN = "median", "min"
MIN_TIE = 0.05  # fastest runs this close to the slowest row's are tied with it (their error under load: 1–4%)
ADD_UP_MARGIN = 0.05  # rows' medians add up to the median run within 5%
# What a row's time is, said in the response and in the table's header.
TIMING_HOST = "host"  # CPU: the kernel's own time
TIMING_LAUNCH = "launch"  # CUDA without CUPTI: the time to launch the kernels, not GPU time
TIMING_DEVICE = "device"  # CUDA with CUPTI: GPU time of the kernels each node launched
TIMING_TEXT = {
    TIMING_HOST: "kernel time on the host",
    TIMING_LAUNCH: "CUDA LAUNCH TIME on the host, not GPU time (no CUPTI device timing)",
    TIMING_DEVICE: "GPU time from CUPTI kernel records (host launch time beside it)",
}


@dataclass(frozen=True)
class Spread:
    """A time over repeated runs, in µs."""

    median: float
    p10: float
    p90: float
    min: float
    max: float

    @classmethod
    def of(cls, values: list[float] | np.ndarray) -> Spread:
        array = np.asarray(values, dtype=np.float64)
        p10, median, p90 = np.percentile(array, [10, 50, 90])
        return cls(float(median), float(p10), float(p90), float(array.min()), float(array.max()))


@dataclass
class LayerRow:
    """One kernel of the optimised graph, named after the graphgen layers it computes."""

    layer: str  # graphgen layer names joined by " + ", or "[<runtime>] <kernel>" for a kernel the runtime inserted
    nodes: tuple[str, ...]
    op_types: tuple[str, ...]
    kernel: str
    kernel_op: str
    provider: str
    time: Spread  # host time of the node (on CUDA: its launch time)
    io_bytes: int = 0  # inputs + outputs as onnxruntime sizes them (its layout, its element type)
    weight_bytes: int = 0  # the kernel's weights (join.py fills in weights onnxruntime pre-packed)
    device: Spread | None = None  # GPU time (CUPTI), where measured
    # From graphgen stats' static table (join.py); 0 where the row computes no layer of it.
    params: int = 0
    macs: int = 0
    activation_bytes: int = 0
    kind: str = ""  # "depthwise conv", "grouped conv", "1x1 conv", "3x3 conv", "dense", … (join.py)

    @property
    def mapped(self) -> bool:
        return bool(self.nodes)

    @property
    def bytes(self) -> int:
        """Bytes the kernel moves at least once: inputs, weights, outputs (for GB/s and intensity)."""
        return self.io_bytes + self.weight_bytes

    @property
    def best(self) -> Spread:
        """The row's real compute time: GPU time where measured, else the host time."""
        return self.device or self.time


@dataclass(frozen=True)
class Span:
    """One kernel of one measured run on the timeline."""

    row: int  # index into Profile.rows
    start_us: float  # since the start of its run
    dur_us: float
    thread: int  # OS thread id that ran it (0 where the runtime does not say)


@dataclass(frozen=True)
class RunTimeline:
    """One measured run: where it starts (µs since the first measured run's start) and its kernels."""

    start_us: float
    dur_us: float
    spans: tuple[Span, ...]


@dataclass
class Profile:
    rows: list[LayerRow]
    run: Spread  # whole runs (onnxruntime's model_run)
    runs: int
    warmup_runs: int
    batch: int
    provider: str
    timing: str  # TIMING_HOST | TIMING_LAUNCH | TIMING_DEVICE
    unprofiled: tuple[str, ...] = ()
    setup_us: float = 0.0  # building the profiling session (where waited for) and the warm-up runs
    build_us: float = 0.0  # the session's own build time (possibly done ahead of the request)
    wall_us: float = 0.0  # wall time of the measured runs together
    device_run: Spread | None = None  # per run, its GPU span from CUPTI (first GPU work's start to last one's end)
    device_busy: Spread | None = None  # per run, the GPU busy with it (union of its kernels, copies, memsets)
    event_run: Spread | None = None  # per run, CUDA events around it: close to host wall time (a cross-check)
    between_kernels: Spread | None = None  # per run: the run's time outside its kernels (the executor's)
    notes: list[str] = field(default_factory=list)
    spread: str = SPREAD
    cpu_waits: list[float] = field(default_factory=list)  # per measured run: its threads' CPU-wait share
    headline: str = HEADLINE_MEDIAN  # each row's figure: its median, or its fastest run (explain decides)
    runtime: str = "onnxruntime"  # whose kernels: "onnxruntime" or "openvino"
    timeline: list[RunTimeline] = field(default_factory=list)  # each measured run's kernels, for traces

    @property
    def disturbed_runs(self) -> int:
        """Runs whose threads waited for a CPU more than DISTURBED_SHARE of the time they were ready to run."""
        return sum(share > DISTURBED_SHARE for share in self.cpu_waits)

    def per_run(self) -> list[list[float]]:
        """Each row's time in each measured run (a kernel run twice in one run summed); [] without a timeline."""
        if not self.timeline:
            return []
        times = [[0.0] * len(self.timeline) for _ in self.rows]
        for index, run in enumerate(self.timeline):
            for span in run.spans:
                times[span.row][index] += span.dur_us
        return times

    def figure(self, row: LayerRow) -> float:
        """The row's headline time: its median over the runs, or its fastest run where the runs were disturbed."""
        return row.best.min if self.headline == HEADLINE_MIN else row.best.median

    @property
    def layers_us(self) -> float:
        return sum(self.figure(row) for row in self.rows)

    @property
    def total_us(self) -> float:
        """The time the rows add up to: the CUPTI run span where measured, else the whole run (median, or fastest)."""
        run = self.device_run if self.device_run and self.timing == TIMING_DEVICE else self.run
        return run.min if self.headline == HEADLINE_MIN else run.median

    @property
    def run_name(self) -> str:
        return "fastest whole run" if self.headline == HEADLINE_MIN else "median run"

    @property
    def overhead_us(self) -> float:
        return self.total_us - self.layers_us

    @property
    def add_up_error(self) -> float:
        """|rows - run| / run: within ADD_UP_MARGIN for a profile that adds up."""
        return abs(self.overhead_us) / self.total_us if self.total_us else 0.0

    @property
    def timing_text(self) -> str:
        return TIMING_TEXT[self.timing]

    def share(self, row: LayerRow) -> float:
        """The row's part of the layers' time (Σ rows' medians): shares add up to 1, like shares of MACs.

        Of the layers' sum rather than of the median run, so that run-to-run noise no layer owns
        (reported as overhead) does not shrink every share alike.
        """
        return self.figure(row) / self.layers_us if self.layers_us else 0.0

    def top(self, share: float = 0.0) -> list[LayerRow]:
        """Rows slowest first, those taking at least ``share`` of the layers' time."""
        ranked = sorted(self.rows, key=self.figure, reverse=True)
        return [row for row in ranked if self.share(row) >= share]

    def tied_with_top(self) -> list[LayerRow]:
        """The slowest row and every row tied with it: each one's median within the other's spread.

        ResNet-50's layer4.{0,1,2}.conv2 have the same MACs and shapes; which of them a profile
        names first is noise, and a profile says so rather than naming one.
        """
        ranked = self.top()
        if not ranked:
            return []
        top = ranked[0].best
        if self.headline == HEADLINE_MIN:  # fastest runs: tied within the minimum's own error under load
            return [row for row in ranked if row.best.min >= top.min * (1 - MIN_TIE)]
        return [row for row in ranked if row.best.median >= top.p10 and row.best.p90 >= top.median]

    def as_dict(self) -> dict:
        rows = []
        for row in self.rows:
            entry = asdict(row) | {"mapped": row.mapped, "share": self.share(row), "bytes": row.bytes}
            figure = self.figure(row)
            entry["headline_us"] = figure
            if row.macs and figure > 0:
                entry["gmac_per_s"] = row.macs / figure / 1e3
            if row.bytes and figure > 0:
                entry["gb_per_s"] = row.bytes / figure / 1e3
            if row.macs and row.bytes:
                entry["macs_per_byte"] = row.macs / row.bytes
            rows.append(entry)
        keys = ("runtime", "runs", "warmup_runs", "batch", "provider", "timing", "spread", "headline")
        out = {key: getattr(self, key) for key in keys}
        return out | {
            "timing_text": self.timing_text,
            "run_us": asdict(self.run),
            "device_run_us": asdict(self.device_run) if self.device_run else None,
            "device_busy_us": asdict(self.device_busy) if self.device_busy else None,
            "event_run_us": asdict(self.event_run) if self.event_run else None,
            "layers_us": self.layers_us,
            "overhead_us": self.overhead_us,
            "add_up_error": self.add_up_error,
            "between_kernels_us": asdict(self.between_kernels) if self.between_kernels else None,
            "setup_us": self.setup_us,
            "cpu_wait_share": asdict(Spread.of(self.cpu_waits)) if self.cpu_waits else None,
            "disturbed_runs": self.disturbed_runs if self.cpu_waits else None,
            "build_us": self.build_us,
            "unprofiled_nodes": list(self.unprofiled),
            "notes": self.notes,
            "rows": rows,
        }


def summarize(
    runs: list[RunTrace],
    layer_map: LayerMap,
    *,
    batch: int,
    warmup_runs: int,
    timing: str = TIMING_HOST,
    runtime: str = "onnxruntime",
) -> Profile:
    """One profile of the measured ``runs`` (the warm-up runs already left out).

    Kernels that compute no graphgen layer are named ``[<runtime>] <kernel>``: the runtime inserted them.
    """
    if not runs:
        raise ValueError("no run to summarise")
    per_kernel: dict[str, list[float]] = {}
    first: dict[str, tuple[str, str, int, int]] = {}  # kernel -> (op, provider, bytes), in first-seen order
    for index, run in enumerate(runs):
        for event in run.kernels:
            times = per_kernel.setdefault(event.kernel, [0.0] * len(runs))
            times[index] += event.dur_us  # a kernel run twice in one run (a loop) counts once per run, summed
            first.setdefault(event.kernel, (event.op, event.provider, event.io_bytes, event.param_bytes))
    rows = []
    for kernel, times in per_kernel.items():
        origin = layer_map.origin(kernel)
        op, provider, io_bytes, param_bytes = first[kernel]
        rows.append(
            LayerRow(
                layer=origin.layer if origin.mapped else f"[{runtime}] {kernel}",
                nodes=origin.nodes,
                op_types=origin.op_types,
                kernel=kernel,
                kernel_op=op,
                provider=provider,
                time=Spread.of(times),
                io_bytes=io_bytes,
                weight_bytes=param_bytes,
            )
        )
    providers = sorted({row.provider for row in rows if row.provider})
    row_of = {row.kernel: i for i, row in enumerate(rows)}
    origin_us = runs[0].start_us
    timeline = [
        RunTimeline(
            run.start_us - origin_us,
            run.dur_us,
            tuple(Span(row_of[k.kernel], k.start_us - run.start_us, k.dur_us, k.thread_id) for k in run.kernels),
        )
        for run in runs
    ]
    return Profile(
        rows=rows,
        run=Spread.of([run.dur_us for run in runs]),
        between_kernels=Spread.of([run.dur_us - sum(k.dur_us for k in run.kernels) for run in runs]),
        runs=len(runs),
        warmup_runs=warmup_runs,
        batch=batch,
        provider=", ".join(providers),
        timing=timing,
        unprofiled=layer_map.unprofiled,
        runtime=runtime,
        timeline=timeline,
    )


def explain(profile: Profile) -> None:
    """Choose the rows' headline figure; add the notes a reader needs: disturbed runs, rows that do not add up, ties."""
    # GPU times (CUPTI) are not the host threads' to lose: only host-timed rows switch to fastest runs.
    if profile.timing != TIMING_DEVICE and profile.cpu_waits and 2 * profile.disturbed_runs > len(profile.cpu_waits):
        profile.headline = HEADLINE_MIN
        waits = Spread.of(profile.cpu_waits)
        profile.notes.append(
            f"{profile.disturbed_runs} of {len(profile.cpu_waits)} runs were disturbed: their threads waited for a "
            f"CPU {waits.median:.0%} of the time they were ready to run (median run; worst {waits.max:.0%}); each "
            "row's figure is its fastest run, which load disturbs least (its median would measure the load)"
        )
    elif profile.disturbed_runs:
        profile.notes.append(
            f"{profile.disturbed_runs} of {len(profile.cpu_waits)} runs were disturbed (their threads waited for a "
            f"CPU more than {DISTURBED_SHARE:.0%} of the time they were ready to run); the rows' medians leave them out"
        )
    gap = profile.between_kernels.median if profile.between_kernels and profile.timing != TIMING_DEVICE else 0.0
    if profile.add_up_error > ADD_UP_MARGIN:
        added = (
            f"the rows add up to {profile.layers_us / profile.total_us:.0%} of the {profile.run_name}, beyond the "
            f"{ADD_UP_MARGIN:.0%} margin"
        )
        if profile.timing == TIMING_DEVICE:
            idle = ""
            if profile.device_run and profile.device_busy:
                idle = f", {profile.device_run.median - profile.device_busy.median:,.0f} µs per run (median)"
            profile.notes.append(
                f"{added.replace(profile.run_name, 'GPU run span (CUPTI)')}: the rest is the GPU idle between kernels"
                f"{idle} (waiting for the host to launch them) and GPU work launched by no node (see the CUPTI note)"
            )
        elif abs(profile.total_us - profile.layers_us - gap) <= ADD_UP_MARGIN * profile.total_us:
            profile.notes.append(
                f"{added}: the rest, {gap:,.0f} µs per run (median), is onnxruntime's executor between the "
                f"{len(profile.rows)} kernels; a small model's runs are mostly that"
            )
        else:
            profile.notes.append(
                f"{added}: the runs were disturbed (whole runs {profile.run.p10:,.0f}–{profile.run.p90:,.0f} µs, "
                f"{profile.spread}); each row's {'fastest run' if profile.headline == HEADLINE_MIN else 'median'} "
                f"leaves out the disturbances that hit it in a few runs, the {profile.run_name} does not. Profile on "
                "an idle machine, or with more runs."
            )
    tied = profile.tied_with_top()
    if len(tied) > 1:
        names = ", ".join(row.layer for row in tied[:6]) + (" …" if len(tied) > 6 else "")
        if profile.headline == HEADLINE_MIN:
            profile.notes.append(
                f"{len(tied)} rows' fastest runs are within {MIN_TIE:.0%} of the slowest row's: {names}"
            )
        else:
            profile.notes.append(
                f"{len(tied)} rows are as slow as the slowest within their {profile.spread} spread: {names}"
            )
