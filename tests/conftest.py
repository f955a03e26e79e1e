"""Shared fixtures and helpers: seeded cn_clip models saved as training does, fixed inputs for parity checks,
a tiny transformers config, and a strict reload of converted folders."""

from __future__ import annotations

import hashlib
import os
import re
import socket
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from original import REDUCED, build_model, save, training_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CAPTIONS = ["一位穿军装的女士", "一只猫", "一辆红色的汽车停在路边", "皮卡丘", "a photo of 一只狗"]


@pytest.fixture
def demo_checkpoint(tmp_path) -> Path:
    """The embedded demo checkpoint (small and fast) with its vocab.txt beside it, in a folder of its own."""
    from chclip_convert.demo import write_demo_checkpoint

    return write_demo_checkpoint(tmp_path / "demo")


def tree_sha256(path: Path) -> str | None:
    """SHA-256 of a file, or of every file below a folder in name order; ``None`` if there is nothing."""
    if path.is_dir():
        return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file())).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("checkpoints")


@pytest.fixture(scope="session")
def reduced_models():
    """Architecture name → seeded cn_clip CLIP (built once per session)."""
    return {name: build_model(variant, seed=index) for index, (name, variant) in enumerate(REDUCED.items())}


@pytest.fixture(scope="session")
def reduced_checkpoints(reduced_models, checkpoint_dir) -> dict[str, Path]:
    """Architecture name → training checkpoint file (``module.`` keys, epoch, step, name)."""
    return {
        name: save(training_checkpoint(model), checkpoint_dir / f"{name}.pt") for name, model in reduced_models.items()
    }


@pytest.fixture(scope="session")
def sample_image():
    """The real photograph the package ships for verification (no download)."""
    from chclip_convert.compare import sample_image as packaged

    return packaged()


def image_batch(image, size: int) -> torch.Tensor:
    """cn_clip's own preprocessing of the photo, plus a seeded noise image, as one batch."""
    from cn_clip.clip import image_transform

    photo = image_transform(size)(image)
    noise = torch.randn(3, size, size, generator=torch.Generator().manual_seed(7))
    return torch.stack([photo, noise])


def token_batch(captions: list[str] = CAPTIONS) -> torch.Tensor:
    from cn_clip.clip import tokenize

    return tokenize(captions)


WIDTH, TEXT_WIDTH, EMBED, LAYERS = 8, 12, 4, 2


def small_config():
    """A tiny ``ChineseCLIPConfig`` (``LAYERS`` layers a tower, vision width ``WIDTH``) for table-level tests."""
    from transformers import ChineseCLIPConfig

    return ChineseCLIPConfig(
        text_config={
            "vocab_size": 30,
            "hidden_size": TEXT_WIDTH,
            "intermediate_size": 20,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
        },
        vision_config={
            "hidden_size": WIDTH,
            "intermediate_size": 32,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": 2,
            "image_size": 8,
            "patch_size": 4,
        },
        projection_dim=EMBED,
    )


def reload_strictly(folder: Path, **kwargs):
    """``ChineseCLIPModel.from_pretrained(folder)``, failing on any key transformers reports missing, unexpected
    or of another shape: left alone, it fills such keys with fresh random values and only logs a line."""
    from transformers import ChineseCLIPModel

    model, info = ChineseCLIPModel.from_pretrained(folder, output_loading_info=True, **kwargs)
    assert not any(info.values()), f"{folder}: {info}"
    return model


def assert_model_holds(model, source_state: dict[str, torch.Tensor]) -> None:
    """The reloaded ``model`` holds exactly the tensors the mapping table makes from the original ``source_state``.

    One row is left out: on every load, transformers 5 zeroes row ``pad_token_id`` of the word embeddings, also
    when it was loaded (``ChineseCLIPPreTrainedModel._init_weights`` zeroes ``weight[padding_idx]``, a view that
    its guard for loaded tensors does not see). Only [PAD] positions read that row and attention masks them, so
    outputs do not depend on it; the written file holds the source's row (``load_folder_state`` shows it)."""
    from chclip_convert import convert_state_dict

    expected = dict(convert_state_dict(source_state).state_dict)
    state = model.state_dict()
    assert set(state) == set(expected), sorted(set(state) ^ set(expected))
    pad = model.config.text_config.pad_token_id
    words = "text_model.embeddings.word_embeddings.weight"
    keep = torch.arange(expected[words].shape[0]) != pad
    state[words], expected[words] = state[words][keep], expected[words][keep]
    different = [
        key for key in expected if state[key].dtype != expected[key].dtype or not torch.equal(state[key], expected[key])
    ]
    assert not different, different


def readme_commands() -> list[str]:
    """The set-up commands README.md opens with, in order."""
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S).group(1)
    return [line.split("#")[0].strip() for line in block.strip().splitlines()]
