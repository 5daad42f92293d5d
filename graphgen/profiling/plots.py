"""Pictures of profiles: per-layer times (``graphgen profile --plot``, ``graphgen-client classify --profile --plot``),
the roofline of a model's layers, and latency against GMACs across architectures.

matplotlib as in :mod:`graphgen.plots` (the ``plot`` extra, Agg canvas, PNG of the requested size).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from graphgen.plots import DEFAULT_SIZE, OP_COLOURS, STAGE_COLOURS, PlotError, _figure, _op_kind, _save

if TYPE_CHECKING:
    from graphgen.profiling.bench import BenchRow
    from graphgen.profiling.calibrate import Roof
    from graphgen.profiling.comparison import Comparison
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
PROFILE_LIMIT = 40  # slowest layers drawn; the rest share one bar
COMPARED_LIMIT = 24  # rows of a comparison drawn: those that changed most
WHISKER_END = 1.15  # whiskers end this far past the longest median (the axis is the medians')


def plot_roofline(
    profile: Profile, roof: Roof, path: str | Path, size: tuple[int, int] = DEFAULT_SIZE, *, title: str = ""
) -> Path:
    """Achieved GMAC/s against arithmetic intensity (MACs per byte moved) per layer, under the measured roof.

    Marker area ∝ the layer's share of the time; colour = kind of layer. Layers without MACs
    (pooling, reorders, element-wise) have no place on a compute roofline and are left out
    (counted in the heading).
    """
    points = [r for r in profile.rows if r.macs and r.bytes and profile.figure(r) > 0]
    if not points:
        raise PlotError("no layer of this profile has both MACs and bytes: nothing to place under the roof")
    figure = _figure(size)
    from matplotlib.lines import Line2D

    ax = figure.subplots()
    intensity = [r.macs / r.bytes for r in points]
    achieved = [r.macs / profile.figure(r) / 1e3 for r in points]  # MACs/µs = 1e-3 GMAC/s
    share = [profile.share(r) for r in points]
    colours = [KIND_COLOURS.get(r.kind, OTHER_CONV) for r in points]
    ax.scatter(intensity, achieved, s=[30 + 3000 * s for s in share], c=colours, alpha=0.75, edgecolors="white")
    low, high = min(min(intensity) / 2, roof.ridge / 4), max(max(intensity) * 2, roof.ridge * 4)
    xs = [low * (high / low) ** (i / 200) for i in range(201)]
    ax.plot(xs, [min(roof.peak_gmacs, roof.bandwidth_gbs * x) for x in xs], color="#333333", linewidth=2)
    ax.annotate(
        f"peak {roof.peak_gmacs:,.1f} GMAC/s",
        (high, roof.peak_gmacs),
        xytext=(-4, 6),
        textcoords="offset points",
        ha="right",
        fontsize=10,
    )
    ax.annotate(
        f"memory {roof.bandwidth_gbs:,.1f} GB/s",
        (low, roof.bandwidth_gbs * low),
        xytext=(4, 8),
        textcoords="offset points",
        fontsize=10,
        rotation=0,
    )
    for row, x, y in sorted(zip(points, intensity, achieved), key=lambda p: profile.figure(p[0]), reverse=True)[
        :LABELLED
    ]:
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
    """Median latency against GMACs per image, log-log, one series per batch size (and runtime), p10–p90 bars."""
    if not rows:
        raise PlotError("no benchmark rows to draw")
    figure = _figure(size)
    ax = figure.subplots()
    providers = list(dict.fromkeys(r.provider for r in rows))
    series_keys = [(batch, provider) for batch in sorted({r.batch for r in rows}) for provider in providers]
    for index, (batch, provider) in enumerate(series_keys):
        series = sorted((r for r in rows if r.batch == batch and r.provider == provider), key=lambda r: r.gmacs)
        if not series:
            continue
        xs = [r.gmacs for r in series]
        ys = [r.latency.median / 1e3 for r in series]
        errors = [
            [r.latency.median / 1e3 - r.latency.p10 / 1e3 for r in series],
            [r.latency.p90 / 1e3 - r.latency.median / 1e3 for r in series],
        ]
        colour = STAGE_COLOURS[index % len(STAGE_COLOURS)]
        label = f"batch {batch}" + (f", {provider}" if len(providers) > 1 else "")
        ax.errorbar(xs, ys, yerr=errors, fmt="o", color=colour, capsize=3, label=label)
        for row, x, y in zip(series, xs, ys):
            ax.annotate(row.name, (x, y), xytext=(6, 4), textcoords="offset points", fontsize=9)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("GMACs per image")
    ax.set_ylabel("latency per batch, ms (median, p10–p90)")
    ax.grid(which="both", alpha=0.3)
    ax.legend(loc="upper left")
    ax.set_title(f"Latency vs compute on this machine ({', '.join(providers)})", loc="left", fontsize=13)
    return _save(figure, path)


@dataclass(frozen=True)
class ProfileRow:
    """One layer's time in a profiled request (the rows the server returns)."""

    layer: str
    op_types: tuple[str, ...]
    time_us: float  # the median over the profiled runs
    share: float  # of the whole inference
    low_us: float | None = None  # the spread over the runs (e.g. p10..p90), drawn as an error bar
    high_us: float | None = None


