"""A model folder from elsewhere stays inside itself, and damage ends in a clean error.

Every file a manifest names must be a bare file name of the folder (no absolute path, no
``..``, no link leading out), ONNX external data is refused, and fuzzed manifests,
``tokenizer.json`` files and ``.onnx`` bytes (with their checksums recomputed, so the checks
on size and sha256 pass) end in a ``ModelFormatError`` or a working encoder, never in a crash
of the process. The fuzzed cases run in a few subprocesses; a case that kills one is reported
by name and the rest run on in a new process.
"""

from __future__ import annotations

import codecs
import json
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import run_cases
from sse_onnx import Encoder, ModelFormatError
from sse_onnx.folder import MANIFEST_FILE, TOKENIZER_FILE, VARIANT_FILES, FileEntry

MODEL = VARIANT_FILES["fp32"]


@pytest.fixture(scope="module")
def folder(tiny_checkpoint: Path, exported: Callable[..., Path]) -> Path:
    return exported(tiny_checkpoint, None, ("fp32",))


def copy_of(folder: Path, target: Path) -> Path:
    shutil.copytree(folder, target)
    return target


def edit_manifest(folder: Path, edit: Callable[[dict[str, Any]], object]) -> None:
    data = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    edit(data)
    (folder / MANIFEST_FILE).write_text(json.dumps(data), encoding="utf-8")


def point_entry(folder: Path, key: str, name: str, source: Path) -> None:
    """Make the manifest's ``key`` entry name ``name``, with ``source``'s size and sha256."""
    entry = {**asdict(FileEntry.of(source.parent, source.name)), "file": name}

    def edit(data: dict[str, Any]) -> None:
        if key == "tokenizer":
            data["tokenizer"] = entry
        else:
            data["variants"][key] = entry

    edit_manifest(folder, edit)


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("../outside.onnx", r"variants\['fp32'\] names the file '\.\./outside\.onnx', which leads"),
        ("..\\outside.onnx", r"variants\['fp32'\] names .* which leads out of the folder"),
        ("ABSOLUTE", r"variants\['fp32'\] names the file '/.*', an absolute path"),
        ("C:\\outside.onnx", r"an absolute path"),
        ("sub/model.onnx", r"which is a path, not a file name"),
        ("..", r"which leads out of the folder"),
        ("", r"which is not a file name"),
    ],
)
def test_a_model_entry_outside_the_folder_is_refused(
    folder: Path, tmp_path: Path, name: str, match: str
) -> None:
    # The file it names exists, with the recorded size and sha256: only the place is wrong.
    outside = tmp_path / "outside.onnx"
    shutil.copy(folder / MODEL, outside)
    (tmp_path / "sub").mkdir()
    shutil.copy(folder / MODEL, tmp_path / "sub" / MODEL)
    broken = copy_of(folder, tmp_path / "model")
    if name == "ABSOLUTE":
        name = str(outside.resolve())
    point_entry(broken, "fp32", name, outside)
    with pytest.raises(ModelFormatError, match=match):
        Encoder(broken)


def test_a_tokenizer_entry_outside_the_folder_is_refused(folder: Path, tmp_path: Path) -> None:
    shutil.copy(folder / TOKENIZER_FILE, tmp_path / TOKENIZER_FILE)
    broken = copy_of(folder, tmp_path / "model")
    point_entry(broken, "tokenizer", f"../{TOKENIZER_FILE}", tmp_path / TOKENIZER_FILE)
    with pytest.raises(ModelFormatError, match=r"tokenizer names the file '\.\./tokenizer\.json'"):
        Encoder(broken)


@pytest.mark.parametrize("name", [MODEL, TOKENIZER_FILE])
def test_a_link_leading_out_of_the_folder_is_refused(
    folder: Path, tmp_path: Path, name: str
) -> None:
    outside = tmp_path / f"outside-{name}"
    shutil.copy(folder / name, outside)
    broken = copy_of(folder, tmp_path / "model")
    (broken / name).unlink()
    try:
        (broken / name).symlink_to(outside)
    except OSError:
        pytest.skip("this file system cannot hold symbolic links")
    with pytest.raises(ModelFormatError, match=rf"{name}, named by manifest.json .* is a link to"):
        Encoder(broken)


def test_a_link_inside_the_folder_loads(folder: Path, tmp_path: Path) -> None:
    linked = copy_of(folder, tmp_path / "model")
    (linked / MODEL).rename(linked / "stored.onnx")
    try:
        (linked / MODEL).symlink_to("stored.onnx")
    except OSError:
        pytest.skip("this file system cannot hold symbolic links")
    texts = ["hello world", "the cat sat"]
    np.testing.assert_array_equal(Encoder(linked).encode(texts), Encoder(folder).encode(texts))


