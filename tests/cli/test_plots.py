"""Pictures: ``graphgen stats --plot``, ``graphgen compare --plot`` and the profile chart.

Each check opens the PNG: a valid image of exactly the requested size, with real content (many
colours, ink over a fair share of the canvas), not a blank or a one-colour error figure.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from graphgen.cli import main
from graphgen.cli.compare import measure
from graphgen.plots import PlotError, parse_size
from graphgen.profiling.plots import ProfileRow, plot_profile
from tests.support.models import built


def assert_picture(path, size: tuple[int, int], min_coloured: float = 0.002) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == size
        pixels = np.asarray(image.convert("RGB"))
    ink = (pixels.min(axis=2) < 200).mean()  # share of pixels that are not (near) white
    saturated = (pixels.max(axis=2).astype(int) - pixels.min(axis=2) > 60).mean()  # bars, markers: not axes
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert 0.01 < ink < 0.8, f"ink covers {ink:.1%} of the picture"
    assert saturated >= min_coloured, f"coloured marks cover only {saturated:.2%}"
    assert colours > 50, f"only {colours} colours"
    return pixels


def test_stats_plot_per_layer(tmp_path, capsys):
    path = tmp_path / "alexnet.png"
    assert main(["stats", "alexnet", "--plot", str(path), "--plot-size", "1200x900"]) == 0
    assert f"wrote {path}" in capsys.readouterr().out
    pixels = assert_picture(path, (1200, 900))
    # per layer, coloured by kind: conv blue and dense red both drawn
    colours = {tuple(c) for c in pixels.reshape(-1, 3)[::7].tolist()}
    assert (0x4E, 0x79, 0xA7) in colours and (0xE1, 0x57, 0x59) in colours


def test_stats_plot_groups_a_deep_network_per_block(tmp_path):
    from graphgen.plots import _bars, plot_layer_stats
    from graphgen.stats import layer_stats

    stats = layer_stats(built("resnet50"), 1)
    bars, grouping, by_kind = _bars(stats.rows, 64)
    labels = [bar.label for bar in bars]
    assert labels[:4] == ["input", "conv1", "maxpool", "layer1.0"] and labels[-1] == "fc" and not by_kind
    assert "layer3.5" in labels and grouping.startswith("per module (22 groups")
    assert sum(bar.params for bar in bars) == stats.params == 25_557_032  # nothing lost in grouping
    assert_picture(plot_layer_stats(stats, tmp_path / "r50.png"), (1600, 1000))


def test_compare_table_and_plot(tmp_path, capsys):
    path = tmp_path / "compare.png"
    names = ["vgg16", "resnet50", "mobilenet_v2", "efficientnet_b[01]"]
    assert main(["compare", *names, "--plot", str(path), "--plot-size", "1000x700"]) == 0
    out = capsys.readouterr().out
    assert "138,357,544" in out and "15.470" in out  # VGG-16: torchvision's parameters and GMACs
    assert "efficientnet_b1" in out and "240" in out  # a pattern, and B1's own resolution
    assert_picture(path, (1000, 700))


def test_measure_matches_the_registry_figures():
    point = measure("resnet18")
    assert (point.params, point.resolution) == (11_689_512, 224)
    assert point.macs / 1e9 == pytest.approx(1.814, rel=0.01)


def test_profile_plot_shows_the_slowest_layers_in_order(tmp_path):
    rows = [ProfileRow(f"layer{i}", ("Conv", "Relu"), float(10 + (i * 37) % 100), 0.01) for i in range(60)]
    path = plot_profile(rows, tmp_path / "profile.png", (900, 1100), title="tiny v1", limit=30)
    assert_picture(path, (900, 1100))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare", "nothing_like_this*"], "no architecture matches"),
        (["compare", "resnt50"], "did you mean resnet50"),
    ],
)
def test_compare_errors(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [("--plot", "out.jpg", "give a path ending in .png"), ("--plot-size", "20x20", "300..8000 pixels")],
)
def test_bad_plot_options_are_usage_errors(option, value, message, capsys):
    argv = ["stats", "alexnet", option, value] + (["--plot", "x.png"] if option == "--plot-size" else [])
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_without_matplotlib_the_error_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "matplotlib" else object())
    with pytest.raises(SystemExit):
        main(["stats", "alexnet", "--plot", str(tmp_path / "a.png")])
    assert "pip install 'graphgen-onnx[plot]'" in capsys.readouterr().err
    with pytest.raises(PlotError, match=r"graphgen-onnx\[plot\]"):
        plot_profile([ProfileRow("a", ("Conv",), 1.0, 1.0)], tmp_path / "p.png")


def test_parse_size():
    assert parse_size("1600x1000") == (1600, 1000) and parse_size("640X480") == (640, 480)
    for bad in ("1600", "axb", "100x100", "9000x500"):
        with pytest.raises(PlotError):
            parse_size(bad)


def test_profile_plot_carries_the_notes_and_its_axis_reads_the_figures(tmp_path, monkeypatch):
    from pathlib import Path

    from graphgen.profiling import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: figures.append(figure) or Path(path))
    rows = [ProfileRow(f"layer{i}", ("Conv",), 100.0 + i, 0.1, 90.0, 110.0 + i) for i in range(5)]
    rows.append(ProfileRow("disturbed", ("Conv",), 120.0, 0.1, 100.0, 5000.0))  # one run stretched far out
    notes = [
        "10 of 10 runs were disturbed: their threads waited for a CPU 88% of the time they were ready to run "
        "(median run; worst 92%); each row's figure is its fastest run",
        "the rows add up to 13% of the fastest whole run, beyond the 5% margin: the runs were disturbed",
        "2 rows' fastest runs are within 5% of the slowest row's: disturbed, layer4",
        "the model's local functions (--functions blocks) were inlined for profiling",  # not for the picture
    ]
    plot_profile(rows, tmp_path / "p.png", (900, 700), title="resnet", notes=notes)
    (figure,) = figures
    heading = figure._suptitle.get_text()
    assert "10 of 10 runs were disturbed" in heading and "(median run; worst 92%)" in heading
    assert "each row's figure" not in heading and "rows add up to 13%" in heading and "within 5%" in heading
    assert "inlined" not in heading
    (axes,) = figure.axes
    right = axes.get_xlim()[1]
    assert right < 300  # made for the figures (≤ 120 µs), not for the 5000 µs whisker
    assert "spread cut at 138 µs" in axes.get_xlabel()
