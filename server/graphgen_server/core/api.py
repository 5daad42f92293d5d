"""What the front-ends may ask of the core, and what they get back.

The gRPC servicers and the HTTP routes are typed against :class:`Runtime`, never against the
class that implements it (:class:`~graphgen_server.core.runtime.LocalRuntime`: sessions in this
process); the tests' fake runtimes implement it too. A call names a model and hands over its
inputs as the request types of :mod:`graphgen_server.core.requests`; the answer is one of the
frozen results below, numpy arrays inside; a failure is an exception of
:mod:`graphgen_server.core.errors`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from graphgen.profiling.summary import Profile
from graphgen_server.core.model_version import ModelVersion
from graphgen_server.core.requests import Profiling, RequestedOutput
from graphgen_server.core.statistics import VersionStats
from graphgen_server.tensors import InputTensor


@dataclass(frozen=True)
class Timings:
    """Where a request's time went, in seconds (``batch_size``: rows of the batch it ran in)."""

    queue_s: float
    input_s: float
    infer_s: float
    output_s: float
    total_s: float
    batch_size: int
    profile_setup_s: float = 0.0  # a profiled call: waiting for its profiling session, and warm-up runs
    profile_wait_s: float = 0.0  # a profiled call: waiting for the profiler (another profile, its thread, the trace)


@dataclass(frozen=True)
class ClassScore:
    index: int
    label: str
    score: float  # softmax probability


@dataclass(frozen=True)
class Classified:
    model: str
    version: str
    provider: str
    results: list[list[ClassScore]]  # per image, best first
    timings: Timings
    profile: Profile | None


@dataclass(frozen=True)
class OutputTensor:
    name: str
    datatype: str
    array: np.ndarray  # for BYTES (classification): an object array of bytes


@dataclass(frozen=True)
class Inferred:
    model: str
    version: str
    outputs: list[OutputTensor]
    timings: Timings
    profile: Profile | None


@runtime_checkable
class Runtime(Protocol):
    """The model versions being served and the calls on them."""

    def all(self) -> list[ModelVersion]:
        """Every model version in the table, ready or not."""
        ...

    def find(self, name: str, version: str = "") -> ModelVersion:
        """The named version (empty: the newest ready one, else the newest); NotFound otherwise."""
        ...

    def ready(self, name: str, version: str = "") -> ModelVersion:
        """As :meth:`find`, and ModelUnavailable with the reason unless the version is ready."""
        ...

    def versions(self, name: str) -> list[str]:
        """The versions of model ``name``, in order; NotFound for an unknown model."""
        ...

    async def statistics(self, name: str = "", version: str = "") -> list[VersionStats]:
        """The named version's counts (every version of ``name``, or of every model when no name is
        given), summed over every front-end process; NotFound for a model or version not served."""
        ...

    def refused(self, name: str, version: str, error: BaseException) -> None:
        """Counts a request a front-end refused before calling :meth:`infer` or :meth:`classify` (its body
        did not decode) among the named version's failures, as those calls count theirs; nothing when
        that version does not exist."""
        ...

    async def classify(
        self,
        name: str,
        version: str = "",
        *,
        images: Sequence[bytes] = ...,
        tensor: InputTensor | None = ...,
        top_k: int = ...,
        profile: Profiling = ...,
    ) -> Classified:
        """The top ``top_k`` classes of each encoded image (or of each row of a preprocessed tensor)."""
        ...

    async def infer(
        self,
        name: str,
        version: str = "",
        *,
        inputs: Sequence[InputTensor],
        outputs: Sequence[RequestedOutput] = ...,
        profile: Profiling = ...,
    ) -> Inferred:
        """Run the model on ``inputs``; the requested outputs (all, in the model's order, if none named)."""
        ...
