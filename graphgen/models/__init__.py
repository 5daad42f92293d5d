"""Architecture families; importing this package registers every one of them."""

from graphgen.models import alexnet, efficientnet, efficientnet_lite, mobilenet, resnet, vgg  # noqa: F401
