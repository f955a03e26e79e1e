"""The one checkpoint writer against torch itself: its records hold what ``torch.save`` writes for the same tensors,
``torch.load`` reads it in every mode (memory-mapped, read whole, and finding each storage by computing where it
must lie), every CRC-32 checks, and sizes and offsets past the zip64 limit are written as zip64."""

from __future__ import annotations

import errno
import io
import os
import zipfile

import pytest
import torch
from torch.utils.serialization import config as serialization_config

from chclip_convert.files import archive
from chclip_convert.files.checkpoint import checkpoint_writer, load_checkpoint

SERIALIZATION_ID = "/.data/serialization_id"  # a random number in every file torch writes


def planted_state() -> dict[str, torch.Tensor]:
    """A tensor of each kind a checkpoint holds: float32, float16, bfloat16, int64, a scalar, an empty one, and one
    that is not contiguous (written contiguous, as its values)."""
    generator = torch.Generator().manual_seed(5)
    return {
        "visual.proj": torch.randn(6, 4, generator=generator),
        "bert.embeddings.word_embeddings.weight": torch.randn(7, 3, generator=generator).half(),
        "visual.conv1.weight": torch.randn(2, 3, 2, 2, generator=generator).bfloat16(),
        "visual.bn1.num_batches_tracked": torch.tensor(12),
        "logit_scale": torch.tensor(4.6052),
        "empty": torch.zeros(0, 5),
        "text_projection": torch.randn(5, 3, generator=generator).t(),
    }


METADATA = {"epoch": 3, "step": 300, "name": "planted", "average": {"inputs": ["a.pt", "b.pt"], "weights": [0.5, 0.5]}}


def write(path, state: dict[str, torch.Tensor]) -> None:
    with checkpoint_writer(path, overwrite=False) as writer:
        writer.metadata = METADATA
        for key, tensor in state.items():
            writer.add(key, tensor)


def records(data: bytes) -> dict[str, bytes]:
    """Every record of a torch zip file, by its name below the archive's folder, its CRC-32 checked on reading."""
    with zipfile.ZipFile(io.BytesIO(data)) as opened:
        return {name.split("/", 1)[1]: opened.read(name) for name in opened.namelist() if SERIALIZATION_ID not in name}


def test_every_record_holds_what_torch_save_writes_for_the_same_tensors(tmp_path):
    state = planted_state()
    write(tmp_path / "ours.pt", state)
    theirs = io.BytesIO()
    torch.save({**METADATA, "state_dict": {f"module.{k}": v.contiguous() for k, v in state.items()}}, theirs)
    assert records((tmp_path / "ours.pt").read_bytes()) == records(theirs.getvalue())  # data.pkl too, byte for byte


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("computed_offsets", [False, True])
def test_torch_load_reads_it_in_every_mode(tmp_path, monkeypatch, mmap, computed_offsets):
    # With calculate_storage_offsets, torch.load does not look a storage up but computes where it must lie from the
    # layout torch's writer gives a file; TORCH_SERIALIZATION_DEBUG makes it raise where that is not so.
    monkeypatch.setenv("TORCH_SERIALIZATION_DEBUG", "1")
    state = planted_state()
    write(tmp_path / "ours.pt", state)
    with serialization_config.patch({"load.calculate_storage_offsets": computed_offsets}):
        loaded = torch.load(tmp_path / "ours.pt", map_location="cpu", weights_only=True, mmap=mmap)
    assert {key: loaded[key] for key in METADATA} == METADATA
    assert list(loaded["state_dict"]) == [f"module.{key}" for key in state]
    for key, tensor in state.items():
        read = loaded["state_dict"][f"module.{key}"]
        assert read.dtype == tensor.dtype and torch.equal(read, tensor), key


def test_sizes_and_offsets_past_the_zip64_limit_are_written_as_zip64(tmp_path, monkeypatch):
    # The limit lowered to 100 bytes, so that every record past the first few needs zip64 fields; both readers
    # (Python's zipfile, torch's miniz) must then take sizes and offsets from them.
    monkeypatch.setattr(archive, "ZIP64_FROM", 100)
    state = planted_state()
    write(tmp_path / "wide.pt", state)
    with zipfile.ZipFile(tmp_path / "wide.pt") as opened:
        assert opened.testzip() is None
        assert max(info.header_offset for info in opened.infolist()) > 100
    loaded = load_checkpoint(tmp_path / "wide.pt")
    assert all(torch.equal(loaded.state_dict[key], tensor) for key, tensor in state.items())


def test_a_cast_is_written_as_torch_casts_and_a_wrong_slice_is_refused(tmp_path):
    weights = torch.randn(1000, generator=torch.Generator().manual_seed(2))
    with checkpoint_writer(tmp_path / "cast.pt", overwrite=False) as writer:
        writer.add("w", weights, torch.float16)
        writer.add("b", weights, torch.bfloat16)
        with pytest.raises(ValueError, match="written already"):  # refused before anything is written
            writer.add("w", weights)
    state = load_checkpoint(tmp_path / "cast.pt").state_dict
    assert torch.equal(state["w"], weights.half()) and torch.equal(state["b"], weights.bfloat16())
    refused = pytest.raises(ValueError, match="not contiguous and 1-D")
    with refused, checkpoint_writer(tmp_path / "bad.pt", overwrite=False) as bad:
        bad.add_slices("m", (2, 3), torch.float32, [torch.zeros(2, 3)])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cast.pt"]  # nothing partial left


def save_input(path, *, crc32: bool = True):
    """``planted_state`` saved by torch (contiguous), with or without the CRC-32s torch can skip writing."""
    torch.serialization.set_crc32_options(crc32)
    try:
        torch.save({**METADATA, "state_dict": {k: v.contiguous() for k, v in planted_state().items()}}, path)
    finally:
        torch.serialization.set_crc32_options(True)
    return load_checkpoint(path)


def cross_device(*args):
    raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))


def copy_from(source, path) -> None:
    with checkpoint_writer(path, overwrite=False) as writer:
        writer.metadata, writer.prefix = METADATA, ""  # the input's keys have no prefix
        for key, tensor in source.state_dict.items():
            writer.add(key, tensor, source=source)


@pytest.mark.parametrize("kernel_copies", [True, False], ids=["copy_file_range", "read and written"])
def test_records_copied_from_an_input_are_its_bytes_and_crcs(tmp_path, monkeypatch, kernel_copies):
    source = save_input(tmp_path / "in.pt")
    copied = []
    real_copy = archive.copy_range
    monkeypatch.setattr(archive, "copy_range", lambda *args: copied.append(args) or real_copy(*args))
    if not kernel_copies:  # as between two file systems the kernel does not copy between
        monkeypatch.setattr(archive.os, "copy_file_range", cross_device)
    copy_from(source, tmp_path / "out.pt")
    assert len(copied) == sum(tensor.numel() > 0 for tensor in source.state_dict.values())  # the empty one is written
    assert records((tmp_path / "out.pt").read_bytes()) == records((tmp_path / "in.pt").read_bytes())


def test_a_record_saved_without_its_crc_is_checksummed_not_copied(tmp_path, monkeypatch):
    source = save_input(tmp_path / "in.pt", crc32=False)
    monkeypatch.setattr(archive, "copy_range", lambda *args: pytest.fail("a record without its CRC-32 was copied"))
    copy_from(source, tmp_path / "out.pt")
    with zipfile.ZipFile(tmp_path / "out.pt") as opened:
        assert opened.testzip() is None  # every CRC-32 checks
