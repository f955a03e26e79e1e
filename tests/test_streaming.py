"""The streaming reader: exact values, each model tensor read once, the optimizer never read."""

from __future__ import annotations

import sys

import pytest
import torch
from support.files import present_pages
from support.original import REDUCED, build_model, save, training_checkpoint

from chclip_convert import convert_checkpoint
from chclip_convert.files import checkpoint as checkpoint_module
from chclip_convert.files.checkpoint import SourceCheckpoint, load_checkpoint
from chclip_convert.files.folder import load_folder_state


def test_every_tensor_layout_passes_the_span_check_and_reads_exactly(tmp_path):
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    objects = {
        "float16": torch.randn(3, 4).half(),
        "bfloat16": torch.randn(5).bfloat16(),
        "int64": torch.arange(7),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "row_view": base[2],  # shares storage with base, at an offset
        "transposed_view": base.t(),  # not contiguous
        "strided_view": base[1:5:2, ::3],
        "base": base,
    }
    path = save({"state_dict": objects, "epoch": 1}, tmp_path / "mixed.pt")
    loaded = load_checkpoint(path).state_dict
    for name, expected in objects.items():
        assert loaded[name].dtype == expected.dtype and torch.equal(loaded[name], expected), name


@pytest.mark.slow  # full-width checkpoint
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/pagemap")
def test_each_model_tensor_is_read_once_and_the_optimizer_never(tmp_path, monkeypatch):
    model = build_model(REDUCED["ViT-B-16"], seed=9)
    data = training_checkpoint(model, optimizer=True)
    for index in range(3):  # moments far larger than the weights: a read of them could not hide
        data["optimizer"]["state"][index]["exp_avg"] = torch.randn(8 << 20)
    checkpoint = save(data, tmp_path / "train.pt")
    mapped, reads = [], []
    real_load, real_read = checkpoint_module._torch_load, SourceCheckpoint.read

    def keep_mapping(path):  # hold torch's mapping after the conversion, to look at its pages
        mapped.append(real_load(path))
        return mapped[-1]

    def spy(self, key):
        reads.append(key)
        return real_read(self, key)

    monkeypatch.setattr(checkpoint_module, "_torch_load", keep_mapping)
    monkeypatch.setattr(SourceCheckpoint, "read", spy)
    convert_checkpoint(checkpoint, tmp_path / "hf")
    (loaded, is_mapped), model_keys = mapped[0], {k.removeprefix("module.") for k in data["state_dict"]}
    assert is_mapped
    assert sorted(reads) == sorted(model_keys)  # once each, and nothing of the optimizer
    for key, tensor in loaded["state_dict"].items():
        present, pages = present_pages(tensor)
        assert present == pages, f"{key}: only {present} of {pages} pages read"
    moments = [loaded["optimizer"]["state"][index]["exp_avg"] for index in range(3)]
    present, pages = map(sum, zip(*(present_pages(moment) for moment in moments), strict=True))
    # Read-around may map the 2 MiB next to a weight; reading the moments would map all of them.
    assert present < pages / 4, f"{present} of the optimizer's {pages} pages were read"


@pytest.mark.slow  # full-width checkpoint
def test_legacy_non_zip_checkpoints_still_convert(tmp_path):
    model = build_model(REDUCED["ViT-B-16"], seed=10)
    legacy = tmp_path / "legacy.pt"
    torch.save(training_checkpoint(model), legacy, _use_new_zipfile_serialization=False)
    convert_checkpoint(legacy, tmp_path / "hf")
    written = load_folder_state(tmp_path / "hf")
    source = load_checkpoint(legacy).state_dict
    assert torch.equal(written["vision_model.pre_layrnorm.weight"], source["visual.ln_pre.weight"])
