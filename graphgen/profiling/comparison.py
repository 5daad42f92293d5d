"""Several profiles of one network side by side, layer by layer under graphgen's names.

The forms of one network (fp32, int8, fp16, folded, on onnxruntime or OpenVINO) keep graphgen's
node names, but each runtime fuses them into kernels its own way: onnxruntime runs ResNet's
``conv3 + add + relu`` as one kernel in fp32 and as a QLinearConv, an Add and Q/DQ kernels in
int8. So a compared row is the smallest set of graphgen nodes that every form computes whole:
the nodes each form's kernels cover are joined (union-find) across all forms, and each form's
time for the row is the sum of its kernels there, run by run (median and p10–p90 of those sums).

A QuantizeLinear / DequantizeLinear node belongs to the layer it quantizes for, as in QDQ
notation (``DQ → op → Q`` is the op in int8): a DequantizeLinear to the op that reads it (a
weight's DQ to its Conv), a QuantizeLinear to the op whose output it quantizes; where that side
has none (the graph's input) the other side is taken.

Nothing is dropped: a row some forms do not have (RepVGG's three branches before folding, one
conv after) is shown with those forms empty; the kernels a runtime inserted itself (layout
reorders, transposes) are one row per form, ``inserted by the runtime``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import onnx

from graphgen.profiling.qdq import node_owners
from graphgen.profiling.summary import HEADLINE_MEDIAN, HEADLINE_MIN, MIN_TIE, Profile, Spread

INSERTED = "(inserted by the runtime: layout reorders, transposes, copies)"


@dataclass(frozen=True)
class Form:
    """One profiled form of the network: what the user called it, its profile, its Q/DQ owners."""

    label: str
    profile: Profile
    owners: dict[str, str]
    order: tuple[str, ...] = ()  # the form's graph's node names in order (rows are named in it)

    @classmethod
    def of(cls, label: str, profile: Profile, model_path: str) -> Form:
        graph = onnx.load(model_path, load_external_data=False).graph
        return cls(label, profile, node_owners(graph), tuple(node.name for node in graph.node))


@dataclass(frozen=True)
class ComparedRow:
    layer: str  # graphgen node names joined by " + " (or INSERTED)
    nodes: tuple[str, ...]
    kind: str
    macs: int  # of the first form that has the row (the network's; an int8 layer has as many)
    times: tuple[Spread | None, ...]  # per form; None: the form has no kernel for these nodes
    kernels: tuple[int, ...]  # per form: how many of its kernels the row sums
    headline: str = HEADLINE_MEDIAN  # the figure compared: medians, or fastest runs where a profile was disturbed

    def value(self, form: int) -> float | None:
        """Form ``form``'s figure for the row (None: it lacks the row)."""
        time = self.times[form]
        if time is None:
            return None
        return time.min if self.headline == HEADLINE_MIN else time.median

    def ratio(self, form: int, baseline: int = 0) -> float | None:
        """Form ``form``'s figure over the baseline's; None where either lacks the row."""
        mine, base = self.value(form), self.value(baseline)
        if mine is None or base is None or base <= 0:
            return None
        return mine / base

    def tied(self, form: int, baseline: int = 0) -> bool:
        """Whether the ratio is within the noise: the p10–p90 spreads overlap (medians), or the fastest
        runs are within MIN_TIE of each other (the minimum's own error under load)."""
        mine, base = self.times[form], self.times[baseline]
        if mine is None or base is None:
            return False
        if self.headline == HEADLINE_MIN:
            return abs(mine.min - base.min) <= MIN_TIE * max(mine.min, base.min)
        return mine.p10 <= base.p90 and base.p10 <= mine.p90

    def change_us(self, form: int, baseline: int = 0) -> float:
        """What form ``form`` gained (negative) or lost (positive) here against the baseline, in µs."""
        return (self.value(form) or 0.0) - (self.value(baseline) or 0.0)

    @property
    def only_in(self) -> tuple[int, ...]:
        """The forms that have this row, when not all do."""
        present = tuple(i for i, time in enumerate(self.times) if time is not None)
        return present if len(present) < len(self.times) else ()


