"""A rolling update of three local replicas under 16 clients (bench/replicas.py): 0 failed calls.

Three graphgen-servers on loopback ports, 16 clients on one round-robin target for 20 s, each
server in turn stopped with SIGTERM (pre-stop delay, drain) and started again on its port.
Every answer equals onnxruntime run in this process; the server being stopped, called directly,
goes on answering for the pre-stop delay after its health said NOT_SERVING. The figures are
printed (``pytest -s``); ``python bench/replicas.py`` prints the same table.
"""

from __future__ import annotations

from bench.replicas import REPLICAS, build_tiny, run

PRE_STOP_S = 1.0


def test_rolling_restart_of_three_replicas_fails_no_call(tmp_path):
    model_path = build_tiny(tmp_path)
    report = run(tmp_path, model_path, clients=16, seconds=20, pre_stop_delay=PRE_STOP_S)
    print(report)
    assert report.failed == 0, report.failures
    assert report.wrong == 0
    assert report.calls > 1000
    assert len(report.phases) == 1 + 3 * REPLICAS
    assert all(phase["calls"] > 0 for phase in report.phases), report.phases  # answers in every phase
    assert len(report.probes) == REPLICAS
    for probe in report.probes:
        # Called directly, the stopping server answered for the whole delay after NOT_SERVING
        # (less a little: the last call started before the delay ended), then only refused.
        assert probe["answered_after_not_serving_s"] >= PRE_STOP_S - 0.15, probe
        assert set(probe["statuses"]) <= {"OK", "UNAVAILABLE"}, probe
        assert probe["statuses"].get("UNAVAILABLE", 0) >= 1, probe  # it did stop
