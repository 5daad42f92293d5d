"""SIGTERM trials under 16 looping tritonclient threads; prints the statuses seen as JSON.

``python tests/server/e2e/sigterm_trials.py REPOSITORY MODEL SIZE TRIALS [SERVER ARGS...]``

Run as its own process: tritonclient's protobuf names (``inference.*``) clash with graphgen's.
Each trial starts a server, lets 16 threads send ModelInfer in a tight loop (no pause after a
refusal: the worst case for a stopping server), sends SIGTERM once every thread has had answers,
and counts how each call ended until the server has exited. Every answer is compared with the
trial's first one (the input never changes).
"""

from __future__ import annotations

import collections
import json
import signal
import sys
import threading
import time

import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from graphgen_client.local import LocalServer

CLIENTS = 16
OK_BEFORE_SIGNAL = 3 * CLIENTS


def kind(error: InferenceServerException) -> str:
    """The status, with UNAVAILABLE split by who said it."""
    status = str(error.status()).removeprefix("StatusCode.")
    message = error.message() or ""
    if status == "UNAVAILABLE":
        if "shutting down" in message:
            return "UNAVAILABLE (refused by the stopping server)"
        if "failed to connect" in message.lower() or "connection refused" in message.lower():
            return "UNAVAILABLE (server gone: connection refused)"
        return "UNAVAILABLE (connection closed in transit)"
    return f"{status} ({message[:80]})"


def trial(repository: str, model: str, size: int, server_args: list[str]) -> dict:
    counts: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    stop = threading.Event()
    x = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
    started = time.monotonic()
    timing = {}
    with LocalServer(repository, server_args) as server:
        timing["start_s"] = round(time.monotonic() - started, 2)
        first = triton.InferenceServerClient(server.address)
        tensor = triton.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        expected = first.infer(model, [tensor]).as_numpy("logits")

        def loop() -> None:
            # A connection of its own (gRPC shares one between channels alike otherwise), as 16
            # separate clients would have: with several front-end processes they spread over them.
            options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 1 << 26)]
            client = triton.InferenceServerClient(server.address, channel_args=options)
            while not stop.is_set():
                try:
                    answer = client.infer(model, [tensor]).as_numpy("logits")
                    outcome = "OK" if np.array_equal(answer, expected) else "WRONG ANSWER"
                except InferenceServerException as error:
                    outcome = kind(error)
                with lock:
                    counts[outcome] += 1
                if "connection refused" in outcome:
                    break  # the server is gone: every later call would end the same way
            client.close()

        threads = [threading.Thread(target=loop) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while counts["OK"] < OK_BEFORE_SIGNAL and time.monotonic() < deadline:
            time.sleep(0.005)
        ok_at_signal = counts["OK"]
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        returncode = server.wait()
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        first.close()
        timing["signal_to_exit_s"] = round(time.monotonic() - signalled, 2)
    return {"returncode": returncode, "ok_at_signal": ok_at_signal, "counts": dict(counts), **timing}


def main() -> None:
    repository, model, size, trials = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    results = [trial(repository, model, size, sys.argv[5:]) for _ in range(trials)]
    print(json.dumps(results))


if __name__ == "__main__":
    main()