@dataclass(frozen=True)
class Comparison:
    labels: tuple[str, ...]
    profiles: tuple[Profile, ...]
    rows: list[ComparedRow]  # the largest change against the first form first

    @property
    def headline(self) -> str:
        """Medians, unless a profile's runs were disturbed: then every form's fastest runs, compared alike."""
        return HEADLINE_MIN if any(p.headline == HEADLINE_MIN for p in self.profiles) else HEADLINE_MEDIAN

    def total(self, form: int) -> float:
        """The form's whole run: its median, or its fastest (see :attr:`headline`)."""
        profile = self.profiles[form]
        run = profile.device_run if profile.device_run and profile.timing == "device" else profile.run
        return run.min if self.headline == HEADLINE_MIN else run.median

    def total_ratio(self, form: int) -> float:
        return self.total(form) / self.total(0) if self.total(0) else math.nan

    def as_dict(self) -> dict[str, Any]:
        forms = range(len(self.labels))
        rows = [
            {
                "layer": row.layer,
                "nodes": list(row.nodes),
                "kind": row.kind,
                "macs": row.macs,
                "times_us": [asdict(time) if time is not None else None for time in row.times],
                "kernels": list(row.kernels),
                "ratios": [row.ratio(form) for form in forms],
                "tied": [row.tied(form) for form in forms],
                "only_in": list(row.only_in),
            }
            for row in self.rows
        ]
        forms_out = [
            {"label": label, "total_us": self.total(form), "total_ratio": self.total_ratio(form)}
            for form, label in zip(forms, self.labels)
        ]
        return {"forms": forms_out, "rows": rows}


class _Union:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, item: str) -> str:
        self.parent.setdefault(item, item)
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def join(self, items: Sequence[str]) -> None:
        self.find(items[0])
        for other in items[1:]:
            self.parent[self.find(other)] = self.find(items[0])


def _join_renamed_blocks(union: _Union, covered: list[list[tuple[str, ...]]]) -> dict[str, str]:
    """Join the rows of a block that a conversion renamed, so the forms meet again at the block.

    Folding RepVGG turns ``stages.2.7.conv_kxk.conv``, ``.conv_1x1.conv``, ``.identity`` and their
    adds into one ``stages.2.7.reparam_conv``: no node is in both forms. A row some forms lack is
    joined with every row under its nearest name prefix (``stages.2.7``, else ``stages.2``, …)
    under which all forms that have any row have one. Returns each joined prefix, by one member node.
    """
    every = {form for form, rows in enumerate(covered) if any(rows)}
    joined: dict[str, str] = {}
    while True:
        groups: dict[str, set[str]] = {}
        present: dict[str, set[int]] = {}
        for form, rows in enumerate(covered):
            for nodes in rows:
                if nodes:
                    root = union.find(nodes[0])
                    groups.setdefault(root, set()).update(nodes)
                    present.setdefault(root, set()).add(form)
        for root in [r for r in groups if present[r] != every]:
            depth = max(name.count(".") for name in groups[root])
            merged = False
            for cut in range(depth, 0, -1):
                prefixes = {".".join(name.split(".")[:cut]) + "." for name in groups[root] if name.count(".") >= cut}
                members = [r for r in groups if any(n.startswith(tuple(prefixes)) for n in groups[r])]
                if set().union(*(present[m] for m in members)) == every:
                    union.join([next(iter(groups[m])) for m in members])
                    joined[next(iter(groups[root]))] = min(prefixes)[:-1]
                    merged = True
                    break
            if merged:
                break
        else:
            return joined


def compare(forms: Sequence[Form]) -> Comparison:
    """One table of ``forms`` (the first is the baseline of the ratios) by graphgen layer."""
    if len(forms) < 1:
        raise ValueError("nothing to compare")
    union = _Union()
    covered: list[list[tuple[str, ...]]] = []  # per form, per profile row: the graphgen nodes it computes
    for form in forms:
        form_nodes = []
        for row in form.profile.rows:
            nodes = tuple(dict.fromkeys(form.owners.get(node, node) for node in row.nodes))
            if nodes:
                union.join(nodes)
            form_nodes.append(nodes)
        covered.append(form_nodes)
    blocks = _join_renamed_blocks(union, covered)
    order: dict[str, int] = {}  # graph order, first form first, so rows read as the network runs
    for name in [n for form in forms for n in form.order] + [
        n for form_nodes in covered for nodes in form_nodes for n in nodes
    ]:
        order.setdefault(name, len(order))
    groups: dict[str, list[str]] = {}
    for name in order:
        if name in union.parent:
            groups.setdefault(union.find(name), []).append(name)
    per_group: dict[str, list[list[float] | None]] = {root: [None] * len(forms) for root in groups}
    inserted: list[list[float] | None] = [None] * len(forms)
    counts: dict[str, list[int]] = {root: [0] * len(forms) for root in [*groups, INSERTED]}
    info: dict[str, tuple[int, str, int, int]] = {}  # root -> (form, kind of its heaviest row, MACs, those MACs)
    for index, form in enumerate(forms):
        profile = form.profile
        runs = profile.per_run() if profile.timing != "device" else []
        for row_index, (row, nodes) in enumerate(zip(profile.rows, covered[index])):
            per_run = runs[row_index] if runs else [row.best.median]
            root = union.find(nodes[0]) if nodes else INSERTED
            target = per_group[root] if nodes else inserted
            slot = target[index]
            target[index] = list(per_run) if slot is None else [a + b for a, b in zip(slot, per_run)]
            counts[root][index] += 1
            if nodes and info.get(root, (index, "", 0, 0))[0] == index:  # the first form that has the row
                _, kind, macs, heaviest = info.get(root, (index, "", 0, -1))
                info[root] = (
                    index,
                    row.kind if row.macs > heaviest else kind,
                    macs + row.macs,
                    max(heaviest, row.macs),
                )
    block_of = {union.find(name): prefix for name, prefix in blocks.items()}
    headline = HEADLINE_MIN if any(form.profile.headline == HEADLINE_MIN for form in forms) else HEADLINE_MEDIAN
    rows = [
        ComparedRow(
            f"{block_of[root]}.* ({len(groups[root])} nodes)" if root in block_of else " + ".join(groups[root]),
            tuple(groups[root]),
            *info[root][1:3],
            tuple(Spread.of(t) if t is not None else None for t in per_group[root]),
            tuple(counts[root]),
            headline,
        )
        for root in groups
        if any(t is not None for t in per_group[root])
    ]
    if any(t is not None for t in inserted):
        spreads = tuple(Spread.of(t) if t is not None else None for t in inserted)
        rows.append(ComparedRow(INSERTED, (), "", 0, spreads, tuple(counts[INSERTED]), headline))
    others = range(1, len(forms))
    rows.sort(
        key=lambda row: max((abs(row.change_us(i)) for i in others), default=row.value(0) or 0.0),
        reverse=True,
    )
    return Comparison(tuple(form.label for form in forms), tuple(form.profile for form in forms), rows)


