"""``--trace``: profiles as Chrome trace-event JSON, checked against the format and opened in a real viewer.

The viewer is the Performance panel of Chromium's own DevTools (Debian's chromium; nothing of it is
shipped or downloaded): Chromium serves its bundled DevTools front-end on its remote-debugging port
(``/devtools/trace_app.html``, the standalone trace viewer), the trace is loaded through the panel's
"Load trace…" button, and the events it parsed are read back from the panel.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from graphgen.build import BuildOptions, build, save
from graphgen.profiling import openvino
from graphgen.profiling.chrome_trace import RUNS_TRACK, trace_events, write_trace
from graphgen.profiling.layermap import KernelOrigin, LayerMap
from graphgen.profiling.session import ModelProfiler
from graphgen.profiling.summary import summarize
from graphgen.profiling.trace import KernelEvent, RunTrace
from tests.support.trace_events import format_errors

LAYERS = LayerMap({"k_a": KernelOrigin(("a", "a_relu"), ("Conv", "Relu")), "k_b": KernelOrigin(("b",), ("Conv",))}, ())


def _profile(offset: int = 0):
    runs = []
    for index in range(3):
        start = offset + index * 1000
        kernels = [
            KernelEvent("k_a", "FusedConv", "CPUExecutionProvider", start + 2, 100 + index, 7, 10, 20),
            KernelEvent("Reorder", "ReorderOutput", "CPUExecutionProvider", start + 110, 3, 7, 8, 0),
            KernelEvent("k_b", "Conv", "CPUExecutionProvider", start + 120, 50, 7, 10, 0),
        ]
        runs.append(RunTrace(start, 180, kernels))
    profile = summarize(runs, LAYERS, batch=2, warmup_runs=1)
    profile.rows[0].macs, profile.rows[0].kind = 1234, "3x3 conv"
    return profile


def test_each_measured_run_is_on_a_timeline_under_graphgen_names_with_macs_bytes_and_kind():
    trace = trace_events([("fp32", _profile()), ("again", _profile(offset=50_000))])
    assert format_errors(trace) == []
    events = trace["traceEvents"]
    names = {(e["pid"], e["args"]["name"]) for e in events if e["name"] == "process_name"}
    assert names == {(1, "fp32 — CPUExecutionProvider"), (2, "again — CPUExecutionProvider")}
    runs = [e for e in events if e["ph"] == "X" and e["tid"] == RUNS_TRACK and e["pid"] == 1]
    assert [(r["name"], r["ts"], r["dur"]) for r in runs] == [
        ("run 1", 0, 180),
        ("run 2", 1000, 180),
        ("run 3", 2000, 180),
    ]
    kernels = [e for e in events if e["ph"] == "X" and e["tid"] == 7 and e["pid"] == 1]
    assert [k["name"] for k in kernels[:3]] == ["a + a_relu", "[onnxruntime] Reorder", "b"]
    first = kernels[0]
    assert (first["ts"], first["dur"]) == (2, 100)  # µs from the first measured run's start
    assert first["args"]["macs"] == 1234 and first["args"]["bytes"] == 30 and first["args"]["kind"] == "3x3 conv"
    assert first["args"]["nodes"] == ["a", "a_relu"] and first["args"]["run"] == 1
    assert kernels[1]["args"]["kind"] == "inserted by onnxruntime"
    for run, kernel in zip(runs, kernels[::3]):  # each run's kernels lie inside it
        assert run["ts"] <= kernel["ts"] and kernel["ts"] + kernel["dur"] <= run["ts"] + run["dur"]
    second = [e for e in events if e["ph"] == "X" and e["pid"] == 2 and e["tid"] == RUNS_TRACK]
    assert second[0]["ts"] == 0  # each form's timeline starts at its first run


def test_the_format_check_finds_what_breaks_a_trace():
    trace = trace_events([("fp32", _profile())])
    broken = json.loads(json.dumps(trace))
    kernel = next(e for e in broken["traceEvents"] if e["ph"] == "X" and e["tid"] == 7)
    kernel["dur"] = 150  # ends inside the third kernel (120–170): overlaps it without holding it
    del next(e for e in broken["traceEvents"] if e["name"] == "run 2")["dur"]
    broken["traceEvents"].append({"name": "x", "ph": "B", "pid": 1, "tid": 1})
    errors = format_errors(broken)
    assert any("overlaps" in e for e in errors) and any("dur >= 0" in e for e in errors)
    assert any("phase 'B'" in e for e in errors)
    assert format_errors([]) == ["not a JSON object with a traceEvents array"]


def test_a_profile_without_a_timeline_is_refused():
    profile = _profile()
    profile.timeline = []
    with pytest.raises(ValueError, match="no per-run timeline"):
        trace_events([("fp32", profile)])


@pytest.fixture(scope="module")
def real_trace(tmp_path_factory) -> tuple[Path, dict]:
    """A trace of resnet18 (32 px) on onnxruntime and, where installed, on OpenVINO."""
    folder = tmp_path_factory.mktemp("trace")
    path = save(build("resnet18", BuildOptions(resolution=32, num_classes=10)), folder / "r18.onnx")
    feeds = {"input": np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)}
    profiler = ModelProfiler(path)
    try:
        _, onnxruntime = profiler.build().measure(feeds, runs=3, warmup_runs=1)
    finally:
        profiler.close()
    forms = [("resnet18 fp32", onnxruntime)]
    if openvino.unavailable_reason() is None:
        ov = openvino.OpenVinoProfiler(path, threads=1)
        try:
            forms.append(("resnet18 openvino", ov.measure(feeds, runs=3, warmup_runs=1)[1]))
        finally:
            ov.close()
    written = write_trace(folder / "trace.json", forms)
    return written, json.loads(written.read_text())


def test_a_real_profiles_trace_follows_the_format(real_trace):
    _, trace = real_trace
    assert format_errors(trace) == []
    kernels = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["tid"] != RUNS_TRACK]
    assert any(e["name"] == "layer4.1.conv2 + layer4.1.add + layer4.1.relu_1" for e in kernels)
    assert all({"macs", "bytes", "kind"} <= e["args"].keys() for e in kernels)


CHROMIUM = Path("/usr/bin/chromium")
LOAD_MS = 120_000


def _devtools_port(profile_dir: Path) -> int:
    """The port Chromium chose for remote debugging (it writes it to DevToolsActivePort)."""
    active = profile_dir / "DevToolsActivePort"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if active.exists() and active.read_text().strip():
            return int(active.read_text().split()[0])
        time.sleep(0.1)
    raise TimeoutError("Chromium wrote no DevToolsActivePort")


PARSED = """async () => {
  const timeline = await import('./panels/timeline/timeline.js');
  const panel = timeline.TimelinePanel.TimelinePanel.instance();
  if (!panel.hasActiveTrace()) return null;
  const parsed = panel.getParsedTraceForLayoutTests();
  if (!parsed) return null;
  const threads = [];
  for (const [pid, process] of parsed.Renderer.processes) {
    for (const [tid, thread] of process.threads) {
      threads.push({pid, tid, name: thread.name, entries: thread.entries.map(e => [e.name, e.ts, e.dur, e.args])});
    }
  }
  return {raw: panel.getTraceEngineRawTraceEventsForLayoutTests().length, threads};
}"""


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make test installs it)")
def test_chromiums_devtools_performance_panel_opens_the_trace(real_trace, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
    path, trace = real_trace
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path),
            executable_path=str(CHROMIUM),
            viewport={"width": 1600, "height": 1000},
            args=["--no-sandbox", "--disable-gpu", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1"],
        )
        try:
            page = context.new_page()
            page.goto(f"http://127.0.0.1:{_devtools_port(tmp_path)}/devtools/trace_app.html", timeout=LOAD_MS)
            # Opened outside a debugging session the front-end says so once; dismiss it, open the panel.
            page.get_by_text("Reconnect DevTools").wait_for(timeout=LOAD_MS)
            page.keyboard.press("Escape")
            page.get_by_text("Performance", exact=True).first.click(timeout=LOAD_MS)
            load = page.locator('[aria-label^="Load trace"]').first
            with page.expect_file_chooser(timeout=LOAD_MS) as chooser:
                load.click(timeout=LOAD_MS)
            chooser.value.set_files(str(path))
            parsed, deadline = None, time.monotonic() + LOAD_MS / 1000
            while parsed is None and time.monotonic() < deadline:  # parsing runs in the page's own time
                page.wait_for_timeout(250)
                parsed = page.evaluate(PARSED)
            assert parsed is not None, "the Performance panel shows no trace"
            page.screenshot(path=str(tmp_path / "devtools.png"))
        finally:
            context.close()
    assert parsed["raw"] == len(trace["traceEvents"])  # every event read
    written = {}
    for event in trace["traceEvents"]:
        if event["ph"] == "X":
            written.setdefault((event["pid"], event["tid"]), []).append(event)
    for thread in parsed["threads"]:
        # The viewer orders a track by start, the longer first where two start together (a node OpenVINO
        # timed at 0 µs starts with the next one): ours in that order.
        events = sorted(written[(thread["pid"], thread["tid"])], key=lambda e: (e["ts"], -e["dur"]))
        # The viewer's entries are ours, in order, under graphgen's names, with their args; µs as written.
        assert [entry[0] for entry in thread["entries"]] == [e["name"] for e in events]
        assert [entry[2] for entry in thread["entries"]] == [e["dur"] for e in events]
        assert all(
            entry[3]["macs"] == e["args"]["macs"] for entry, e in zip(thread["entries"], events) if "macs" in e["args"]
        )
    assert {(t["pid"], t["tid"]) for t in parsed["threads"]} == set(written)
    assert any("kernels, thread" in t["name"] for t in parsed["threads"])
