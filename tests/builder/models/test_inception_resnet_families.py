"""Zoo I beyond the generic tests: ResNeXt's two forms, aux heads, the Caffe ResNet and WRN-28-10.

The registry-wide tests already build, check, run, count and compare every architecture with a
torch reference against it. Here: what they cannot see — variant options (``--form branches``,
``--aux``), references that torchvision/timm do not have (He et al.'s stride-on-1×1 ResNet, the
WRN authors' functional code), and the structure the conversions rely on.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx_ir as ir
import pytest

from graphgen.build import BuildOptions, build, save
from graphgen.models.resnet import ResNet, ResNetConfig, split_grouped_state
from graphgen.stats import layer_stats
from tests.builder.test_reference_parity import randomise_batchnorm, save_state_dict
from tests.conftest import TORCH_THREADS, unit_std_error

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
TOLERANCE = 1e-4


def run(model: ir.Model, path, ort_cpu, x: np.ndarray) -> list[np.ndarray]:
    return ort_cpu(save(model, path)).run(None, {"input": x})


def random_input(resolution: int, batch: int = 2) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((batch, 3, resolution, resolution), dtype=np.float32)


@pytest.fixture(scope="module")
def resnext50_forms(tmp_path_factory):
    """torchvision's ResNeXt-50 with random weights, and graphgen's two forms built from its checkpoint."""
    torch.set_num_threads(TORCH_THREADS)
    model = randomise_batchnorm(torchvision.models.resnext50_32x4d(weights=None).eval())
    x = random_input(96)  # a small input: the 512-path graph is what is under test, not the resolution
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    checkpoint = save_state_dict(model, tmp_path_factory.mktemp("resnext") / "resnext50.pth")
    forms = {
        form: build("resnext50_32x4d", BuildOptions(resolution=96, weights=checkpoint, variant={"form": form}))
        for form in ("grouped", "branches")
    }
    return forms, x, expected


def test_resnext_branches_and_grouped_forms_both_equal_torchvision(resnext50_forms, tmp_path, ort_cpu):
    forms, x, expected = resnext50_forms
    outputs = {}
    for form, model in forms.items():
        (outputs[form],) = run(model, tmp_path / f"{form}.onnx", ort_cpu, x)
        assert unit_std_error(outputs[form], expected) <= TOLERANCE, form
    assert unit_std_error(outputs["branches"], outputs["grouped"]) <= TOLERANCE


def test_branches_form_has_g_parallel_paths_summed_before_bn3(resnext50_forms):
    forms, _, _ = resnext50_forms
    graph = forms["branches"].graph
    convs = [node for node in graph if node.op_type == "Conv"]
    assert all(node.attributes.get_int("group", 1) == 1 for node in convs)
    paths = Counter(node.name.rsplit(".", 1)[0] for node in convs if ".branches." in node.name)
    assert len(paths) == 16 * 32 and set(paths.values()) == {3}  # 16 blocks × 32 paths of three convs
    sums = {node.name: node for node in graph if node.op_type == "Sum"}
    assert len(sums) == 16
    block = sums["layer2.0.branches.sum"]
    assert len(block.inputs) == 32
    assert {value.producer().name for value in block.inputs} == {f"layer2.0.branches.{g}.conv3" for g in range(32)}
    (consumer,) = [use.node for use in block.outputs[0].uses()]
    assert consumer.name == "layer2.0.bn3"  # follows the Sum, so BatchNorm folding leaves it in place
    # a path of the first downsampling block, d = 8: 256 -> 8 (1×1), 8 -> 8 (3×3, stride 2), 8 -> 512 (1×1)
    layout = {n.name: (tuple(n.inputs[1].shape), tuple(n.attributes.get_ints("strides"))) for n in convs}
    assert [layout[f"layer2.0.branches.7.conv{i}"] for i in (1, 2, 3)] == [
        ((8, 256, 1, 1), (1, 1)),
        ((8, 8, 3, 3), (2, 2)),
        ((512, 8, 1, 1), (1, 1)),
    ]
    grouped = forms["grouped"].graph
    assert {n.attributes.get_int("group", 1) for n in grouped if n.name.endswith("conv2")} == {32}


def test_split_grouped_state_slices_per_path_and_leaves_its_input_alone():
    rng = np.random.default_rng(0)
    state = {
        "layer1.0.conv1.weight": rng.standard_normal((8, 3, 1, 1)),
        "layer1.0.bn1.running_mean": rng.standard_normal(8),
        "layer1.0.bn1.num_batches_tracked": np.array(5),
        "layer1.0.conv2.weight": rng.standard_normal((8, 4, 3, 3)),
        "layer1.0.conv3.weight": rng.standard_normal((6, 8, 1, 1)),
        "layer1.0.bn3.weight": rng.standard_normal(6),
    }
    before = {key: value.copy() for key, value in state.items()}
    split = split_grouped_state(state, ["layer1.0."], groups=2)
    assert all(np.array_equal(state[key], before[key]) for key in before) and state.keys() == before.keys()
    assert np.array_equal(split["layer1.0.branches.1.conv1.weight"], state["layer1.0.conv1.weight"][4:])
    assert np.array_equal(split["layer1.0.branches.1.bn1.running_mean"], state["layer1.0.bn1.running_mean"][4:])
    assert np.array_equal(split["layer1.0.branches.0.conv2.weight"], state["layer1.0.conv2.weight"][:4])
    assert np.array_equal(split["layer1.0.branches.1.conv3.weight"], state["layer1.0.conv3.weight"][:, 4:])
    assert "layer1.0.bn3.weight" in split and not any(".bn1.num_batches" in key for key in split)
    assert split_grouped_state(split, ["layer1.0."], groups=2) == split  # already per-path: unchanged


def test_branches_form_is_refused_without_groups():
    with pytest.raises(ValueError, match="needs a grouped"):
        ResNet(ResNetConfig("bottleneck", (1, 1, 1, 1), form="branches"), 10)
    with pytest.raises(ValueError, match="does not take --form"):
        build("resnet50", BuildOptions(variant={"form": "branches"}))


def hooked_aux_outputs(model, taps: dict[str, str], x: np.ndarray) -> dict[str, np.ndarray]:
    """Each aux head on its tap's output, in eval mode (torchvision runs them only in training)."""
    features = {}
    hooks = [
        getattr(model, tap).register_forward_hook(lambda _m, _i, out, tap=tap: features.__setitem__(tap, out))
        for tap in taps
    ]
    with torch.no_grad():
        features["logits"] = model(torch.from_numpy(x))
        outputs = {head: getattr(model, head)(features[tap]).numpy() for tap, head in taps.items()}
    for hook in hooks:
        hook.remove()
    return outputs | {"logits": features["logits"].numpy()}


