"""``graphgen-server --repository DIR``: serve every model of a Triton-layout repository over gRPC."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from graphgen import __version__
from graphgen.argtypes import positive_int
from graphgen_server.config import BATCHING_MODES, EVENT_LOOPS, MIB, CudaOptions, ServerConfig
from graphgen_server.core.providers import DEVICES
from graphgen_server.frontends.security import read_token

EXIT_USAGE = 2
MAX_PORT = 65535  # above it the socket layer silently wraps (99999 would bind 34463)
MAX_NICE = 19  # the lowest CPU priority


def _non_negative(text: str) -> int:
    return 0 if text == "0" else positive_int(text)


def _port(text: str) -> int:
    port = _non_negative(text)
    if port > MAX_PORT:
        raise argparse.ArgumentTypeError(f"a port is 0 to {MAX_PORT}, not {port}")
    return port


def _profile_nice(text: str) -> int:
    nice = _non_negative(text)
    if nice > MAX_NICE:
        raise argparse.ArgumentTypeError(f"a nice value is 0 to {MAX_NICE}, not {nice}")
    return nice


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def _side_port(text: str) -> int | None:
    """--http-port/--metrics-port: a port, 0 for off, or 'auto' for a free one."""
    if text == "auto":
        return 0
    return _port(text) or None


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphgen-server",
        description="Serve ONNX classifiers: graphgen.v1.Classifier and KServe v2 (Triton's protocols) over gRPC, "
        "KServe v2 over HTTP/REST, Prometheus metrics.",
    )
    parser.add_argument("--version", action="version", version=f"graphgen-server {__version__}")
    parser.add_argument(
        "--repository", required=True, type=Path, metavar="DIR", help="<DIR>/<model>/<version>/model.onnx"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=_port, default=8001, help="port (default 8001; 0 picks a free one)")
    parser.add_argument(
        "--http-port",
        type=_side_port,
        default=8000,
        metavar="PORT",
        help="KServe v2 HTTP/REST port (default 8000; 0: off; auto: a free one)",
    )
    parser.add_argument(
        "--metrics-port",
        type=_side_port,
        default=8002,
        metavar="PORT",
        help="Prometheus /metrics port (default 8002; 0: off; auto: a free one)",
    )
    parser.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA where it works, else CPU")
    parser.add_argument(
        "--frontends",
        type=positive_int,
        default=None,
        metavar="N",
        help="processes serving the same ports, each with its share of every model's instances (default: one per "
        "CPU this process may use, cgroup quota included; 1 on CUDA; 1: a single process)",
    )
    parser.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default="auto",
        help="the event loop serving the requests (default auto: uvloop where installed, it spends less CPU)",
    )
    parser.add_argument(
        "--dynamic-batching",
        choices=BATCHING_MODES,
        default=None,
        help="for models without a config.pbtxt (a config.pbtxt's dynamic_batching decides for its model); "
        "auto (default): per device, as measured by bench/server_batching.py",
    )
    parser.add_argument(
        "--max-batch",
        type=positive_int,
        default=None,
        metavar="N",
        help="dynamic batches of up to N images (default 8; 1: off; given alone: on)",
    )
    parser.add_argument(
        "--batch-delay-us",
        type=_non_negative,
        default=0,
        metavar="T",
        help="a batch waits up to T µs for more requests (default 0: takes what is queued)",
    )
    limits = parser.add_argument_group("limits")
    limits.add_argument(
        "--max-images", type=positive_int, default=64, metavar="N", help="images per request (default 64)"
    )
    limits.add_argument(
        "--max-image-pixels",
        type=positive_int,
        default=40_000_000,
        metavar="P",
        help="pixels per image, read from its header before decoding (default 40M)",
    )
    limits.add_argument(
        "--max-queue",
        type=positive_int,
        default=256,
        metavar="N",
        help="images queued or running per model (in each front-end process) before RESOURCE_EXHAUSTED (default 256)",
    )
    limits.add_argument(
        "--max-message-mib",
        type=positive_int,
        default=64,
        metavar="MIB",
        help="size of a gRPC message or an HTTP body, as sent and inflated (default 64)",
    )
    limits.add_argument(
        "--http-header-timeout",
        type=_positive_seconds,
        default=75.0,
        metavar="S",
        help="an HTTP request's header must be complete within S seconds of its connection opening or of the "
        "previous answer; idle keep-alive connections close then too (default 75)",
    )
    limits.add_argument(
        "--http-body-timeout",
        type=_positive_seconds,
        default=60.0,
        metavar="S",
        help="an HTTP request's body must arrive within S seconds, else 408 (default 60)",
    )
    limits.add_argument(
        "--grpc-compression",
        action="store_true",
        help="accept gzip/deflate-compressed gRPC requests (default: refused UNIMPLEMENTED, because gRPC inflates "
        "a compressed message whole before --max-message-mib is checked: only for clients you trust)",
    )
    limits.add_argument(
        "--workers", type=positive_int, default=None, help="inference threads (default: cores, at least 2)"
    )
    limits.add_argument(
        "--intra-op-threads",
        type=_non_negative,
        default=0,
        help="onnxruntime threads per run (default 0: the CPUs this process may use, cgroup quota included, "
        "shared by the model's instances)",
    )
    limits.add_argument("--spin", action="store_true", help="onnxruntime threads spin when idle (default: sleep)")
    limits.add_argument(
        "--max-profile-runs",
        type=positive_int,
        default=100,
        metavar="N",
        help="most runs one profiled request may ask for (default 100; 10 when it names none)",
    )
    limits.add_argument(
        "--profile-nice",
        type=_profile_nice,
        default=0,
        metavar="N",
        help="a profile's CPU priority below serving's (nice 0..19; default 0, a fair share: profiles on a "
        "busy server finish; 19: serving first, profiles starve while the CPU is busy)",
    )
    limits.add_argument(
        "--profile-mode",
        choices=["exclusive", "shared"],
        default="shared",
        help="shared (default): profiles run beside serving and say how disturbed their runs were; exclusive: a "
        "profile holds its model's instances while it runs, so its runs get the CPU (the model's calls wait)",
    )
    limits.add_argument(
        "--grace", type=_seconds, default=10.0, metavar="S", help="seconds for in-flight calls on SIGTERM (default 10)"
    )
    limits.add_argument(
        "--pre-stop-delay",
        type=_seconds,
        default=0.0,
        metavar="S",
        help="on SIGTERM, health says NOT_SERVING but calls are still answered for S seconds "
        "(load balancers drop the server meanwhile), then the drain starts (default 0)",
    )
    limits.add_argument(
        "--max-connection-age",
        type=_seconds,
        default=0.0,
        metavar="S",
        help="gRPC connections older than S seconds are closed (GOAWAY; calls in flight finish) "
        "so that clients reconnect and spread over new replicas (default 0: never)",
    )
    limits.add_argument(
        "--max-connection-age-grace",
        type=_seconds,
        default=None,
        metavar="S",
        help="after that GOAWAY, calls in flight get S seconds before the connection is closed "
        "(default: as long as they take)",
    )
    cuda = parser.add_argument_group("CUDA")
    cuda.add_argument(
        "--device-id",
        type=_non_negative,
        default=None,
        help="the GPU of instance groups whose config.pbtxt lists no gpus (default: every visible GPU, as Triton)",
    )
    cuda.add_argument("--cudnn-conv-algo-search", choices=["EXHAUSTIVE", "HEURISTIC", "DEFAULT"], default="EXHAUSTIVE")
    cuda.add_argument("--gpu-mem-limit-mib", type=_non_negative, default=0, help="CUDA memory arena cap (0: none)")
    cuda.add_argument(
        "--arena-extend-strategy", choices=["kNextPowerOfTwo", "kSameAsRequested"], default="kNextPowerOfTwo"
    )
    cuda.add_argument("--no-io-binding", action="store_true", help="plain run() instead of IO binding on CUDA")
    parser.add_argument(
        "--model-control",
        action="store_true",
        help="accept RepositoryModelLoad/Unload calls: (re)load and unload models while serving",
    )
    parser.add_argument(
        "--allow-client-shm",
        action="store_true",
        help="clients may register system shared-memory regions and pass tensors in them (Triton's flag, off by "
        "default as in Triton: a client can then have the server map any shared-memory object its user can open)",
    )
    parser.add_argument(
        "--refuse-nonfinite",
        action="store_true",
        help="refuse floating-point inputs holding NaN or infinity (default: taken as Triton takes them)",
    )
    security = parser.add_argument_group("security (for listening beyond this machine)")
    security.add_argument("--tls-cert", type=Path, metavar="PEM", help="serve TLS with this certificate (chain)")
    security.add_argument("--tls-key", type=Path, metavar="PEM", help="the certificate's private key")
    security.add_argument(
        "--tls-client-ca",
        type=Path,
        metavar="PEM",
        help="mutual TLS: clients must present a certificate signed by this CA",
    )
    security.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="calls must carry 'authorization: Bearer <the token in FILE>' (health checks excepted)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def batching_mode(args: argparse.Namespace) -> str:
    """--dynamic-batching, or what --max-batch alone says (1: off, more: on), else auto."""
    if args.dynamic_batching:
        return args.dynamic_batching
    if args.max_batch is not None:
        return "on" if args.max_batch > 1 else "off"
    return "auto"


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    cuda = CudaOptions(
        device_id=args.device_id,
        cudnn_conv_algo_search=args.cudnn_conv_algo_search,
        gpu_mem_limit=args.gpu_mem_limit_mib * MIB,
        arena_extend_strategy=args.arena_extend_strategy,
        io_binding=not args.no_io_binding,
    )
    extra = {"workers": args.workers} if args.workers else {}
    return ServerConfig(
        repository=args.repository,
        host=args.host,
        port=args.port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        device=args.device,
        cuda=cuda,
        max_batch=args.max_batch or 8,
        batch_delay_us=args.batch_delay_us,
        batching_mode=batching_mode(args),
        max_images=args.max_images,
        max_image_pixels=args.max_image_pixels,
        max_queue=args.max_queue,
        max_message_bytes=args.max_message_mib * MIB,
        http_header_timeout_s=args.http_header_timeout,
        http_body_timeout_s=args.http_body_timeout,
        grpc_compression=args.grpc_compression,
        intra_op_threads=args.intra_op_threads,
        spin_threads=args.spin,
        model_control=args.model_control,
        allow_client_shm=args.allow_client_shm,
        refuse_nonfinite=args.refuse_nonfinite,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        token=read_token(args.token_file) if args.token_file else "",
        grace_s=args.grace,
        pre_stop_s=args.pre_stop_delay,
        max_profile_runs=args.max_profile_runs,
        profile_nice=args.profile_nice,
        profile_exclusive=args.profile_mode == "exclusive",
        max_connection_age_s=args.max_connection_age,
        max_connection_age_grace_s=args.max_connection_age_grace,
        event_loop=args.event_loop,
        **extra,
    )


def default_frontends(config: ServerConfig) -> int:
    """One front-end per CPU this process may use; one where the models run on CUDA."""
    from graphgen_server.core import providers
    from graphgen_server.core.cpus import available_cpus
    from graphgen_server.supervisor import default_frontends as frontends_for

    wants_cuda = config.device != "cpu" and providers.choose(config.device, config.cuda).wants_cuda
    return frontends_for(available_cpus(), wants_cuda)


def main(argv: Sequence[str] | None = None) -> int:
    from graphgen_server.app import BindError, run_loop, serve
    from graphgen_server.core.providers import DeviceError
    from graphgen_server.frontends.security import SecurityError, server_credentials
    from graphgen_server.repository.layout import RepositoryError
    from graphgen_server.supervisor import supervise

    args = make_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        config = config_from_args(args)
        # TLS files are read here, before the supervisor probes any port: a missing certificate is
        # reported as such, never hidden behind a busy default port.
        server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
        frontends = args.frontends or default_frontends(config)
        if frontends > 1:
            return run_loop(supervise(dataclasses.replace(config, frontends=frontends), args.log_level))
        return run_loop(serve(config), config.event_loop)
    except (RepositoryError, DeviceError, BindError, SecurityError) as error:
        print(f"graphgen-server: error: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
