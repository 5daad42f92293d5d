"""Checkpoint import: every format reads back exactly; hostile or broken files are refused, never executed."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from graphgen.build import BuildOptions, WeightsMismatchError, build
from graphgen.checkpoint import CheckpointError, load_checkpoint

torch = pytest.importorskip("torch")


def sample_state():
    generator = torch.Generator().manual_seed(0)
    return {
        "conv.weight": torch.randn(4, 3, 3, 3, generator=generator),
        "bn.running_var": torch.rand(4, generator=generator),
        "bn.num_batches_tracked": torch.tensor(7),
        "half": torch.randn(5, generator=generator).half(),
        "bf16": torch.randn(6, generator=generator).bfloat16(),
        "transposed": torch.randn(3, 5, generator=generator).t(),  # non-contiguous strides
        "offset_view": torch.arange(10.0)[4:7],  # storage offset
    }


def assert_same(loaded, state):
    assert loaded.keys() == state.keys()
    for key, tensor in state.items():
        expected = tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()
        assert np.array_equal(loaded[key], expected), key


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_pth_reads_exactly_without_torch_at_load(tmp_path, zip_format):
    state = sample_state()
    path = tmp_path / "w.pth"
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    assert_same(load_checkpoint(path), state)


def test_safetensors_and_npz(tmp_path):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in sample_state().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    assert_same(load_checkpoint(tmp_path / "w.safetensors"), state)

    arrays = {k: v.float().numpy() for k, v in state.items()}
    np.savez(tmp_path / "w.npz", **arrays)
    loaded = load_checkpoint(tmp_path / "w.npz")
    assert all(np.array_equal(loaded[k], arrays[k]) for k in arrays)


def test_wrapped_state_dict_is_unwrapped(tmp_path):
    torch.save({"state_dict": {"w": torch.ones(2)}}, tmp_path / "w.pth")
    assert np.array_equal(load_checkpoint(tmp_path / "w.pth")["w"], np.ones(2, np.float32))


class _Reduce:
    """Pickles as a call of ``target(*args)`` — what a hostile checkpoint contains."""

    def __init__(self, target, *args):
        self.target, self.args = target, args

    def __reduce__(self):
        return self.target, self.args


def _torch_zip(payload: bytes, extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/version", "3\n")
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _legacy(payload: bytes) -> bytes:
    header = pickle.dumps(0x1950A86A20F9469CFC6C) + pickle.dumps(1001) + pickle.dumps({"little_endian": True})
    return header + payload + pickle.dumps([])


def _hostile_payloads(marker):
    command = f"touch {marker}"
    return {
        "os.system": pickle.dumps(_Reduce(os.system, command)),
        "builtins.eval": pickle.dumps(_Reduce(eval, f"__import__('os').system({command!r})")),
        "builtins.exec": pickle.dumps(_Reduce(exec, f"open({str(marker)!r}, 'w')")),
        "nested reduce": pickle.dumps({"w": [(_Reduce(os.system, command),)]}),
        "subprocess": pickle.dumps(_Reduce(__import__("subprocess").call, ["touch", str(marker)])),
        "getattr chain": pickle.dumps(_Reduce(getattr, _Reduce(__import__, "os"), "system")),
    }


@pytest.mark.parametrize("container", ["zip", "legacy"])
@pytest.mark.parametrize("kind", list(_hostile_payloads("x")))
def test_hostile_pickle_is_refused_and_never_runs(tmp_path, container, kind):
    marker = tmp_path / "pwned"
    payload = _hostile_payloads(marker)[kind]
    path = tmp_path / "evil.pth"
    path.write_bytes(_torch_zip(payload) if container == "zip" else _legacy(payload))
    with pytest.raises(CheckpointError, match="refused to load global"):
        load_checkpoint(path)
    assert not marker.exists()


def test_storage_key_cannot_reach_outside_the_archive(tmp_path):
    # A persistent id naming '../../etc/passwd' must not read any file: only archive members exist.
    state = {"w": torch.ones(3)}
    good = tmp_path / "good.pth"
    torch.save(state, good)
    with zipfile.ZipFile(good) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    pkl_name = next(name for name in members if name.endswith("data.pkl"))
    pkl = members[pkl_name].replace(b"X\x01\x00\x00\x000", b"X\x10\x00\x00\x00../../etc/passwd")
    assert pkl != members[pkl_name], "storage key not found in the pickle"
    evil = tmp_path / "evil.pth"
    with zipfile.ZipFile(evil, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, pkl if name == pkl_name else data)
    with pytest.raises(CheckpointError, match="missing from the archive"):
        load_checkpoint(evil)


def _members(state) -> dict[str, bytes]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with zipfile.ZipFile(buffer) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _rezip(path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


@pytest.mark.parametrize("member", ["../../evil/data.pkl", "/etc/cron.d/evil", "archive/../../x", "..\\..\\x"])
def test_zip_members_naming_paths_outside_the_archive_are_refused(tmp_path, member):
    members = _members({"w": torch.ones(3)})
    members[member] = b"payload"
    _rezip(tmp_path / "evil.pth", members)
    with pytest.raises(CheckpointError, match="points outside the archive"):
        load_checkpoint(tmp_path / "evil.pth")
    assert not (tmp_path.parent / "evil").exists() and not Path("/etc/cron.d/evil").exists()


def test_a_storage_that_unpacks_to_more_than_its_tensor_is_refused_before_unpacking(tmp_path):
    members = _members({"w": torch.ones(3)})
    storage = next(name for name in members if "/data/" in name)
    members[storage] = bytes(64 << 20)  # 64 MiB of zeros deflate to ~64 KiB: a zip bomb in small
    _rezip(tmp_path / "bomb.pth", members)
    assert (tmp_path / "bomb.pth").stat().st_size < 1 << 20
    with pytest.raises(CheckpointError, match=r"unpacks to 67108864 bytes, needs 12"):
        load_checkpoint(tmp_path / "bomb.pth")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("truncated.pth", "truncate", "damaged or truncated torch checkpoint"),
        ("random.pth", b"\x13" + os.urandom(255), "not a checkpoint; graphgen reads torch .pth/.pt"),
        ("empty.pth", b"", "an empty file, not a checkpoint"),
        ("bad.safetensors", b"\xff" * 16, "safetensors header"),
        ("bad_offsets.safetensors", "bad_offsets", "do not fit"),
        ("bad.npz", b"PK\x03\x04garbage", "npz"),
    ],
)
def test_broken_files_get_a_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    if content == "truncate":
        torch.save({"w": torch.ones(1000)}, path)
        path.write_bytes(path.read_bytes()[:600])
    elif content == "bad_offsets":
        header = b'{"w": {"dtype": "F32", "shape": [100], "data_offsets": [0, 400]}}'
        path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 8)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_missing_file():
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint("/nonexistent/w.pth")


def test_wrong_checkpoint_lists_missing_unexpected_and_mismatched(tmp_path):
    import torchvision

    state = torchvision.models.resnet18(weights=None).state_dict()
    state["extra.weight"] = torch.ones(1)
    state["fc.weight"] = torch.ones(10, 512)
    del state["layer1.0.conv1.weight"]
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(WeightsMismatchError) as error:
        build("resnet18", BuildOptions(weights=tmp_path / "w.pth"))
    text = str(error.value)
    assert "missing keys (1): layer1.0.conv1.weight" in text
    assert "unexpected keys (1): extra.weight" in text
    assert "fc.weight: checkpoint [10, 512], model [1000, 512]" in text


def test_new_head_loads_the_backbone_and_reinitialises_the_head(tmp_path):
    import torchvision

    model = torchvision.models.resnet18(weights=None)
    torch.save(model.state_dict(), tmp_path / "w.pth")
    built = build("resnet18", BuildOptions(weights=tmp_path / "w.pth", num_classes=10, keep_bn=True))
    weight = built.graph.initializers["layer4.1.conv2.weight"].const_value.numpy()
    assert np.array_equal(weight, model.state_dict()["layer4.1.conv2.weight"].numpy())
    assert built.graph.initializers["fc.weight"].const_value.shape == (10, 512)


@pytest.mark.parametrize(
    ("name", "aux_head"), [("googlenet", "aux1.fc2.weight"), ("inception_v3", "AuxLogits.fc.weight")]
)
def test_new_class_count_reinitialises_the_aux_heads_too(tmp_path, name, aux_head):
    import torchvision

    reference = getattr(torchvision.models, name)(weights=None, aux_logits=True, init_weights=False)
    torch.save(reference.state_dict(), tmp_path / "w.pth")
    built = build(name, BuildOptions(weights=tmp_path / "w.pth", num_classes=10, variant={"aux": True}))
    assert built.graph.initializers[aux_head].const_value.shape[0] == 10
    assert [output.shape[1] for output in built.graph.outputs] == [10] * len(built.graph.outputs)
