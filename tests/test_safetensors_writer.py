"""The streaming safetensors writer on its own: exact bytes for every dtype, the file layout, views, shards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from support.converted import small_config
from transformers import ChineseCLIPModel

from chclip_convert import ConversionError, convert_checkpoint
from chclip_convert.files.safetensors_writer import INDEX_FILE, SAFETENSORS_DTYPES, write_weights

REQUIRED_DTYPES = [
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.float64,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
]
NO_LIMIT = 10**12


def sample(dtype: torch.dtype, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Seeded values spanning ``dtype``: floats with NaN, ±Inf and -0 when there are any, integers to the limits."""
    generator = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.rand(shape, generator=generator) > 0.5
    if dtype.is_floating_point:
        values = torch.randn(shape, generator=generator, dtype=torch.float64) * 4
        values.view(-1)[:4] = torch.tensor([float("nan"), float("inf"), float("-inf"), -0.0])[: values.numel()]
        return values.to(dtype)
    info = torch.iinfo(dtype)
    return torch.randint(info.min, info.max, shape, generator=generator, dtype=dtype)


def bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous().reshape(-1).view(torch.uint8)


def assert_same(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Same names; per tensor the same dtype, shape and bytes (NaN payloads and -0 included)."""
    assert set(got) == set(expected)
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype and got[name].shape == tensor.shape, name
        assert torch.equal(bits(got[name]), bits(tensor)), name


def specs_of(tensors: dict[str, torch.Tensor]) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    return [(name, tuple(tensor.shape), tensor.dtype) for name, tensor in tensors.items()]


def write(folder: Path, tensors: dict[str, torch.Tensor], max_shard_bytes: int = NO_LIMIT) -> list[str]:
    return write_weights(folder, specs_of(tensors), iter(tensors.items()), max_shard_bytes=max_shard_bytes)


def read(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(path, framework="pt") as file:
        return {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118 (safe_open is no dict)


def header_of(path: Path) -> tuple[int, dict]:
    """(where the data starts, the JSON header) read as safetensors defines them."""
    raw = path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    return 8 + length, json.loads(raw[8 : 8 + length])


@pytest.mark.parametrize("dtype", sorted(set(REQUIRED_DTYPES) | set(SAFETENSORS_DTYPES), key=str), ids=str)
def test_every_dtype_round_trips_exactly(tmp_path, dtype):
    tensors = {"matrix": sample(dtype, (3, 5)), "vector": sample(dtype, (7,), seed=1), "one": sample(dtype, (1,))}
    assert write(tmp_path, tensors) == ["model.safetensors"]
    assert_same(read(tmp_path / "model.safetensors"), tensors)
    assert_same(load_file(tmp_path / "model.safetensors"), tensors)


def test_empty_tensors_and_scalars_round_trip(tmp_path):
    tensors = {
        "empty_first": torch.zeros(0, 4),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "empty_middle": torch.zeros(3, 0, 2, dtype=torch.int8),
        "vector": sample(torch.float16, (5,)),
        "scalar_bool": torch.tensor(True),
        "empty_last": torch.zeros(0, dtype=torch.bfloat16),
    }
    write(tmp_path, tensors)
    assert_same(read(tmp_path / "model.safetensors"), tensors)
    assert_same(load_file(tmp_path / "model.safetensors"), tensors)
    _, header = header_of(tmp_path / "model.safetensors")
    assert header["scalar"]["shape"] == [] and header["empty_middle"]["shape"] == [3, 0, 2]
    begin, end = header["empty_middle"]["data_offsets"]
    assert begin == end


@pytest.mark.parametrize("name_length", range(1, 9))
def test_data_starts_at_a_multiple_of_8_and_offsets_tile_the_data(tmp_path, name_length):
    # Names of each length shift the JSON's length through every remainder modulo 8.
    tensors = {"a" * name_length: sample(torch.int8, (3,)), "b": sample(torch.float32, (2, 3)), "c": torch.zeros(0)}
    write(tmp_path, tensors)
    path = tmp_path / "model.safetensors"
    data_start, header = header_of(path)
    assert data_start % 8 == 0
    assert header.pop("__metadata__") == {"format": "pt"}
    raw, end = path.read_bytes(), 0
    for name, tensor in tensors.items():  # in order, each right after the previous one, of its own size
        assert header[name]["data_offsets"] == [end, end + tensor.nbytes], name
        assert raw[data_start + end : data_start + end + tensor.nbytes] == bits(tensor).numpy().tobytes(), name
        end += tensor.nbytes
    assert data_start + end == path.stat().st_size
    assert_same(read(path), tensors)
    assert_same(load_file(path), tensors)


@pytest.mark.parametrize("max_shard_bytes", [NO_LIMIT, 40])
def test_views_of_one_storage_and_non_contiguous_tensors_write_their_own_values(tmp_path, max_shard_bytes):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    fused = torch.arange(18, dtype=torch.float16).reshape(6, 3)  # q, k, v as rows of one tensor
    tensors = {
        "transposed": base.t(),
        "strided": base[1:4:2, ::3],
        "row": base[2],
        "expanded": torch.tensor([1.0, -2.0]).expand(3, 2),
        "q": fused[0:2],
        "k": fused[2:4],
        "v": fused[4:6],
        "base": base,
    }
    before = base.clone()
    files = write(tmp_path, tensors, max_shard_bytes)
    written = {}
    for file in files:
        if file != INDEX_FILE:
            written.update(read(tmp_path / file))
    assert_same(written, {name: tensor.contiguous() for name, tensor in tensors.items()})
    assert torch.equal(base, before)
    assert (INDEX_FILE in files) == (max_shard_bytes == 40)


def test_shards_index_and_files_agree(tmp_path):
    tensors = {f"small.{i}": sample(torch.float32, (5,), seed=i) for i in range(6)}  # 20 bytes each
    tensors["large"] = sample(torch.int64, (20,))  # 160 bytes: above the limit, a shard of its own
    tensors["after"] = sample(torch.bfloat16, (3, 3))
    files = write(tmp_path, tensors, max_shard_bytes=50)
    shards = [file for file in files if file != INDEX_FILE]
    assert len(shards) >= 3 and files[-1] == INDEX_FILE
    assert shards == [f"model-{n:05d}-of-{len(shards):05d}.safetensors" for n in range(1, len(shards) + 1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    assert index["metadata"]["total_size"] == sum(tensor.nbytes for tensor in tensors.values())
    assert set(index["weight_map"]) == set(tensors) and set(index["weight_map"].values()) == set(shards)
    for shard in shards:
        held = read(tmp_path / shard)
        assert set(held) == {name for name, file in index["weight_map"].items() if file == shard}, shard
        assert_same(held, {name: tensors[name] for name in held})
        assert len(held) == 1 or sum(tensor.nbytes for tensor in held.values()) <= 50, shard
    # huggingface_hub gives an oversized tensor the next shard number at once, ahead of the shard still being
    # filled: the files are not written in the order the tensors arrive, and must still hold them right.
    assert index["weight_map"]["large"] < index["weight_map"]["small.5"]


def test_progress_counts_the_bytes_and_tensors_written_across_shards(tmp_path):
    tensors = {f"t.{i}": sample(torch.float32, (i + 1,), seed=i) for i in range(5)}  # 4, 8, … 20 bytes
    events = []
    write_weights(tmp_path, specs_of(tensors), iter(tensors.items()), max_shard_bytes=24, progress=events.append)
    sizes = [tensor.nbytes for tensor in tensors.values()]
    assert [event.done for event in events] == [sum(sizes[: n + 1]) for n in range(len(sizes))]
    assert {(event.total, event.unit, event.stage, event.count) for event in events} == {
        (sum(sizes), "B", "writing weights", len(tensors))
    }
    assert [event.index for event in events] == [1, 2, 3, 4, 5] and events[-1].fraction == 1.0
    assert len(list(tmp_path.glob("*.safetensors"))) > 1  # one count over every shard


def test_from_pretrained_loads_a_sharded_folder_with_every_key(tmp_path):
    torch.manual_seed(0)
    state = {name: torch.randn_like(tensor) for name, tensor in ChineseCLIPModel(small_config()).state_dict().items()}
    # transformers 5's ChineseCLIP _init_weights zeroes the word embeddings' padding row after loading, whatever
    # the file holds (its guard looks at the row's view, which lacks the loaded flag): write it as zeros.
    state["text_model.embeddings.word_embeddings.weight"][small_config().text_config.pad_token_id] = 0
    total = sum(tensor.nbytes for tensor in state.values())
    files = write(tmp_path, state, max_shard_bytes=total // 4)
    small_config().save_pretrained(tmp_path)
    assert len(files) >= 4  # three shards or more, and the index
    model, info = ChineseCLIPModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert_same(model.state_dict(), state)


@pytest.mark.parametrize(
    ("size", "limit"), [("1MB", 10**6), ("5GB", 5 * 10**9), (300_000, 300_000), ("300000", 300_000)]
)
def test_shard_size_strings_are_read_as_huggingface_hub_reads_them(demo_checkpoint, tmp_path, size, limit):
    summary = convert_checkpoint(demo_checkpoint, tmp_path / "hf", max_shard_size=size)
    shards = [file for file in summary.files if file.endswith(".safetensors")]
    total = sum(tensor.nbytes for shard in shards for tensor in read(tmp_path / "hf" / shard).values())
    assert (len(shards) > 1) == (total > limit) and (INDEX_FILE in summary.files) == (len(shards) > 1)
    for shard in shards:
        held = read(tmp_path / "hf" / shard)
        assert len(held) == 1 or sum(tensor.nbytes for tensor in held.values()) <= limit, shard


@pytest.mark.parametrize("size", ["5 parsecs", "2GiB", "", "0MB", "-1GB", "infGB", "nanMB", 0, "0"])
def test_an_unreadable_shard_size_is_refused_naming_the_option_before_anything_is_read(tmp_path, size):
    with pytest.raises(ConversionError, match="--max-shard-size"):
        convert_checkpoint(tmp_path / "absent.pt", tmp_path / "hf", max_shard_size=size)
    assert not (tmp_path / "hf").exists()


def _stream(*pairs: tuple[str, torch.Tensor]):
    yield from pairs


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ((("a", torch.zeros(2)), ("c", torch.zeros(3))), "c is not to be written"),
        ((("a", torch.zeros(2)), ("a", torch.zeros(2))), "a is not to be written, or was already written"),
        ((("a", torch.zeros(3)), ("b", torch.zeros(3))), r"expected a \[2\] torch.float32, got \[3\]"),
        ((("a", torch.zeros(2, dtype=torch.float16)),), r"expected a \[2\] torch.float32, got \[2\] torch.float16"),
        ((("b", torch.zeros(3)),), "never given: a"),
    ],
)
def test_the_writer_refuses_a_stream_that_does_not_match_its_plan(tmp_path, given, says):
    """A bug upstream (a table step yielding the wrong tensor) stops the writing instead of a wrong file."""
    specs = [("a", (2,), torch.float32), ("b", (3,), torch.float32)]
    with pytest.raises(RuntimeError, match=says):
        write_weights(tmp_path, specs, _stream(*given), max_shard_bytes=NO_LIMIT)
