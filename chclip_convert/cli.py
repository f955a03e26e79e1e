"""The ``chclip-convert`` command.

    chclip-convert CHECKPOINT OUTPUT_DIR [--dtype auto|float32|float16|bfloat16] [--vocab VOCAB]
                   [--config CONFIG] [--overwrite] [--report R.json] [--max-shard-size 5GB] [--sha256] [--verify]
    chclip-convert --verify-only CHECKPOINT OUTPUT_DIR [--vocab VOCAB] [--report VERIFY.json]
    chclip-convert --reverse HF_DIR OUTPUT.pt [--bare] [--overwrite]

The flags of the script transformers once carried (``--checkpoint_path``, ``--pytorch_dump_folder_path``,
``--config_path``) are accepted too. User errors print one paragraph and exit 1, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .constants import DTYPE_CHOICES
from .errors import ConversionError, MappingError, OutputError

EXIT_ERROR = 1
EXIT_VERIFY_FAILED = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chclip-convert",
        description="Convert an original Chinese-CLIP (cn_clip) checkpoint into a transformers "
        "ChineseCLIPModel folder, with no config.json needed.",
    )
    parser.add_argument("checkpoint", nargs="?", help="original .pt checkpoint (training dict or state dict)")
    parser.add_argument("output_dir", nargs="?", help="folder to write (must not exist or be empty)")
    parser.add_argument("--checkpoint_path", dest="legacy_checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--pytorch_dump_folder_path", dest="legacy_output", help=argparse.SUPPRESS)
    parser.add_argument(
        "--config", "--config_path", dest="config", help="optional config.json, checked against the weights"
    )
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto", help="auto keeps every tensor's dtype")
    parser.add_argument(
        "--vocab",
        help="vocab.txt for the tokenizer; with --verify(-only), the reference the folder's tokenizer is checked "
        "against (default: beside the checkpoint, or cn_clip's)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUTPUT_DIR once done")
    parser.add_argument(
        "--report",
        help="also write the full key-by-key report to this JSON file; with --verify(-only), every check's verdict",
    )
    parser.add_argument("--max-shard-size", default="5GB", help="shard the weights above this size (default 5GB)")
    parser.add_argument("--vision-heads", type=int, help="vision attention heads (if not a known model)")
    parser.add_argument("--text-heads", type=int, help="text attention heads (if not a known model)")
    parser.add_argument("--no-strict", dest="strict", action="store_false", help="drop unused source keys")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.add_argument(
        "--sha256", action="store_true", help="also record the whole file's SHA-256 (reads every byte, optimizer too)"
    )
    parser.add_argument("--verify", action="store_true", help="after converting, check the folder against the original")
    parser.add_argument("--verify-only", action="store_true", help="check an existing OUTPUT_DIR; convert nothing")
    parser.add_argument(
        "--reverse", action="store_true", help="turn a transformers folder (first argument) into an original .pt"
    )
    parser.add_argument("--bare", action="store_true", help="with --reverse: a bare state dict, no training dict")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    checkpoint = args.checkpoint or args.legacy_checkpoint
    output_dir = args.output_dir or args.legacy_output
    if not checkpoint or not output_dir:
        parser.error("give CHECKPOINT and OUTPUT_DIR (or --checkpoint_path and --pytorch_dump_folder_path)")
    try:
        if args.reverse:
            return _reverse(checkpoint, output_dir, args)
        if args.verify_only:
            return _verify(checkpoint, output_dir, args)
        return _convert(checkpoint, output_dir, args)
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR


def _convert(checkpoint: str, output_dir: str, args: argparse.Namespace) -> int:
    from .pipeline import convert_checkpoint

    bar = _ByteBar() if args.progress else None
    try:
        summary = convert_checkpoint(
            checkpoint,
            output_dir,
            dtype=args.dtype,
            vocab=args.vocab,
            config=args.config,
            overwrite=args.overwrite,
            max_shard_size=args.max_shard_size,
            vision_heads=args.vision_heads,
            text_heads=args.text_heads,
            strict=args.strict,
            progress=bar.update if bar else None,
            file_sha256=args.sha256,
        )
    except ConversionError as error:
        if bar:
            bar.close()
        print(f"error: {error}", file=sys.stderr)
        if isinstance(error, MappingError) and error.report is not None and args.report:
            _write_json(args.report, {"ok": False, "error": str(error), "report": error.report.to_dict()})
        return EXIT_ERROR
    if bar:
        bar.close()
    print(summary.to_text())
    record = summary.to_dict()
    try:
        return _verify(checkpoint, output_dir, args, conversion=record) if args.verify else 0
    finally:  # written once, with the verdict when there is one (also if verification stops on an error)
        if args.report:
            _write_json(args.report, record)


def _verify(checkpoint: str, output_dir: str, args: argparse.Namespace, conversion: dict | None = None) -> int:
    """Verify and print the verdict; the verdict goes into ``conversion`` if given (the caller writes it),
    else into --report."""
    from .verify import verify

    report = verify(
        checkpoint,
        output_dir,
        vocab=args.vocab,
        vision_heads=args.vision_heads,
        text_heads=args.text_heads,
        config=args.config,
    )
    if conversion is not None:
        conversion["verification"] = report.to_dict()
    elif args.report:
        _write_json(args.report, report.to_dict())
    print(report.to_text())
    return 0 if report.ok else EXIT_VERIFY_FAILED


def _reverse(folder: str, output: str, args: argparse.Namespace) -> int:
    from .reverse import reverse_folder

    print(reverse_folder(folder, output, bare=args.bare, overwrite=args.overwrite).to_text())
    return 0


class _ByteBar:
    """A tqdm bar fed with (done, total) byte counts."""

    def __init__(self) -> None:
        self._bar = None

    def update(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=total, unit="B", unit_scale=True, desc="writing weights", file=sys.stderr)
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _write_json(path: str, data: dict) -> None:
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as error:
        raise OutputError(f"cannot write the report: {error.strerror or error}.", path=target) from error


if __name__ == "__main__":
    sys.exit(main())
