"""The training-run commands ``diff``, ``drift``, ``convert-epochs``, ``average`` and ``slim``, added by
:mod:`chclip_convert.cli.main`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

from chclip_convert.names import DTYPE_CHOICES

if TYPE_CHECKING:
    from chclip_convert.progress import OnProgress

T = TypeVar("T")

EXIT_DIFFERS = 5  # diff --exit-code: the two differ
EXIT_FAILED = 1  # convert-epochs: a checkpoint failed (the others were still done)


class AddCommand(Protocol):
    """Adds one subcommand and returns its parser (``main._command`` with the subparsers given)."""

    def __call__(
        self,
        name: str,
        summary: str,
        run: Callable[[argparse.Namespace], int],
        examples: Sequence[str],
        **add_parser_kwargs: str,
    ) -> argparse.ArgumentParser: ...


def add_commands(command: AddCommand) -> None:
    """Add the five subcommands with ``command``, which makes a subcommand's parser."""
    for add in (_add_diff, _add_drift, _add_convert_epochs, _add_average, _add_slim):
        add(command)


def add_card_options(sub: argparse.ArgumentParser) -> None:
    """The model card's options for the Hub, on every command that writes a folder."""
    sub.add_argument("--license", metavar="ID", help="the licence in the model card, as a Hub id (apache-2.0, mit, …)")
    sub.add_argument(
        "--base-model",
        metavar="REPO_ID",
        help="the Hub model these weights were fine-tuned from (e.g. OFA-Sys/chinese-clip-vit-base-patch16)",
    )


def _add_diff(command: AddCommand) -> None:
    examples = (
        "chclip-convert diff pretrained.pt checkpoints/epoch3.pt           what fine-tuning changed",
        "chclip-convert diff checkpoints/epoch3.pt epoch3-hf --exit-code   is this folder that epoch? (exit 5 if not)",
        "chclip-convert diff epoch2.pt epoch3.pt --json > diff.json",
    )
    sub = command("diff", "compare two checkpoints or converted folders, tensor by tensor", _diff, examples)
    sub.add_argument(
        "a", metavar="A", help="an original .pt checkpoint (either layout, any dtype) or a converted folder"
    )
    sub.add_argument("b", metavar="B", help="the same kinds as A")
    sub.add_argument("--json", action="store_true", help="print the comparison as JSON on stdout, and nothing else")
    sub.add_argument("--exit-code", action="store_true", help=f"exit {EXIT_DIFFERS} unless A and B are identical")


def _add_drift(command: AddCommand) -> None:
    summary = "how far each layer moved over a training run: from a reference, and epoch to epoch"
    examples = (
        "chclip-convert drift --reference pretrained.pt logs/my-run            a run folder (or its checkpoints/)",
        "chclip-convert drift --reference chinese-clip-hf epoch1.pt epoch2.pt  a downloaded folder as reference",
        "chclip-convert drift --reference pretrained.pt logs/my-run --json > drift.json",
    )
    sub = command("drift", summary, _drift, examples, usage="%(prog)s --reference REF CHECKPOINT... | RUN_FOLDER")
    sub.add_argument(
        "--reference", required=True, metavar="REF", help="the checkpoint training started from (.pt or folder)"
    )
    sub.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="the run's checkpoints, or its folder")
    sub.add_argument("--json", action="store_true", help="print the result as JSON on stdout, and nothing else")


def _add_convert_epochs(command: AddCommand) -> None:
    summary = "convert several checkpoints in one go, checking each folder and skipping those still up to date"
    examples = (
        "chclip-convert convert-epochs --into converted run/checkpoints/epoch2.pt run/checkpoints/epoch5.pt",
        "chclip-convert convert-epochs --into converted logs/my-run            every checkpoint of the run",
    )
    usage = "%(prog)s --into DIR CHECKPOINT... | RUN_FOLDER [options]"
    sub = command("convert-epochs", summary, _convert_epochs, examples, usage=usage)
    sub.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="checkpoints to convert, or a run folder")
    sub.add_argument("--into", required=True, metavar="DIR", help="the folder to write <run>-<epoch>-hf folders into")
    sub.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto", help="auto keeps every tensor's dtype")
    sub.add_argument("--overwrite", action="store_true", help="replace converted folders of other checkpoints")
    sub.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    sub.add_argument("--json", action="store_true", help="print the outcomes as JSON on stdout")
    add_card_options(sub)


