"""A folder's tokenizer against a reference vocabulary that never comes from the folder: ``vocab.txt`` and
``tokenizer.json`` entry by entry, and the token ids of captions id by id."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from chclip_convert.errors import ConversionError
from chclip_convert.files.assets import bert_tokenizer, vocab_tokens
from chclip_convert.names import TOKENIZER_FILE, VOCAB_FILE
from chclip_convert.verification.config_checks import ABSENT
from chclip_convert.verification.model_outputs import tokenize_captions

MAX_VOCAB = 10_000_000  # far above any BERT vocabulary; a larger id is a damaged file, not a token


@dataclass(frozen=True)
class TokenDifference:
    """Entry ``id`` holds ``folder`` in the folder and ``reference`` in the reference (``None``: no entry)."""

    id: int
    folder: str | None
    reference: str | None

    def __str__(self) -> str:
        return f"id {self.id}: folder {_token(self.folder)}, reference {_token(self.reference)}"


def compare_vocab(folder_tokens: list[str | None], reference_tokens: list[str]) -> list[TokenDifference]:
    """Every id whose token differs, including ids only one side has."""
    pairs = enumerate(itertools.zip_longest(folder_tokens, reference_tokens))
    return [TokenDifference(index, ours, theirs) for index, (ours, theirs) in pairs if ours != theirs]


def tokenizer_json_tokens(path: Path) -> list[str | None]:
    """The id-ordered tokens of a ``tokenizer.json`` WordPiece model (``None`` for ids it does not assign).

    Raises:
        ValueError: the file is not a WordPiece ``tokenizer.json``.
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    model = data.get("model") if isinstance(data, dict) else None
    vocab = model.get("vocab") if isinstance(model, dict) else None
    if not isinstance(vocab, dict):
        raise ValueError("it has no WordPiece model.vocab")
    ids = list(vocab.values())
    if not all(type(index) is int and 0 <= index < MAX_VOCAB for index in ids):
        raise ValueError(f"its model.vocab holds ids that are not integers in 0…{MAX_VOCAB - 1}")
    tokens: list[str | None] = [None] * (max(ids, default=-1) + 1)
    for token, index in vocab.items():
        tokens[index] = token
    return tokens


def folder_vocabularies(folder: Path) -> dict[str, list[str | None] | str]:
    """File name → its id-ordered tokens, or why they cannot be read, for ``vocab.txt`` and ``tokenizer.json``."""
    found: dict[str, list[str | None] | str] = {}
    for name, read in ((VOCAB_FILE, vocab_tokens), (TOKENIZER_FILE, tokenizer_json_tokens)):
        file = folder / name
        if not file.is_file():
            found[name] = ABSENT
            continue
        try:
            found[name] = list(read(file))
        except (ValueError, ConversionError) as error:  # a JSONDecodeError is a ValueError too
            found[name] = f"unreadable ({getattr(error, 'message', error)})"
    return found


def reference_token_ids(vocab: Path, captions: list[str], *, use_original: bool) -> torch.Tensor:
    """Token ids of ``captions`` from the reference vocabulary: cn_clip's own tokenizer when ``use_original``,
    else a ``BertTokenizer`` with the settings the converter writes (lower-casing, length 52)."""
    if use_original:
        from cn_clip.clip.bert_tokenizer import FullTokenizer

        from chclip_convert.verification.model_outputs import cn_clip_tokenize

        return cn_clip_tokenize(FullTokenizer(vocab_file=str(vocab)), captions)
    return _ids(bert_tokenizer(vocab), captions)


def folder_token_ids(folder: Path, captions: list[str]) -> torch.Tensor:
    """Token ids of ``captions`` from the folder's tokenizer, as ``AutoTokenizer`` loads it, at cn_clip's
    context length (52) whatever maximum length the folder sets."""
    from transformers import AutoTokenizer

    return _ids(AutoTokenizer.from_pretrained(folder), captions)


def compare_ids(folder_ids: torch.Tensor, reference_ids: torch.Tensor, captions: list[str]) -> list[str]:
    """One line per caption whose ids differ, naming the first differing position and both ids."""
    if folder_ids.shape != reference_ids.shape:
        return [f"shape {list(folder_ids.shape)}, reference {list(reference_ids.shape)} (padding or maximum length)"]
    lines = []
    for row, caption in enumerate(captions):
        differing = (folder_ids[row] != reference_ids[row]).nonzero().flatten().tolist()
        if differing:
            at = differing[0]
            lines.append(
                f"caption {row} {caption!r} position {at}: folder {folder_ids[row, at].item()}, "
                f"reference {reference_ids[row, at].item()}"
            )
    return lines


def _ids(tokenizer, captions: list[str]) -> torch.Tensor:
    return tokenize_captions(tokenizer, captions)["input_ids"]


def _token(token: str | None) -> str:
    return "(none)" if token is None else repr(token)
