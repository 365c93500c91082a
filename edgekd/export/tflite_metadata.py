"""TFLite model metadata (the `TFLITE_METADATA` schema of tflite-support, metadata_schema.fbs),
written with the `flatbuffers` package.

tflite-support itself cannot be installed beside onnx and litert (it pins protobuf<4), so the
metadata is written here: a ModelMetadata flatbuffer (file identifier "M001") stored as a model
buffer named TFLITE_METADATA, with input normalisation (NormalizationOptions: mean, std) and an
output `labels.txt` (TENSOR_AXIS_LABELS) packed as a zip appended to the model, exactly where
tflite-support's MetadataPopulator puts associated files. Android's Task Library and tflite-support's
MetadataDisplayer read this layout.

Field numbers below are the declaration order in metadata_schema.fbs (vtable slot = 4 + 2 * index).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import flatbuffers
from flatbuffers import number_types as N
from flatbuffers.table import Table

from edgekd.export.common import ExportMeta

METADATA_NAME = "TFLITE_METADATA"
LABELS_FILE = "labels.txt"
TENSOR_AXIS_LABELS = 2  # AssociatedFileType
FEATURE_PROPERTIES = 1  # ContentProperties union
NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions union


def _table(b: flatbuffers.Builder, fields: list[tuple[str, int, object]]) -> int:
    """fields: (kind, index, value) with kind in "off" (offset), "u8" (ubyte)."""
    b.StartObject(max(i for _, i, _ in fields) + 1 if fields else 0)
    for kind, i, v in fields:
        if v is None:
            continue
        if kind == "off":
            b.PrependUOffsetTRelativeSlot(i, v, 0)
        else:
            b.PrependUint8Slot(i, v, 0)
    return b.EndObject()


def _vector(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for o in reversed(offsets):
        b.PrependUOffsetTRelative(o)
    return b.EndVector()


def _floats(b: flatbuffers.Builder, values: list[float]) -> int:
    b.StartVector(4, len(values), 4)
    for v in reversed(values):
        b.PrependFloat32(v)
    return b.EndVector()


def build_metadata(meta: ExportMeta, quant: str) -> bytes:
    b = flatbuffers.Builder(1024)
    s = b.CreateString
    # inputs: normalisation + feature content (float x); token ids and mask carry no normalisation
    in_tensors = []
    for name, text in meta.input_descriptions().items():
        fields = [("off", 0, s(name)), ("off", 1, s(text)),
                  ("off", 3, _table(b, [("u8", 0, FEATURE_PROPERTIES), ("off", 1, _table(b, []))]))]
        if not meta.text:
            norm = _table(b, [("off", 0, _floats(b, [meta.mean])), ("off", 1, _floats(b, [meta.std]))])
            unit = _table(b, [("u8", 0, NORMALIZATION_OPTIONS), ("off", 1, norm)])
            fields.append(("off", 4, _vector(b, [unit])))
        in_tensors.append(_table(b, fields))
    # output: probabilities + labels file
    labels = _table(b, [("off", 0, s(LABELS_FILE)), ("off", 1, s("class labels, one per line")),
                        ("u8", 2, TENSOR_AXIS_LABELS)])
    feature2 = _table(b, [])
    out_content = _table(b, [("u8", 0, FEATURE_PROPERTIES), ("off", 1, feature2)])
    out_tensor = _table(b, [("off", 0, s("probability")), ("off", 1, s("probability of each class")),
                            ("off", 3, out_content), ("off", 6, _vector(b, [labels]))])
    subgraph = _table(b, [("off", 2, _vector(b, in_tensors)), ("off", 3, _vector(b, [out_tensor]))])
    desc = meta.description or f"{meta.name} classifier ({quant}), distilled with edgekd"
    root = _table(b, [("off", 0, s(meta.name)), ("off", 1, s(desc)), ("off", 2, s(meta.version)),
                      ("off", 3, _vector(b, [subgraph])), ("off", 4, s(meta.author)),
                      ("off", 5, s(meta.license)), ("off", 7, s("1.0.0"))])
    b.Finish(root, file_identifier=b"M001")
    return bytes(b.Output())


def attach_metadata(model_bytes: bytes, meta: ExportMeta, quant: str) -> bytes:
    """The model with TFLITE_METADATA added and labels.txt appended as a zip."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    _shorten_tensor_names(model)
    buf = schema.BufferT()
    buf.data = list(build_metadata(meta, quant))
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_NAME] + [entry]
    out = io.BytesIO(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a") as z:  # appended after the flatbuffer, as tflite-support does
        info = zipfile.ZipInfo(LABELS_FILE, date_time=(1980, 1, 1, 0, 0, 0))  # fixed: same inputs, same bytes
        z.writestr(info, "\n".join(meta.labels) + "\n")
    return out.getvalue()


def _shorten_tensor_names(model) -> None:
    """Tensor names are debug strings (full PyTorch module paths, ~150 bytes each): on a 15 kB int8
    student they were a third of the file. Signatures address tensors by index, so inner tensors get
    short names; input and output tensors keep theirs."""
    for sg in model.subgraphs:
        keep = set(sg.inputs.tolist() if hasattr(sg.inputs, "tolist") else sg.inputs) | \
            set(sg.outputs.tolist() if hasattr(sg.outputs, "tolist") else sg.outputs)
        for i, t in enumerate(sg.tensors):
            if i not in keep:
                t.name = f"t{i}".encode()


# --- reading back (tests, `edgekd verify`)

def _tab(buf: bytes, pos: int) -> Table:
    return Table(buf, pos)


def _field(t: Table, i: int) -> int:
    return t.Offset(4 + 2 * i)


def _str(t: Table, i: int) -> str | None:
    o = _field(t, i)
    return t.String(o + t.Pos).decode() if o else None


def _sub(t: Table, i: int) -> Table | None:
    o = _field(t, i)
    return _tab(t.Bytes, t.Indirect(o + t.Pos)) if o else None


def _vec_tables(t: Table, i: int) -> list[Table]:
    o = _field(t, i)
    if not o:
        return []
    start, n = t.Vector(o), t.VectorLen(o)
    return [_tab(t.Bytes, t.Indirect(start + 4 * k)) for k in range(n)]


def _vec_floats(t: Table, i: int) -> list[float]:
    o = _field(t, i)
    if not o:
        return []
    start, n = t.Vector(o), t.VectorLen(o)
    return [t.Get(N.Float32Flags, start + 4 * k) for k in range(n)]


def read_metadata(path: Path) -> dict:
    """Parse a .tflite file's TFLITE_METADATA and labels back into a dict."""
    from ai_edge_litert.tools import flatbuffer_utils

    data = Path(path).read_bytes()
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    entry = next((m for m in (model.metadata or [])
                  if (m.name.decode() if isinstance(m.name, bytes) else m.name) == METADATA_NAME), None)
    if entry is None:
        return {}
    raw = bytes(bytearray(model.buffers[entry.buffer].data))
    if raw[4:8] != b"M001":
        raise ValueError(f"{path}: TFLITE_METADATA buffer lacks the M001 identifier")
    root = _tab(raw, flatbuffers.encode.Get(N.UOffsetTFlags.packer_type, raw, 0))
    sg = _vec_tables(root, 3)[0]
    tin, tout = _vec_tables(sg, 2)[0], _vec_tables(sg, 3)[0]
    unit = _vec_tables(tin, 4)[0]
    norm = _sub(unit, 1)
    files = [_str(f, 0) for f in _vec_tables(tout, 6)]
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        labels = z.read(LABELS_FILE).decode().splitlines() if LABELS_FILE in z.namelist() else []
    return {"name": _str(root, 0), "description": _str(root, 1), "version": _str(root, 2),
            "author": _str(root, 4), "license": _str(root, 5), "min_parser_version": _str(root, 7),
            "input": _str(tin, 0), "mean": _vec_floats(norm, 0), "std": _vec_floats(norm, 1),
            "output": _str(tout, 0), "associated_files": files, "labels": labels}
