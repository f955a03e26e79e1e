"""The files beside the weights: tokenizer and image processor, and the choice of vocabulary.

Preprocessing is written as cn_clip does it — a square bicubic resize with no center crop and OpenAI's
mean and std — because the ChineseCLIPImageProcessor defaults (shortest edge + center crop) differ.
The tokenizer is a ``BertTokenizer`` over cn_clip's ``vocab.txt`` with a maximum length of 52, which gives
the same ids as ``cn_clip.clip.tokenize``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from chclip_convert.errors import ConversionError
from chclip_convert.names import DATA_DIR, PREPROCESSOR_FILE, TOKENIZER_CONFIG_FILE, TOKENIZER_FILE, VOCAB_FILE

CONTEXT_LENGTH = 52
OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]
BICUBIC = 3
# The 21,128-token vocabulary every released Chinese-CLIP model uses (BERT-Base Chinese's, as cn_clip ships it in
# cn_clip/clip/vocab.txt); origin and licence in data/VOCAB_NOTICE.md.
STANDARD_VOCAB = DATA_DIR / VOCAB_FILE
STANDARD_VOCAB_SHA256 = "45bbac6b341c319adc98a532532882e91a9cefc0329aa57bac9ae761c27b291c"
STANDARD_VOCAB_ORIGIN = "the standard Chinese-CLIP vocabulary, shipped with chclip-convert"


def find_vocab(vocab: str | Path | None, checkpoint: str | Path | None) -> tuple[Path, str]:
    """The vocabulary to use and where it was found: the given path, ``vocab.txt`` beside the checkpoint, or
    the standard Chinese-CLIP vocabulary this package ships (:data:`STANDARD_VOCAB`)."""
    if vocab is not None:
        path = Path(vocab).expanduser()
        if not path.is_file():
            raise ConversionError("vocabulary file not found (give the vocab.txt cn_clip uses).", path=path)
        return path, "given"
    if checkpoint is not None:
        beside = Path(checkpoint).with_name(VOCAB_FILE)
        if beside.is_file():
            return beside, "beside the checkpoint"
    return STANDARD_VOCAB, STANDARD_VOCAB_ORIGIN


def is_standard_vocab(path: Path) -> bool:
    """Whether ``path`` holds the standard Chinese-CLIP vocabulary, byte for byte (by its SHA-256)."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest() == STANDARD_VOCAB_SHA256
    except OSError:
        return False


def read_vocab(path: Path) -> dict[str, int]:
    """Token → id, one token per line (see :func:`vocab_tokens`)."""
    return {token: index for index, token in enumerate(vocab_tokens(path))}


def vocab_tokens(path: Path) -> list[str]:
    """The tokens of a ``vocab.txt`` in id order. Splits on "\n" only: some vocab tokens are characters that
    ``str.splitlines`` would treat as line breaks, which would shift every id after them."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        message = f"the vocabulary is not UTF-8 text ({error}); give cn_clip's vocab.txt."
        raise ConversionError(message, path=path) from error
    tokens = text.split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    return [token.rstrip("\r") for token in tokens]


def tokenizer_settings() -> dict:
    """The ``BertTokenizer`` settings that give cn_clip's token ids: lower-casing (which also strips accents),
    Chinese characters split apart, BERT's special tokens, maximum length 52."""
    return {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": True,
        "do_basic_tokenize": True,
        "tokenize_chinese_chars": True,
        "strip_accents": None,
        "model_max_length": CONTEXT_LENGTH,
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
    }


def bert_tokenizer(vocab_path: Path):
    """The ``BertTokenizer`` cn_clip's tokenizer corresponds to (:func:`tokenizer_settings`)."""
    from transformers import BertTokenizer

    settings = {name: value for name, value in tokenizer_settings().items() if name != "tokenizer_class"}
    return BertTokenizer(vocab=read_vocab(vocab_path), **settings)


def vocab_mismatch(vocab_path: Path, vocab_size: int) -> str | None:
    """Why ``vocab_path`` does not fit a model with ``vocab_size`` embedding rows, or ``None`` if it does."""
    count = len(read_vocab(vocab_path))
    if count == vocab_size:
        return None
    return (
        f"the vocabulary has {count} tokens but the model's word embedding has {vocab_size} rows; "
        "give the vocab.txt this model was trained with (--vocab)."
    )