@pytest.mark.parametrize(
    ("name", "taps", "order", "params"),
    [
        ("googlenet", {"inception4a": "aux1", "inception4d": "aux2"}, ["logits", "aux2", "aux1"], 13_004_888),
        ("inception_v3", {"Mixed_6e": "AuxLogits"}, ["logits", "AuxLogits"], 27_161_264),
    ],
)
def test_aux_outputs_equal_torchvision_aux_heads(name, taps, order, params, tmp_path, ort_cpu):
    torch.set_num_threads(TORCH_THREADS)
    model = getattr(torchvision.models, name)(weights=None, aux_logits=True, init_weights=False)
    model = randomise_batchnorm(model.eval())
    assert sum(p.numel() for p in model.parameters()) == params
    resolution = 299 if name == "inception_v3" else 224
    x = random_input(resolution)
    expected = hooked_aux_outputs(model, taps, x)
    checkpoint = save_state_dict(model, tmp_path / "with_aux.pth")

    with_aux = build(name, BuildOptions(weights=checkpoint, variant={"aux": True}))
    assert layer_stats(with_aux).params == params
    actual = run(with_aux, tmp_path / "aux.onnx", ort_cpu, x)
    assert len(actual) == len(order)
    for output, head in zip(actual, order):
        assert unit_std_error(output, expected[head]) <= TOLERANCE, head
    # The inference graph loads the same checkpoint (aux keys and all) and has one output.
    (logits,) = run(build(name, BuildOptions(weights=checkpoint)), tmp_path / "plain.onnx", ort_cpu, x)
    assert unit_std_error(logits, expected["logits"]) <= TOLERANCE


def test_googlenet_aux_refuses_uneven_adaptive_pool_windows():
    with pytest.raises(ValueError, match="windows of sizes"):
        build("googlenet", BuildOptions(resolution=240, variant={"aux": True}))  # 15x15 -> 4x4


def torch_macs(model, x) -> int:
    """Conv and Linear multiply-accumulates of one forward pass, counted by hooks."""
    total = 0

    def count(module, _inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += output[0].numel() * per_output
        else:
            total += module.in_features * module.out_features

    layers = (torch.nn.Conv2d, torch.nn.Linear)
    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, layers)]
    with torch.no_grad():
        model(x[:1])
    for hook in hooks:
        hook.remove()
    return total


def test_resnet50_v1_is_the_caffe_definition_with_torchvision_keys(tmp_path, ort_cpu):
    """ResNet-50-deploy.prototxt: stride 2 on the first 1×1 (res3a_branch2a…), pool1 3×3/2 unpadded, rounding up."""
    torch.set_num_threads(TORCH_THREADS)
    model = randomise_batchnorm(torchvision.models.resnet50(weights=None).eval())
    model.maxpool = torch.nn.MaxPool2d(3, 2, 0, ceil_mode=True)
    for stage in (model.layer2, model.layer3, model.layer4):
        stage[0].conv1.stride, stage[0].conv2.stride = (2, 2), (1, 1)
    x = random_input(224)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    graph = build("resnet50_v1", BuildOptions(weights=save_state_dict(model, tmp_path / "r50.pth")))
    (actual,) = run(graph, tmp_path / "v1.onnx", ort_cpu, x)
    assert unit_std_error(actual, expected) <= TOLERANCE
    assert layer_stats(graph).macs == torch_macs(model, torch.from_numpy(x))  # 3.858 G vs B's 4.089 G


