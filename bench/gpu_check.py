"""``make gpu-check``: everything a GPU must show, in one command of at most 8 minutes, written to one report.

Run it on a machine with an NVIDIA GPU (README, "Checking on a GPU": the wheels it needs are carried there by
bench/gpu_carry.py). It installs what was carried (joined, sha256-checked, offline), puts the checkout on
PYTHONPATH, says which versions it runs with against pyproject.toml's pins, then:

1. every gpu-marked test (tests/profiling/test_gpu.py, tests/server/e2e/test_gpu.py), each under a watchdog;
2. ResNet-50 fp32 and fp16, batch 1 and 8: latency in-process against through graphgen-server (gRPC);
3. per-layer GPU times: CUPTI (rows, run span, busy) against CUDA events against the host times of a run with
   ``CUDA_LAUNCH_BLOCKING=1`` (one cuDNN algorithm search, HEURISTIC, on both sides): top-5 layers and rank order;
4. IO binding: plain ``run()`` against onnxruntime's own binding against the server's device-side binding on
   an instance stream of its own, batch 1 and 8.

Figures are medians of interleaved rounds (A/B/A/B), with the load average beside them. The report goes to
artifacts/gpu-check.md, and to $OUT/gpu-check.md where $OUT is set (the device tool brings it back).

Exit status: 0 everything ran and passed; 1 a test failed or a figure could not be taken (the report says
which); 2 no usable CUDA here: it says why and stops before measuring anything (what happens on this
project's own machine, which has no GPU); 3 the carried wheels are missing or broken.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "bench")]
import gpu_carry  # noqa: E402 - bench/ is not a package

BUDGET_S = 8 * 60
TESTS = ["tests/profiling/test_gpu.py", "tests/server/e2e/test_gpu.py"]
CUDA = "CUDAExecutionProvider"
SEARCH = "HEURISTIC"  # one cuDNN algorithm choice for every side compared
IMAGE = 224  # ResNet-50's input size
ROUNDS, CALLS = 5, 10  # interleaved rounds per figure, calls per way per round


class Report:
    def __init__(self) -> None:
        self.lines: list[str] = ["# graphgen gpu-check", ""]
        self.failed: list[str] = []
        self.started = time.monotonic()

    def say(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def left_s(self) -> float:
        return BUDGET_S - (time.monotonic() - self.started)

    def write(self) -> Path:
        path = Path(os.environ.get("GPU_CHECK_REPORT", REPO / "artifacts" / "gpu-check.md"))
        path.parent.mkdir(exist_ok=True)
        path.write_text("\n".join(self.lines) + "\n")
        if os.environ.get("OUT"):
            (Path(os.environ["OUT"]) / "gpu-check.md").write_text(path.read_text())
        return path


def install_carried() -> dict[str, str]:
    """Stage 1: what this call carried joins the stash; install it; the environment of stage 2."""
    env = dict(os.environ)
    gpu_carry.stash(gpu_carry.CARRY, gpu_carry.STASH)
    paths = [str(REPO), str(REPO / "server"), str(REPO / "clients"), str(REPO / "protos")]
    manifest = gpu_carry.STASH / "MANIFEST.json"
    carried_for = json.loads(manifest.read_text())["python"] if manifest.exists() else None
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if carried_for is not None and carried_for != here:
        print(f"the carried wheels are for Python {carried_for}, this is {here}: this Python's own packages are used")
    elif carried_for is not None:
        installed = gpu_carry.install(gpu_carry.STASH, gpu_carry.SITE)
        print(f"installed offline into {gpu_carry.SITE}: {', '.join(installed)}", flush=True)
        paths.insert(0, str(gpu_carry.SITE))
    else:
        print("no carried wheels (.gpu-carry/, /tmp/gpu-carry/): this Python's own packages are used", flush=True)
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def versions(report: Report) -> None:
    """Each pinned distribution found here, against its pin (the image's own where none was carried)."""
    report.say(f"python {sys.version.split()[0]} at {sys.executable}; load {os.getloadavg()[0]:.2f}")
    rows = []
    for name, pinned in sorted(gpu_carry.pins().items()):
        try:
            found = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # test-only tools (ruff, mypy, …) are not needed here
        rows.append(f"{name} {found}" + ("" if found == pinned else f" (pinned {pinned})"))
    report.say("versions: " + "; ".join(rows))


def cuda_state(report: Report) -> str | None:
    import onnxruntime as ort

    from graphgen.profiling import cuda as gpu
    from graphgen_server.core.providers import cuda_unavailable_reason, visible_devices

    report.say(
        f"onnxruntime {ort.__version__} from {Path(ort.__file__).parent}; providers {ort.get_available_providers()}"
    )
    reason = cuda_unavailable_reason()
    if reason is None:
        report.say(
            f"CUDA: {visible_devices()} device(s); CUPTI: {gpu.cupti_unavailable_reason() or 'works'}; "
            f"cuda-bindings: {gpu.cuda_runtime_unavailable_reason() or 'works'}"
        )
    return reason


def run_tests(report: Report, env: dict[str, str]) -> None:
    limit = max(60.0, min(300.0, report.left_s() - 150))
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "gpu",
        *TESTS,
        "-q",
        "-rA",
        "--durations=10",
        "-p",
        "no:cacheprovider",
    ]
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=limit)
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as error:
        output, code = f"{error.stdout or ''}{error.stderr or ''}\nTIMED OUT after {limit:.0f} s", -1
    summary = [line for line in output.splitlines() if line.startswith(("PASSED", "FAILED", "SKIPPED", "ERROR"))]
    report.say(f"## gpu-marked tests: exit {code} in {time.monotonic() - started:.0f} s")
    report.lines += ["```", *summary, *output.strip().splitlines()[-25:], "```"]
    if code != 0:
        report.failed.append("gpu-marked tests")


