"""A tensor in a shared-memory region, as both KServe front-ends (gRPC and HTTP) take it from the wire.

Triton's parameters on an input or a requested output (its ``ParseSharedMemoryParams`` and
``CheckSharedMemoryData``): ``shared_memory_region`` (a string: a registered region's name),
``shared_memory_byte_size`` (an integer, required with it) and ``shared_memory_offset`` (an
integer, 0 when not given; neither is taken without a region). Each protocol converts its own
parameter type to Python values first (:func:`region_reference`).

An input's bytes are then a view of the region (:func:`input_data`: no copy; the core reads them
as any request's bytes, so a byte count that does not fit the tensor is refused there, naming
``shared_memory_byte_size``). An output asked in shared memory is written into its region once the
model has run (:func:`write_output`) and goes back without contents: its name, datatype and shape
only, as Triton answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphgen_server.core.api import OutputTensor
from graphgen_server.core.errors import InvalidArgument, NotFound
from graphgen_server.core.shared_memory import SharedMemory

REGION, OFFSET, BYTE_SIZE = "shared_memory_region", "shared_memory_offset", "shared_memory_byte_size"
PARAMETERS = (REGION, OFFSET, BYTE_SIZE)


@dataclass(frozen=True)
class RegionReference:
    """Where a tensor is: ``byte_size`` bytes of region ``region`` from ``offset`` on.

    ``field`` names the parameters it came from (``inputs[0].parameters``) for messages.
    """

    region: str
    offset: int
    byte_size: int
    field: str

    @property
    def byte_size_field(self) -> str:
        return f"{self.field}.{BYTE_SIZE}"


def region_reference(parameters: Mapping[str, Any], field: str) -> RegionReference | None:
    """The shared-memory parameters of one tensor (given as Python values), None if it has none."""
    if REGION not in parameters:
        for name in (OFFSET, BYTE_SIZE):
            if name in parameters:
                raise InvalidArgument(f"{field}.{name}", f"is given without '{REGION}'")
        return None
    region = parameters[REGION]
    if not isinstance(region, str):
        raise InvalidArgument(f"{field}.{REGION}", f"must be a string (a region's name), got {region!r}")
    if BYTE_SIZE not in parameters:
        raise InvalidArgument(f"{field}.{BYTE_SIZE}", f"must be given along with '{REGION}'")
    offset, byte_size = _count(parameters, OFFSET, field, 0), _count(parameters, BYTE_SIZE, field, 0)
    return RegionReference(region, offset, byte_size, field)


def _count(parameters: Mapping[str, Any], name: str, field: str, default: int) -> int:
    value = parameters.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"{field}.{name}", f"must be a byte count (an integer, 0 or more), got {value!r}")
    return value


def input_data(shared_memory: SharedMemory, reference: RegionReference) -> memoryview | InvalidArgument:
    """The input's bytes, a view of its region (no copy); the refusal instead, to raise once inputs are checked by name."""
    try:
        return shared_memory.view(reference.region, reference.offset, reference.byte_size, reference.field)
    except InvalidArgument as error:
        return error


def output_views(
    shared_memory: SharedMemory, references: Mapping[str, RegionReference]
) -> dict[str, tuple[RegionReference, memoryview]]:
    """Each output asked in shared memory with the view it is written to (refused before the model runs)."""
    return {
        name: (reference, shared_memory.view(reference.region, reference.offset, reference.byte_size, reference.field))
        for name, reference in references.items()
    }


def check_output(reference: RegionReference | None, classification: Any, field: str) -> None:
    """Refuse an output asked both in shared memory and as classification (Triton's rule)."""
    if reference is not None and classification is not None:
        raise InvalidArgument(field, f"cannot set both '{REGION}' and 'classification'")


def write_output(output: OutputTensor, reference: RegionReference, view: memoryview) -> None:
    """Write ``output``'s bytes (row-major, little-endian) at the start of its region's view."""
    array = np.ascontiguousarray(output.array, dtype=output.array.dtype.newbyteorder("<"))
    if array.nbytes > len(view):
        raise InvalidArgument(
            reference.byte_size_field,
            f"{len(view)} bytes cannot hold output {output.name!r} ({output.datatype} {list(array.shape)}: "
            f"{array.nbytes} bytes)",
        )
    np.frombuffer(view, dtype=np.uint8, count=array.nbytes)[:] = array.reshape(-1).view(np.uint8)


def write_outputs(outputs: Sequence[OutputTensor], views: Mapping[str, tuple[RegionReference, memoryview]]) -> set[str]:
    """Write every output asked in shared memory into its region; the names written."""
    written = set()
    for output in outputs:
        if output.name in views:
            write_output(output, *views[output.name])
            written.add(output.name)
    return written


# -- what both protocols answer about regions ----------------------------------------------
def system_status(shared_memory: SharedMemory, name: str) -> list[dict[str, Any]]:
    """Triton's system shared-memory status: every region (``name`` empty) or the named one."""
    return [
        {"name": s.name, "key": s.key, "offset": s.offset, "byte_size": s.byte_size} for s in shared_memory.status(name)
    ]


def cuda_status(shared_memory: SharedMemory, name: str) -> list[dict[str, Any]]:
    """Triton's CUDA shared-memory status: no CUDA region is ever registered here (its words for a name)."""
    if name:
        if shared_memory.regions.spec(name) is not None:
            raise NotFound(f"The region named '{name}' is registered as system shared memory, not CUDA shared memory")
        raise NotFound(f"Unable to find cuda shared memory region: '{name}'")
    return []


def cuda_refused(name: str) -> str:
    return (
        f"failed to register CUDA shared memory region '{name}': graphgen-server has no CUDA shared memory "
        "(cudaIpc handles); register a system shared-memory region, or send the tensors in the request"
    )


def cuda_unregister(shared_memory: SharedMemory) -> None:
    """Nothing to unregister (perf_analyzer unregisters every CUDA region before it starts): refused only
    where Triton refuses, when client shared memory is off."""
    shared_memory.check_allowed()
