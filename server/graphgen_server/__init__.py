"""graphgen's gRPC inference server: classification, per-layer profiling, the KServe v2 protocol."""
