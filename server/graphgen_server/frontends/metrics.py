"""Prometheus metrics under Triton's names, read from the runtime's statistics at each scrape.

Triton's per-model series (``nv_inference_*`` with labels ``model`` and ``version``) come from
the same :class:`~graphgen_server.core.statistics.ModelStats` that KServe's ModelStatistics reports,
summed over every front-end process at each scrape (``Runtime.statistics``), so
the two never disagree and nothing is counted twice. Durations are cumulative microseconds, as
Triton's counters are; failures carry Triton's ``reason`` label.

Triton (prometheus-cpp) writes counters without the ``_total`` suffix that prometheus_client's
own exposition adds, and Grafana dashboards made for Triton query those exact names: the text
is written here from prometheus_client's metric families, counters under their own names.
Each server has its own :class:`CollectorRegistry`, so several servers in one process (tests)
keep their series apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from graphgen_server.core.api import Runtime
from graphgen_server.core.statistics import VersionStats
from graphgen_server.frontends.http_routes import answer_errors

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LABELS = ["model", "version"]
# Triton's failure reasons: refused by a full queue, cancelled by the client, failed while the
# model ran, anything else (a malformed request).
FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

# (name, help, request stage in ModelStats.stages()) — Triton's latency counters, in microseconds.
TRITON_DURATIONS = (
    ("nv_inference_request_duration_us", "Cumulative inference request duration in microseconds", "success"),
    ("nv_inference_queue_duration_us", "Cumulative inference queuing duration in microseconds", "queue"),
    ("nv_inference_compute_input_duration_us", "Cumulative compute input duration in microseconds", "compute_input"),
    ("nv_inference_compute_infer_duration_us", "Cumulative compute inference duration in microseconds", "compute_infer"),
    ("nv_inference_compute_output_duration_us", "Cumulative inference compute output duration in microseconds", "compute_output"),
)  # fmt: skip


ModelSource = Callable[[], Iterable[VersionStats]]  # what a scrape reads: each version, summed over the front-ends


class RuntimeCollector(Collector):
    """Every model version's counters, gauges and batch sizes, read when Prometheus scrapes."""

    def __init__(self, models: ModelSource) -> None:
        self.models = models

    def collect(self) -> Iterator[Metric]:
        models = list(self.models())
        success = CounterMetricFamily(
            "nv_inference_request_success", "Number of successful inference requests, all batch sizes", labels=LABELS
        )
        failure = CounterMetricFamily(
            "nv_inference_request_failure",
            "Number of failed inference requests, all batch sizes",
            labels=[*LABELS, "reason"],
        )
        count = CounterMetricFamily(
            "nv_inference_count", "Number of inferences performed (a batch of n counts n)", labels=LABELS
        )
        executions = CounterMetricFamily(
            "nv_inference_exec_count", "Number of model executions performed (batches run)", labels=LABELS
        )
        durations = [(CounterMetricFamily(name, text, labels=LABELS), stage) for name, text, stage in TRITON_DURATIONS]
        queued = GaugeMetricFamily(
            "graphgen_queued_images", "Images (batch rows) queued or running, per model version", labels=LABELS
        )
        ready = GaugeMetricFamily("graphgen_model_ready", "1 while the model version serves, else 0", labels=LABELS)
        provider = GaugeMetricFamily(
            "graphgen_model_provider",
            "The onnxruntime execution provider running the model version (value 1)",
            labels=[*LABELS, "provider"],
        )
        profiled = CounterMetricFamily(
            "graphgen_profiled_requests", "Requests run with the per-layer profiler", labels=LABELS
        )
        batches = HistogramMetricFamily(
            "graphgen_batch_size", "Rows per model execution (dynamic batches included)", labels=LABELS
        )
        for model in models:
            labels = [model.name, model.version]
            stats = model.stats  # (a snapshot: read without its lock)
            success.add_metric(labels, stats.success.count)
            reasons = dict(stats.failures)
            count.add_metric(labels, stats.inference_count)
            executions.add_metric(labels, stats.execution_count)
            stages = stats.stages()
            for family, stage in durations:
                family.add_metric(labels, stages[stage].ns // 1000)
            sizes = {size: batch.compute_infer.count for size, batch in stats.batches.items()}
            profiled.add_metric(labels, stats.profiled_count)
            for reason in FAILURE_REASONS:
                failure.add_metric([*labels, reason], reasons.get(reason, 0))
            batches.add_metric(labels, histogram_buckets(sizes), sum_value=sum(s * n for s, n in sizes.items()))
            queued.add_metric(labels, model.pending_rows)
            ready.add_metric(labels, 1 if model.ready else 0)
            if model.provider:
                provider.add_metric([*labels, model.provider], 1)
        yield from (success, failure, count, executions, *(family for family, _ in durations))
        yield from (queued, ready, provider, profiled, batches)


class CpuCollector(Collector):
    """Triton's CPU metrics from /proc (Linux): utilization since the previous scrape, and memory.

    Busy time is user, nice, system, irq, softirq and steal; idle time is idle and iowait; used
    memory is MemTotal - MemAvailable — Triton's definitions. Elsewhere nothing is exported.
    """

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self.proc = proc
        self._last: tuple[int, int] = (0, 0)  # (busy, idle) jiffies at the previous scrape

    def collect(self) -> Iterator[Metric]:
        try:
            fields = [int(v) for v in (self.proc / "stat").read_text().split("\n", 1)[0].split()[1:9]]
            memory = dict(
                line.split(":", 1) for line in (self.proc / "meminfo").read_text().splitlines() if ":" in line
            )
            total, available = (int(memory[key].split()[0]) * 1024 for key in ("MemTotal", "MemAvailable"))
        except (OSError, ValueError, KeyError):
            return
        user, nice, system, idle, iowait, irq, softirq, steal = fields
        busy, idle = user + nice + system + irq + softirq + steal, idle + iowait
        busy_delta, idle_delta = busy - self._last[0], idle - self._last[1]
        self._last = (busy, idle)
        ratio = busy_delta / (busy_delta + idle_delta) if busy_delta + idle_delta > 0 else 0.0
        yield GaugeMetricFamily("nv_cpu_utilization", "CPU utilization rate [0.0 - 1.0]", value=ratio)
        yield GaugeMetricFamily("nv_cpu_memory_total_bytes", "CPU total memory (RAM), in bytes", value=total)
        yield GaugeMetricFamily("nv_cpu_memory_used_bytes", "CPU used memory (RAM), in bytes", value=total - available)


def histogram_buckets(sizes: dict[int, int]) -> list[tuple[str, float]]:
    """Cumulative (le, count) pairs of executions by batch size, ending with +Inf."""
    buckets: list[tuple[str, float]] = []
    for bound in BATCH_BUCKETS:
        buckets.append((floatToGoString(bound), sum(n for size, n in sizes.items() if size <= bound)))
    buckets.append(("+Inf", sum(sizes.values())))
    return buckets


class _Single:
    """One metric family as a collector (what generate_latest takes)."""

    def __init__(self, metric: Metric) -> None:
        self.metric = metric

    def collect(self) -> Iterable[Metric]:
        return [self.metric]


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _counter_text(metric: Metric) -> str:
    """A counter as Triton writes it: ``# TYPE name counter`` and samples named ``name`` (no _total)."""
    documentation = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
    lines = [f"# HELP {metric.name} {documentation}", f"# TYPE {metric.name} counter"]
    for sample in metric.samples:
        if sample.name != metric.name + "_total":
            continue  # (_created samples: Triton has none)
        labels = ",".join(f'{key}="{_escape_label(value)}"' for key, value in sorted(sample.labels.items()))
        lines.append(f"{metric.name}{{{labels}}} {floatToGoString(sample.value)}")
    return "\n".join(lines) + "\n"


def exposition(registry: CollectorRegistry) -> bytes:
    """The Prometheus text format (0.0.4) of ``registry``, counters under Triton's names."""
    parts = []
    for metric in registry.collect():
        if metric.type == "counter":
            parts.append(_counter_text(metric).encode())
        else:
            parts.append(generate_latest(_Single(metric)))
    return b"".join(parts)


def make_registry(models: ModelSource) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RuntimeCollector(models))
    registry.register(CpuCollector())
    return registry


def metrics_app(runtime: Runtime) -> web.Application:
    """``GET /metrics`` for Prometheus.

    Open without the bearer token, as Triton's is and as health checks are: Prometheus and
    KServe discover scrape targets from pod annotations, which carry no credentials, and the page
    holds counts, durations and model names, never a request's data. TLS applies when configured.
    """
    scraped: list[VersionStats] = []  # every front-end's counts, summed at this scrape
    registry = make_registry(lambda: scraped)

    async def metrics(request: web.Request) -> web.Response:
        scraped[:] = await runtime.statistics()
        return web.Response(body=exposition(registry), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application(middlewares=[answer_errors])
    app.add_routes([web.get("/metrics", metrics)])
    return app
