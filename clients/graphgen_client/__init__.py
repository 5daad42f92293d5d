"""A client of graphgen's gRPC server: classify images, list models, check health."""

from graphgen_client.client import Client, ClientError

__all__ = ["Client", "ClientError"]
