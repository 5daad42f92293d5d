"""The front-ends: wire formats to the core's calls and back, and nothing else.

gRPC (graphgen.v1.Classifier, KServe v2), HTTP/REST (KServe v2), Prometheus metrics, who may call
(TLS, bearer token), the shutdown gate both protocols pass, and the status code of each failure.
"""