def _add_average(command: AddCommand) -> None:
    summary = "average checkpoints of one architecture into one, in float64, without optimizer state"
    examples = (
        "chclip-convert average --into avg.pt run/checkpoints/epoch3.pt run/checkpoints/epoch4.pt",
        "chclip-convert average --into avg.pt epoch4.pt epoch5.pt --weights 1 2    (1/3 and 2/3)",
    )
    usage = "%(prog)s --into OUT.pt CHECKPOINT... [--weights W...] [options]"
    sub = command("average", summary, _average, examples, usage=usage)
    sub.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="the checkpoints to average (never changed)")
    sub.add_argument("--into", required=True, metavar="OUT.pt", help="the checkpoint to write")
    sub.add_argument(
        "--weights",
        nargs="+",
        type=float,
        metavar="W",
        help="one weight per checkpoint, as proportions: divided by their sum (default: equal)",
    )
    sub.add_argument("--overwrite", action="store_true", help="replace an existing OUT.pt")
    sub.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _add_slim(command: AddCommand) -> None:
    summary = "write a checkpoint without its optimizer state: the weights, epoch, step and run name"
    examples = (
        "chclip-convert slim run/checkpoints/epoch_latest.pt epoch5-slim.pt",
        "chclip-convert slim epoch_latest.pt epoch5-fp16.pt --dtype float16",
    )
    sub = command("slim", summary, _slim, examples, usage="%(prog)s CHECKPOINT OUT.pt [options]")
    sub.add_argument("checkpoint", metavar="CHECKPOINT", help="an original .pt checkpoint (never changed)")
    sub.add_argument("output", metavar="OUT.pt", help="the checkpoint to write")
    sub.add_argument(
        "--dtype",
        choices=[choice for choice in DTYPE_CHOICES if choice != "auto"],
        help="float16: cn_clip's fp16 layout (its vision norms, class and position embeddings and logit_scale stay "
        "float32); bfloat16, float32: every floating-point tensor (default: keep every tensor bit-identical)",
    )
    sub.add_argument("--overwrite", action="store_true", help="replace an existing OUT.pt")
    sub.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _diff(args: argparse.Namespace) -> int:
    from chclip_convert.changes.diff import diff_checkpoints

    diff = diff_checkpoints(args.a, args.b)
    print(json.dumps(diff.to_dict(), indent=2, ensure_ascii=False) if args.json else diff.to_text())
    return EXIT_DIFFERS if args.exit_code and not diff.identical else 0


def _drift(args: argparse.Namespace) -> int:
    from chclip_convert.changes.drift import measure_drift

    drift = measure_drift(args.reference, args.checkpoints)
    print(json.dumps(drift.to_dict(), indent=2, ensure_ascii=False) if args.json else drift.to_text())
    return 0


def _convert_epochs(args: argparse.Namespace) -> int:
    from chclip_convert.changes.drift import run_checkpoints, skipped_checkpoints, without_repeats
    from chclip_convert.changes.epochs import FAILED, check_into, convert_epochs
    from chclip_convert.conversion.summary import CardOptions

    check_into(args.into)  # before anything is said about the checkpoints
    paths, repeats = without_repeats(run_checkpoints(args.checkpoints))
    for entry in skipped_checkpoints(args.checkpoints):
        print(f"skipped: {entry}", file=sys.stderr)
    for info in repeats:
        print(f"{info.name}: the same epoch and step as {info.same_as}; not converted again", file=sys.stderr)
    results = with_progress_bar(args.progress, lambda progress: convert_epochs(
        paths, args.into, dtype=args.dtype, overwrite=args.overwrite, progress=progress,
        card=CardOptions(args.license, args.base_model)))  # fmt: skip
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2, ensure_ascii=False))
    else:
        for result in results:
            print(f"{result.checkpoint.name}: {result.outcome} → {result.folder}\n  {result.detail}")
    return EXIT_FAILED if any(r.outcome == FAILED for r in results) else 0


def _average(args: argparse.Namespace) -> int:
    from chclip_convert.changes.average import average_checkpoints

    summary = with_progress_bar(args.progress, lambda progress: average_checkpoints(
        args.checkpoints, args.into, weights=args.weights, overwrite=args.overwrite, progress=progress))  # fmt: skip
    print(summary.to_text())
    return 0


def _slim(args: argparse.Namespace) -> int:
    from chclip_convert.changes.slim import slim_checkpoint

    summary = with_progress_bar(args.progress, lambda progress: slim_checkpoint(
        args.checkpoint, args.output, dtype=args.dtype, overwrite=args.overwrite, progress=progress))  # fmt: skip
    print(summary.to_text())
    return 0


def with_progress_bar(shown: bool, work: Callable[[OnProgress | None], T]) -> T:
    """``work(progress)`` with the command line's progress bar (``None`` when not ``shown``), closed however it ends."""
    from chclip_convert.cli.progress_bar import ProgressBar

    bar = ProgressBar() if shown else None
    try:
        return work(bar.update if bar else None)
    finally:
        if bar:
            bar.close()
