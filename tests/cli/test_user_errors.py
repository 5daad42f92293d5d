"""The command line a new user meets: mistakes said in their terms, no folder made unasked, --version everywhere."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from graphgen import __version__
from graphgen.cli import main
from graphgen.preprocess import ImageError, decode_image

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def files(tmp_path):
    (tmp_path / "notes.txt").write_text("these are my notes, not weights\n")
    (tmp_path / "notes.pth").write_text("these are my notes, not weights\n")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    np.savez(tmp_path / "objects.npz", a=np.array([object()], dtype=object))
    (tmp_path / "folder").mkdir()
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["build", "resnet18", "-o", "{t}/m.onnx", "--weights", "{t}/notes.txt"], "not a checkpoint (it looks like a text file)"),
        (["build", "resnet18", "-o", "{t}/m.onnx", "--weights", "{t}/notes.pth"], "graphgen reads torch .pth/.pt state dicts"),
        (["build", "resnet18", "-o", "{t}/m.onnx", "--weights", "{t}/broken.npz"], "not an .npz archive"),
        (["build", "resnet18", "-o", "{t}/m.onnx", "--weights", "{t}/objects.npz"], "holds Python objects, not numeric arrays"),
        (["build", "resnet18", "-o", "{t}/m.onnx", "--weights", "{t}/folder"], "folder is a folder, not a checkpoint file"),
        (["stats", "{t}/folder"], "folder is a folder, not an .onnx model file"),
        (["stats", "{t}/notes.txt"], "not a readable ONNX model (it looks like a text file)"),
        (["compare", "{t}/notes.txt.onnx"], "no such file"),
    ],
)  # fmt: skip
def test_file_mistakes_are_said_in_the_users_terms(capsys, files, argv, message):
    code = main([a.replace("{t}", str(files)) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert "Traceback" not in err and "pickle" not in err and "allow_pickle" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["build", "resnet18", "-o", "{t}/missing/m.onnx"], "missing does not exist; create it first"),
        (["build", "resnet18", "-o", "{t}/folder"], "is a folder; give the path of a file to write"),
        (["stats", "alexnet", "--plot", "{t}/missing/a.png"], "missing does not exist; create it first"),
        (["compare", "alexnet", "--plot", "{t}/missing/a.png"], "missing does not exist; create it first"),
        (["convert", "{t}/in.onnx", "-o", "{t}/missing/out.onnx", "--fp16"], "missing does not exist; create it first"),
    ],
)
def test_missing_output_folders_are_refused_not_created(capsys, files, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main([a.replace("{t}", str(files)) for a in argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (files / "missing").exists()


def test_a_folder_without_write_permission_is_refused(capsys, files, monkeypatch):
    monkeypatch.setattr("os.access", lambda path, mode: False)  # as root every folder is writable
    with pytest.raises(SystemExit):
        main(["build", "resnet18", "-o", str(files / "m.onnx")])
    assert f"no permission to write in {files}" in capsys.readouterr().err


def test_a_repository_must_exist(capsys, files):
    assert main(["build", "resnet18", "--repository", str(files / "nowhere")]) == 2
    assert "create it first" in capsys.readouterr().err and not (files / "nowhere").exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, this is a text file and not a picture", "not an image (they look like text)"),
        (b"\x00\x01\x02\x03" * 16, "not an image: graphgen reads JPEG, PNG"),
    ],
)
def test_image_errors_name_no_internals(data, message):
    with pytest.raises(ImageError) as error:
        decode_image(data)
    assert message in str(error.value)
    assert "BytesIO" not in str(error.value) and "0x" not in str(error.value)


def test_version_on_every_command(capsys):
    from graphgen_client.cli import make_parser as client_parser
    from graphgen_server.cli import make_parser as server_parser

    for parse, program in (
        (main, "graphgen"),
        (server_parser().parse_args, "graphgen-server"),
        (client_parser().parse_args, "graphgen-client"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            parse(["--version"])
        assert exit_info.value.code == 0
        assert capsys.readouterr().out.strip() == f"{program} {__version__}"


def test_the_distribution_has_a_name_of_its_own():
    """`graphgen` on PyPI is an unrelated project: graphgen installs as graphgen-onnx, its commands keep their names."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "graphgen-onnx"
    assert set(project["scripts"]) == {"graphgen", "graphgen-server", "graphgen-client"}
    readme = (ROOT / "README.md").read_text()
    assert "pip install graphgen-onnx" in readme and "pip install graphgen " not in readme


def test_the_client_says_a_folder_is_a_folder(capsys, files):
    from graphgen_client.cli import main as client_main

    code = client_main(["--address", "127.0.0.1:1", "classify", str(files / "folder"), "--model", "m"])
    assert code == 2 and "folder is a folder, not an image file" in capsys.readouterr().err
