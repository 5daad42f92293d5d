"""Architecture families; importing this package registers every one of them."""

from graphgen.models import (  # noqa: F401
    alexnet,
    efficientnet,
    efficientnet_lite,
    mobilenet,
    resnet,
    resnext,
    senet,
    vgg,
    wide_resnet,
)
