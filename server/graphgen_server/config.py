"""The server's settings: where models are, which device runs them, and the limits on a call."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1 << 20
BATCHING_MODES = ("auto", "on", "off")
EVENT_LOOPS = ("auto", "uvloop", "asyncio")


@dataclass(frozen=True)
class CudaOptions:
    """onnxruntime CUDA execution provider options (used when the device is CUDA)."""

    # The GPU of instance groups that list none; None: every visible GPU, as Triton places them.
    device_id: int | None = None
    # cuDNN convolution algorithm search: EXHAUSTIVE (best kernels, slower first run), HEURISTIC, DEFAULT.
    cudnn_conv_algo_search: str = "EXHAUSTIVE"
    # Memory arena: cap in bytes (0: no cap) and how it grows (kNextPowerOfTwo or kSameAsRequested).
    gpu_mem_limit: int = 0
    arena_extend_strategy: str = "kNextPowerOfTwo"
    # Bind inputs and outputs explicitly: on the instance's own CUDA stream where cuda-bindings is
    # installed (one host→device and one device→host copy there, one synchronisation per run).
    io_binding: bool = True

    def provider_options(self) -> dict[str, str]:
        options = {
            "cudnn_conv_algo_search": self.cudnn_conv_algo_search,
            "arena_extend_strategy": self.arena_extend_strategy,
        }
        if self.device_id is not None:
            options["device_id"] = str(self.device_id)
        if self.gpu_mem_limit:
            options["gpu_mem_limit"] = str(self.gpu_mem_limit)
        return options


@dataclass(frozen=True)
class ServerConfig:
    repository: Path
    host: str = "127.0.0.1"  # loopback unless told otherwise (see tls_* and token for elsewhere)
    port: int = 8001
    # KServe v2 HTTP/REST and Prometheus /metrics on their own ports (None: off; 0: a free port).
    http_port: int | None = 8000
    metrics_port: int | None = 8002
    device: str = "auto"  # auto | cuda | cpu
    cuda: CudaOptions = field(default_factory=CudaOptions)
    # Dynamic batching: requests are merged into batches of at most max_batch images; a batch
    # waits at most batch_delay_us for more once its first request arrived (0: take what is queued).
    max_batch: int = 8
    batch_delay_us: int = 0
    # For models without a config.pbtxt: on, off, or auto (per device, batching.DEFAULT_BATCHING).
    batching_mode: str = "auto"
    # Per-call limits.
    max_images: int = 64  # images (batch rows) in one request
    max_image_pixels: int = 40_000_000  # width x height of one decoded image
    max_top_k: int = 1000
    # Images waiting or running per model version (in each front-end process: a client's connection
    # sees the whole bound, as with one process); beyond: RESOURCE_EXHAUSTED.
    max_queue: int = 256
    max_message_bytes: int = 64 * MIB  # a message or HTTP body, on the wire and inflated
    # HTTP/REST: a request's header must be complete within this long of its connection opening or
    # of the previous answer (an idle keep-alive connection closes then too), and its body within
    # http_body_timeout_s of its header (slow clients hold no connection for longer).
    http_header_timeout_s: float = 75.0
    http_body_timeout_s: float = 60.0
    # gzip/deflate-compressed gRPC requests: gRPC inflates such a message whole, before any size check
    # or handler (a 2 MB message can become gigabytes), so they are refused unless asked for.
    grpc_compression: bool = False
    # Threads running onnxruntime and image decoding (the event loop never does).
    workers: int = field(default_factory=lambda: max(2, os.cpu_count() or 2))
    # onnxruntime threads per run. 0: the CPUs the process may use (affinity, cgroup CPU quota)
    # divided among a model's instances, which run at once (core/cpus.py).
    intra_op_threads: int = 0
    # onnxruntime's idle threads may spin for more work after a run instead of sleeping: that
    # helps one session on dedicated cores, but a server has a session per model (and profiling
    # sessions) whose spinning pools take the cores from each other and from gRPC's threads
    # (measured here: ResNet-50 runs ~1.5x slower with spinning on 2 cores). Off by default.
    spin_threads: bool = False
    # Profiled requests: measured runs per profile unless the request says (after uncounted warm-up
    # runs), and the most a request may ask for (a profile holds a worker for all of them).
    profile_runs: int = 10
    max_profile_runs: int = 100
    # How much lower than serving a profile's CPU priority is (nice, 0..19; its onnxruntime threads
    # inherit it). 0: a fair share, so a profile on a busy server finishes and measures; 19: serving
    # first, profiles starve on a busy CPU (core/profiler.py).
    profile_nice: int = 0
    # True: a profile holds every instance of its model while it runs, so the model's calls wait
    # (queue time) and the profile's runs get the CPU they would take. False (default): profiles
    # share the CPU with serving and say how disturbed their runs were (bench/profile_under_load.py).
    profile_exclusive: bool = False
    grace_s: float = 10.0  # in-flight calls get this long to finish on SIGTERM/SIGINT
    # After SIGTERM/SIGINT, health says NOT_SERVING while calls are still answered for this long
    # (load balancers and Kubernetes endpoints drop the server meanwhile); then the drain starts.
    pre_stop_s: float = 0.0
    # gRPC connections older than this get a GOAWAY (gRPC adds ±10% jitter): clients reconnect, and
    # through a Kubernetes Service may land on another replica, new ones after a scale-up included
    # (a gRPC client otherwise keeps its connection, and its replica, for good). 0: never. Calls in
    # flight on the old connection finish; max_connection_age_grace_s bounds how long they may take
    # before the connection is closed under them (None: as long as they need).
    max_connection_age_s: float = 0.0
    max_connection_age_grace_s: float | None = None
    # Front-end processes accepting on the same ports (--frontends; each a full replica of the
    # core, its share of every model's instances), and which of them this process is. Set by the
    # supervising process (graphgen_server/supervisor.py); 1: one process, no supervisor.
    frontends: int = 1
    frontend_index: int = 0
    # The event loop: uvloop where it is installed (auto), or asyncio's own.
    event_loop: str = "auto"
    # KServe's RepositoryModelLoad/Unload: off unless asked for (anyone who can call them can
    # take models out of service).
    model_control: bool = False
    # Triton's system shared-memory extension: clients may register regions (Triton's
    # --allow-client-shm, off by default there too: the server maps what a client names).
    allow_client_shm: bool = False
    # Refuse float inputs holding NaN or infinity (Triton takes any value; the scan costs a pass).
    refuse_nonfinite: bool = False
    # TLS from PEM files (cert and key; with client_ca, clients must present a certificate it signed).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    # Calls must carry "authorization: Bearer <token>" (empty: no token asked for). Kept out of repr.
    token: str = field(default="", repr=False)

    @property
    def batching(self) -> bool:
        return self.max_batch > 1 and self.batching_mode != "off"

    @property
    def address(self) -> str:
        return self.address_of(self.port)

    def address_of(self, port: int) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{port}"
