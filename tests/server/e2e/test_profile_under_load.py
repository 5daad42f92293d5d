"""Profiles from a busy server: two profiles of ResNet-50 asked while 8 clients classify in a loop agree.

The server runs ``--profile-mode exclusive``, the mode made for profiling a busy server: a profile holds
its model's instances while it runs, and the clients are answered before and after it. Both profiles
name the same slowest layer (or tied group), and the layers above 2% of the time take the same share of
it: the median relative difference of their shares is at most 10%. Shares, not ranks: ResNet-50's
repeated blocks have layers of equal cost (layer3.{1..5}.conv2), whose order is noise, and a Spearman
of 0.77 was measured on two profiles whose shares differed by 2.3% at the median. The machine has 2 CPUs
and another pytest worker may load them: a pair whose runs waited for a CPU (other work's: the clients are
held off) is taken again, and after three such pairs the test is skipped saying so (as
tests/profiling/test_stability.py does). Each profile says its runs' CPU waits and which figure heads its rows, and its wait for the
profiler is not queue time.

Measured here with one CPU kept busy beside the test: in the default ``shared`` mode the two profiles'
shares differed by 3–47% at the median (Spearman 0.22–0.92), in ``exclusive`` by 0.7–24%.
"""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest

from graphgen_protos import classifier_pb2 as cpb
from graphgen_protos import classifier_pb2_grpc
from tests.support.profiling import figure, top_group
from tests.support.server import ServerProcess, add_model

CLIENTS = 8
RUNS = 20  # the fastest of 20 runs: under load, more runs give each layer more chances of an undisturbed one
ABOVE = 0.02  # layers above 2% of the profile's time are compared
SHARE_DIFFERENCE = 0.10  # the most the median layer's share may differ between the two profiles (relative)
ATTEMPTS = 3  # pairs of profiles taken before the machine is declared too busy to judge
# A pair is judged where both profiles' median run waited for a CPU at most this share of the time it was
# ready to run (where the profile calls a run disturbed). An exclusive profile holds the clients off, so
# its waits are other work's: 0.2-0.4% here alone, 48% with one CPU kept busy, where two profiles'
# shares differed by 24%.
BUSY = 0.10


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("repository")
    add_model(repository, "resnet50")
    with ServerProcess(repository, ["--profile-mode", "exclusive"]) as process:
        yield process


def test_two_profiles_asked_of_a_server_serving_8_looping_clients_agree(server):
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    tensor = cpb.Tensor(shape=x.shape, data=x.tobytes())
    plain = cpb.ClassifyRequest(model="resnet50", tensor=tensor)
    profiled = cpb.ClassifyRequest(model="resnet50", tensor=tensor, profile=True, profile_runs=RUNS)
    stop, served, looping = threading.Event(), [], threading.Barrier(CLIENTS + 1)

    def client() -> None:
        with grpc.insecure_channel(server.address) as channel:
            stub = classifier_pb2_grpc.ClassifierStub(channel)
            stub.Classify(plain, timeout=600)
            looping.wait(timeout=600)
            while not stop.is_set():
                stub.Classify(plain, timeout=600)
                served.append(1)

    clients = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in clients:
        thread.start()
    try:
        looping.wait(timeout=600)  # every client has been answered once and loops now
        with grpc.insecure_channel(server.address) as channel:
            stub = classifier_pb2_grpc.ClassifierStub(channel)
            busy = []
            for _ in range(ATTEMPTS):
                before = len(served)
                answers = [stub.Classify(profiled, timeout=600) for _ in range(2)]
                waits = [float(np.median(answer.profile.run_cpu_waits)) for answer in answers]
                if max(waits) <= BUSY:
                    break
                busy.append(f"runs waited {waits[0]:.0%} and {waits[1]:.0%} (median run)")
            assert len(served) > before  # the clients were answered meanwhile
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=600)
    if len(busy) == ATTEMPTS:
        pytest.skip(f"other work kept the CPUs busy in every pair (their waits are not the clients'): {busy}")
    agree, description = _agreement(*(answer.profile for answer in answers))
    assert agree, description
    for answer in answers:
        profile, timings = answer.profile, answer.timings
        assert profile.headline in ("median", "min") and len(profile.run_cpu_waits) == RUNS
        if profile.headline == "min":
            assert any("runs were disturbed" in note for note in profile.notes)
        # Queue is the wait for a worker (and, the profile holding the model, for its calls in flight);
        # the profiler's own waits and the session's build are said apart.
        assert timings.queue_us + timings.profile_setup_us + timings.profile_wait_us + timings.inference_us <= (
            timings.total_us
        )


def _agreement(first: cpb.Profile, second: cpb.Profile) -> tuple[bool, str]:
    """Whether the two profiles agree (same top group, shares within SHARE_DIFFERENCE), and the figures."""
    shares = []
    for profile in (first, second):
        figures = {row.layer: figure(profile, row) for row in profile.layers}
        total = sum(figures.values())
        shares.append({layer: time / total for layer, time in figures.items()})
    compared = [layer for layer, share in shares[0].items() if share >= ABOVE and layer in shares[1]]
    assert len(compared) >= 10, compared
    difference = float(
        np.median([abs(shares[0][k] - shares[1][k]) / max(shares[0][k], shares[1][k]) for k in compared])
    )
    tops = top_group(first), top_group(second)
    agree = difference <= SHARE_DIFFERENCE and bool(set(tops[0]) & set(tops[1]))
    return agree, f"share difference {difference:.1%} over {len(compared)} layers; tops {tops}; {list(first.notes)[:1]}"