def write_tokenizer(folder: Path, vocab_path: Path, vocab_size: int) -> list[str]:
    """Write the files transformers' ``BertTokenizer`` saves (:func:`tokenizer_settings`), and a copy of
    ``vocab.txt``, into ``folder``; return their names.

    Made with the ``tokenizers`` library that ``BertTokenizer`` runs on, without importing transformers (its
    import takes seconds): a test compares each file with transformers' own, byte for byte.
    """
    mismatch = vocab_mismatch(vocab_path, vocab_size)
    if mismatch:
        raise ConversionError(mismatch, path=vocab_path)
    bert_wordpiece(read_vocab(vocab_path)).save(str(folder / TOKENIZER_FILE))
    settings = {**tokenizer_settings(), "backend": "tokenizers"}
    (folder / TOKENIZER_CONFIG_FILE).write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    shutil.copyfile(vocab_path, folder / VOCAB_FILE)
    return sorted([TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, VOCAB_FILE])


def bert_wordpiece(vocab: dict[str, int]):
    """The ``tokenizers.Tokenizer`` of :func:`tokenizer_settings` over ``vocab``: BERT's normaliser (lower
    case, accents stripped, Chinese characters split apart), its pre-tokeniser, WordPiece, ``[CLS] … [SEP]``."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    settings = tokenizer_settings()
    unk, cls, sep = settings["unk_token"], settings["cls_token"], settings["sep_token"]
    tokenizer = Tokenizer(models.WordPiece(vocab=vocab, unk_token=unk, max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=settings["tokenize_chinese_chars"],
        strip_accents=settings["strip_accents"], lowercase=settings["do_lower_case"],
    )  # fmt: skip
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, tokenizer.token_to_id(cls)), (sep, tokenizer.token_to_id(sep))],
    )  # fmt: skip
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    special = [settings[name] for name in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")]
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in special])
    return tokenizer


def image_processor_settings(image_size: int) -> dict:
    """``preprocessor_config.json`` for cn_clip's ``image_transform(image_size)``: a square bicubic resize to
    ``image_size``, no center crop, OpenAI's mean and std — what ``ChineseCLIPImageProcessor`` reads."""
    square = {"height": image_size, "width": image_size}
    return {
        "image_processor_type": "ChineseCLIPImageProcessor",
        "do_resize": True,
        "size": square,
        "resample": BICUBIC,
        "do_center_crop": False,
        "crop_size": square,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": OPENAI_MEAN,
        "image_std": OPENAI_STD,
        "do_convert_rgb": True,
    }


def write_image_processor(folder: Path, image_size: int) -> list[str]:
    """Write ``preprocessor_config.json`` matching cn_clip's ``image_transform(image_size)``.

    Written as plain JSON, so that converting needs neither Pillow nor torchvision.
    """
    text = json.dumps(image_processor_settings(image_size), indent=2, sort_keys=True) + "\n"
    (folder / PREPROCESSOR_FILE).write_text(text, encoding="utf-8")
    return [PREPROCESSOR_FILE]


def choose_vocab(vocab: str | Path | None, checkpoint: Path, vocab_size: int) -> tuple[Path | None, str, list[str]]:
    """The vocabulary to write a tokenizer from, a description of it, and warnings.

    A vocabulary the user named must fit the model; one found on its own that does not fit is skipped (no
    tokenizer is written, and the warning says to pass ``--vocab``).
    """
    path, origin = find_vocab(vocab, checkpoint)
    mismatch = vocab_mismatch(path, vocab_size)
    if mismatch and origin == "given":
        raise ConversionError(mismatch, path=path)
    if mismatch:
        warning = f"{path.name} ({origin}) not used: {mismatch} No tokenizer was written."
        return None, "not written (no fitting vocabulary)", [warning]
    if path != STANDARD_VOCAB and is_standard_vocab(path):
        origin += "; the standard Chinese-CLIP vocabulary"
    return path, f"{path} ({origin})", []
