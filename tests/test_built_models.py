"""The session's cache of built models (tests/support/models.py): one build, clones of their own."""

from __future__ import annotations

import onnx_ir as ir
import pytest

from graphgen.build import BuildOptions, build
from tests.support.models import BuiltModels

SMALL = BuildOptions(batch=1, resolution=32, num_classes=10)


def test_each_build_is_made_once_and_handed_out_as_a_clone_equal_to_a_fresh_build():
    cache = BuiltModels()
    first, second = (
        cache.get("resnet18", SMALL),
        cache.get("resnet18", BuildOptions(batch=1, resolution=32, num_classes=10)),
    )
    assert (cache.builds, cache.hits) == (1, 1)
    assert first.graph is not second.graph  # a test may edit its graph without touching another's
    first.graph.remove(next(iter(first.graph)), safe=False)
    assert ir.to_proto(second).SerializeToString() == ir.to_proto(build("resnet18", SMALL)).SerializeToString()


def test_other_options_are_other_builds():
    cache = BuiltModels()
    cache.get("resnet18", SMALL)
    cache.get("resnet18", BuildOptions(batch=1, resolution=32, num_classes=10, keep_bn=True))
    cache.get("resnet18", BuildOptions(batch=1, resolution=32, num_classes=10, seed=1))
    assert cache.builds == 3 and cache.hits == 0


def test_the_models_used_last_are_kept_within_the_bound():
    cache = BuiltModels(max_bytes=1)  # less than any model: only the last one stays
    cache.get("resnet18", SMALL)
    cache.get("mobilenet_v2", SMALL)
    cache.get("mobilenet_v2", SMALL)
    cache.get("resnet18", SMALL)
    assert (cache.builds, cache.hits) == (3, 1)


def test_checkpoint_builds_are_not_cached(tmp_path):
    with pytest.raises(ValueError, match="random-weight builds only"):
        BuiltModels().get("resnet18", BuildOptions(weights=tmp_path / "w.pth"))
