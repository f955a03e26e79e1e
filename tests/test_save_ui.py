"""The save and reverse widgets, driven as a person would — set values, click — on real conversions of the demo."""

from __future__ import annotations

import html

import torch
from support.converted import assert_model_holds, reload_strictly
from support.files import tree_sha256

from chclip_convert.files.checkpoint import load_checkpoint
from chclip_convert.notebook.save import NO_SHARDING, ReverseUI, SaveUI


def shards(folder) -> list[str]:
    return sorted(path.name for path in folder.glob("*.safetensors"))


def test_save_writes_the_chosen_dtype_in_shards_and_shows_a_short_result(demo_checkpoint, tmp_path):
    ui = SaveUI(demo_checkpoint, tmp_path / "bf16", dtype="bfloat16", shard_size="1MB")
    assert not ui.save_button.disabled and ui.message.value == "" and ui.result.value == ""
    ui.save_button.click()
    assert ui.error is None and ui.progress.value == 1.0 and ui.progress.bar_style == "success"
    assert len(shards(tmp_path / "bf16")) == 3
    assert "3 weight shards + index, 7 other files" in ui.result.value and " MB" in ui.result.value
    assert list(ui.summary.dtypes_written) == ["bfloat16"]
    assert f"{ui.summary.dtypes_written['bfloat16']} bfloat16 tensors" in ui.result.value
    assert ui.files.selected_index is None and ui.files.layout.display is None  # collapsed, not hidden
    assert all(name in ui.files.children[0].value for name in ui.summary.files)
    assert reload_strictly(tmp_path / "bf16").dtype == torch.bfloat16
    # The folder just written is the result, in green, not an error; Save again needs Overwrite.
    assert ui.save_button.disabled and "Saved here" in ui.message.value and "#b71c1c" not in ui.message.value


def test_no_sharding_writes_one_file_holding_the_source(demo_checkpoint, tmp_path):
    ui = SaveUI(demo_checkpoint, tmp_path / "fp32")
    assert ui.shard_size.value == NO_SHARDING
    ui.save_button.click()
    assert shards(tmp_path / "fp32") == ["model.safetensors"] and "1 weight file, 7 other files" in ui.result.value
    model = reload_strictly(tmp_path / "fp32")
    assert model.dtype == torch.float32
    assert_model_holds(model, load_checkpoint(demo_checkpoint).state_dict)


def test_a_typed_shard_size_is_read_and_a_bad_one_is_refused_inline(demo_checkpoint, tmp_path):
    ui = SaveUI(demo_checkpoint, tmp_path / "out")
    for bad in ("lots", "0", ""):
        ui.shard_size.value = bad
        assert (
            ui.save_button.disabled and html.escape(f"Shard size {bad!r}: write a size such as 2GB") in ui.message.value
        )
    ui.shard_size.value = "2000000"  # bytes, as convert reads them
    assert not ui.save_button.disabled and ui.message.value == ""
    ui.save_button.click()
    written = shards(tmp_path / "out")
    assert len(written) > 1 and f"{len(written)} weight shards + index" in ui.result.value


def test_an_existing_folder_is_kept_until_overwrite_is_ticked(demo_checkpoint, tmp_path):
    first = SaveUI(demo_checkpoint, tmp_path / "out")
    first.save_button.click()
    before = tree_sha256(tmp_path / "out")
    ui = SaveUI(demo_checkpoint, tmp_path / "out", dtype="float16")
    assert ui.save_button.disabled and "not empty" in ui.message.value and "Overwrite" in ui.message.value
    ui.save_button.click()  # refused: nothing happens
    assert ui.summary is None and tree_sha256(tmp_path / "out") == before
    ui.overwrite.value = True
    assert not ui.save_button.disabled and ui.message.value == ""
    ui.save_button.click()
    assert reload_strictly(tmp_path / "out").dtype == torch.float16


def test_overwrite_never_replaces_a_folder_that_holds_no_converted_model(demo_checkpoint, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    ui = SaveUI(demo_checkpoint, mine)
    ui.overwrite.value = True
    assert ui.save_button.disabled and "no converted model" in ui.message.value
    ui.save_button.click()
    assert (mine / "notes.txt").read_text() == "mine" and ui.summary is None


def test_the_converters_own_refusals_show_inline(demo_checkpoint, tmp_path):
    ui = SaveUI(demo_checkpoint, demo_checkpoint.parent)  # the folder that holds the checkpoint
    ui.overwrite.value = True
    assert ui.save_button.disabled and "input checkpoint" in ui.message.value
    ui.folder.value = str(demo_checkpoint.parent / "vocab.txt")  # a file
    assert ui.save_button.disabled and "is a file" in ui.message.value
    ui.folder.value = ""
    assert ui.save_button.disabled and "Enter the folder" in ui.message.value


def test_results_clear_when_an_input_changes(demo_checkpoint, tmp_path):
    ui = SaveUI(demo_checkpoint, tmp_path / "out")
    ui.save_button.click()
    assert ui.summary is not None and ui.result.value
    ui.dtype.value = "float16"
    assert ui.summary is None and ui.result.value == "" and ui.files.children[0].value == ""
    assert ui.files.layout.display == "none" and ui.progress.value == 0.0 and ui.progress.bar_style == ""


def test_reverse_writes_the_original_format_once_asked(demo_checkpoint, tmp_path):
    SaveUI(demo_checkpoint, tmp_path / "hf").save_button.click()
    output = tmp_path / "back.pt"
    ui = ReverseUI(tmp_path / "hf", output)
    assert not output.exists() and not ui.reverse_button.disabled
    ui.reverse_button.click()
    assert ui.error is None and "Reversed" in ui.result.value and "MB" in ui.result.value
    source, back = load_checkpoint(demo_checkpoint).state_dict, load_checkpoint(output).state_dict
    assert set(back) == {key for key in source if not key.startswith("bert.pooler.")}
    assert all(torch.equal(back[key], source[key]) for key in back)
    # The file just written is the result, said in green; to another widget it is a file that exists.
    assert ui.reverse_button.disabled and "Written here" in ui.message.value and "#b71c1c" not in ui.message.value
    other = ReverseUI(tmp_path / "hf", output)
    assert other.reverse_button.disabled and "This file exists: tick Overwrite" in other.message.value
    ui.overwrite.value = True
    assert not ui.reverse_button.disabled and ui.result.value == ""
    ui.output.value = str(tmp_path / "hf" / "inside.pt")
    assert ui.reverse_button.disabled and "inside the folder" in ui.message.value


def test_save_writes_the_licence_and_base_model_into_the_card(demo_checkpoint, tmp_path):
    from huggingface_hub import ModelCard

    ui = SaveUI(demo_checkpoint, tmp_path / "card")
    ui.license.value, ui.base_model.value = " mit ", "OFA-Sys/chinese-clip-vit-base-patch16"
    ui.save_button.click()
    data = ModelCard.load(tmp_path / "card" / "README.md").data
    assert (data.license, data.base_model, data.base_model_relation) == (
        "mit", "OFA-Sys/chinese-clip-vit-base-patch16", "finetune",
    )  # fmt: skip