def _cell(row: ComparedRow, form: int) -> str:
    time, value = row.times[form], row.value(form)
    return (
        f"{value:>9.1f} {f'{time.p10:.0f}–{time.p90:.0f}':>13}" if time and value is not None else f"{'—':>9} {'':>13}"
    )


def _ratio(row: ComparedRow, form: int) -> str:
    ratio = row.ratio(form)
    if ratio is None:
        present = row.times[form] is not None
        return f"{'only here' if present else 'absent':>10}"
    return f"{('≈' if row.tied(form) else '') + f'{ratio:.2f}×':>10}"


def format_comparison(comparison: Comparison, *, limit: int = 0) -> str:
    """The comparison as a table: per form the median and p10–p90 µs, the ratio to the first form."""
    labels, profiles = comparison.labels, comparison.profiles
    shown = comparison.rows[:limit] if limit else comparison.rows
    width = min(max([len(r.layer) for r in shown] + [5]), 48)
    lines = [
        f"form {i}: {label} — {p.provider}, {p.runs} runs of a batch of {p.batch}; {p.timing_text}"
        for i, (label, p) in enumerate(zip(labels, profiles))
    ]
    figure = comparison.headline
    header = f"{'layer':<{width}}  {'kind':<14}"
    for i in range(len(labels)):
        header += f"  {f'{i}: {figure} µs':>9} {_spread(profiles[i]):>13}" + (f"  {f'{i} ÷ 0':>10}" if i else "")
    lines.append(header)
    for row in shown:
        layer = row.layer if len(row.layer) <= width else row.layer[: width - 1] + "…"
        line = f"{layer:<{width}}  {row.kind[:14]:<14}"
        for i in range(len(labels)):
            line += f"  {_cell(row, i)}" + (f"  {_ratio(row, i)}" if i else "")
        lines.append(line)
    if len(shown) < len(comparison.rows):
        lines.append(f"… {len(comparison.rows) - len(shown)} more rows with smaller changes")
    run_name = "fastest run" if comparison.headline == HEADLINE_MIN else "median run"
    for i, label in enumerate(labels):
        p = profiles[i]
        ratio = f" = {comparison.total_ratio(i):.2f}× form 0" if i else ""
        lines.append(
            f"total {i} ({label}): {run_name} {comparison.total(i):,.0f} µs ({p.run.p10:,.0f}–{p.run.p90:,.0f}){ratio}; "
            f"layers {p.layers_us:,.0f} µs in {len(p.rows)} kernels"
        )
    alone = [row for row in comparison.rows if row.only_in and row.layer != INSERTED]
    if alone:
        lines.append(
            f"{len(alone)} rows exist in some forms only (shown with — where absent): their nodes were "
            "renamed, folded or added by a conversion, or optimised away by a runtime"
        )
    lines.append(
        "rows: the smallest sets of graphgen nodes every form computes whole; the largest change first; "
        + (
            f"min: each row's fastest run in every form (some profile's runs were disturbed); ≈: within {MIN_TIE:.0%}"
            if comparison.headline == HEADLINE_MIN
            else "≈: the two forms' p10–p90 spreads overlap (within the noise)"
        )
    )
    for i, p in enumerate(profiles):
        lines.extend(f"note ({i}): {note}" for note in p.notes)
    return "\n".join(lines)


def _spread(profile: Profile) -> str:
    return f"{profile.spread} µs"