def with_external_data(model_path: Path, location: str, *, constant: bool = False) -> bytes:
    """The model with its table (or a Constant node) stored as ONNX external data."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    tensor = model.graph.initializer[0]
    if constant:
        value = numpy_helper.from_array(numpy_helper.to_array(tensor), "copy")
        node = onnx.helper.make_node("Constant", [], ["unused_copy"], value=value)
        model.graph.node.append(node)  # appends a copy
        tensor = model.graph.node[-1].attribute[0].t
    array = numpy_helper.to_array(tensor)
    (model_path.parent / "table.bin").write_bytes(array.tobytes())
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    data: bytes = model.SerializeToString()
    return data


@pytest.mark.parametrize(
    ("location", "constant"),
    [
        ("table.bin", False),
        ("../table.bin", False),
        ("table.bin", True),
        # onnxruntime's tag for "the offset is a memory address": never from a file.
        ("*/_ORT_MEM_ADDR_/*", False),
    ],
)
def test_onnx_external_data_is_refused(
    folder: Path, tmp_path: Path, location: str, constant: bool
) -> None:
    broken = copy_of(folder, tmp_path / "model")
    data = with_external_data(broken / MODEL, location, constant=constant)
    shutil.copy(broken / "table.bin", tmp_path / "table.bin")
    (broken / MODEL).write_bytes(data)
    point_entry(broken, "fp32", MODEL, broken / MODEL)
    with pytest.raises(ModelFormatError, match=r"model\.onnx keeps the data of 1 tensor.*external"):
        Encoder(broken)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ({"pad_token_id": 32}, "pad_token_id 32 is not a row of the 32-row table"),
        ({"pad_token_id": 2**63}, "pad_token_id is 9223372036854775808, not a non-negative"),
        ({"default_variant": ["fp32"]}, r"default_variant \['fp32'\] is not one of"),
        ({"pooling": {"max_tokens": 2**70}}, "pooling .* holds an unknown head .* or a value"),
        ({"tokenizer": {"file": "é" * 200, "bytes": 1, "sha256": "0" * 64}}, "400 bytes long"),
        ({"tokenizer": {"file": "\ud800", "bytes": 1, "sha256": "0" * 64}}, "cannot encode"),
    ],
)
def test_manifest_values_numpy_and_the_file_system_cannot_take(
    folder: Path, tmp_path: Path, edit: dict[str, object], match: str
) -> None:
    broken = copy_of(folder, tmp_path / "model")
    edit_manifest(broken, lambda data: data.update(edit))
    with pytest.raises(ModelFormatError, match=match):
        Encoder(broken)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (
            {"family": "bert"},
            r"family 'bert' is not one of the known families "
            r"\('sse', 'sentence-transformers', 'model2vec'\)",
        ),
        ({"family": ["sse"]}, r"family \['sse'\] is not one of the known families"),
        ({"source_dim": 8}, r"dim 16 is more than source_dim 8"),
        ({"extra": 1}, r"manifest\.json holds the unknown key 'extra' \(known: default_variant,"),
        ({"extra": 1, "more": 2}, r"holds the unknown keys 'extra', 'more' \(known: "),
        (
            {"tokenizer": {"file": "tokenizer.json", "bytes": 1, "sha256": "0" * 64, "md5": ""}},
            r"tokenizer holds the unknown key 'md5' \(known: bytes, file, sha256\)",
        ),
    ],
)
def test_a_hand_edited_manifest_is_refused_by_name(
    folder: Path, tmp_path: Path, edit: dict[str, object], match: str
) -> None:
    broken = copy_of(folder, tmp_path / "model")
    edit_manifest(broken, lambda data: data.update(edit))
    with pytest.raises(ModelFormatError, match=match):
        Encoder(broken)


def test_a_manifest_that_starts_with_a_utf8_bom_loads(folder: Path, tmp_path: Path) -> None:
    # Windows editors save UTF-8 with a byte order mark.
    copy = copy_of(folder, tmp_path / "model")
    manifest = copy / MANIFEST_FILE
    manifest.write_bytes(codecs.BOM_UTF8 + manifest.read_bytes())
    texts = ["hello world", "the café sat on the mat ."]
    np.testing.assert_array_equal(Encoder(copy).encode(texts), Encoder(folder).encode(texts))


def test_a_graph_that_loads_but_gives_other_shapes_fails_at_load(
    folder: Path, tmp_path: Path
) -> None:
    onnx = pytest.importorskip("onnx")
    broken = copy_of(folder, tmp_path / "model")
    model = onnx.load(str(broken / MODEL))
    # token_sum not squeezed: [batch, 1, dim], and the mean broadcast to [batch, batch, dim].
    squeeze = next(node for node in model.graph.node if node.output[0] == "token_sum")
    squeeze.op_type, squeeze.input[1:] = "Identity", []
    (broken / MODEL).write_bytes(model.SerializeToString())
    point_entry(broken, "fp32", MODEL, broken / MODEL)
    with pytest.raises(ModelFormatError, match=r"gives sentence_embedding as ndarray \(2, 2, 16\)"):
        Encoder(broken)


# --------------------------------------------------------------------------- fuzzing

#: Runs in a subprocess: loads each case folder named on stdin, embeds a few texts, and prints
#: one line before and one JSON line after each case, so that a crash names its case.
_WORKER = """
import json, sys
from sse_onnx import Encoder, ModelFormatError, SSEError
for line in sys.stdin:
    case = line.strip()
    print("start", case, flush=True)
    try:
        encoder = Encoder(case, threads=1)
    except ModelFormatError as exc:
        outcome = f"error: {exc}"
    except BaseException as exc:
        outcome = f"unclean load: {type(exc).__name__}: {exc}"
    else:
        try:
            encoder.encode(["hello world", "", "the café sat on the mat ."])
            encoder.encode("東京")
            outcome = "load"
        except SSEError as exc:
            outcome = f"error at encode: {exc}"
        except BaseException as exc:
            outcome = f"unclean encode: {type(exc).__name__}: {exc}"
    print("end", json.dumps({"case": case, "outcome": outcome}), flush=True)
