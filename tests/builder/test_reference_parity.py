"""graphgen equals its torch reference: same weights in, same logits out.

For every architecture whose reference is a torchvision or timm model: the reference with
random weights (and random BatchNorm statistics, so folding is exercised) in eval mode → its
state_dict saved as .pth and .safetensors → graphgen build --weights → onnxruntime logits vs
torch logits, max abs difference on unit-std logits ≤ 1e-4.
"""

from __future__ import annotations

import numpy as np
import pytest

from graphgen import registry
from graphgen.build import BuildOptions, build, save
from tests.conftest import TORCH_THREADS, unit_std_error

torch = pytest.importorskip("torch")
TOLERANCE = 1e-4
WITH_REFERENCE = [arch.name for arch in registry.architectures() if arch.torch_reference]


def reference_model(arch: registry.Architecture):
    library, name = arch.torch_reference
    if library == "torchvision":
        import torchvision

        model = getattr(torchvision.models, name)(weights=None, **arch.reference_kwargs)
    else:
        import timm

        model = timm.create_model(name, pretrained=False, **arch.reference_kwargs)
    return randomise_batchnorm(model.eval())


def randomise_batchnorm(model, seed: int = 0):
    """Non-trivial BatchNorm parameters and statistics, so a wrong fold cannot hide."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
    return model


def save_state_dict(model, path):
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


@pytest.mark.parametrize("name", WITH_REFERENCE)
def test_logits_equal_the_reference(name, tmp_path, ort_cpu):
    torch.set_num_threads(TORCH_THREADS)
    arch = registry.get(name)
    model = reference_model(arch)
    x = np.random.default_rng(1).standard_normal((2, 3, arch.resolution, arch.resolution), dtype=np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x))
    expected = (expected[0] if isinstance(expected, tuple) else expected).numpy()

    for suffix in (".pth", ".safetensors"):
        checkpoint = save_state_dict(model, tmp_path / f"weights{suffix}")
        path = save(build(name, BuildOptions(weights=checkpoint)), tmp_path / f"{name}.onnx")
        (actual, *_) = ort_cpu(path).run(None, {"input": x})
        assert unit_std_error(actual, expected) <= TOLERANCE, suffix
