"""Profiles people can trust: two successive profiles of one model on a server rank the layers alike.

On resnet50 (at 160 px, so that a run takes ~50 ms here) and efficientnet_lite0 (224 px): the rows
above 2% of the layers' time are ranked alike (Spearman ≥ 0.8) and both profiles name the same
slowest layer (or the same set of layers tied with it within their spread: ResNet-50's
layer4.{0,1,2}.conv2 have the same MACs and shapes). The server runs onnxruntime on one thread:
on a machine shared with other work, a two-thread kernel waits for whichever thread was preempted.
Where most runs waited for a CPU the profiles head their rows with each row's fastest run (headline
"min", the figure load disturbs least) and are judged the same. A profile still on medians that says
its runs were disturbed (rows off the median run by more than the 5% margin) cannot show stability:
the pair is taken again, and after three disturbed pairs the test is skipped saying so.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from google.protobuf import json_format

from graphgen_protos import classifier_pb2 as cpb
from graphgen_protos import kserve_v2_pb2 as kpb
from tests.support.profiling import check_adds_up, spearman, top_group
from tests.support.server import ServerProcess, add_model

RESOLUTION = {"resnet50": 160, "efficientnet_lite0": 224}
RUNS, SHARE, MIN_SPEARMAN = 20, 0.02, 0.8  # runs >= 10 asked; 20 cost ~1 s more on resnet50@160
BATCH = 1
ATTEMPTS = 3  # pairs of profiles tried before the machine is declared too busy to judge


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repository")
    for name, resolution in RESOLUTION.items():
        add_model(repo, name, resolution=resolution)
    with ServerProcess(repo, ["--intra-op-threads", "1", "--max-profile-runs", "20"]) as process:
        yield process


@pytest.fixture(scope="module")
def stubs(server):
    import grpc

    from graphgen_protos import classifier_pb2_grpc, kserve_v2_pb2_grpc

    with grpc.insecure_channel(server.address) as channel:
        yield classifier_pb2_grpc.ClassifierStub(channel), kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel)


def _tensor(name: str, batch: int = BATCH) -> np.ndarray:
    size = RESOLUTION[name]
    return np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)


def _classify(stub, name: str, **fields) -> cpb.ClassifyResponse:
    x = _tensor(name)
    request = cpb.ClassifyRequest(model=name, tensor=cpb.Tensor(shape=x.shape, data=x.tobytes()), **fields)
    return stub.Classify(request, timeout=300)


def _disturbed(profile: cpb.Profile) -> bool:
    """The profile's own verdict: rows off the median run by more than the margin (it carries a note).

    A profile whose rows are fastest runs (headline "min": most runs waited for a CPU) is judged all the
    same: that figure is the one made to survive the disturbance."""
    return profile.headline != "min" and any("runs were disturbed" in note for note in profile.notes)


@pytest.mark.parametrize("name", list(RESOLUTION))
def test_two_successive_profiles_rank_the_layers_alike(stubs, name):
    classifier, _ = stubs
    busy = []
    for _ in range(ATTEMPTS):
        first, second = (_classify(classifier, name, profile=True, profile_runs=RUNS).profile for _ in range(2))
        for profile in (first, second):
            assert profile.runs == RUNS and profile.spread == "p10-p90" and profile.batch_size == BATCH
            assert all(r.p10_us <= r.median_us <= r.p90_us and r.min_us <= r.p10_us for r in profile.layers)
            check_adds_up(profile)
        a, b = ({row.kernel: row.share for row in p.layers} for p in (first, second))
        assert a.keys() == b.keys()
        large = [kernel for kernel in a if a[kernel] >= SHARE or b[kernel] >= SHARE]
        rho = spearman([a[k] for k in large], [b[k] for k in large])
        if not (_disturbed(first) or _disturbed(second)):
            break
        busy.append(
            f"runs {first.inference_us} µs ({first.inference_p10_us:.0f}–{first.inference_p90_us:.0f}) "
            f"vs layers {first.layers_us} µs, Spearman {rho:.2f}"
        )
    else:
        pytest.skip(f"this machine is too busy for a stability check (every profile says so): {busy}")
    assert len(large) >= 8, large  # enough rows for a rank correlation to mean something
    print(f"{name}: Spearman {rho:.3f} over {len(large)} rows; tops {top_group(first)[:3]} / {top_group(second)[:3]}")
    assert rho >= MIN_SPEARMAN, (rho, large)
    # The same slowest layer: each profile's slowest is the other's slowest or tied with it.
    assert top_group(first)[0] in top_group(second) and top_group(second)[0] in top_group(first)


def test_setup_is_reported_under_its_own_name_never_as_queue(stubs):
    classifier, _ = stubs
    # A batch size not seen before: the session kept ready warmed up at another shape.
    x = _tensor("efficientnet_lite0", batch=2)
    request = cpb.ClassifyRequest(
        model="efficientnet_lite0", tensor=cpb.Tensor(shape=x.shape, data=x.tobytes()), profile=True, profile_runs=3
    )
    response = classifier.Classify(request, timeout=300)
    t, profile = response.timings, response.profile
    assert t.profile_setup_us == pytest.approx(profile.setup_us, abs=1)
    assert profile.setup_us > 0 and profile.warmup_runs == 2 and profile.batch_size == 2
    # Queue is the rest: far less than the two warm-up runs that setup holds.
    assert t.queue_us < profile.setup_us
    assert t.total_us >= t.queue_us + t.profile_setup_us + t.inference_us


def test_model_infer_takes_profile_parameters_and_returns_the_profile_as_json(stubs):
    _, kserve = stubs
    x = _tensor("efficientnet_lite0")
    request = kpb.ModelInferRequest(model_name="efficientnet_lite0")
    request.inputs.add(name="input", datatype="FP32", shape=x.shape)
    request.raw_input_contents.append(x.tobytes())
    request.parameters["profile"].bool_param = True
    request.parameters["profile_runs"].int64_param = 4
    response = kserve.ModelInfer(request, timeout=300)
    text = response.parameters["graphgen_profile"].string_param
    profile = json_format.Parse(text, cpb.Profile())
    assert profile.runs == 4 and profile.layers and json.loads(text)["timing"] == "host"
    assert response.outputs[0].shape == [1, 1000]
    plain = kpb.ModelInferRequest(model_name="efficientnet_lite0", inputs=request.inputs)
    plain.raw_input_contents.append(x.tobytes())
    assert "graphgen_profile" not in kserve.ModelInfer(plain, timeout=300).parameters


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"profile": True, "profile_runs": 21}, "1 to 20 runs"),
        ({"profile_runs": 3}, "set profile too"),
    ],
)
def test_profile_runs_out_of_bounds_are_refused_naming_the_field(stubs, parameters, message):
    import grpc

    classifier, kserve = stubs
    with pytest.raises(grpc.RpcError) as error:
        _classify(classifier, "efficientnet_lite0", **parameters)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in error.value.details()
    assert "profile_runs" in error.value.details()
    x = _tensor("efficientnet_lite0")
    request = kpb.ModelInferRequest(model_name="efficientnet_lite0")
    request.inputs.add(name="input", datatype="FP32", shape=x.shape)
    request.raw_input_contents.append(x.tobytes())
    for key, value in parameters.items():
        setattr(request.parameters[key], "bool_param" if isinstance(value, bool) else "int64_param", value)
    with pytest.raises(grpc.RpcError) as error:
        kserve.ModelInfer(request, timeout=300)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "parameters.profile_runs" in error.value.details()
