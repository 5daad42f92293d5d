"""The dynamic batcher: batches never exceed max_batch, requests never split, each gets its own rows."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from graphgen_server.core.batching import DynamicBatcher


class FakeModel:
    """Row-wise like a CNN (row i of the output depends on row i of the input only), and slow."""

    def __init__(self, seconds: float = 0.01, fail: bool = False) -> None:
        self.batches: list[int] = []
        self.seconds, self.fail = seconds, fail

    async def run(self, feeds: dict[str, np.ndarray]) -> tuple[list[np.ndarray], float]:
        batch = feeds["x"]
        self.batches.append(batch.shape[0])
        await asyncio.sleep(self.seconds)
        if self.fail:
            raise RuntimeError("kernel failed")
        return [batch * 2.0, batch.sum(axis=1)], self.seconds


def _requests(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal((1 + i % 3, 4), dtype=np.float32) for i in range(count)]


def test_concurrent_requests_are_merged_and_each_gets_its_own_rows():
    model = FakeModel()
    requests = _requests(24)

    async def main():
        batcher = DynamicBatcher(model.run, max_batch=4, delay_s=0.002, slots=1)
        try:
            return await asyncio.gather(*(batcher.submit({"x": r}) for r in requests))
        finally:
            await batcher.close()

    results = asyncio.run(main())
    for request, result in zip(requests, results):
        np.testing.assert_array_equal(result.outputs[0], request * 2.0)
        np.testing.assert_array_equal(result.outputs[1], request.sum(axis=1))
        assert request.shape[0] <= result.batch_size <= 4
    assert max(model.batches) <= 4 and len(model.batches) < len(requests)  # merged, within the bound
    assert sum(model.batches) == sum(r.shape[0] for r in requests)  # no row run twice or dropped


def test_a_lone_request_runs_at_once_without_delay():
    model = FakeModel(seconds=0.0)

    async def main():
        batcher = DynamicBatcher(model.run, max_batch=8, delay_s=0.0, slots=2)
        try:
            return await batcher.submit({"x": np.ones((2, 4), np.float32)})
        finally:
            await batcher.close()

    result = asyncio.run(main())
    assert result.batch_size == 2 and model.batches == [2]


def test_a_failing_batch_fails_each_of_its_requests_and_the_batcher_goes_on():
    model = FakeModel(fail=True)

    async def main():
        batcher = DynamicBatcher(model.run, max_batch=4, delay_s=0.001, slots=1)
        try:
            failed = await asyncio.gather(*(batcher.submit({"x": r}) for r in _requests(6)), return_exceptions=True)
            model.fail = False
            recovered = await batcher.submit({"x": np.ones((1, 4), np.float32)})
            return failed, recovered
        finally:
            await batcher.close()

    failed, recovered = asyncio.run(main())
    assert all(isinstance(f, RuntimeError) for f in failed)
    np.testing.assert_array_equal(recovered.outputs[0], np.full((1, 4), 2.0, np.float32))


def test_refuses_a_request_larger_than_a_batch():
    async def main():
        batcher = DynamicBatcher(FakeModel().run, max_batch=2, delay_s=0.0, slots=1)
        with pytest.raises(ValueError, match="exceed max_batch"):
            await batcher.submit({"x": np.ones((3, 4), np.float32)})
        await batcher.close()

    asyncio.run(main())


def test_the_default_follows_the_device_and_a_config_overrides_it(tmp_path):
    from graphgen_protos import model_config_pb2 as mc
    from graphgen_server.config import ServerConfig
    from graphgen_server.core.batching import batching_choice
    from graphgen_server.repository.model_config import ReadConfig

    none = ReadConfig(mc.ModelConfig(), present=False)

    def choice(mode: str, provider: str = "CPUExecutionProvider", settings: ReadConfig = none):
        return batching_choice(settings, True, 8, ServerConfig(tmp_path, batching_mode=mode), provider)

    cpu, cuda = choice("auto"), choice("auto", "CUDAExecutionProvider")
    assert cpu.max_batch == 0 and "default on CPUExecutionProvider: measured on 2 CPU cores" in cpu.describe()
    assert cuda.max_batch == 8 and "default on CUDAExecutionProvider" in cuda.describe()
    assert choice("on").max_batch == 8 and choice("off", "CUDAExecutionProvider").max_batch == 0
    configured = ReadConfig(mc.ModelConfig(max_batch_size=8, dynamic_batching={"preferred_batch_size": [4]}), True)
    assert choice("off", settings=configured).max_batch == 4  # the model's config.pbtxt decides for it
    assert choice("on", settings=ReadConfig(mc.ModelConfig(max_batch_size=8), True)).max_batch == 0


@pytest.mark.parametrize(
    ("flags", "mode", "max_batch"),
    [
        ([], "auto", 8),
        (["--max-batch", "4"], "on", 4),
        (["--max-batch", "1"], "off", 1),
        (["--dynamic-batching", "off", "--max-batch", "4"], "off", 4),
        (["--dynamic-batching", "on"], "on", 8),
    ],
)
def test_the_flags_choose_the_mode(tmp_path, flags, mode, max_batch):
    from graphgen_server.cli import config_from_args, make_parser

    config = config_from_args(make_parser().parse_args(["--repository", str(tmp_path), *flags]))
    assert (config.batching_mode, config.max_batch) == (mode, max_batch)
