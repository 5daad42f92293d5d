"""int8 by onnxruntime's quantizer: images from the model's metadata, per-channel or per-tensor weights,
layers kept float as onnxruntime really runs them, and refusals in the user's terms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from graphgen.errors import UserError
from graphgen.int8.images import ImageSet, hold_out, image_files
from graphgen.int8.quantize import Int8Options, quantize
from graphgen.metadata import Preprocess
from graphgen.onnx_io import save_model
from graphgen.stats import count_parameters


def calibration(model: ir.Model, folder: Path) -> ImageSet:
    return ImageSet.load(image_files([folder]), Preprocess.from_metadata(model.metadata_props))


def weight_scale(model: ir.Model, layer: str) -> tuple[int, ...]:
    """The shape of the scale the DequantizeLinear of ``layer``'s weight uses."""
    conv = next(node for node in model.graph if node.name == layer)
    dequantize = conv.inputs[1].producer()
    assert dequantize is not None and dequantize.op_type == "DequantizeLinear"
    assert dequantize.inputs[0].dtype == ir.DataType.INT8
    return tuple(dequantize.inputs[1].shape)


@pytest.fixture(scope="module")
def per_channel(resnet18, images):
    return quantize(resnet18, calibration(resnet18, images), Int8Options())


def test_images_are_the_model_inputs_its_metadata_describes(resnet18, images):
    loaded = calibration(resnet18, images)
    assert len(loaded) == 8 and all(t.shape == (3, 32, 32) and t.dtype == np.float32 for t in loaded.tensors)
    assert abs(float(np.mean(loaded.tensors))) < 1.0  # normalised by the ImageNet mean and std, not 0..255


def test_no_images_is_refused_in_the_users_terms(tmp_path):
    with pytest.raises(UserError, match="--calibrate names no images: int8 ranges are calibrated on real images"):
        image_files([])
    with pytest.raises(UserError, match="the folder holds no images"):
        image_files([tmp_path])
    with pytest.raises(UserError, match="no such file or folder"):
        image_files([tmp_path / "missing"])
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(UserError, match=r"notes\.txt: not an image"):
        ImageSet.load([tmp_path / "notes.txt"], Preprocess(37, 32))


def test_weights_are_int8_per_output_channel_by_default_or_per_tensor(resnet18, images, per_channel):
    assert weight_scale(per_channel.model, "layer1.0.conv1") == (64,)
    assert weight_scale(per_channel.model, "fc") == (10,)
    per_tensor = quantize(resnet18, calibration(resnet18, images), Int8Options(per_channel=False))
    assert weight_scale(per_tensor.model, "layer1.0.conv1") == ()
    assert "per-tensor weights" in per_tensor.describe() and "per-channel weights" in per_channel.describe()


def test_every_weighted_layer_is_int8_and_the_parameters_count_as_before(resnet18, per_channel):
    assert len(per_channel.int8_layers) == 21  # 20 convolutions and the classifier
    assert count_parameters(per_channel.model).parameters == count_parameters(resnet18).parameters
    assert per_channel.model.metadata_props["graphgen.architecture"] == "resnet18"  # it still describes itself


def _kernels(model: ir.Model, folder: Path) -> tuple[dict[str, list[onnx.NodeProto]], set[str]]:
    """The kernels onnxruntime runs for each graphgen node, and the names of its float initializers."""
    import onnxruntime as ort

    from graphgen.profiling.layermap import map_layers

    path = save_model(model, folder / "int8.onnx")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.optimized_model_filepath = str(folder / "optimised.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(options.optimized_model_filepath).graph
    origins = map_layers(onnx.load(path).graph, graph)
    kernels: dict[str, list[onnx.NodeProto]] = {}
    for kernel in graph.node:
        for node in origins.origin(kernel.name).nodes:
            kernels.setdefault(node, []).append(kernel)
    floats = {init.name for init in graph.initializer if init.data_type == onnx.TensorProto.FLOAT}
    return kernels, floats


def test_a_kept_layer_is_float_in_the_graph_onnxruntime_runs(resnet18, images, per_channel, tmp_path):
    # layer1.0.conv2 is an integer kernel in plain int8 ...
    plain, _ = _kernels(per_channel.model, tmp_path)
    assert [kernel.op_type for kernel in plain["layer1.0.conv2"]] == ["QLinearConv"]
    # ... and a float Conv reading float weights when kept: onnxruntime's WeightBiasQuantization would
    # quantize it per tensor at load time if it still read a dequantized input
    kept = quantize(resnet18, calibration(resnet18, images), Int8Options(keep_float=("layer1.0.conv2",)))
    assert kept.kept == ("layer1.0.conv2",) and "layer1.0.conv2" not in kept.int8_layers
    kernels, floats = _kernels(kept.model, tmp_path)
    (conv,) = [kernel for kernel in kernels["layer1.0.conv2"] if "Conv" in kernel.op_type]
    assert conv.op_type in ("Conv", "FusedConv")
    assert conv.input[1] in floats  # a float initializer, not an int8 one dequantized
    assert kept.kernels is not None and "layer1.0.conv2" in kept.kernels.float_nodes


def test_an_unknown_layer_to_keep_is_refused_with_the_names_it_may_mean(resnet18, images):
    with pytest.raises(
        UserError, match=r"--keep-float layer1\.0\.conv: .* did you mean layer1\.0\.conv2, layer1\.0\.conv1"
    ):
        quantize(resnet18, calibration(resnet18, images), Int8Options(keep_float=("layer1.0.conv",)))


def test_signed_activations_leave_convolutions_on_shared_inputs_float_uint8_fuses_all(resnet18, images, tmp_path):
    """onnxruntime converts a signed Q/DQ pair to uint8 only where the Q has one consumer (QDQS8ToU8)."""
    signed = quantize(resnet18, calibration(resnet18, images), Int8Options())
    unsigned = quantize(resnet18, calibration(resnet18, images), Int8Options(activations="uint8"))
    assert signed.kernels is not None and unsigned.kernels is not None
    assert "layer1.0.conv1" in signed.kernels.float_nodes  # reads the block input the residual sum reads too
    assert unsigned.kernels.float_nodes == () and unsigned.kernels.integer == 21


def test_held_out_images_are_never_calibrated_on():
    files = [Path(f"{i}.png") for i in range(9)]
    calibrate, held = hold_out(files)
    assert held == [Path("3.png"), Path("7.png")] and not set(calibrate) & set(held)
    assert sorted(calibrate + held) == sorted(files)
    with pytest.raises(UserError, match="at least 2 --calibrate images"):
        hold_out(files[:1])


def test_entropy_calibration_chooses_other_ranges_than_min_max(resnet18, images):
    """quantize_static alone would calibrate entropy with 128 bins into 128: one candidate, the min/max range."""

    def scales(method: str) -> dict[str, float]:
        model = quantize(resnet18, calibration(resnet18, images), Int8Options(method=method)).model
        return {
            name: float(value.const_value.numpy().ravel()[0])
            for name, value in model.graph.initializers.items()
            if name.endswith("_scale") and "weight" not in name and value.const_value is not None
        }

    minmax, entropy = scales("minmax"), scales("entropy")
    assert minmax.keys() == entropy.keys()
    narrower = [name for name in minmax if entropy[name] < 0.95 * minmax[name]]
    assert len(narrower) >= len(minmax) // 4  # clipped outliers: finer steps for most activations
