"""Architecture families; importing this package registers every one of them."""

from graphgen.models import (  # noqa: F401
    alexnet,
    efficientnet,
    efficientnet_lite,
    googlenet,
    inception,
    inception_resnet,
    inception_v4,
    mobilenet,
    parnet,
    repvgg,
    resnet,
    resnext,
    senet,
    squeezenet,
    vgg,
    wide_resnet,
)
