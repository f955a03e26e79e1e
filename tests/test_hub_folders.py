"""Folders as the Hugging Face Hub has them, written in 2022 by transformers 4.2x: verify judges them on their
merits. Such a folder is rebuilt here file by file from a fresh conversion of a seeded checkpoint: weights in
``pytorch_model.bin`` with the ``position_ids`` buffers of that era, a config with ``text_config_dict`` /
``vision_config_dict`` and fields that shape nothing, a slow tokenizer only (no ``tokenizer.json``) and a
``tokenizer_config.json`` without ``model_max_length``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from chclip_convert import convert_checkpoint
from chclip_convert.cli.main import main
from chclip_convert.conversion.demo import DEMO_ARCHITECTURE, demo_vocabulary, write_demo_checkpoint
from chclip_convert.verification.model_outputs import write_seeded_original
from chclip_convert.verification.verify import verify_folder

WEIGHTS = "weights equal source"
CONFIG = "config.json matches the checkpoint"
TEXT_POSITIONS = "text_model.embeddings.position_ids"
VISION_POSITIONS = "vision_model.embeddings.position_ids"

# What a 4.2x full dump of a sub-config carries beside the model's own fields: the generation defaults and
# bookkeeping every PretrainedConfig then wrote (key names as in the official Chinese-CLIP config.json files).
OLD_DUMP_FIELDS = {
    "add_cross_attention": False,
    "bad_words_ids": None,
    "begin_suppress_tokens": None,
    "chunk_size_feed_forward": 0,
    "cross_attention_hidden_size": None,
    "decoder_start_token_id": None,
    "diversity_penalty": 0.0,
    "do_sample": False,
    "early_stopping": False,
    "encoder_no_repeat_ngram_size": 0,
    "exponential_decay_length_penalty": None,
    "finetuning_task": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "id2label": {"0": "LABEL_0", "1": "LABEL_1"},
    "is_decoder": False,
    "is_encoder_decoder": False,
    "label2id": {"LABEL_0": 0, "LABEL_1": 1},
    "length_penalty": 1.0,
    "max_length": 20,
    "min_length": 0,
    "no_repeat_ngram_size": 0,
    "num_beam_groups": 1,
    "num_beams": 1,
    "num_return_sequences": 1,
    "output_attentions": False,
    "output_hidden_states": False,
    "output_scores": False,
    "prefix": None,
    "problem_type": None,
    "pruned_heads": {},
    "remove_invalid_values": False,
    "repetition_penalty": 1.0,
    "return_dict": True,
    "return_dict_in_generate": False,
    "sep_token_id": None,
    "suppress_tokens": None,
    "task_specific_params": None,
    "temperature": 1.0,
    "tf_legacy_loss": False,
    "tie_encoder_decoder": False,
    "tie_word_embeddings": True,
    "tokenizer_class": None,
    "top_k": 50,
    "top_p": 1.0,
    "torch_dtype": None,
    "torchscript": False,
    "transformers_version": "4.26.1",
    "typical_p": 1.0,
    "use_bfloat16": False,
}
# The text tower's fields came from HFL's chinese-roberta-wwm-ext config.json; these shape nothing in the model.
HFL_TEXT_FIELDS = {
    "architectures": ["BertForMaskedLM"],
    "bos_token_id": 0,
    "eos_token_id": 2,
    "directionality": "bidi",
    "output_past": True,
    "pooler_fc_size": 768,
    "pooler_num_attention_heads": 12,
    "pooler_num_fc_layers": 3,
    "pooler_size_per_head": 128,
    "pooler_type": "first_token_transform",
}
# The vision fields the 2022 conversion script passed, which transformers 4.2x wrote as vision_config_dict.
VISION_DICT_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_hidden_layers",
    "patch_size",
    "projection_dim",
    "image_size",
)


def as_written_in_2022(folder: Path) -> Path:
    """Rewrite a freshly converted ``folder`` in place as transformers 4.2x wrote the official folders."""
    state = load_file(str(folder / "model.safetensors"))
    state[TEXT_POSITIONS] = torch.arange(state["text_model.embeddings.position_embeddings.weight"].shape[0])[None]
    state[VISION_POSITIONS] = torch.arange(state["vision_model.embeddings.position_embedding.weight"].shape[0])[None]
    torch.save(state, folder / "pytorch_model.bin")
    for name in ("model.safetensors", "tokenizer.json", "conversion_report.json", "README.md"):
        (folder / name).unlink()
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    text = {**OLD_DUMP_FIELDS, **config["text_config"], **HFL_TEXT_FIELDS}
    vision = {**OLD_DUMP_FIELDS, **config["vision_config"], "dropout": 0.0}
    config.pop("dtype")
    config.update(
        _commit_hash=None,
        _name_or_path="OFA-Sys/chinese-clip-vit-base-patch16",
        text_config=text,
        text_config_dict={
            **{key: text[key] for key in config["text_config"] if key != "model_type"},
            **HFL_TEXT_FIELDS,
            "model_type": "bert",
        },
        vision_config=vision,
        vision_config_dict={key: vision[key] for key in VISION_DICT_FIELDS},
        torch_dtype="float32",
        transformers_version=None,
    )
    write_json(folder / "config.json", config)
    tokenizer = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    tokenizer = {key: value for key, value in tokenizer.items() if key not in ("model_max_length", "backend")}
    write_json(folder / "tokenizer_config.json", {**tokenizer, "never_split": None, "special_tokens_map_file": None})
    specials = {name: tokenizer[name] for name in ("cls_token", "mask_token", "pad_token", "sep_token", "unk_token")}
    write_json(folder / "special_tokens_map.json", specials)
    return folder


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    write_json(path, data)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """The seeded demo checkpoint, with its vocab.txt beside it (the reference vocabulary)."""
    return write_demo_checkpoint(tmp_path_factory.mktemp("hub") / "demo")


@pytest.fixture(scope="module")
def hub_folder(demo, tmp_path_factory) -> Path:
    folder = convert_checkpoint(demo, tmp_path_factory.mktemp("hub") / "hf").output_dir
    return as_written_in_2022(folder)


@pytest.fixture
def hub_copy(hub_folder, tmp_path) -> Path:
    """A copy of the 2022 folder a test may change."""
    return Path(shutil.copytree(hub_folder, tmp_path / "hf"))


def failed(report) -> dict:
    return {check.name: check for check in report.checks if not check.passed}


def test_the_rebuilt_folder_is_a_2022_folder(hub_folder):
    """The files are as the official folders hold them, and transformers 5 reads the config as it reads theirs."""
    from transformers import AutoTokenizer, ChineseCLIPConfig

    names = {path.name for path in hub_folder.iterdir()}
    assert "pytorch_model.bin" in names and not names & {"model.safetensors", "tokenizer.json"}
    config = json.loads((hub_folder / "config.json").read_text())
    assert {"text_config_dict", "vision_config_dict"} <= set(config)
    assert ChineseCLIPConfig.from_dict(config).vision_config.image_size == DEMO_ARCHITECTURE.image_size
    assert AutoTokenizer.from_pretrained(hub_folder).model_max_length > 1e29  # uncapped, as on the Hub


def test_verify_passes_a_2022_folder_and_notes_what_differs_harmlessly(demo, hub_folder):
    report = verify_folder(demo, hub_folder)
    assert report.ok, report.to_text()
    assert report.original_available  # outputs were really compared with cn_clip's
    names = [check.name for check in report.checks]
    assert "token ids equal" in names and "top-1 agrees" in names
    notes = "\n".join(report.info)
    assert f"{TEXT_POSITIONS} is not a weight" in notes and f"{VISION_POSITIONS} is not a weight" in notes
    assert "no tokenizer.json" in notes and "model_max_length" in notes and "tokenized at 52" in notes
    for field in ("text_config.architectures", "text_config.eos_token_id", "text_config_dict", "vision_config_dict"):
        assert field in notes, field
    assert report.converted_outputs.input_ids.shape[1] == 52  # captions at cn_clip's context length


def test_verify_without_cn_clip_passes_a_2022_folder(demo, hub_folder):
    report = verify_folder(demo, hub_folder, use_original=False)
    assert report.ok, report.to_text()


def test_a_position_ids_buffer_that_is_not_arange_fails_naming_it(demo, hub_copy):
    state = torch.load(hub_copy / "pytorch_model.bin", weights_only=True)
    state[TEXT_POSITIONS] = state[TEXT_POSITIONS].flip(-1).contiguous()  # same shape and dtype, other values
    torch.save(state, hub_copy / "pytorch_model.bin")
    report = verify_folder(demo, hub_copy, use_original=False)
    weights = failed(report)[WEIGHTS]
    assert TEXT_POSITIONS in weights.keys and TEXT_POSITIONS in weights.value and "arange" in weights.value
    assert VISION_POSITIONS not in weights.keys  # the intact one is still set aside


@pytest.mark.parametrize(
    ("tower", "field", "value"),
    [("text_config", "layer_norm_eps", 1e-5), ("vision_config", "hidden_act", "gelu")],
)
def test_a_field_that_shapes_the_model_fails_by_name(demo, hub_copy, tower, field, value):
    def change(config):
        for name in (tower, f"{tower}_dict"):  # transformers reads the _dict copy over the other
            config[name][field] = value

    edit_json(hub_copy / "config.json", change)
    report = verify_folder(demo, hub_copy, use_original=False)
    check = failed(report)[CONFIG]
    assert f"{tower}.{field}" in check.fields and f"{tower}.{field}" in check.value


def test_a_slow_tokenizer_that_differs_still_fails(demo, hub_copy):
    vocab = hub_copy / "vocab.txt"
    lines = vocab.read_text(encoding="utf-8").split("\n")
    cat, dog = lines.index("猫"), lines.index("狗")
    lines[cat], lines[dog] = lines[dog], lines[cat]
    vocab.write_text("\n".join(lines), encoding="utf-8")
    report = verify_folder(demo, hub_copy, use_original=False)
    assert {"vocab.txt equals reference", "tokenizer.json equals reference", "token ids equal"} <= set(failed(report))


def test_a_stated_maximum_length_other_than_52_fails(demo, hub_copy):
    edit_json(hub_copy / "tokenizer_config.json", lambda data: data.update(model_max_length=512))
    report = verify_folder(demo, hub_copy, use_original=False)
    assert failed(report)["tokenizer_config.json matches the reference"].fields == ["model_max_length"]


def test_inspect_names_the_weights_the_folder_holds(hub_folder, capsys):
    assert main(["inspect", str(hub_folder)]) == 1
    error = capsys.readouterr().err
    assert "config.json + pytorch_model.bin" in error and "safetensors" not in error


@pytest.fixture(scope="module")
def wider_folder(demo, tmp_path_factory) -> Path:
    """A 2022 folder of another architecture than the demo's: twice the vision width and the projection."""
    arch = replace(
        DEMO_ARCHITECTURE,
        vocab_size=len(demo_vocabulary()),
        vision_width=2 * DEMO_ARCHITECTURE.vision_width,
        vision_intermediate=2 * DEMO_ARCHITECTURE.vision_intermediate,
        vision_heads=2,
        projection_dim=2 * DEMO_ARCHITECTURE.projection_dim,
    )
    work = tmp_path_factory.mktemp("wider")
    checkpoint = write_seeded_original(arch, work / "wider.pt")
    shutil.copyfile(demo.with_name("vocab.txt"), work / "vocab.txt")
    return as_written_in_2022(convert_checkpoint(checkpoint, work / "hf").output_dir)


def test_verify_against_another_architecture_ends_with_failing_checks(demo, wider_folder):
    report = verify_folder(demo, wider_folder)
    found = failed(report)
    assert "visual_projection.weight" in found[WEIGHTS].keys and "shape" in found[WEIGHTS].value
    assert found["outputs compared"].value.startswith("not run: the folder's weights do not match")
    assert report.output_checks == [found["outputs compared"]]


@pytest.mark.slow
def test_the_cli_exits_3_without_a_traceback_on_another_architecture(demo, wider_folder):
    result = subprocess.run(
        [sys.executable, "-m", "chclip_convert", "verify", str(demo), str(wider_folder)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr and "Verification FAILED." in result.stdout
    assert "FAIL  outputs compared" in result.stdout
