"""A client of graphgen's gRPC server: classify images, list models, check health."""
