"""ONNX files written: ``model.onnx`` exported from PyTorch at float32, the towers cut from it, then the float16
and int8 variants made from each.

Protobuf caps one file at 2 GiB, so a model whose weights pass :data:`EXTERNAL_DATA_BYTES` keeps them in one
file beside it, ``model.onnx_data``: the name transformers.js asks for (``use_external_data_format``) and
optimum writes. Smaller models are one self-contained file, which every loader takes as it is.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from chclip_convert.export.graphs import COMBINED, GRAPH_BY_NAME, GraphSpec, wrap

OPSET = 18  # optimum's default for chinese_clip; every onnxruntime since 1.14 runs it
EXTERNAL_DATA_BYTES = 2**31 - 2**26  # the 2 GiB protobuf cap, less room for the graph itself


@dataclass(frozen=True)
class Variant:
    """A precision of the exported files: its name in reports, and the suffix transformers.js's ``dtype`` reads."""

    name: str
    suffix: str


FP32, FP16, INT8 = Variant("fp32", ""), Variant("fp16", "_fp16"), Variant("int8", "_quantized")
VARIANTS = (FP32, FP16, INT8)


def data_file_name(onnx_file: str) -> str:
    """The external-data file beside ``onnx_file``: ``model.onnx`` → ``model.onnx_data``."""
    return f"{onnx_file}_data"


def export_graph(model, graph: GraphSpec, example: dict[str, torch.Tensor], path: Path, *, opset: int = OPSET) -> None:
    """Export ``graph`` of ``model`` (float32, eval) to ``path``, with its batch (and text length) axes dynamic.

    ``example`` holds an input of each name, batch 2 or more (torch.export treats a size of 1 as fixed)."""
    dims = _dims(graph, model.config.text_config.max_position_embeddings)
    shapes = {
        name: {axis: dims[axis_name] for axis, axis_name in graph.dynamic_axes[name].items()} for name in graph.inputs
    }
    with _quiet():
        program = torch.onnx.export(
            wrap(model, graph),
            tuple(example[name] for name in graph.inputs),
            dynamo=True,
            opset_version=opset,
            input_names=list(graph.inputs),
            output_names=list(graph.outputs),
            dynamic_shapes=shapes,
            optimize=True,
            verbose=False,
        )
    save_ir(program.model, path)


def derive_tower(combined: Path, graph: GraphSpec, path: Path) -> bool:
    """Write the tower ``graph`` at ``path`` as the part of the exported ``combined`` file that computes it;
    ``False``, writing nothing, if that file's graph is not of the shape this expects.

    ``model.onnx`` ends each tower's embedding in ``Div(projected, norm)``; the projected feature, before that
    division, is what the tower's file outputs (``get_text_features``, ``get_image_features``). Cutting the
    graph there keeps the nodes and weights that feature depends on, so the file holds the same ops as a trace of
    the tower alone would, and costs a second rather than a trace of the model (most of an export's time).
    ``combined`` must still hold its weights in ``<name>_data`` (:func:`save_ir`), so that they are read lazily.
    """
    import onnx_ir
    from onnx_ir.passes.common import RemoveUnusedNodesPass, RemoveUnusedOpsetsPass

    model = onnx_ir.load(combined)
    (output,) = graph.outputs
    normalised = next((value for value in model.graph.outputs if value.name == output), None)
    division = normalised.producer() if normalised is not None else None
    if division is None or division.op_type != "Div" or set(graph.inputs) - {v.name for v in model.graph.inputs}:
        return False
    projected = division.inputs[0]
    normalised.name = f"{output}_normalised"  # frees the name for the tower's own output
    projected.name = output
    model.graph.outputs.clear()
    model.graph.outputs.append(projected)
    removed = [value for value in model.graph.inputs if value.name not in graph.inputs]
    for value in removed:
        model.graph.inputs.remove(value)
    RemoveUnusedNodesPass()(model)
    RemoveUnusedOpsetsPass()(model)
    if any(value.uses() for value in removed):  # the tower's output still reads another tower's input
        return False
    if any(not value.uses() for value in model.graph.inputs):  # the cut lost an input the tower reads
        return False
    _rename_axes(model.graph, _axis_names(GRAPH_BY_NAME[COMBINED], graph))
    save_ir(model, path)
    return True


def _axis_names(combined: GraphSpec, tower: GraphSpec) -> dict[str, str]:
    """The combined file's name of each dynamic axis → the tower's (``text_batch_size`` → ``batch_size``)."""
    return {
        combined.dynamic_axes[name][axis]: axis_name
        for name in tower.inputs
        for axis, axis_name in tower.dynamic_axes[name].items()
    }


