"""int8 conversion on onnxruntime's quantizer, judged against the float model on held-out images.

:mod:`~graphgen.int8.images` turns image files into the model's inputs by its own metadata;
:mod:`~graphgen.int8.quantize` calibrates and quantizes (QDQ, signed int8, per-channel weights);
:mod:`~graphgen.int8.report` measures agreement and every layer's SQNR; :mod:`~graphgen.int8.autokeep`
keeps the most sensitive layers float and says what that bought and cost.
"""
