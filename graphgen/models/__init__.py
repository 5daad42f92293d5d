"""Architecture families: each module's ``ARCHITECTURES`` lists its rows (see graphgen.architecture)."""

import importlib

# In this order in `graphgen list`. Importing a family imports the network code (onnxscript).
NAMES = (
    "alexnet",
    "efficientnet",
    "efficientnet_lite",
    "googlenet",
    "inception",
    "inception_resnet",
    "inception_v4",
    "mnasnet",
    "mobilenet",
    "parnet",
    "repvgg",
    "resnet",
    "resnext",
    "senet",
    "squeezenet",
    "vgg",
    "wide_resnet",
)
FAMILIES = tuple(importlib.import_module(f"{__name__}.{name}") for name in NAMES)
