"""The folder's files made without transformers — config.json from the table, the tokenizer with the
``tokenizers`` library — against what transformers itself writes, byte for byte; and the model check a
conversion remembers once passed, which another transformers release or another set of shapes runs again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import BertTokenizer

from chclip_convert import convert_checkpoint
from chclip_convert.conversion import model_check, state_dict
from chclip_convert.conversion.demo import DEMO_ARCHITECTURE, write_demo_checkpoint
from chclip_convert.errors import ConversionError
from chclip_convert.files import assets
from chclip_convert.mapping.architecture import KNOWN_MODELS, TEXT_HEADS_BY_HIDDEN, VISION_HEADS_BY_WIDTH, Architecture
from chclip_convert.mapping.config_file import ARCHITECTURES, config_text


def known_architecture(model) -> Architecture:
    """A released model's :class:`Architecture`: its sizes, cn_clip's heads, BERT's vocabulary and positions."""
    return Architecture(
        model.vision_layers, model.vision_width, 4 * model.vision_width, VISION_HEADS_BY_WIDTH[model.vision_width],
        model.patch_size, model.image_size, model.text_layers, model.text_hidden, model.text_intermediate,
        TEXT_HEADS_BY_HIDDEN[model.text_hidden], 21128, 512, 2, model.projection_dim, name=model.name,
    )  # fmt: skip


ARCHS = {model.name: known_architecture(model) for model in KNOWN_MODELS} | {"demo": DEMO_ARCHITECTURE}


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("name", list(ARCHS))
def test_config_json_is_what_transformers_saves(name, dtype, tmp_path):
    config = ARCHS[name].to_config()
    config.dtype, config.architectures = dtype, list(ARCHITECTURES)
    config.save_pretrained(tmp_path)
    assert config_text(ARCHS[name], dtype) == (tmp_path / "config.json").read_text(encoding="utf-8")


def small_vocab(path: Path) -> Path:
    """A vocabulary of BERT's special tokens at other ids than the standard one's, and a few words."""
    tokens = ["[PAD]", "[unused1]", "[CLS]", "[SEP]", "[MASK]", "[UNK]", "猫", "狗", "的", "照", "片", "a", "##b"]
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("vocab", ["standard", "small"])
def test_tokenizer_files_are_what_transformers_saves(vocab, tmp_path):
    path = assets.STANDARD_VOCAB if vocab == "standard" else small_vocab(tmp_path / "vocab.txt")
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    written = assets.write_tokenizer(ours, path, len(assets.read_vocab(path)))
    saved = assets.bert_tokenizer(path).save_pretrained(theirs)
    assert sorted(written) == sorted({Path(p).name for p in saved} | {"vocab.txt"})
    for name in set(written) - {"vocab.txt"}:
        assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name
    assert (ours / "vocab.txt").read_bytes() == path.read_bytes()  # the user's own file, as it is
    words = ["一张猫的照片", "A DOG's photo, ab!", "狗狗 [MASK] 照片"]
    assert BertTokenizer.from_pretrained(ours)(words)["input_ids"] == assets.bert_tokenizer(path)(words)["input_ids"]


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory) -> Path:
    return write_demo_checkpoint(tmp_path_factory.mktemp("model-check"))


def test_a_passed_model_check_is_remembered_and_not_made_again(small_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv(model_check.CACHE_ENV, str(tmp_path / "cache"))
    convert_checkpoint(small_checkpoint, tmp_path / "first")
    assert [p.name.split("-")[1] for p in (tmp_path / "cache" / "model-checks").iterdir()] == [
        model_check.version("transformers")
    ]
    # a second conversion of the same targets, in a fresh process, never imports transformers' model code
    script = (
        "import sys; from chclip_convert import convert_checkpoint;"
        f"convert_checkpoint({str(small_checkpoint)!r}, {str(tmp_path / 'second')!r});"
        "print('transformers.models.chinese_clip.modeling_chinese_clip' in sys.modules)"
    )
    env = {**os.environ, model_check.CACHE_ENV: str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
    for name in ("config.json", "preprocessor_config.json", "model.safetensors"):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes()


def test_another_transformers_release_is_checked_again(small_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv(model_check.CACHE_ENV, str(tmp_path / "cache"))
    checked = []
    real = model_check.confirm_plan
    monkeypatch.setattr(model_check, "confirm_plan", lambda *a, **k: checked.append(1) or real(*a, **k))
    convert_checkpoint(small_checkpoint, tmp_path / "a")
    convert_checkpoint(small_checkpoint, tmp_path / "b")
    monkeypatch.setattr(model_check, "version", lambda package: "99.0.0")
    convert_checkpoint(small_checkpoint, tmp_path / "c")
    assert len(checked) == 2  # the first conversion, and the one under "transformers 99.0.0"


def test_a_model_that_disagrees_with_the_table_stops_the_conversion(small_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv(model_check.CACHE_ENV, str(tmp_path / "cache"))
    real = state_dict.expected_shapes

    def renamed(config):  # a transformers release that names one tensor otherwise
        shapes = real(config)
        shapes["logit_scale_renamed"] = shapes.pop("logit_scale")
        return shapes

    monkeypatch.setattr(state_dict, "expected_shapes", renamed)
    with pytest.raises(ConversionError, match=r"disagree|unused|missing"):
        convert_checkpoint(small_checkpoint, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "cache" / "model-checks").exists()  # a failed check is never remembered


def test_a_cache_that_cannot_be_written_does_not_stop_the_conversion(small_checkpoint, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv(model_check.CACHE_ENV, str(blocker))
    convert_checkpoint(small_checkpoint, tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").is_file()
