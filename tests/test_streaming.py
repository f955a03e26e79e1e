"""The streaming reader: exact values, each model tensor read once, the optimizer never read."""

from __future__ import annotations

import torch
from original import REDUCED, build_model, save, training_checkpoint

from chclip_convert import convert_checkpoint, load_checkpoint
from chclip_convert.checkpoint import open_checkpoint
from chclip_convert.lazy import LazyTensor, load_lazy
from chclip_convert.reverse import load_folder_state


def test_lazy_tensors_equal_torch_load_for_every_layout(tmp_path):
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
    lazy = load_lazy(path)["state_dict"]
    for name, expected in objects.items():
        assert isinstance(lazy[name], LazyTensor)
        value = lazy[name].load()
        assert value.dtype == expected.dtype and torch.equal(value, expected), name


def test_each_model_tensor_is_read_once_and_the_optimizer_never(tmp_path, monkeypatch):
    model = build_model(REDUCED["ViT-B-16"], seed=9)
    checkpoint = save(training_checkpoint(model, optimizer=True), tmp_path / "train.pt")
    model_records = {t.record for t in open_checkpoint(checkpoint).state_dict.values()}
    reads: list[str] = []
    original_load = LazyTensor.load

    def spy(self):
        reads.append(self.record)
        return original_load(self)

    monkeypatch.setattr(LazyTensor, "load", spy)
    convert_checkpoint(checkpoint, tmp_path / "hf")
    assert sorted(reads) == sorted(model_records)  # once each, and nothing of the optimizer
    assert len(reads) == len(set(reads))


def test_legacy_non_zip_checkpoints_still_convert(tmp_path):
    model = build_model(REDUCED["ViT-B-16"], seed=10)
    legacy = tmp_path / "legacy.pt"
    torch.save(training_checkpoint(model), legacy, _use_new_zipfile_serialization=False)
    assert not isinstance(next(iter(open_checkpoint(legacy).state_dict.values())), LazyTensor)
    convert_checkpoint(legacy, tmp_path / "hf")
    written = load_folder_state(tmp_path / "hf")
    source = load_checkpoint(legacy).state_dict
    assert torch.equal(written["vision_model.pre_layrnorm.weight"], source["visual.ln_pre.weight"])
