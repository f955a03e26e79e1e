"""Run a converted folder and, when cn_clip is installed, the original model on the same image and
captions — each through its own preprocessing and tokenizer — and compare what they give.

The original side also builds references: cn_clip's released architectures read off its own models, and
seeded cn_clip models saved as its training saves them (what the tests and benchmarks convert)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path

import torch

from chclip_convert.files.assets import CONTEXT_LENGTH
from chclip_convert.files.checkpoint import load_checkpoint
from chclip_convert.mapping.architecture import KNOWN_MODELS, Architecture, cn_clip_kwargs, infer_architecture
from chclip_convert.mapping.table import IGNORED, is_flash_layout
from chclip_convert.names import DATA_DIR

SAMPLE_CAPTIONS = ["一位穿军装的女士", "一只猫", "一辆红色的汽车", "山水画", "a photo of 一只狗"]


@dataclass
class ModelOutputs:
    input_ids: torch.Tensor
    pixel_values: torch.Tensor
    image_features: torch.Tensor
    text_features: torch.Tensor
    logits_per_image: torch.Tensor


def quiet_transformers() -> None:
    """Silence transformers' progress bars and advisory logging (loading is reported by this tool)."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


SAMPLE_IMAGE = DATA_DIR / "grace_hopper.jpg"


def sample_image():
    """A real photograph shipped with the package (Grace Hopper, 512×600, public domain): no download.

    Needs Pillow, which comes with torchvision and so with cn_clip; converting does not need it."""
    from PIL import Image

    with Image.open(SAMPLE_IMAGE) as image:
        return image.convert("RGB")


def run_converted(folder: str | Path, images: list, captions: list[str], *, model=None) -> ModelOutputs:
    """The converted folder's processor (PIL backend, as cn_clip resizes with PIL) and model.

    ``model``: the folder's ``ChineseCLIPModel`` if already loaded (in float32), so it is not loaded twice."""
    from transformers import ChineseCLIPModel

    inputs = model_inputs(folder_processor(folder), images, captions)
    if model is None:
        model = ChineseCLIPModel.from_pretrained(folder, dtype=torch.float32)
    model.eval()
    ids, mask, pixels = inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"]
    # One pass of each tower: the projections' outputs are the unnormalised features get_image_features and
    # get_text_features give (as cn_clip's encode_image / encode_text), and the forward gives the logits.
    features: dict[str, torch.Tensor] = {}
    hooks = [
        model.visual_projection.register_forward_hook(_keep_output(features, "image")),
        model.text_projection.register_forward_hook(_keep_output(features, "text")),
    ]
    try:
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits_per_image
    finally:
        for hook in hooks:
            hook.remove()
    return ModelOutputs(ids, pixels, features["image"], features["text"], logits)


def folder_processor(folder: str | Path):
    """The folder's own ``ChineseCLIPProcessor``, with the PIL backend (which resizes as cn_clip does)."""
    from transformers import ChineseCLIPProcessor

    return ChineseCLIPProcessor.from_pretrained(folder, backend="pil")


def model_inputs(processor, images: list, captions: list[str]) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask`` and ``pixel_values`` of ``images`` and ``captions``, by ``processor``."""
    text = tokenize_captions(processor.tokenizer, captions)
    pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    return {"input_ids": text["input_ids"], "attention_mask": text["attention_mask"], "pixel_values": pixels}


def _keep_output(features: dict[str, torch.Tensor], name: str):
    def hook(module, inputs, output) -> None:
        features[name] = output

    return hook


def has_original() -> bool:
    """Whether cn_clip's model code imports here (not only whether the package is installed)."""
    return original_problem() is None


def original_problem() -> str | None:
    """Why cn_clip's model code cannot run here — not installed, or installed without what it imports (its
    ``--no-deps`` install leaves out six, timm, Pillow, torchvision) — or ``None`` if it imports."""
    if importlib.util.find_spec("cn_clip") is None:
        return "cn_clip is not installed"
    try:
        import cn_clip.clip  # noqa: F401
    except ImportError as error:
        return f"cn_clip is installed but does not import ({error})"
    return None


def run_original(
    checkpoint: str | Path,
    vocab: str | Path,
    images: list,
    captions: list[str],
    *,
    architecture: Architecture | None = None,
) -> ModelOutputs:
    """cn_clip's own ``CLIP``, tokenizer and ``image_transform`` on the original checkpoint (fp32).

    ``architecture`` gives head counts the weights cannot show (default: read off the checkpoint)."""
    from cn_clip.clip.bert_tokenizer import FullTokenizer
    from cn_clip.clip.model import CLIP
    from cn_clip.clip.utils import image_transform

    from chclip_convert.conversion.reverse import reverse_state_dict
    from chclip_convert.conversion.state_dict import convert_state_dict

    source = load_checkpoint(checkpoint)
    arch = architecture or infer_architecture(source.state_dict)
    tokenizer = FullTokenizer(vocab_file=str(vocab))
    state = {key: value.float() for key, value in source.state_dict.items() if key not in IGNORED}
    if is_flash_layout(state):  # to the standard layout cn_clip builds, through our table
        state = reverse_state_dict(convert_state_dict(state).state_dict)
    with torch.device("meta"):  # no random initialisation: every parameter is the checkpoint's (strict, assigned)
        model = CLIP(**cn_clip_kwargs(arch), tokenizer=tokenizer)
    model.load_state_dict(state, strict=True, assign=True)
    model.eval()
    ids = cn_clip_tokenize(tokenizer, captions)
    pixels = torch.stack([image_transform(arch.image_size)(image) for image in images])
    # One pass of each tower: get_similarity encodes both; the encoders' outputs are kept as it calls them.
    features: dict[str, torch.Tensor] = {}
    model.encode_image = _keep_result(model.encode_image, features, "image")
    model.encode_text = _keep_result(model.encode_text, features, "text")
    with torch.no_grad():
        logits, _ = model.get_similarity(pixels, ids)
    return ModelOutputs(ids, pixels, features["image"], features["text"], logits)


