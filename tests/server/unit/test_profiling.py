"""The server's profiler: a fresh profiling session per profiled request, built ahead, outputs equal to
the serving session's, setup (build waited for + warm-up) reported apart, failed builds retried."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from graphgen_server.core.profiler import Profiler
from graphgen_server.frontends.profiles import profile_message
from tests.support.server import add_tiny_model


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return add_tiny_model(tmp_path_factory.mktemp("repository"))


class Options:
    """Session options, failing the first ``failures`` times (a build that runs out of memory)."""

    def __init__(self, failures: int = 0) -> None:
        self.failures, self.made = failures, 0

    def __call__(self) -> ort.SessionOptions:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("out of memory (simulated)")
        self.made += 1
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = 1
        return options


WARMUP = {"input": np.zeros((1, 3, 32, 32), np.float32)}


def test_each_profiled_request_gets_a_fresh_session_runs_times_and_the_serving_outputs(model_path):
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)
    plain = ort.SessionOptions()
    plain.log_severity_level = 3
    (expected,) = ort.InferenceSession(str(model_path), plain, providers=["CPUExecutionProvider"]).run(
        None, {"input": x}
    )
    options = Options()
    profiler = Profiler(model_path, ["CPUExecutionProvider"], options, WARMUP)
    try:
        for runs in (3, 5):
            done = profiler.run({"input": x}, runs)
            np.testing.assert_array_equal(done.outputs[0], expected)
            profile = done.profile
            assert profile.runs == runs and profile.warmup_runs == 2 and profile.batch == 2
            assert profile.setup_us > 0 and done.setup_s == pytest.approx(profile.setup_us / 1e6)
            assert done.run_s > 0 and profile.build_us > 0
            assert any(row.layer.startswith("_blocks.3.") for row in profile.rows)
            assert all(row.time.p10 <= row.time.median <= row.time.p90 for row in profile.rows)
            assert sum(row.macs for row in profile.rows) > 0  # joined with the static table
            message = profile_message(profile)
            assert message.runs == runs and message.spread == "p10-p90" and message.timing == "host"
            assert message.layers_us + message.overhead_us == message.inference_us  # against the median run
            assert message.headline in ("median", "min") and len(message.run_cpu_waits) == runs
    finally:
        profiler.close()
    # A session per request (profiling ends with it), plus the spare after the last one unless
    # close() cancelled it before it started.
    assert options.made in (2, 3)


def test_a_failed_session_build_fails_that_request_only(model_path):
    profiler = Profiler(model_path, ["CPUExecutionProvider"], Options(failures=1), WARMUP)
    feeds = {"input": np.ones((1, 3, 32, 32), np.float32)}
    try:
        with pytest.raises(RuntimeError, match="simulated"):
            profiler.run(feeds, 2)
        done = profiler.run(feeds, 2)
        assert done.outputs[0].shape == (1, 10) and done.profile.rows
    finally:
        profiler.close()


def test_cuda_graphs_are_refused_for_profiling(model_path):
    with pytest.raises(ValueError, match="enable_cuda_graph"):
        Profiler(model_path, [("CUDAExecutionProvider", {"enable_cuda_graph": "1"})], Options(), WARMUP)


def _builder_nice(profiler: Profiler) -> int:
    import os
    import threading

    return profiler._builder.submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).result()


def test_profiles_take_a_fair_share_of_the_cpu_unless_told_to_put_serving_first(model_path):
    import os
    import threading

    caller = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    fair = Profiler(model_path, ["CPUExecutionProvider"], Options(), WARMUP)
    last = Profiler(model_path, ["CPUExecutionProvider"], Options(), WARMUP, nice=19)
    try:
        for profiler in (fair, last):
            done = profiler.run(WARMUP, 2)  # the builder thread exists now
            assert len(done.profile.cpu_waits) == 2  # each run's CPU waits measured (Linux schedstat)
            assert all(0.0 <= share <= 1.0 for share in done.profile.cpu_waits)
        assert _builder_nice(fair) == caller  # a fair share: as the serving threads
        assert _builder_nice(last) == 19  # --profile-nice 19: serving first
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == caller  # the caller's thread untouched
    finally:
        fair.close()
        last.close()


def test_waiting_for_the_profiler_is_its_own_figure(model_path):
    import threading

    profiler = Profiler(model_path, ["CPUExecutionProvider"], Options(), WARMUP)
    feeds = {"input": np.ones((1, 3, 32, 32), np.float32)}
    try:
        profiler.run(feeds, 1)
        with profiler._lock:  # another profile of this version is under way: the next call waits for it
            waiting = threading.Thread(target=lambda: results.append(profiler.run(feeds, 1)))
            results: list = []
            waiting.start()
            threading.Event().wait(0.3)
        waiting.join(timeout=60)
        (done,) = results
        assert done.wait_s >= 0.25  # the lock's wait is the profiler's, not queue, not setup
        assert done.setup_s < done.wait_s and done.entered > 0
    finally:
        profiler.close()


def test_an_exclusive_profile_holds_every_instance_until_it_ends():
    import asyncio

    from graphgen_protos import model_config_pb2 as mc
    from graphgen_server.core.instances import Instance, InstancePool

    async def scenario() -> list[str]:
        pool = InstancePool([Instance(f"i{n}", None, mc.ModelInstanceGroup.KIND_CPU, None) for n in range(2)])
        events: list[str] = []
        serving = await pool.take()  # a call in flight

        async def profile() -> None:
            held = await pool.hold_all()  # waits for the call in flight
            events.append(f"profile holds {len(held)}")
            await asyncio.sleep(0.05)
            for instance in held:
                pool.give_back(instance)
            events.append("profile done")

        async def next_call() -> None:
            await asyncio.sleep(0.01)  # asked while the profile waits
            instance = await pool.take()
            events.append("next call runs")
            pool.give_back(instance)

        task = asyncio.gather(profile(), next_call())
        await asyncio.sleep(0.03)
        events.append("call in flight ends")
        pool.give_back(serving)
        await task
        assert sum(instance.runs for instance in pool.instances) == 2  # the two calls; holding is no run
        return events

    events = asyncio.run(scenario())
    assert events.index("call in flight ends") < events.index("profile holds 2") < events.index("profile done")
    assert events.index("profile done") < events.index("next call runs")