def _error_bar(row: ProfileRow) -> tuple[float, float]:
    """How far below and above its time a row's spread reaches (none without one)."""
    if row.low_us is None or row.high_us is None:
        return 0.0, 0.0
    return row.time_us - row.low_us, row.high_us - row.time_us


def plot_profile(
    rows: Sequence[ProfileRow],
    path: str | Path,
    size: tuple[int, int] = DEFAULT_SIZE,
    *,
    title: str = "",
    inference_us: float | None = None,
    limit: int = PROFILE_LIMIT,
    spread: str = "",
    notes: Sequence[str] = (),
) -> Path:
    """Time of every layer of one request, in execution order (the ``limit`` slowest, the rest summed).

    ``inference_us``, the whole run's time as the server measured it, goes in the heading beside
    the layers' sum; the shares are of it. Rows with ``low_us``/``high_us`` get an error bar
    (``spread`` names it in the legend, e.g. "p10-p90 over 10 runs"). The profile's ``notes`` that a
    reader of the picture must see (disturbed runs, rows that do not add up, tied rows) go in the heading.
    """
    if not rows:
        raise PlotError("the profile has no layers to draw")
    shown = set(sorted(range(len(rows)), key=lambda i: rows[i].time_us, reverse=True)[:limit])
    bars = [(rows[i].layer, "+".join(rows[i].op_types), rows[i].time_us, rows[i].share) for i in sorted(shown)]
    errors = [_error_bar(rows[i]) for i in sorted(shown)]
    rest = [row for i, row in enumerate(rows) if i not in shown]
    if rest:
        summed = (sum(r.time_us for r in rest), sum(r.share for r in rest))
        bars.append((f"{len(rest)} other layers", "", *summed))
        errors.append((0.0, 0.0))
    figure = _figure(size)
    ax = figure.subplots()
    positions = range(len(bars))
    colours = [OP_COLOURS[_op_kind(ops)] if ops else OP_COLOURS["other"] for _, ops, _, _ in bars]
    ax.barh(positions, [t for _, _, t, _ in bars], color=colours, height=0.75)
    # The axis is made for the medians: whiskers of disturbed runs longer than that are cut at WHISKER_END
    # (marked ▸) instead of squeezing every bar to the left.
    longest = max(t for _, _, t, _ in bars) or 1.0
    cap = longest * WHISKER_END
    highs = [min(high, max(0.0, cap - t)) for (_, _, t, _), (_, high) in zip(bars, errors)]
    cut = [y for y, ((_, _, t, _), (_, high)) in zip(positions, zip(bars, errors)) if t + high > cap]
    if any(low or high for low, high in errors):
        ax.errorbar(
            [t for _, _, t, _ in bars],
            list(positions),
            xerr=[[max(0.0, e[0]) for e in errors], highs],
            fmt="none",
            ecolor="#333333",
            elinewidth=1.2,
            capsize=3,
            label=f"spread ({spread})" if spread else "spread",
        )
        ax.plot([cap] * len(cut), cut, linestyle="", marker=">", color="#333333", markersize=5)
        ax.legend(loc="lower right", fontsize=9)
    ax.set_yticks(list(positions))
    fontsize = max(6.0, min(10.0, 0.55 * size[1] / len(bars) / 1.4))
    ax.set_yticklabels([f"{layer}  [{ops}]" if ops else layer for layer, ops, _, _ in bars], fontsize=fontsize)
    ax.invert_yaxis()  # execution order reads top to bottom
    for y, (_, _, time_us, share), high in zip(positions, bars, highs):
        ax.text(
            time_us + high + longest * 0.01, y, f"{time_us:,.0f} µs  {share * 100:.1f}%", va="center", fontsize=fontsize
        )
    ax.set_xlim(0, cap + longest * 0.3)  # room for the labels right of the bars
    ax.set_xlabel("time (µs)" + (f"; ▸ spread cut at {cap:,.0f} µs" if cut else ""))
    ax.grid(axis="x", alpha=0.3)
    heading = f"{sum(r.time_us for r in rows):,.0f} µs in {len(rows)} layers"
    if inference_us is not None:
        heading += f" of a {inference_us:,.0f} µs inference"
    if rest:
        heading += f"; the {limit} slowest in execution order, then the rest"
    lines = [title, heading, *(short for note in notes if (short := _short(note)))]
    figure.suptitle("\n".join(line for line in lines if line), x=0.01, ha="left", fontsize=11)
    return _save(figure, path)


