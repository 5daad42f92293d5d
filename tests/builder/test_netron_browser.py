"""graphgen's graphs in Netron, in a real browser: Debian's chromium driven by Playwright.

For ResNet-50, Inception-v3, a RepVGG folded by ``graphgen convert``'s pass and ResNet-152 with
``--functions``, the page must render the graph with the shapes on its edges, show the layer
names (Netron's "Show Names", Ctrl+U) and the descriptions graphgen writes, and open a block's
function on click. Each view is kept as a screenshot under ``artifacts/netron/`` (git-ignored).

The browser may reach only the Netron server on 127.0.0.1: Netron's own telemetry and update
requests are aborted inside the browser, so nothing leaves the machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from graphgen.build import BuildOptions, save
from graphgen.cli.view import serving
from tests.cli.test_plots import assert_picture
from tests.support.models import built

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "netron"
VIEWPORT = {"width": 1400, "height": 1000}
LOAD_MS = 120_000  # parsing and laying out a few hundred nodes on a busy 2-core machine

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (make test installs it: apt-get install chromium)"
)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is in the test extra: pip install -e '.[test]'"
)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@contextmanager
def netron_page(browser, path: Path) -> Iterator:
    """A page showing ``path`` in Netron, its consent dialog accepted and the graph drawn."""
    with serving(path, port=0) as url:
        page = browser.new_page(viewport=VIEWPORT)
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(url) else route.abort())
        try:
            page.goto(url)
            page.get_by_text("Accept", exact=True).click(timeout=LOAD_MS)
            page.wait_for_selector("#nodes > g", timeout=LOAD_MS)
            page.wait_for_selector("body.default", timeout=LOAD_MS)  # past the logo: the graph is on screen
            yield page
        finally:
            page.close()


def wait_for_nodes(page, condition, timeout_ms: int = LOAD_MS) -> int:
    """Poll the number of drawn nodes until ``condition`` holds (Netron forbids page scripts' eval)."""
    for _ in range(timeout_ms // 250):
        count = page.locator("#nodes > g").count()
        if condition(count):
            return count
        page.wait_for_timeout(250)
    raise AssertionError(f"Netron shows {count} nodes")


def graph_text(page) -> str:
    return page.locator("#canvas").text_content()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=path)
    assert_picture(path, (VIEWPORT["width"], VIEWPORT["height"]), min_coloured=0)  # a drawn graph, not blank
    return path


def graph_node(model, name: str):
    return next(node for node in model.graph if node.name == name)


def show_names(page) -> None:
    page.keyboard.press("Control+U")
    page.wait_for_timeout(500)


def sidebar_text(page) -> str:
    page.wait_for_selector("#sidebar-content", state="visible")
    return page.locator("#sidebar").inner_text()


def click_node(page, label: str) -> None:
    """Click the node whose header reads ``label`` (a name, once names are shown)."""
    page.locator("#nodes").get_by_text(label, exact=True).first.click()  # the header, not a weight row


# architecture: nodes Netron draws (graph nodes + input + outputs), shapes on edges, layer names, and
# a node to click (Netron shortens names over 21 characters in the node's header)
FLAT = {
    "resnet50": (
        124,
        ["batch×3×224×224", "batch×256×56×56", "batch×2048×7×7", "batch×1000"],
        ["layer1.0.conv1", "layer1.0.downsample.0", "layer4.2.add", "fc"],
        "layer1.0.downsample.0",
    ),
    "inception_v3": (
        217,
        ["batch×3×299×299", "batch×288×35×35", "batch×2048×8×8"],
        ["Conv2d_1a_3x3.conv", "Mixed_5b.branch5x5_2.conv", "Mixed_7c.cat", "fc"],
        "Conv2d_2b_3x3.conv",
    ),
}


@pytest.mark.parametrize("name", list(FLAT))
def test_flat_graph_renders_with_shapes_names_and_descriptions(browser, name, tmp_path):
    drawn, shapes, names, clicked = FLAT[name]
    model = built(name)
    path = save(model, tmp_path / f"{name}.onnx")
    with netron_page(browser, path) as page:
        assert page.locator("#nodes > g").count() == drawn
        text = graph_text(page)
        assert all(shape in text for shape in shapes), [s for s in shapes if s not in text]
        assert "Conv" in text
        screenshot(page, name)
        show_names(page)
        text = graph_text(page)
        assert all(layer in text for layer in names), [n for n in names if n not in text]
        screenshot(page, f"{name}-names")
        click_node(page, clicked)
        sidebar = sidebar_text(page)
        assert graph_node(model, clicked).doc_string in sidebar  # "Conv2d … (BatchNorm2d … folded in), in …"
        screenshot(page, f"{name}-node")
        page.locator("#sidebar-model-button").click()
        sidebar = sidebar_text(page)
        # the model's description, then its metadata (Netron shows the keys as labels, the values as text)
        assert model.doc_string[:40] in sidebar
        for key in ("graphgen.reference", "graphgen.mean", "graphgen.input"):
            assert model.metadata_props[key] in sidebar
        screenshot(page, f"{name}-model")


def test_folded_repvgg_renders_as_one_conv_per_block(browser, tmp_path):
    fold_repvgg = pytest.importorskip("graphgen.passes.fold_repvgg").fold_repvgg
    model = fold_repvgg(built("repvgg_a0")).model
    path = save(model, tmp_path / "repvgg_a0_folded.onnx")
    with netron_page(browser, path) as page:
        assert page.locator("#nodes > g").count() == len(model.graph) + 2
        text = graph_text(page)
        assert "batch×48×112×112" in text and "batch×1280×7×7" in text
        assert "BatchNormalization" not in text and "Add" not in text  # branches gone
        screenshot(page, "repvgg_a0_folded")
        show_names(page)
        text = graph_text(page)
        assert "stem.reparam_conv" in text and "stages.2.13.reparam_conv" in text
        screenshot(page, "repvgg_a0_folded-names")


def test_functions_read_as_a_chain_of_blocks_that_open_on_click(browser, tmp_path):
    path = save(built("resnet152", BuildOptions(functions=True)), tmp_path / "resnet152_functions.onnx")
    with netron_page(browser, path) as page:
        assert page.locator("#nodes > g").count() == 56 + 2  # stem, 50 blocks, head; input and output
        page.keyboard.press("Control+I")  # hide the weights: each block a small box
        page.wait_for_timeout(500)
        text = graph_text(page)
        assert text.count("Bottleneck") == 50 and "batch×1024×14×14" in text
        screenshot(page, "resnet152_functions")
        show_names(page)
        assert all(block in graph_text(page) for block in ("layer1.0", "layer3.35", "layer4.2"))
        click_node(page, "layer3.1")
        sidebar = sidebar_text(page)
        assert "Bottleneck layer3.1: Conv×3, Relu×3, Add" in sidebar
        # Netron's ƒ in the node's header opens the function: the block's own graph, shapes inside
        page.locator("#nodes > g").filter(has=page.get_by_text("layer3.1", exact=True)).first.get_by_text("ƒ").click()
        wait_for_nodes(page, lambda count: count < 20)  # the body: 7 nodes, its inputs and output
        text = graph_text(page)
        assert all(node in text for node in ("conv1", "conv2", "conv3", "add", "relu_2"))
        show_names(page)  # back to op types, and shapes on the edges inside the function
        text = graph_text(page)
        assert "Conv" in text and "batch×256×14×14" in text and "batch×1024×14×14" in text
        screenshot(page, "resnet152_functions-layer3.1")
