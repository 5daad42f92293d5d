"""``graphgen convert --int8``: calibrated on images, judged on held-out ones, refusals with exit status 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from graphgen.build import BuildOptions, build, save
from graphgen.cli import main
from tests.support.server import encode


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save(
        build("resnet18", BuildOptions(resolution=32, num_classes=10)), tmp_path_factory.mktemp("m") / "r18.onnx"
    )


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(1)
    for index in range(5):
        (folder / f"photo{index}.png").write_bytes(encode(rng.integers(0, 256, (36, 44, 3), dtype=np.uint8)))
    return folder


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["convert", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_int8_with_verify_reports_agreement_and_every_layer(capsys, model, photos, tmp_path, ort_cpu):
    target = tmp_path / "int8.onnx"
    code, out, err = run(capsys, str(model), "-o", str(target), "--int8", "--calibrate", str(photos), "--verify")
    assert code == 0, err
    assert "int8: 21 weighted layer(s) in int8 (QDQ, signed int8 activations, signed int8 per-channel weights, " in out
    assert "minmax calibration on 4 image(s)); 1 held out for judging" in out
    assert "verify: held out (never calibrated on): photo3.png" in out
    assert "verify: layer " in out and "verify: layer1.0.conv1 " in out and "verify: fc " in out
    assert "verify: int8 against float on 1 held-out image(s): top-1 agreement " in out
    assert "verify: lowest SQNR (dB" in out and "verify: most sensitive (dB" in out
    (logits,) = ort_cpu(target).run(None, {"input": np.zeros((1, 3, 32, 32), np.float32)})
    assert logits.shape == (1, 10)


def test_without_calibration_images_int8_is_refused(capsys, model, tmp_path):
    code, _, err = run(capsys, str(model), "-o", str(tmp_path / "x.onnx"), "--int8")
    assert code == 2 and "--int8 needs --calibrate DIR|FILE...: images preprocessed as the model says" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, str(model), "-o", str(tmp_path / "x.onnx"), "--int8", "--calibrate", str(empty))
    assert code == 2 and "the folder holds no images" in err
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--calibrate", "x.png"], "--calibrate only applies with --int8"),
        (["--auto-keep", "2"], "--auto-keep only applies with --int8"),
        (["--int8", "--fp16", "--calibrate", "x.png"], "--int8 and --fp16 are two precisions"),
        (["--int8", "--calibrate", "x.png", "--tolerance", "0.1"], "--int8 --verify reports agreement instead"),
    ],
)
def test_flags_that_contradict_are_refused(capsys, model, tmp_path, flags, message):
    code, _, err = run(capsys, str(model), "-o", str(tmp_path / "x.onnx"), *flags)
    assert code == 2 and message in err


def test_verify_images_may_not_be_calibration_images(capsys, model, photos, tmp_path):
    one = str(photos / "photo0.png")
    argv = [str(model), "-o", str(tmp_path / "x.onnx"), "--int8", "--calibrate", str(photos), "--verify-images", one]
    code, _, err = run(capsys, *argv, "--verify")
    assert code == 2 and "photo0.png also calibrates" in err


def test_an_unknown_layer_to_keep_float_is_refused_by_name(capsys, model, photos, tmp_path):
    argv = [str(model), "-o", str(tmp_path / "x.onnx"), "--int8", "--calibrate", str(photos)]
    code, _, err = run(capsys, *argv, "--keep-float", "layer9.conv1")
    assert code == 2 and "--keep-float layer9.conv1: the model has no layer of that name" in err
