"""The one place an exported ONNX file is opened and read: its graph, image input, batch,
outputs and HandSSCA metadata. ONNX Runtime's runner, the TensorRT engine build and the Triton
repository all read a file through ``read_onnx``, so they refuse the same files the same way.

Weights stored as external data are read only from regular files inside the model's own folder,
resolved against that folder (never the current one): a location that is absolute, climbs out
with ``..`` or names a link, a device or a fifo is refused before anything is read. A model
given as bytes has no folder, so it cannot have external data.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from handssca.errors import HandSSCAError, ModelFileError
from handssca.runtime.files import FILE_KINDS


@dataclass
class OnnxFile:
    """An ONNX file as read: the graph (external data loaded) and what the runners need of it."""

    name: str
    model: object  # onnx.ModelProto
    input_name: str
    input_shape: list  # ints, or a name (str) for a dynamic axis
    input_dtype: np.dtype
    output_names: list[str]
    metadata: dict = field(default_factory=dict)  # the export's "handssca" entry ({} when absent)

    @property
    def batch(self) -> int | None:
        """The fixed batch size, or None when the batch axis is dynamic."""
        first = self.input_shape[0] if self.input_shape else None
        return first if isinstance(first, int) and first > 0 else None


def _tensors(graph):
    """Every tensor a graph holds: initializers and constant attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for subgraph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from _tensors(subgraph)


def _external_locations(model) -> list[tuple[str, str]]:
    """(tensor, location) of every tensor stored as external data."""
    import onnx

    return [
        (tensor.name, next((e.value for e in tensor.external_data if e.key == "location"), ""))
        for tensor in _tensors(model.graph)
        if tensor.data_location == onnx.TensorProto.EXTERNAL
    ]


def is_regular_file(path: Path, follow_links: bool) -> bool | None:
    """Whether ``path`` is a regular file (a link counts as one only when ``follow_links``); None
    when there is nothing there."""
    try:
        info = os.stat(path) if follow_links else os.lstat(path)
    except OSError:
        return None
    return stat.S_ISREG(info.st_mode)


REGULAR, NOTHING = "a regular file", "nothing"


def path_kind(path: Path) -> str:
    """What is at ``path``, links followed, in words: REGULAR, NOTHING, or read_image's names for
    the rest (files.FILE_KINDS: "a folder", "a character device", ...; with the link it came
    through) and "a symbolic link loop", so that a model path is never "not found" when
    something else is there."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop"
        return NOTHING if exc.errno in (errno.ENOENT, errno.ENOTDIR) else f"unreadable: {exc.strerror or exc}"
    if stat.S_ISREG(mode):
        return REGULAR
    kind = FILE_KINDS.get(stat.S_IFMT(mode), "not a file")
    return f"{kind}, linked to {os.path.realpath(path)}" if os.path.islink(path) else kind


def not_a_file(path: Path, what: str = "model") -> str | None:
    """Why ``path`` cannot be read as a ``what`` file, in one line naming it ("PATH: not a model
    file (a folder)"); None when it is a regular file."""
    kind = path_kind(path)
    if kind == REGULAR:
        return None
    return f"{path}: {what} file not found" if kind == NOTHING else f"{path}: not a {what} file ({kind})"


def check_external_data(model, folder: Path | None, name: str) -> None:
    """Refuses external data that is not a regular file inside ``folder`` (see the module's note)."""
    for tensor, location in _external_locations(model):
        where = f"{name}: initializer '{tensor[:60]}' stores its data in '{location[:80]}'"
        if folder is None:
            raise ModelFileError(f"{where}, but a model given as bytes has no folder to read it from")
        relative = Path(location)
        if not location or relative.is_absolute() or ".." in relative.parts:
            raise ModelFileError(f"{where}: external data must be a file inside the model's folder; refused")
        regular = is_regular_file(folder / relative, follow_links=False)
        if regular is None:
            raise ModelFileError(f"{where}, which does not exist beside the model")
        if not regular:
            raise ModelFileError(f"{where}, which is not a regular file (a link, device or fifo); refused")


def read_onnx(source: str | Path | bytes, error: type[HandSSCAError] = ModelFileError) -> OnnxFile:
    """``source`` (a path, or the file's bytes) read and checked; ``error`` is the class raised,
    so each caller's users see its own kind of error."""
    import onnx

    if isinstance(source, bytes):
        name, folder, data = "<bytes>", None, source
    else:
        path = Path(source)
        name, folder = str(path), path.parent
        problem = not_a_file(path)
        if problem:
            raise error(problem)
        data = path.read_bytes()
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise error(f"{name}: not an ONNX model (cannot parse the protobuf)") from exc
    if not model.graph.node:
        raise error(f"{name}: not an ONNX model (the graph has no nodes)")
    try:
        check_external_data(model, folder, name)
    except ModelFileError as exc:
        raise error(str(exc)) from None
    if folder is not None and _external_locations(model):
        onnx.load_external_data_for_model(model, str(folder))
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if not inputs:
        raise error(f"{name}: the graph has no image input")
    image = inputs[0].type.tensor_type
    try:
        metadata = json.loads({p.key: p.value for p in model.metadata_props}.get("handssca") or "{}")
    except json.JSONDecodeError:
        raise error(f"{name}: its 'handssca' metadata is not valid JSON (not written by handssca export?)") from None
    return OnnxFile(
        name=name,
        model=model,
        input_name=inputs[0].name,
        input_shape=[d.dim_value if d.HasField("dim_value") else d.dim_param for d in image.shape.dim],
        input_dtype=np.dtype(onnx.helper.tensor_dtype_to_np_dtype(image.elem_type)),
        output_names=[o.name for o in graph.output],
        metadata=metadata if isinstance(metadata, dict) else {},
    )