def _keep_result(encode, features: dict[str, torch.Tensor], name: str):
    def run(*args, **kwargs) -> torch.Tensor:
        features[name] = encode(*args, **kwargs)
        return features[name]

    return run


def cn_clip_tokenize(tokenizer, captions: list[str], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """``cn_clip.clip.tokenize``'s algorithm over any vocabulary: [CLS] tokens [SEP], cut, zero-padded."""
    ids = torch.zeros(len(captions), context_length, dtype=torch.long)
    for row, caption in enumerate(captions):
        tokens = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(caption))[: context_length - 2]
        sequence = [tokenizer.vocab["[CLS]"], *tokens, tokenizer.vocab["[SEP]"]]
        ids[row, : len(sequence)] = torch.tensor(sequence)
    return ids


def tokenize_captions(tokenizer, captions: list[str]):
    """A transformers tokenizer's encoding of ``captions`` (ids and attention mask, as tensors) at cn_clip's
    context length: cut and padded to 52, whatever ``model_max_length`` the tokenizer has (a folder whose
    ``tokenizer_config.json`` sets none reads it as 1e30, which would pad nothing)."""
    return tokenizer(captions, padding="max_length", truncation=True, max_length=CONTEXT_LENGTH, return_tensors="pt")


def differences(original: ModelOutputs, converted: ModelOutputs) -> dict[str, float | bool]:
    """Token ids equal, pixel / feature / logit max abs differences, feature cosines, top-1 agreement."""

    def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
        return (a.float() - b.float()).abs().max().item()

    def min_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
        return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).min().item()

    return {
        "token ids equal": bool(torch.equal(original.input_ids, converted.input_ids)),
        "pixel max abs diff": max_abs(original.pixel_values, converted.pixel_values),
        "image feature max abs diff": max_abs(original.image_features, converted.image_features),
        "image feature min cosine": min_cosine(original.image_features, converted.image_features),
        "text feature max abs diff": max_abs(original.text_features, converted.text_features),
        "text feature min cosine": min_cosine(original.text_features, converted.text_features),
        "logits max abs diff": max_abs(original.logits_per_image, converted.logits_per_image),
        "top-1 agrees": bool(torch.equal(original.logits_per_image.argmax(-1), converted.logits_per_image.argmax(-1))),
    }


def original_architecture(name: str) -> Architecture:
    """The architecture of cn_clip's own released model ``name`` (see ``KNOWN_MODELS``), read off the model
    cn_clip's ``create_model`` builds, on the meta device (shapes only, no memory). Needs cn_clip."""
    from cn_clip.clip.utils import create_model

    known = next((model for model in KNOWN_MODELS if model.name == name), None)
    if known is None:
        raise ValueError(f"{name!r} is not one of {', '.join(model.name for model in KNOWN_MODELS)}")
    with torch.device("meta"), contextlib.redirect_stdout(io.StringIO()):  # create_model prints its config
        model = create_model(f"{known.name}@{known.text_name}")
    return infer_architecture(model.state_dict())


def seeded_original_model(clip_kwargs: dict, *, seed: int = 0):
    """cn_clip's ``CLIP(**clip_kwargs)`` in eval mode, with weights that make a wrong mapping show: cn_clip's own
    initialisation under ``seed``, then every LayerNorm perturbed, every all-zero bias drawn and the logit
    scale set to 3. The global random state is left as it was. Needs cn_clip."""
    from cn_clip.clip.model import CLIP

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(**clip_kwargs)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                module = name.split(".")[-2] if "." in name else ""
                if module.startswith("ln") or module == "LayerNorm":
                    parameter.add_(0.1 * torch.randn_like(parameter))
                if name.endswith(("in_proj_bias", ".bias")) and parameter.abs().sum() == 0:
                    parameter.normal_(0.0, 0.02)
            model.logit_scale.fill_(3.0)
    return model.eval()


def write_seeded_original(arch: Architecture, path: str | Path, *, seed: int = 0) -> Path:
    """:func:`seeded_original_model` for ``arch``, saved to ``path`` as cn_clip's training saves it (a
    ``module.``-prefixed state dict with epoch, step and name; no optimizer); return ``path``."""
    model = seeded_original_model(cn_clip_kwargs(arch), seed=seed)
    state = {f"module.{key}": value for key, value in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 1, "step": 100, "name": path.stem, "state_dict": state}, path)
    return path