"""

_ODD_INTS = [-1, 0, 1, 31, 32, 2**31, 2**63, 2**70]
_ODD_STRINGS = [
    "", "x", "[UNK]", "##", "../outside.onnx", "/etc/hostname", "model.onnx/", "nul\u0000",
    "\ud800", "0" * 64, "é" * 1000,
]  # fmt: skip
_ODD_VALUES: list[object] = [
    None, True, 1.5, [], [1, 2], {}, {"file": 3}, *_ODD_INTS, *_ODD_STRINGS,
]  # fmt: skip


def _mutate_json(value: Any, rng: random.Random, keep_type: bool, depth: int = 0) -> Any:
    """``value`` with one entry somewhere replaced by an odd value (of the same JSON type if
    ``keep_type``, which gets past a schema to the checks behind it) or removed."""
    if isinstance(value, dict) and value and depth < 8:
        key = rng.choice(sorted(value))
        if not keep_type and rng.random() < 0.2:
            return {k: v for k, v in value.items() if k != key}
        return {**value, key: _mutate_json(value[key], rng, keep_type, depth + 1)}
    if isinstance(value, list) and value and depth < 8:
        index = rng.randrange(len(value))
        copy = list(value)
        copy[index] = _mutate_json(copy[index], rng, keep_type, depth + 1)
        return copy
    if keep_type and isinstance(value, bool):
        return not value
    if keep_type and isinstance(value, int):
        return rng.choice(_ODD_INTS)
    if keep_type and isinstance(value, str):
        return rng.choice(_ODD_STRINGS)
    return rng.choice(_ODD_VALUES)


def _mutate_bytes(data: bytes, rng: random.Random, edits: int = 1) -> bytes:
    """``data`` with bytes flipped, cut, inserted or repeated at ``edits`` places."""
    out = bytearray(data)
    for _ in range(edits):
        kind = rng.randrange(5)
        at = rng.randrange(len(out) + 1)
        if kind == 0 and out:  # flip a few bytes near one place
            for i in range(at, min(at + rng.randint(1, 8), len(out))):
                out[i] = rng.randrange(256)
        elif kind == 1:  # cut
            del out[at : at + rng.randint(1, 64)]
        elif kind == 2:  # insert random bytes
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif kind == 3 and out:  # repeat a slice
            start = rng.randrange(len(out))
            out[at:at] = out[start : start + rng.randint(1, 256)]
        else:  # a large varint where a length or tag may be
            out[at:at] = b"\xff" * rng.randint(1, 10) + b"\x01"
    return bytes(out)


def _mutate_model(data: bytes, rng: random.Random) -> bytes:
    """The ONNX model ``data`` with one field of its graph changed, still valid protobuf."""
    onnx = pytest.importorskip("onnx")
    model = onnx.ModelProto.FromString(data)
    graph = model.graph
    node = rng.choice(graph.node)
    tensor = rng.choice([tensor for tensor in graph.initializer if tensor.dims])
    names = [name for n in graph.node for name in (*n.input, *n.output)]
    kind = rng.randrange(12)
    if kind < 6:
        _mutate_tensor_or_node(kind, tensor, node, names, rng)
    else:
        _mutate_graph(kind, model, node, rng)
    result: bytes = model.SerializeToString()
    return result


def _mutate_tensor_or_node(
    kind: int, tensor: Any, node: Any, names: list[str], rng: random.Random
) -> None:
    """Mutations 0-5 of :func:`_mutate_model`: an initializer's dims, type or data, or a node's
    operator, domain or input."""
    if kind == 0:
        tensor.dims[rng.randrange(len(tensor.dims))] = rng.choice([0, 1, 3, 33, -1, 2**40])
    elif kind == 1:
        tensor.data_type = rng.randrange(26)
    elif kind == 2:
        tensor.raw_data = tensor.raw_data[: rng.randrange(len(tensor.raw_data) + 1)] or b"\x00"
    elif kind == 3:
        node.op_type = rng.choice(["Gather", "Loop", "If", "Reshape", "NoSuchOp", "Scan", ""])
    elif kind == 4:
        node.domain = rng.choice(["com.microsoft", "ai.onnx.ml", "no.such.domain"])
    else:
        node.input[rng.randrange(len(node.input))] = rng.choice([*names, "missing", ""])


def _mutate_graph(kind: int, model: Any, node: Any, rng: random.Random) -> None:
    """Mutations 6-11 of :func:`_mutate_model`: an attribute, an output's type, the opset, the IR
    version, or a node removed or doubled (also mutation 6 of a node without attributes)."""
    graph = model.graph
    if kind == 6 and node.attribute:
        attribute = rng.choice(node.attribute)
        attribute.i = rng.choice([-5, 99, 2**40])
        attribute.type = rng.randrange(15)
    elif kind == 7:
        output = rng.choice(graph.output)
        output.type.tensor_type.elem_type = rng.randrange(26)
    elif kind == 8:
        model.opset_import[0].version = rng.choice([1, 6, 99999])
    elif kind == 9:
        model.ir_version = rng.choice([0, 3, 99])
    elif kind == 10:
        graph.node.remove(node)
    else:
        graph.node.append(node)  # a second node writing the same output


def _record(folder: Path, key: str, name: str) -> None:
    """Record the file ``name`` under the manifest entry ``key`` with its size and sha256."""
    entry = asdict(FileEntry.of(folder, name))

    def edit(data: dict[str, Any]) -> None:
        if key == "tokenizer":
            data["tokenizer"] = entry
        else:
            data["variants"][key] = entry

    edit_manifest(folder, edit)


def _fuzz_cases(source: Path, root: Path, seed: int = 0) -> list[Path]:
    """60 mutated .onnx files, 40 mutated manifests and 20 mutated tokenizers, each a folder."""
    rng = random.Random(seed)
    model = (source / MODEL).read_bytes()
    manifest = json.loads((source / MANIFEST_FILE).read_text(encoding="utf-8"))
    tokenizer_text = (source / TOKENIZER_FILE).read_text(encoding="utf-8")
    tokenizer = json.loads(tokenizer_text)
    cases = []
    for index in range(120):
        case = copy_of(source, root / f"case-{index:03d}")
        if index < 60:
            mutate = _mutate_bytes if index % 2 else _mutate_model
            (case / MODEL).write_bytes(mutate(model, rng))
            _record(case, "fp32", MODEL)
        elif index < 100:
            if index % 4 == 0:
                text = _mutate_bytes(json.dumps(manifest).encode(), rng)
                (case / MANIFEST_FILE).write_bytes(text)
            else:
                mutated = _mutate_json(manifest, rng, keep_type=index % 4 != 1)
                (case / MANIFEST_FILE).write_text(json.dumps(mutated), encoding="utf-8")
        else:
            if index % 4 == 0:
                (case / TOKENIZER_FILE).write_bytes(_mutate_bytes(tokenizer_text.encode(), rng))
            else:
                mutated = _mutate_json(tokenizer, rng, keep_type=index % 4 != 1)
                (case / TOKENIZER_FILE).write_text(json.dumps(mutated), encoding="utf-8")
            _record(case, "tokenizer", TOKENIZER_FILE)
        cases.append(case)
    return cases


def test_fuzzed_folders_end_in_a_clean_error_or_a_load(folder: Path, tmp_path: Path) -> None:
    cases = _fuzz_cases(folder, tmp_path)
    results = run_cases(_WORKER, cases)
    outcomes = [results[str(case)] for case in cases]

    kinds = [outcome.split(":")[0] for outcome in outcomes]
    bad = {
        case.name: outcome
        for case, kind, outcome in zip(cases, kinds, outcomes, strict=True)
        if kind not in ("load", "error", "error at encode")
    }
    assert not bad, bad
    # The mutations reach past the first checks: some of each kind load, some fail cleanly.
    for part in (kinds[:60], kinds[60:100], kinds[100:]):
        assert {"load", "error"} <= set(part), part