def models(folder: Path) -> dict[str, Path]:
    from graphgen.build import build, save
    from graphgen.passes import to_fp16

    model = build("resnet50")
    paths = {"fp32": save(model, folder / "resnet50_fp32" / "1" / "model.onnx")}
    paths["fp16"] = save(to_fp16(model, keep_io_types=False).model, folder / "resnet50_fp16" / "1" / "model.onnx")
    for path in paths.values():
        (path.parents[1] / "config.pbtxt").write_text(
            "max_batch_size: 8\ninstance_group [ { count: 1, kind: KIND_GPU } ]"
        )
    return paths


def feeds(precision: str, batch: int):
    import numpy as np

    dtype = np.float16 if precision == "fp16" else np.float32
    return {"input": np.random.default_rng(0).standard_normal((batch, 3, IMAGE, IMAGE)).astype(dtype)}


def interleaved(ways: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Median ms per call of each way, over rounds taken in turn (A/B/A/B) after one warm-up round."""
    import numpy as np

    rounds, calls = ROUNDS, CALLS
    times: dict[str, list[float]] = {name: [] for name in ways}
    for index in range(rounds + 1):
        for name, call in ways.items():
            for _ in range(calls):
                started = time.perf_counter()
                call()
                if index:
                    times[name].append((time.perf_counter() - started) * 1e3)
    return {name: float(np.median(values)) for name, values in times.items()}


def session(path: Path, stream: str | None = None):
    import onnxruntime as ort

    options = {"cudnn_conv_algo_search": SEARCH} | ({"user_compute_stream": stream} if stream else {})
    return ort.InferenceSession(str(path), providers=[(CUDA, options), "CPUExecutionProvider"], enable_fallback=0)


def latency_figures(report: Report, paths: dict[str, Path]) -> None:
    from graphgen_client import Client
    from graphgen_client.local import LocalServer

    report.say("## ResNet-50 latency: in-process vs through graphgen-server (gRPC, one client), median ms")
    sessions = {precision: session(path) for precision, path in paths.items()}
    args = ["--device", "cuda", "--cudnn-conv-algo-search", SEARCH, "--dynamic-batching", "off"]
    with LocalServer(paths["fp32"].parents[2], args) as server, Client(server.address) as client:
        for precision, batch in [(p, b) for p in ("fp32", "fp16") for b in (1, 8)]:
            x = feeds(precision, batch)
            name = f"resnet50_{precision}"
            figures = interleaved(
                {
                    "in-process": lambda s=sessions[precision], x=x: s.run(None, x),
                    "server": lambda name=name, x=x: client.infer(name, x),
                }
            )
            report.say(
                f"{precision} batch {batch}: in-process {figures['in-process']:.2f} ms, server "
                f"{figures['server']:.2f} ms (+{figures['server'] - figures['in-process']:.2f} ms); "
                f"load {os.getloadavg()[0]:.2f}"
            )


def _ranks(values: list[float]):
    import numpy as np

    return np.argsort(np.argsort(np.asarray(values)))


def profile_figures(report: Report, paths: dict[str, Path], env: dict[str, str]) -> None:
    import numpy as np

    from graphgen.profiling.session import ModelProfiler

    report.say("## Per-layer GPU times: CUPTI vs CUDA events vs CUDA_LAUNCH_BLOCKING=1 host times (batch 8, µs)")
    for precision, path in paths.items():
        profiler = ModelProfiler(path, [(CUDA, {"cudnn_conv_algo_search": SEARCH}), "CPUExecutionProvider"])
        try:
            profile = profiler.build().measure(feeds(precision, 8), 20)[1]
        finally:
            profiler.close()
        command = [
            sys.executable,
            "-m",
            "graphgen",
            "profile",
            str(path),
            "--batch",
            "8",
            "--device",
            "cuda",
            "--cudnn-conv-algo-search",
            SEARCH,
            "--runs",
            "10",
            "--json",
        ]
        blocking_env = {**env, "CUDA_LAUNCH_BLOCKING": "1"}
        done = subprocess.run(command, env=blocking_env, capture_output=True, text=True, timeout=180, cwd=REPO)
        host = (
            {r["kernel"]: r["time"]["median"] for r in json.loads(done.stdout)["rows"]} if done.returncode == 0 else {}
        )
        device = {r.kernel: r.device.median for r in profile.rows if r.device and r.macs}
        shared = [k for k in device if k in host]
        top_device = sorted(device, key=device.get, reverse=True)[:5]  # type: ignore[arg-type]
        top_host = sorted(shared, key=host.get, reverse=True)[:5]  # type: ignore[arg-type]
        rho = (
            float(np.corrcoef(_ranks([device[k] for k in shared]), _ranks([host[k] for k in shared]))[0, 1])
            if len(shared) > 2
            else float("nan")
        )
        span, busy = profile.device_run, profile.device_busy
        events = profile.event_run.median if profile.event_run else float("nan")
        report.say(
            f"{precision}: timing {profile.timing}; CUPTI span {span.median if span else float('nan'):,.0f}, busy "
            f"{busy.median if busy else float('nan'):,.0f}, rows {profile.layers_us:,.0f} ({profile.add_up_error:.1%} "
            f"off the span); CUDA events {events:,.0f}; blocking host: run {json.loads(done.stdout)['run_us']['median'] if host else float('nan'):,.0f}, "
            f"conv/dense rows {sum(host[k] for k in shared):,.0f} vs CUPTI {sum(device[k] for k in shared):,.0f}; "
            f"top-5 shared {len(set(top_device) & set(top_host))}/5; Spearman {rho:.2f} over {len(shared)} layers"
        )
        report.lines += [f"  note: {note}" for note in profile.notes]
        if done.returncode != 0:
            report.failed.append(f"CUDA_LAUNCH_BLOCKING profile of {precision}")
            report.lines += ["```", done.stderr[-2000:], "```"]


def io_binding_figures(report: Report, paths: dict[str, Path]) -> None:
    from graphgen_server.core.device_io import InstanceStream

    report.say("## IO binding, fp32: plain run() vs onnxruntime's binding vs device-side on the instance's stream, ms")
    plain = session(paths["fp32"])
    stream = InstanceStream(0)
    sessions = {"own": session(paths["fp32"], stream.handle)}  # computes on the stream: freed before it

    def ort_binding(x):
        binding = plain.io_binding()
        binding.bind_cpu_input("input", x["input"])
        binding.bind_output("logits", "cpu")
        plain.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    import numpy as np

    try:
        for batch in (1, 8):
            x = feeds("fp32", batch)
            np.testing.assert_allclose(
                stream.run(sessions["own"], x, ["logits"], [np.float32])[0], plain.run(None, x)[0], rtol=1e-3, atol=1e-3
            )
            figures = interleaved(
                {
                    "run()": lambda x=x: plain.run(None, x),
                    "onnxruntime binding": lambda x=x: ort_binding(x),
                    "device-side": lambda x=x: stream.run(sessions["own"], x, ["logits"], [np.float32]),
                }
            )
            report.say(
                f"batch {batch}: "
                + ", ".join(f"{k} {v:.2f}" for k, v in figures.items())
                + f"; load {os.getloadavg()[0]:.2f}"
            )
    finally:
        sessions.clear()
        stream.close()


def measure(env: dict[str, str]) -> int:
    report = Report()
    versions(report)
    reason = cuda_state(report)
    if reason is not None:
        report.say(f"NO CUDA HERE: {reason}. Nothing was measured; run this on a machine with an NVIDIA GPU.")
        print(f"wrote {report.write()}")
        return 2
    run_tests(report, env)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        paths = models(Path(folder))
        for name, figures in (
            ("latency", lambda: latency_figures(report, paths)),
            ("profiles", lambda: profile_figures(report, paths, env)),
            ("io binding", lambda: io_binding_figures(report, paths)),
        ):
            if report.left_s() < 45:
                report.say(f"## {name}: skipped, {report.left_s():.0f} s of the 8 minutes left")
                report.failed.append(name)
                continue
            try:
                figures()
            except Exception as error:  # one figure's failure is reported, the others still run
                report.say(f"## {name}: FAILED ({type(error).__name__}: {error})")
                report.failed.append(name)
    report.say(
        f"done in {time.monotonic() - report.started:.0f} s; "
        + (f"FAILED: {', '.join(report.failed)}" if report.failed else "all passed")
    )
    print(f"wrote {report.write()}")
    return 1 if report.failed else 0


def main() -> int:
    if "--measure" in sys.argv:
        return measure(dict(os.environ))
    try:
        env = install_carried()
    except (SystemExit, subprocess.CalledProcessError) as error:
        print(f"gpu-check: the carried wheels cannot be installed: {error}", file=sys.stderr)
        return 3
    return subprocess.run([sys.executable, __file__, "--measure"], env=env, cwd=REPO).returncode


if __name__ == "__main__":
    sys.exit(main())
