"""Generated gRPC stubs of graphgen's services (``python protos/generate.py`` regenerates them).

``classifier_pb2``: ``graphgen.v1.Classifier``. ``kserve_v2_pb2``: the KServe v2 protocol as
Triton's ``inference.GRPCInferenceService`` (do not import it next to tritonclient's stubs).
"""