def _rename_axes(graph, names: dict[str, str]) -> None:
    """Give every value of ``graph`` whose shape names an axis of ``names`` the new name instead."""
    values = [*graph.inputs, *(output for node in graph for output in node.outputs)]
    for value in values:
        if value.shape is not None and any(str(dim) in names for dim in value.shape):
            value.shape = type(value.shape)([names.get(str(dim), dim) for dim in value.shape])


def _dims(graph: GraphSpec, max_length: int) -> dict[str, torch.export.Dim]:
    """One ``Dim`` per axis name, shared by the inputs that name it (``input_ids`` and ``attention_mask``)."""
    names = {axis for axes in graph.dynamic_axes.values() for axis in axes.values()}
    return {name: torch.export.Dim(name, max=max_length if name == "sequence_length" else None) for name in names}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's progress lines and advisory warnings (axis names merged, and the like) kept from the user."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def save_ir(model, path: Path) -> None:
    """Save an ``onnx_ir`` model at ``path``, its weights streamed one tensor at a time into ``<name>_data``
    beside it (:func:`inline_weights` folds them back in where protobuf allows)."""
    import onnx_ir

    onnx_ir.save(model, path, external_data=data_file_name(path.name))


def inline_weights(path: Path) -> None:
    """Fold the weights of ``path`` back into it, removing ``<name>_data``, unless they pass
    :data:`EXTERNAL_DATA_BYTES`: one self-contained file is what every loader takes as it is.

    Written as protobuf's wire format, one ``graph`` field whose initializers follow its other fields, each weight's
    bytes copied from the data file: memory holds the graph without its weights, never the model serialised
    (which set the export's peak), and no weight is copied in memory (building each tensor's message copied it
    three times, 9.6 s for a ViT-B-16's model.onnx against about 2 s). The file parses as the model onnx loads
    from the data file, its initializers in their order."""
    import onnx

    data = path.with_name(data_file_name(path.name))
    if not data.is_file() or data.stat().st_size > EXTERNAL_DATA_BYTES:
        return
    model = onnx.load(path, load_external_data=False)  # the graph, and where each weight lies in the data file
    external = [tensor for tensor in model.graph.initializer if tensor.data_location == onnx.TensorProto.EXTERNAL]
    if len(external) != _external_count(model):  # weights elsewhere (attributes, subgraphs): the plain way
        onnx.save_model(onnx.load(path), path)
        data.unlink()
        return
    entries = [_initializer_entry(tensor) for tensor in model.graph.initializer]  # (head, offset, length) each
    del model.graph.initializer[:]
    graph = model.graph.SerializeToString()
    model.ClearField("graph")
    graph_size = len(graph) + sum(len(head) + length for head, _, length in entries)
    partial = path.with_name(f"{path.name}.partial")
    with open(data, "rb") as weights, open(partial, "wb") as out:
        out.write(model.SerializeToString() + _field_key(onnx.ModelProto, "graph") + _varint(graph_size) + graph)
        for head, offset, length in entries:
            out.write(head)
            if length:
                out.flush()
                _copy_range(weights, out, offset, length)
    path.unlink()  # renamed over an existing file, ext4 would flush the new one first (auto_da_alloc): 1 s more
    os.rename(partial, path)
    data.unlink()


def _initializer_entry(tensor) -> tuple[bytes, int, int]:
    """``tensor`` as a ``GraphProto.initializer`` entry in wire format: the bytes up to its weights, and where its
    weights lie in the data file (offset, length; ``0, 0`` for a tensor already whole in ``head``). The tensor's
    own fields come first, then ``raw_data``: protobuf reads fields in any order."""
    import onnx

    key = _field_key(onnx.GraphProto, "initializer")
    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        whole = tensor.SerializeToString()
        return key + _varint(len(whole)) + whole, 0, 0
    where = {entry.key: entry.value for entry in tensor.external_data}
    offset, length = int(where.get("offset", 0)), int(where["length"])
    tensor.ClearField("external_data")
    tensor.data_location = onnx.TensorProto.DEFAULT
    fields = tensor.SerializeToString() + _field_key(onnx.TensorProto, "raw_data") + _varint(length)
    return key + _varint(len(fields) + length) + fields, offset, length


def _field_key(message, field: str) -> bytes:
    """The wire-format key of a length-delimited ``field`` of ``message`` (its number, wire type 2)."""
    return _varint(message.DESCRIPTOR.fields_by_name[field].number << 3 | 2)


