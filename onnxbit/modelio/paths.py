"""Which files a conversion reads and may write.

A conversion must never write over a file it reads: the input model, any of
its external-data files, or one of its own other outputs. Paths are compared
after resolving symlinks and `..`, and existing files also by device and
inode (a hard link is the same file under another name).
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from onnxbit.errors import OutputPathError
from onnxbit.graph.queries import proto_tensors


def external_locations(model: onnx.ModelProto) -> list[str]:
    """The external-data locations the model's tensors name, subgraphs included, in order."""
    seen: dict[str, None] = {}
    for tensor in proto_tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    seen.setdefault(entry.value, None)
    return list(seen)


def input_files(model_path: Path | None, model: onnx.ModelProto) -> list[Path]:
    """The input model file and the external-data files it refers to."""
    if model_path is None:
        return []
    folder = model_path.parent
    return [model_path] + [folder / location for location in external_locations(model)]


class FileIdentity:
    """Compares files by resolved path and, when they exist, by device and inode."""

    def __init__(self, path: Path):
        self.path = path
        self.resolved = Path(os.path.realpath(path))
        try:
            info = os.stat(path)
            self.inode: tuple[int, int] | None = (info.st_dev, info.st_ino)
        except OSError:
            self.inode = None

    def same_as(self, other: "FileIdentity") -> bool:
        if self.resolved == other.resolved:
            return True
        return self.inode is not None and self.inode == other.inode


def check_outputs(inputs: list[Path], outputs: dict[str, Path]) -> None:
    """Raise OutputPathError when an output (role -> path) is an input file or
    another output. Roles name the option in the message ("output", "--report")."""
    read = [(path, FileIdentity(path)) for path in inputs]
    written: list[tuple[str, Path, FileIdentity]] = []
    for role, path in outputs.items():
        identity = FileIdentity(path)
        for index, (source, source_identity) in enumerate(read):
            if identity.same_as(source_identity):
                what = "the input model" if index == 0 else f"an external-data file of the input model ({source.name})"
                raise OutputPathError(f"{role} {path} is {what}; write it elsewhere (the input is never modified)")
        for other_role, other_path, other_identity in written:
            if identity.same_as(other_identity):
                raise OutputPathError(f"{role} {path} is the same file as {other_role} {other_path}; "
                                      "give each output its own path")
        if identity.resolved.is_dir():
            raise OutputPathError(f"{role} {path} is a folder; give a file name")
        written.append((role, path, identity))


def data_file_name(output: Path, taken: list[Path]) -> str:
    """A name for the output's external-data file, next to it: "<output>.data",
    or "<output>.<n>.data" when that is a file this conversion reads."""
    identities = [FileIdentity(p) for p in taken]
    for attempt in range(1000):
        name = f"{output.name}.data" if attempt == 0 else f"{output.name}.{attempt}.data"
        candidate = FileIdentity(output.parent / name)
        if not any(candidate.same_as(other) for other in identities):
            return name
    raise OutputPathError(f"no free name for the external data of {output}")
