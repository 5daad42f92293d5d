"""Per-layer profiles people can trust: repeated runs with their spread, joined with the layer table.

The core both ``graphgen profile`` (in-process) and ``graphgen-server`` (per request) use:

* :mod:`.layermap` names onnxruntime's optimised kernels after graphgen's layers;
* :mod:`.trace` reads onnxruntime's trace into runs of kernel events;
* :mod:`.summary` turns repeated runs into rows of median and spread (p10–p90);
* :mod:`.session` builds profiling sessions, warms them up and measures ``runs`` runs;
* :mod:`.join` joins the rows with ``graphgen stats``' static table (parameters, MACs, bytes);
* :mod:`.calibrate` measures this machine's peak compute and memory bandwidth (the roofline's roof);
* :mod:`.cuda` times on the GPU itself: CUDA events for whole runs, CUPTI for each node;
* :mod:`.inprocess` profiles a model file here, for ``graphgen profile`` and ``graphgen bench``;
* :mod:`.plots` draws per-layer times, the roofline and the benchmark chart.
"""
