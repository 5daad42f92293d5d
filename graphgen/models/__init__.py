"""Architecture families: each module's ``ARCHITECTURES`` lists its rows (see graphgen.architecture)."""

from graphgen.models import (
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

FAMILIES = (  # in this order in `graphgen list`
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