def plot_comparison(
    comparison: Comparison, path: str | Path, size: tuple[int, int] = DEFAULT_SIZE, *, limit: int = COMPARED_LIMIT
) -> Path:
    """The rows that changed most, one bar per form (median, p10–p90 whiskers), each form's ratio to the first.

    The x-axis ends a little past the longest median, so that medians stay readable when a
    disturbed run stretches a whisker far out: such whiskers are cut at the edge and marked ▸.
    """
    rows = comparison.rows[:limit]
    if not rows:
        raise PlotError("the comparison has no rows to draw")
    forms = len(comparison.labels)
    figure = _figure(size)
    ax = figure.subplots()
    height = 0.8 / forms
    longest = max(v for row in rows for form in range(len(row.times)) if (v := row.value(form)) is not None) or 1.0
    right = longest * 1.15
    fontsize = max(6.0, min(10.0, 0.5 * size[1] / (len(rows) * 1.3)))
    for form in range(forms):
        colour = STAGE_COLOURS[form % len(STAGE_COLOURS)]
        ys, medians, low, high, cut = [], [], [], [], []
        for index, row in enumerate(rows):
            time, value = row.times[form], row.value(form)
            if time is None or value is None:
                continue
            y = index - 0.4 + height * (form + 0.5)
            ys.append(y)
            medians.append(value)
            low.append(max(0.0, value - time.p10))
            high.append(max(0.0, min(time.p90, right) - value))
            if time.p90 > right:
                cut.append(y)
        label = f"{form}: {comparison.labels[form]} ({comparison.profiles[form].provider})"
        ax.barh(ys, medians, height=height * 0.92, color=colour, label=label)
        ax.errorbar(medians, ys, xerr=[low, high], fmt="none", ecolor="#333333", elinewidth=1, capsize=2)
        ax.plot([right] * len(cut), cut, linestyle="", marker=">", color="#333333", markersize=5, clip_on=False)
    for index, row in enumerate(rows):
        ratios = []
        for form in range(1, forms):
            ratio = row.ratio(form)
            if ratio is not None:
                ratios.append(("≈" if row.tied(form) else "") + f"{ratio:.2f}×")
            else:
                ratios.append("only here" if row.times[form] is not None else "absent")
        text = "  ".join(ratios) if forms > 1 else ""
        ax.text(right * 1.01, index, text, va="center", fontsize=fontsize)
    ax.set_yticks(list(range(len(rows))))
    ax.set_yticklabels([row.layer if len(row.layer) <= 60 else row.layer[:59] + "…" for row in rows], fontsize=fontsize)
    ax.invert_yaxis()  # the largest change on top
    ax.set_xlim(0, right)
    figure_name = "fastest run" if comparison.headline == "min" else "median"
    ax.set_xlabel(f"time per run, µs ({figure_name}; whiskers p10–p90, cut at the edge ▸ when longer)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.07), ncols=min(forms, 3), fontsize=9, frameon=False)
    totals = "; ".join(
        f"{i}: {comparison.profiles[i].total_us:,.0f} µs" + (f" = {comparison.total_ratio(i):.2f}× 0" if i else "")
        for i in range(forms)
    )
    fastest = comparison.headline == "min"
    heading = (
        f"{len(rows)} of {len(comparison.rows)} rows, largest change first; ratios to form 0 at the right "
        f"({'≈: within 5%' if fastest else '≈: spreads overlap'})\n{'fastest' if fastest else 'median'} runs: {totals}"
    )
    notes = [
        f"{form}: {_short(note)}" for form, p in enumerate(comparison.profiles) for note in p.notes if _short(note)
    ]
    figure.suptitle("\n".join([heading, *notes]), x=0.01, ha="left", fontsize=11)
    return _save(figure, path)


def _short(note: str) -> str:
    """The part of a profile's note a picture must carry: disturbed runs, rows that do not add up, ties."""
    if any(key in note for key in ("were disturbed", "rows add up to", "as slow as the slowest", "fastest runs are")):
        return note.split("; each row")[0].split("; a small model")[0]
    return ""
