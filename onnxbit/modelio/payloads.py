"""Where a weight's bytes are while a model is converted: in the caller's
proto, in an external-data file of the input, or in a numpy array the passes
made. A payload hands out its bytes in chunks (to write a file) or as a
read-only array (for a pass to read), never keeping a copy of its own."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np
import onnx

from onnxbit.errors import ModelError

CHUNK_BYTES = 16 << 20


class Payload(Protocol):
    """Where one tensor's bytes are: their count, the bytes in chunks (to
    write a file), and a read-only array (for a pass to read)."""

    nbytes: int

    def chunks(self) -> Iterator[bytes | memoryview]: ...

    def array(self, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray: ...


@dataclass
class ProtoPayload:
    """The raw_data of a tensor in the caller's model (read, never written)."""

    tensor: onnx.TensorProto

    @property
    def nbytes(self) -> int:
        from onnxbit.model_check import raw_data_nbytes

        return raw_data_nbytes(self.tensor)  # reading .raw_data would copy it: sizes are asked for often

    def chunks(self):
        yield self.tensor.raw_data  # one transient copy out of protobuf

    def array(self, dtype, shape):
        payload = self.tensor.raw_data
        _check_size(self.tensor.name, len(payload), dtype, shape)
        return np.frombuffer(payload, dtype=dtype).reshape(shape)  # read-only: aliases the bytes object


@dataclass
class FilePayload:
    """A byte range of an external-data file of the input model."""

    name: str
    path: Path
    offset: int
    nbytes: int

    def chunks(self):
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            left = self.nbytes
            while left:
                block = handle.read(min(left, CHUNK_BYTES))
                if not block:
                    raise ModelError(f"external data of '{self.name}' ends early in {self.path} "
                                     f"({self.nbytes - left} of {self.nbytes} bytes)")
                left -= len(block)
                yield block

    def array(self, dtype, shape):
        _check_size(self.name, self.nbytes, dtype, shape)
        count = self.nbytes // np.dtype(dtype).itemsize
        with open(self.path, "rb") as handle:
            values = np.fromfile(handle, dtype=dtype, count=count, offset=self.offset)
        if values.size != count:
            raise ModelError(f"external data of '{self.name}' ends early in {self.path}")
        values.flags.writeable = False
        return values.reshape(shape)


@dataclass
class ArrayPayload:
    """A tensor a pass computed (packed weights, scales)."""

    values: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes)

    def chunks(self):
        flat = np.ascontiguousarray(self.values).reshape(-1).view(np.uint8)
        for start in range(0, flat.size, CHUNK_BYTES):
            yield memoryview(flat[start:start + CHUNK_BYTES])

    def array(self, dtype, shape):
        return self.values


def external_payload(tensor: onnx.TensorProto, base_dir: Path) -> FilePayload:
    """The FilePayload of a tensor stored as external data relative to base_dir.
    The location must stay inside base_dir (no absolute path, no `..` or
    symlink escape) and the range inside the file."""
    entries = {entry.key: entry.value for entry in tensor.external_data}
    location = entries.get("location")
    if not location:
        raise ModelError(f"tensor '{tensor.name}' is marked external but names no location")
    folder = Path(os.path.realpath(base_dir))
    path = Path(os.path.realpath(folder / location))
    if os.path.isabs(location) or (folder not in path.parents and path != folder):
        raise ModelError(f"tensor '{tensor.name}': external data location '{location}' is outside the model's "
                         f"folder {base_dir}")
    if not path.is_file():
        raise ModelError(f"tensor '{tensor.name}': external data file {folder / location} does not exist")
    try:
        offset = int(entries.get("offset", 0))
        size = os.path.getsize(path)
        length = int(entries["length"]) if "length" in entries else size - offset
    except ValueError:
        raise ModelError(f"tensor '{tensor.name}': external data offset/length are not integers") from None
    if offset < 0 or length < 0 or offset + length > size:
        raise ModelError(f"tensor '{tensor.name}': external data range [{offset}, {offset + length}) is outside "
                         f"{path.name} ({size} bytes)")
    return FilePayload(tensor.name, path, offset, length)


def _check_size(name: str, nbytes: int, dtype, shape) -> None:
    count = int(np.prod(shape, dtype=np.int64))
    needed = count * np.dtype(dtype).itemsize
    if nbytes != needed:
        raise ModelError(f"tensor '{name}' holds {nbytes} bytes of data; {np.dtype(dtype)} {list(shape)} "
                         f"needs {needed}")
