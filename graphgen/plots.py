"""Pictures of graphgen's numbers: per-layer statistics and architectures compared (profiles: :mod:`graphgen.profiling.plots`).

matplotlib is an optional extra (``pip install 'graphgen-onnx[plot]'``), imported only when a picture
is drawn; without it every function raises :class:`PlotError` saying how to install it. Figures
are drawn on matplotlib's Agg canvas directly (no pyplot, no global state, no display needed)
and written as PNG of exactly the requested size in pixels.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from graphgen.argtypes import output_file
from graphgen.errors import GraphgenError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from graphgen.stats import LayerStats, ModelStats

DEFAULT_SIZE = (1600, 1000)
DPI = 100
MIN_SIDE, MAX_SIDE = 300, 8000  # pixels; below that nothing is legible, above that is a mistake
MAX_BARS = 64  # more layers than this are drawn per block (or per stage)
# Colours per kind of operation (colour-blind-safe Tableau 10 subset)
MISSING_MATPLOTLIB = "drawing pictures needs matplotlib: pip install 'graphgen-onnx[plot]'"
OP_COLOURS = {"conv": "#4e79a7", "dense": "#e15759", "pool": "#59a14f", "other": "#9c9c9c", "input": "#b07aa1"}
STAGE_COLOURS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f"]


class PlotError(GraphgenError, ValueError):
    """A picture that cannot be drawn: matplotlib missing, a bad size or path, nothing to draw."""


def parse_size(text: str) -> tuple[int, int]:
    """``"1600x1000"`` -> (1600, 1000), each side within [300, 8000] pixels."""
    width, _, height = text.lower().partition("x")
    try:
        size = int(width), int(height)
    except ValueError:
        raise PlotError(f"size must be WIDTHxHEIGHT in pixels, e.g. 1600x1000; got {text!r}") from None
    if not all(MIN_SIDE <= side <= MAX_SIDE for side in size):
        raise PlotError(f"each side of the picture must be {MIN_SIDE}..{MAX_SIDE} pixels; got {text!r}")
    return size


def size_argument(text: str) -> tuple[int, int]:
    """:func:`parse_size` for argparse's ``type=`` (a bad size is a usage error, exit 2)."""
    try:
        return parse_size(text)
    except PlotError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def plot_path_argument(text: str) -> Path:
    """An argparse ``type=`` for ``--plot``: a .png path, and matplotlib installed (checked before any work)."""
    path = output_file(text)
    if path.suffix.lower() != ".png":
        raise argparse.ArgumentTypeError(f"{text}: pictures are written as PNG; give a path ending in .png")
    if importlib.util.find_spec("matplotlib") is None:
        raise argparse.ArgumentTypeError(MISSING_MATPLOTLIB)
    return path


def _figure(size: tuple[int, int]) -> Figure:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotError(MISSING_MATPLOTLIB) from None
    figure = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise PlotError(f"{path}: pictures are written as PNG; give a path ending in .png")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, format="png")
    return path