def _varint(value: int) -> bytes:
    """``value`` as protobuf's base-128 varint."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _copy_range(source, target, offset: int, length: int) -> None:
    """Copy ``length`` bytes of the open file ``source`` from ``offset`` to the end of the open file ``target``."""
    source.seek(offset)
    while length:
        chunk = source.read(min(length, 1 << 24))
        if not chunk:
            raise OSError(f"{source.name} ends before the weights it is said to hold")
        target.write(chunk)
        length -= len(chunk)


def _external_count(model) -> int:
    """Tensors of ``model`` stored outside the file: initializers and node attributes, subgraphs included."""
    import onnx

    def tensors(graph):
        yield from graph.initializer
        for node in graph.node:
            for attribute in node.attribute:
                yield from [attribute.t] if attribute.HasField("t") else []
                yield from attribute.tensors
                for subgraph in [attribute.g] if attribute.HasField("g") else []:
                    yield from tensors(subgraph)
                for subgraph in attribute.graphs:
                    yield from tensors(subgraph)

    return sum(tensor.data_location == onnx.TensorProto.EXTERNAL for tensor in tensors(model.graph))


def write_fp16(source: Path, target: Path) -> None:
    """A float16 copy of ``source`` with float32 inputs and outputs (``keep_io_types``), as transformers.js's
    ``model_fp16.onnx`` files are: a caller feeds and reads the same arrays as for the float32 file."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    large = _stored_bytes(source) > EXTERNAL_DATA_BYTES
    # Given the path, the converter infers shapes file to file and loads the result once; given a loaded model,
    # it serialised it for the inference and parsed it back (0.3–1.3 GiB more at the peak for a ViT-B-16's
    # model.onnx in two runs; the file written is the same). Above 2 GiB protobuf refuses the inference's file;
    # the converter works without it.
    half = convert_float_to_float16(str(source), keep_io_types=True, disable_shape_infer=large)
    _save_proto(half, target)


def write_int8(source: Path, target: Path) -> None:
    """``source`` with 8-bit weights and dynamically quantized activations (onnxruntime's ``quantize_dynamic``),
    the weights' type chosen as transformers.js's own ``q8`` files are: unsigned in a graph with a ``Conv`` (the
    image tower's patch embedding), signed otherwise.

    onnxruntime-web has no ``ConvInteger`` for signed weights. And on x86 CPUs without VNNI, onnxruntime's
    signed-weight kernels saturate their int16 sums: a full-size ViT-B-16's image features came out at cosine
    0.988 against float32 on an AVX2-only AMD EPYC, 0.9999 with unsigned weights."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    weights = QuantType.QUInt8 if "Conv" in _op_types(source) else QuantType.QInt8
    # int8 weights take a quarter of float32's room: only a model four times past the cap needs external data.
    large = _stored_bytes(source) > 4 * EXTERNAL_DATA_BYTES
    with _root_logging_quiet():  # its advice to pre-process the model, logged on the root logger
        quantize_dynamic(source, target, weight_type=weights, use_external_data_format=large)
    if large:  # onnxruntime names the data file <name>.data; move it to the name transformers.js asks for
        import onnx

        _save_proto(onnx.load(target), target)
        target.with_name(f"{target.name}.data").unlink(missing_ok=True)


@contextlib.contextmanager
def _root_logging_quiet() -> Iterator[None]:
    """The root logger at ERROR with a handler of its own for the block, so that ``logging.warning`` neither
    prints nor installs a handler (``basicConfig``) that would stay; both restored after."""
    root, handler = logging.getLogger(), logging.NullHandler()
    level = root.level
    root.addHandler(handler)
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)
        root.removeHandler(handler)


def _op_types(path: Path) -> set[str]:
    """The op types of the main graph of the ONNX file ``path`` (its external weights left unread)."""
    import onnx

    return {node.op_type for node in onnx.load(path, load_external_data=False).graph.node}


def _stored_bytes(path: Path) -> int:
    """The bytes the ONNX file ``path`` takes with its ``<name>_data`` file, if it has one."""
    data = path.with_name(data_file_name(path.name))
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def _weight_bytes(model) -> int:
    return sum(len(tensor.raw_data) for tensor in model.graph.initializer)


def _save_proto(model, path: Path) -> None:
    import onnx

    large = _weight_bytes(model) > EXTERNAL_DATA_BYTES
    location = data_file_name(path.name)
    onnx.save_model(model, path, save_as_external_data=large, all_tensors_to_one_file=True, location=location)
