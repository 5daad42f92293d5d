"""Pictures of profiles: the roofline of a model's layers, and latency against GMACs across architectures.

matplotlib as in :mod:`graphgen.plots` (the ``plot`` extra, Agg canvas, PNG of the requested size).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from graphgen.plots import DEFAULT_SIZE, STAGE_COLOURS, PlotError, _figure, _save

if TYPE_CHECKING:
    from graphgen.profiling.bench import BenchRow
    from graphgen.profiling.calibrate import Roof
    from graphgen.profiling.summary import Profile

KIND_COLOURS = {
    "depthwise conv": "#e15759",
    "grouped conv": "#f28e2b",
    "1x1 conv": "#4e79a7",
    "3x3 conv": "#59a14f",
    "dense": "#b07aa1",
}
OTHER_CONV = "#76b7b2"
LABELLED = 8  # the slowest layers get their names on the picture


def plot_roofline(
    profile: Profile, roof: Roof, path: str | Path, size: tuple[int, int] = DEFAULT_SIZE, *, title: str = ""
) -> Path:
    """Achieved GMAC/s against arithmetic intensity (MACs per byte moved) per layer, under the measured roof.

    Marker area ∝ the layer's share of the time; colour = kind of layer. Layers without MACs
    (pooling, reorders, element-wise) have no place on a compute roofline and are left out
    (counted in the heading).
    """
    points = [r for r in profile.rows if r.macs and r.bytes and r.best.median > 0]
    if not points:
        raise PlotError("no layer of this profile has both MACs and bytes: nothing to place under the roof")
    figure = _figure(size)
    from matplotlib.lines import Line2D

    ax = figure.subplots()
    intensity = [r.macs / r.bytes for r in points]
    achieved = [r.macs / r.best.median / 1e3 for r in points]  # MACs/µs = 1e-3 GMAC/s
    share = [profile.share(r) for r in points]
    colours = [KIND_COLOURS.get(r.kind, OTHER_CONV) for r in points]
    ax.scatter(intensity, achieved, s=[30 + 3000 * s for s in share], c=colours, alpha=0.75, edgecolors="white")
    low, high = min(min(intensity) / 2, roof.ridge / 4), max(max(intensity) * 2, roof.ridge * 4)
    xs = [low * (high / low) ** (i / 200) for i in range(201)]
    ax.plot(xs, [min(roof.peak_gmacs, roof.bandwidth_gbs * x) for x in xs], color="#333333", linewidth=2)
    ax.annotate(f"peak {roof.peak_gmacs:,.1f} GMAC/s", (high, roof.peak_gmacs), xytext=(-4, 6),
                textcoords="offset points", ha="right", fontsize=10)  # fmt: skip
    ax.annotate(f"memory {roof.bandwidth_gbs:,.1f} GB/s", (low, roof.bandwidth_gbs * low), xytext=(4, 8),
                textcoords="offset points", fontsize=10, rotation=0)  # fmt: skip
    for row, x, y in sorted(zip(points, intensity, achieved), key=lambda p: p[0].best.median, reverse=True)[:LABELLED]:
        ax.annotate(row.layer.split(" + ")[0], (x, y), xytext=(6, -10), textcoords="offset points", fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(
        "arithmetic intensity (MACs per byte moved: inputs + weights + outputs); the slope is DRAM bandwidth, "
        "so layers whose data stays in cache can sit above it"
    )
    ax.set_ylabel("achieved GMAC/s (median over the runs)")
    ax.grid(which="major", alpha=0.3)
    kinds = [*KIND_COLOURS.items(), ("other conv", OTHER_CONV)]
    handles = [Line2D([], [], marker="o", linestyle="", color=c, markersize=9, label=k) for k, c in kinds]
    ax.legend(handles=handles, title="layer (marker area ∝ share of time)", loc="lower right", fontsize=9)
    left_out = len(profile.rows) - len(points)
    heading = (
        f"{title}\n" if title else ""
    ) + f"roofline: {len(points)} layers with MACs ({left_out} without left out); roof: {roof.method}"
    figure.suptitle(heading, x=0.01, ha="left", fontsize=10)
    return _save(figure, path)


def plot_bench(rows: Sequence[BenchRow], path: str | Path, size: tuple[int, int] = DEFAULT_SIZE) -> Path:
    """Median latency against GMACs per image, log-log, one series per batch size, p10–p90 as error bars."""
    if not rows:
        raise PlotError("no benchmark rows to draw")
    figure = _figure(size)
    ax = figure.subplots()
    for index, batch in enumerate(sorted({r.batch for r in rows})):
        series = sorted((r for r in rows if r.batch == batch), key=lambda r: r.gmacs)
        xs = [r.gmacs for r in series]
        ys = [r.latency.median / 1e3 for r in series]
        errors = [[r.latency.median / 1e3 - r.latency.p10 / 1e3 for r in series],
                  [r.latency.p90 / 1e3 - r.latency.median / 1e3 for r in series]]  # fmt: skip
        colour = STAGE_COLOURS[index % len(STAGE_COLOURS)]
        ax.errorbar(xs, ys, yerr=errors, fmt="o", color=colour, capsize=3, label=f"batch {batch}")
        for row, x, y in zip(series, xs, ys):
            ax.annotate(row.name, (x, y), xytext=(6, 4), textcoords="offset points", fontsize=9)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("GMACs per image")
    ax.set_ylabel("latency per batch, ms (median, p10–p90)")
    ax.grid(which="both", alpha=0.3)
    ax.legend(loc="upper left")
    provider = rows[0].provider
    ax.set_title(f"Latency vs compute on this machine ({provider})", loc="left", fontsize=13)
    return _save(figure, path)