def _binary(value: float) -> str:
    """Bytes in binary units, as graphgen's tables give them: ``12.3 MiB``."""
    for prefix, scale in (("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}B"
    return f"{value:.3g} B"


def _si(value: float, unit: str = "") -> str:
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}".rstrip()


def _op_kind(op: str) -> str:
    first = op.split("+")[0]
    if first == "Input":
        return "input"
    if first.startswith("Conv"):
        return "conv"
    if first in ("Gemm", "MatMul"):
        return "dense"
    if "Pool" in first:
        return "pool"
    return "other"


# -- graphgen stats NAME --plot ----------------------------------------------------------------


@dataclass
class _Bar:
    label: str
    colour: str
    params: int = 0
    flops: int = 0
    activation_bytes: int = 0


def _prefix(name: str, depth: int) -> str:
    return ".".join(name.split(".")[:depth])


def _bars(rows: Sequence[LayerStats], max_bars: int) -> tuple[list[_Bar], str, bool]:
    """One bar per layer, or per name prefix (block, stage) when there are too many layers.

    Returns the bars, how they group, and whether their colours mean kinds of operation (else
    a colour marks a stage: the bars of ``layer3.*`` share one).
    """
    if len(rows) <= max_bars:
        bars = [_Bar(r.name, OP_COLOURS[_op_kind(r.op)], r.params, r.flops, r.activation_bytes) for r in rows]
        return bars, "per layer", True
    max_depth = max(len(r.name.split(".")) for r in rows)
    depth = 1  # the deepest name prefix (layer3 -> layer3.1 -> …) with few enough groups
    while depth < max_depth and len({_prefix(r.name, depth + 1) for r in rows}) <= max_bars:
        depth += 1
    groups: dict[str, _Bar] = {}
    heaviest: dict[str, LayerStats] = {}  # a group's kind: that of its layer with the most FLOPs
    stages: dict[str, str] = {}
    for row in rows:
        key, stage = _prefix(row.name, depth), _prefix(row.name, max(depth - 1, 1))  # layer3.1 is in layer3
        colour = stages.setdefault(stage, STAGE_COLOURS[len(stages) % len(STAGE_COLOURS)])
        bar = groups.setdefault(key, _Bar(key, colour))
        bar.params += row.params
        bar.flops += row.flops
        bar.activation_bytes += row.activation_bytes
        if key not in heaviest or row.flops > heaviest[key].flops:
            heaviest[key] = row
    # Stage colours say something only when two or more stages hold several groups (layer1…layer4).
    per_stage = Counter(_prefix(key, max(depth - 1, 1)) for key in groups)
    by_kind = sum(count > 1 for count in per_stage.values()) < 2
    if by_kind:
        for key, bar in groups.items():
            bar.colour = OP_COLOURS[_op_kind(heaviest[key].op)]
    return list(groups.values()), f"per module ({len(groups)} groups of {len(rows)} layers)", by_kind


def plot_layer_stats(
    stats: ModelStats, path: str | Path, size: tuple[int, int] = DEFAULT_SIZE, *, max_bars: int = MAX_BARS
) -> Path:
    """Parameters, FLOPs and activation memory of every layer (or block), as the lecture tables give them.

    Three bar charts over one axis of layers, each on a log scale (a VGG fc layer holds 10⁵ times
    the parameters of its first conv); the largest bar of each is labelled.
    """
    if not stats.rows:
        raise PlotError(f"{stats.architecture}: no layers to draw")
    bars, grouping, by_kind = _bars(stats.rows, max_bars)
    figure = _figure(size)
    from matplotlib.ticker import EngFormatter  # after _figure: matplotlib is there

    axes = figure.subplots(3, 1, sharex=True)
    panels = (
        ("params", "parameters", f"Parameters — total {_si(stats.params)}"),
        ("flops", "FLOPs", f"FLOPs (2 × MACs) — total {_si(2 * stats.macs)}"),
        (
            "activation_bytes",
            "bytes",
            f"Activation memory, float32 — total {_binary(stats.total('activation_bytes'))}",
        ),
    )
    positions = range(len(bars))
    for ax, (attribute, unit, title) in zip(axes, panels):
        values = [getattr(bar, attribute) for bar in bars]
        heights = [value if value > 0 else math.nan for value in values]  # a log axis has no zero
        ax.bar(positions, heights, color=[bar.colour for bar in bars], width=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(EngFormatter(unit="B" if unit == "bytes" else "", sep=" "))
        ax.set_title(title, loc="left", fontsize=11)
        ax.set_ylabel(unit)
        ax.grid(axis="y", which="major", alpha=0.3)
        if any(v > 0 for v in values):
            top = max(positions, key=lambda i: values[i])
            ax.annotate(
                f"{bars[top].label}: {_binary(values[top]) if unit == 'bytes' else _si(values[top])}",
                (top, values[top]),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=8,
            )
            ax.set_ylim(top=values[top] * 6)  # room for the label above the tallest bar
    ticks = axes[-1]
    ticks.set_xticks(list(positions))
    ticks.set_xticklabels([bar.label for bar in bars], rotation=90, fontsize=max(5.0, min(9.0, 900 / len(bars))))
    ticks.set_xlim(-0.6, len(bars) - 0.4)
    if by_kind:
        from matplotlib.patches import Patch

        kinds = dict.fromkeys(kind for kind, colour in OP_COLOURS.items() if colour in {bar.colour for bar in bars})
        handles = [Patch(color=OP_COLOURS[kind], label=kind) for kind in kinds]
        axes[0].legend(handles=handles, loc="upper left", fontsize=8, ncols=len(handles), frameon=False)
    figure.suptitle(
        f"{stats.architecture}: {grouping} parameters, FLOPs and activation memory (batch {stats.batch})",
        fontsize=13,
    )
    return _save(figure, path)


# -- graphgen compare NAME... --plot -----------------------------------------------------------


@dataclass(frozen=True)
class ArchPoint:
    """One architecture on the comparison chart."""

    name: str
    family: str
    params: int
    macs: int
    resolution: int


def plot_compare(points: Sequence[ArchPoint], path: str | Path, size: tuple[int, int] = DEFAULT_SIZE) -> Path:
    """Parameters against MACs, both log scale; marker area ∝ input pixels; a family is one line.

    Dotted diagonals mark how many MACs each parameter takes part in per image (weight reuse):
    about 100 for VGG-16, several hundred for the compound-scaled EfficientNets.
    """
    if not points:
        raise PlotError("no architectures to compare")
    figure = _figure(size)
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    ax = figure.subplots()
    families: dict[str, list[ArchPoint]] = {}
    for point in points:
        families.setdefault(point.family, []).append(point)
    smallest = min(p.resolution for p in points)
    handles = []
    for index, (family, members) in enumerate(families.items()):
        members = sorted(members, key=lambda p: p.macs)
        colour = STAGE_COLOURS[index % len(STAGE_COLOURS)]
        xs, ys = [p.macs / 1e9 for p in members], [p.params / 1e6 for p in members]
        if len(members) > 1:
            ax.plot(xs, ys, color=colour, alpha=0.6, linewidth=1.2, linestyle="--", zorder=1)
        areas = [120 * (p.resolution / smallest) ** 2 for p in members]
        ax.scatter(xs, ys, s=areas, color=colour, alpha=0.85, edgecolors="white", linewidths=0.8, zorder=2)
        handles.append(Line2D([], [], marker="o", linestyle="", color=colour, markersize=9, label=family))
        for p, x, y in zip(members, xs, ys):
            ax.annotate(
                f"{p.name} ({p.resolution}px)", (x, y), xytext=(8, 6), textcoords="offset points", fontsize=10, zorder=3
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.margins(x=0.18, y=0.15)
    (left, right), (bottom, top) = ax.get_xlim(), ax.get_ylim()
    for reuse in (10, 30, 100, 300, 1000, 3000):  # GMACs / Mparams = reuse / 1000
        xs = [left, right]
        ax.plot(xs, [x * 1e3 / reuse for x in xs], color="#bbbbbb", linestyle=":", linewidth=1, zorder=0)
        x_label = min(right / 1.15, top * reuse / 1e3 / 1.3)
        if x_label > left:
            ax.text(x_label, x_label * 1e3 / reuse, f"{reuse} MACs/param", color="#888888", fontsize=8, ha="right")
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(FuncFormatter(_label_2_and_5))
    ax.tick_params(which="minor", labelsize=8)
    ax.set_xlabel("GMACs per image (multiply-accumulates at the default resolution)")
    ax.set_ylabel("parameters (millions)")
    ax.grid(which="major", alpha=0.3)
    ax.legend(handles=handles, title="family (marker area ∝ input pixels)", loc="upper left", fontsize=10)
    ax.set_title(f"Parameters vs compute: {len(points)} architectures", loc="left", fontsize=13)
    return _save(figure, path)


def _label_2_and_5(value: float, _position: int) -> str:
    """Minor log ticks labelled at 2 and 5 of each decade only, so labels never crowd."""
    leading = round(value / 10 ** math.floor(math.log10(value))) if value > 0 else 0
    return f"{value:g}" if leading in (2, 5) else ""