def wrn_reference(params: dict, x, blocks: int = 4):
    """The WRN authors' functional forward (szagoruyko/wide-residual-networks pytorch/resnet.py), in eval mode."""
    F = torch.nn.functional

    def bn_relu(o, base):
        stats = [params[f"{base}.{k}"] for k in ("running_mean", "running_var", "weight", "bias")]
        return F.relu(F.batch_norm(o, stats[0], stats[1], stats[2], stats[3], training=False))

    o = F.conv2d(x, params["conv0"], padding=1)
    for group, stride in enumerate((1, 2, 2)):
        for i in range(blocks):
            base, s = f"group{group}.block{i}", stride if i == 0 else 1
            o1 = bn_relu(o, f"{base}.bn0")
            z = F.conv2d(
                bn_relu(F.conv2d(o1, params[f"{base}.conv0"], stride=s, padding=1), f"{base}.bn1"),
                params[f"{base}.conv1"],
                padding=1,
            )
            o = z + (F.conv2d(o1, params[f"{base}.convdim"], stride=s) if f"{base}.convdim" in params else o)
    o = F.avg_pool2d(bn_relu(o, "bn"), 8, 1, 0).flatten(1)
    return F.linear(o, params["fc.weight"], params["fc.bias"])


def wrn_params(depth: int = 28, widen: int = 10, classes: int = 10) -> dict:
    """Random weights and BatchNorm statistics under the authors' key names."""
    generator = torch.Generator().manual_seed(0)
    params: dict = {}

    def conv(key, cin, cout, k):
        params[key] = torch.randn(cout, cin, k, k, generator=generator) * (2 / (cin * k * k)) ** 0.5

    def bn(key, n):
        params[f"{key}.weight"] = torch.rand(n, generator=generator) + 0.5
        params[f"{key}.bias"] = torch.randn(n, generator=generator) * 0.1
        params[f"{key}.running_mean"] = torch.randn(n, generator=generator) * 0.1
        params[f"{key}.running_var"] = torch.rand(n, generator=generator) + 0.5

    conv("conv0", 3, 16, 3)
    cin = 16
    for group in range(3):
        width = 16 * widen * 2**group
        for i in range((depth - 4) // 6):
            base, ni = f"group{group}.block{i}", cin if i == 0 else width
            bn(f"{base}.bn0", ni)
            conv(f"{base}.conv0", ni, width, 3)
            bn(f"{base}.bn1", width)
            conv(f"{base}.conv1", width, width, 3)
            if ni != width:
                conv(f"{base}.convdim", ni, width, 1)
        cin = width
    bn("bn", cin)
    params["fc.weight"] = torch.randn(classes, cin, generator=generator) * cin**-0.5
    params["fc.bias"] = torch.randn(classes, generator=generator) * 0.1
    return params


def test_wrn28_10_equals_the_authors_functional_code(tmp_path, ort_cpu):
    torch.set_num_threads(TORCH_THREADS)
    params = wrn_params()
    trainable = sum(v.numel() for k, v in params.items() if not k.endswith(("running_mean", "running_var")))
    assert trainable == 36_479_194  # the paper's "36.5M"
    x = random_input(32)
    with torch.no_grad():
        expected = wrn_reference(params, torch.from_numpy(x)).numpy()
    torch.save(params, tmp_path / "wrn.pth")
    graph = build("wrn28_10", BuildOptions(weights=tmp_path / "wrn.pth"))
    stats = layer_stats(graph)
    assert stats.params == trainable
    assert stats.macs == torch_macs_functional_wrn()
    (actual,) = run(graph, tmp_path / "wrn.onnx", ort_cpu, x)
    assert actual.shape == (2, 10)
    assert unit_std_error(actual, expected) <= TOLERANCE


def torch_macs_functional_wrn(widen: int = 10, blocks: int = 4) -> int:
    """Conv and fc MACs of WRN-28-10 at 32×32 from its shapes (3×3 convs keep size; stride 2 halves it)."""
    macs, size, cin = 32 * 32 * 3 * 16 * 9, 32, 16
    for group in range(3):
        width = 16 * widen * 2**group
        size = size if group == 0 else size // 2
        for i in range(blocks):
            ni = cin if i == 0 else width
            macs += size * size * width * (ni * 9 + width * 9 + (ni if ni != width else 0))
        cin = width
    return macs + cin * 10
