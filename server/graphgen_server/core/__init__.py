"""The core: a request's life from a checked call to its answer, below every front-end.

Model versions (loading, running, retiring), the runtime's calls (``classify``, ``infer``),
dynamic batching, instances, the per-layer profiler, statistics, providers and model control. It
raises :mod:`~graphgen_server.core.errors`' exceptions and never imports a front-end: the
front-ends choose the status codes.
"""
