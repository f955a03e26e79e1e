"""The ``chclip-convert`` command, one subcommand per task.

    chclip-convert convert CHECKPOINT OUTPUT_DIR [--dtype auto|float32|float16|bfloat16] [--vocab VOCAB]
                   [--config CONFIG] [--overwrite] [--report R.json] [--max-shard-size 5GB] [--vision-heads N]
                   [--text-heads N] [--no-strict] [--no-progress] [--sha256] [--verify]
    chclip-convert verify CHECKPOINT FOLDER [--vocab VOCAB] [--vision-heads N] [--text-heads N] [--config CONFIG]
                   [--report VERIFY.json]
    chclip-convert reverse FOLDER OUTPUT.pt [--bare] [--overwrite]
    chclip-convert inspect CHECKPOINT [--json] [--status all|problems|STATUS] [--name TEXT [--regex]]
                   [--vision-heads N] [--text-heads N]
    chclip-convert diff A B [--json] [--exit-code]
    chclip-convert drift --reference REF CHECKPOINT... | RUN_FOLDER [--json]
    chclip-convert convert-epochs --into DIR CHECKPOINT... | RUN_FOLDER [--dtype D] [--overwrite] [--json]

Without a subcommand it converts: ``chclip-convert CHECKPOINT OUTPUT_DIR ...``. The old spellings still work:
``--verify-only CHECKPOINT FOLDER`` is ``verify``, ``--reverse FOLDER OUTPUT.pt`` is ``reverse``, and ``convert``
takes the flags of the script transformers once carried (``--checkpoint_path``, ``--pytorch_dump_folder_path``,
``--config_path``). An option of another command is refused by name, whichever spelling is used.

Exit codes: 0 done; 1 a user error, printed as one paragraph without a traceback; 2 a usage error (argparse);
3 verification failed; 4 ``inspect`` ran and its report lists problems (unused, missing, mismatched or
conflicting keys), on which ``convert`` would stop — distinct from 1, which means the file could not be inspected.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from chclip_convert import __version__
from chclip_convert.cli import runs as cli_run
from chclip_convert.errors import ConversionError, MappingError, OutputError
from chclip_convert.names import DTYPE_CHOICES, STATUS_FILTERS

if TYPE_CHECKING:
    from argparse import _SubParsersAction as Commands

    from chclip_convert.mapping.report import ConversionReport
    from chclip_convert.verification.verify import VerifyReport

EXIT_ERROR = 1
EXIT_VERIFY_FAILED = 3
EXIT_PROBLEMS = 4
EXIT_INTERRUPTED = 130  # as a shell reports a process ended by Ctrl-C (128 + SIGINT)
EXIT_BROKEN_PIPE = 141  # as a shell reports a writer whose reader went away (128 + SIGPIPE)

PROG = "chclip-convert"
COMMANDS = ("convert", "verify", "reverse", "inspect", "diff", "drift", "convert-epochs")
LEGACY_MODES = {"--verify-only": "verify", "--reverse": "reverse"}
_RAW = argparse.RawDescriptionHelpFormatter

EPILOG = """\
examples:
  chclip-convert epoch_latest.pt chinese-clip-hf              convert (the default command)
  chclip-convert convert epoch_latest.pt chinese-clip-hf --verify --report report.json
  chclip-convert verify epoch_latest.pt chinese-clip-hf       check a converted folder
  chclip-convert reverse chinese-clip-hf epoch_back.pt        back to cn_clip's format
  chclip-convert inspect epoch_latest.pt --status problems    how each key maps, without writing
  chclip-convert diff pretrained.pt epoch3.pt                 what fine-tuning changed, layer by layer
  chclip-convert drift --reference pretrained.pt logs/my-run  every epoch of a run at a glance
  chclip-convert convert-epochs --into out logs/my-run        convert chosen epochs (skips up-to-date ones)

exit codes:
  0  done (verify: every check passes; inspect: the checkpoint converts cleanly)
  1  a problem with the input or output, explained in one paragraph
  2  a usage error
  3  verification failed (verify, convert --verify)
  4  inspect: the report lists problems, so convert would stop
  5  diff --exit-code: A and B differ

old spellings, still accepted:
  --verify-only CHECKPOINT FOLDER   (verify)
  --reverse FOLDER OUTPUT.pt        (reverse)
  --checkpoint_path CHECKPOINT --pytorch_dump_folder_path OUTPUT_DIR [--config_path CONFIG]   (convert)
"""

EXAMPLES = {
    "convert": """
        chclip-convert convert epoch_latest.pt chinese-clip-hf
        chclip-convert convert clip_cn_vit-h-14.pt vit-h-fp16 --dtype float16 --report report.json
        chclip-convert convert epoch_latest.pt chinese-clip-hf --verify    (exit 3 if a check fails)
        chclip-convert epoch_latest.pt chinese-clip-hf                     (no subcommand: convert)
        chclip-convert --checkpoint_path x.pt --pytorch_dump_folder_path out --config_path config.json
    """,
    "verify": """
        chclip-convert verify epoch_latest.pt chinese-clip-hf
        chclip-convert verify epoch_latest.pt chinese-clip-hf --vocab vocab.txt --report verify.json
        chclip-convert --verify-only epoch_latest.pt chinese-clip-hf       (the old spelling)
    """,
    "reverse": """
        chclip-convert reverse chinese-clip-hf epoch_back.pt
        chclip-convert reverse chinese-clip-hf weights.pt --bare --overwrite
        chclip-convert --reverse chinese-clip-hf epoch_back.pt             (the old spelling)
    """,
    "inspect": """
        chclip-convert inspect epoch_latest.pt
        chclip-convert inspect epoch_latest.pt --status problems          (exit 4 if there are any)
        chclip-convert inspect epoch_latest.pt --json > keys.json
        chclip-convert inspect epoch_latest.pt --name resblocks.1          (layer 1, not 10 or 11)
        chclip-convert inspect epoch_latest.pt --name 'q_proj|k_proj' --regex
    """,
}


class CommandLine(argparse.ArgumentParser):
    """The top-level parser; ``commands`` holds each subcommand's parser by name."""

    commands: dict[str, argparse.ArgumentParser]


def build_parser() -> CommandLine:
    """The parser: ``--version`` and the four subcommands."""
    parser = CommandLine(
        prog=PROG,
        description="Convert an original Chinese-CLIP (cn_clip) checkpoint into a transformers ChineseCLIPModel "
        "folder, with no config.json needed; check, reverse or inspect a conversion.",
        epilog=EPILOG,
        formatter_class=_RAW,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, title="commands")
    for add in (_add_convert, _add_verify, _add_reverse, _add_inspect):
        add(commands)
    cli_run.add_commands(commands, _command)
    parser.commands = dict(commands.choices)
    return parser


def _command(
    commands: Commands, name: str, summary: str, run: Callable[[argparse.Namespace], int], **kwargs: str
) -> argparse.ArgumentParser:
    """A subcommand's parser, its help ending with the command's examples; ``run`` carries it out."""
    examples = "examples:\n" + textwrap.indent(textwrap.dedent({**EXAMPLES, **cli_run.EXAMPLES}[name]).strip(), "  ")
    sub = commands.add_parser(name, help=summary, description=summary, epilog=examples, formatter_class=_RAW, **kwargs)
    sub.set_defaults(run=run)
    return sub


def _add_convert(commands: Commands) -> None:
    summary = "convert a cn_clip checkpoint into a ChineseCLIPModel folder (the default command)"
    sub = _command(commands, "convert", summary, _convert, usage="%(prog)s CHECKPOINT OUTPUT_DIR [options]")
    sub.add_argument("checkpoint", nargs="?", metavar="CHECKPOINT", help="original .pt (training dict or state dict)")
    sub.add_argument("output_dir", nargs="?", metavar="OUTPUT_DIR", help="folder to write (must not exist or be empty)")
    sub.add_argument("--checkpoint_path", dest="legacy_checkpoint", help=argparse.SUPPRESS)
    sub.add_argument("--pytorch_dump_folder_path", dest="legacy_output", help=argparse.SUPPRESS)
    sub.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto", help="auto keeps every tensor's dtype")
    sub.add_argument(
        "--vocab",
        help="vocab.txt for the tokenizer (default: beside the checkpoint, else the standard Chinese-CLIP one this "
        "package ships); with --verify, also "
        "the reference the tokenizer is checked against",
    )
    _add_config(sub, "optional config.json, checked against the weights")
    sub.add_argument("--overwrite", action="store_true", help="replace a non-empty OUTPUT_DIR once done")
    sub.add_argument(
        "--report", help="also write the key-by-key report to this JSON file; with --verify, the verdict in it too"
    )
    sub.add_argument(
        "--max-shard-size",
        default="5GB",
        help="shard the weights above this size: bytes, or KB/MB/GB/TB as save_pretrained reads them (default 5GB)",
    )
    _add_heads(sub)
    sub.add_argument("--no-strict", dest="strict", action="store_false", help="drop unused source keys")
    sub.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    sub.add_argument(
        "--sha256", action="store_true", help="also record the whole file's SHA-256 (reads every byte, optimizer too)"
    )
    sub.add_argument("--verify", action="store_true", help="after converting, check the folder against the original")


def _add_verify(commands: Commands) -> None:
    summary = "check a converted folder against the original checkpoint (exit 3 if a check fails)"
    sub = _command(commands, "verify", summary, _verify)
    sub.add_argument("checkpoint", metavar="CHECKPOINT", help="the original .pt checkpoint")
    sub.add_argument("folder", metavar="FOLDER", help="the converted folder to check")
    sub.add_argument(
        "--vocab",
        help="the reference vocabulary the folder's tokenizer is checked against (default: vocab.txt beside the "
        "checkpoint, else the standard Chinese-CLIP one this package ships)",
    )
    _add_heads(sub)
    _add_config(sub, "the config.json the folder was converted with, if any")
    sub.add_argument("--report", help="also write every check's verdict to this JSON file")


def _add_reverse(commands: Commands) -> None:
    summary = "turn a ChineseCLIPModel folder back into an original cn_clip .pt checkpoint"
    sub = _command(commands, "reverse", summary, _reverse)
    sub.add_argument("folder", metavar="FOLDER", help="a ChineseCLIPModel folder (this tool's or one from elsewhere)")
    sub.add_argument("output", metavar="OUTPUT.pt", help="the checkpoint to write")
    sub.add_argument("--bare", action="store_true", help="a bare state dict, not cn_clip's training dict")
    sub.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT.pt")


def _add_inspect(commands: Commands) -> None:
    summary = "show how every key of a checkpoint maps, writing nothing (exit 4 if the report lists problems)"
    sub = _command(commands, "inspect", summary, _inspect)
    sub.add_argument("checkpoint", metavar="CHECKPOINT", help="original .pt checkpoint")
    sub.add_argument("--json", action="store_true", help="print the report as JSON on stdout, and nothing else")
    sub.add_argument(
        "--status",
        default="all",
        choices=STATUS_FILTERS,
        metavar="STATUS",
        help=f"show only keys with this status: {', '.join(STATUS_FILTERS)} (default: all)",
    )
    sub.add_argument(
        "--name",
        default="",
        metavar="TEXT",
        help="show only keys whose name or counterpart contains TEXT (case-insensitive); a number at either end "
        "matches whole layer numbers: resblocks.1 is not resblocks.10",
    )
    sub.add_argument("--regex", action="store_true", help="TEXT of --name is a regular expression")
    _add_heads(sub)


def _add_config(sub: argparse.ArgumentParser, text: str) -> None:
    sub.add_argument("--config", "--config_path", dest="config", help=text)


def _add_heads(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--vision-heads", type=int, help="vision attention heads (if not a known model)")
    sub.add_argument("--text-heads", type=int, help="text attention heads (if not a known model)")


def translate_legacy(argv: Sequence[str]) -> list[str]:
    """The old spellings as subcommands: ``--verify-only A B`` → ``verify A B``, ``--reverse A B`` →
    ``reverse A B``, anything else without a subcommand → ``convert ...``.

    Raises ValueError when both old mode flags are given.
    """
    argv = list(argv)
    if not argv or argv[0] in COMMANDS or argv[0] in ("-h", "--help", "--version"):
        return argv
    end = argv.index("--") if "--" in argv else len(argv)
    modes = {LEGACY_MODES[token] for token in argv[:end] if token in LEGACY_MODES}
    if len(modes) > 1:
        raise ValueError("--verify-only and --reverse are two different commands; give one")
    rest = [token for index, token in enumerate(argv) if index >= end or token not in LEGACY_MODES]
    return [modes.pop() if modes else "convert", *rest]


def refuse_foreign_options(parser: CommandLine, argv: Sequence[str]) -> None:
    """Exit with a usage error naming an option that belongs to another command (``--bare`` outside reverse)."""
    if not argv or argv[0] not in parser.commands:
        return
    command, *rest = argv
    # argparse keeps each parser's option strings in _option_string_actions; there is no public accessor.
    known = {name: set(sub._option_string_actions) for name, sub in parser.commands.items()}
    for token in itertools.takewhile(lambda token: token != "--", rest):
        flag = token.split("=", 1)[0]
        owners = [name for name, flags in known.items() if flag in flags]
        if owners and command not in owners:
            spelled = [_with_old_spelling(owner) for owner in owners]
            named = spelled[0] if len(spelled) == 1 else f"{', '.join(spelled[:-1])} and {spelled[-1]}"
            parser.commands[command].error(f"{flag} is an option of {named}, not of {command}")


def _with_old_spelling(command: str) -> str:
    old = next((flag for flag, mode in LEGACY_MODES.items() if mode == command), None)
    return f"{command} (or the old {old})" if old else command


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code (argparse itself exits 2 on a usage error)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # what was being written has been removed on the way out
        print("interrupted: stopped, and nothing half-written was left behind.", file=sys.stderr)
        if argv is None:  # the program itself: end now, not after a helper thread stopped mid-import finishes
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush fails no more
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(_prepare(parser, sys.argv[1:] if argv is None else argv))
    if args.command == "convert":
        _resolve_convert_paths(parser.commands["convert"], args)
    if args.command == "inspect":
        _check_name_filter(parser.commands["inspect"], args)
    try:
        return args.run(args)
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR


def _prepare(parser: CommandLine, argv: Sequence[str]) -> list[str]:
    try:
        translated = translate_legacy(argv)
    except ValueError as error:
        parser.error(str(error))
    if not translated:
        parser.error(f"give a command ({', '.join(COMMANDS)}), or CHECKPOINT OUTPUT_DIR to convert; see --help")
    refuse_foreign_options(parser, translated)
    return translated


def _resolve_convert_paths(sub: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    args.checkpoint = args.checkpoint or args.legacy_checkpoint
    args.output_dir = args.output_dir or args.legacy_output
    if not args.checkpoint or not args.output_dir:
        sub.error("give CHECKPOINT and OUTPUT_DIR (or --checkpoint_path and --pytorch_dump_folder_path)")


def _check_name_filter(sub: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    from chclip_convert.conversion.inspection import NameFilterError, name_pattern

    try:
        name_pattern(args.name, regex=args.regex)
    except NameFilterError as error:
        sub.error(f"--name {args.name!r}: {error}")


def _convert(args: argparse.Namespace) -> int:
    """Convert and print the summary; with --verify, verify too. --report is written once, holding both."""
    from chclip_convert.conversion.pipeline import convert_checkpoint

    bar = _ByteBar() if args.progress else None
    try:
        summary = convert_checkpoint(
            args.checkpoint,
            args.output_dir,
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
    except MappingError as error:
        if error.report is not None and args.report:
            _write_json(args.report, {"ok": False, "error": str(error), "report": error.report.to_dict()})
        raise
    finally:
        if bar:
            bar.close()
    print(summary.to_text())
    record = summary.to_dict()
    try:
        return _verify_after_converting(args, record) if args.verify else 0
    finally:  # also when verification stops on an error: the conversion itself succeeded
        if args.report:
            _write_json(args.report, record)


def _verify_after_converting(args: argparse.Namespace, record: dict) -> int:
    report = _verification(args, args.checkpoint, args.output_dir)
    record["verification"] = report.to_dict()
    return 0 if report.ok else EXIT_VERIFY_FAILED


def _verify(args: argparse.Namespace) -> int:
    report = _verification(args, args.checkpoint, args.folder)
    if args.report:
        _write_json(args.report, report.to_dict())
    return 0 if report.ok else EXIT_VERIFY_FAILED


def _verification(args: argparse.Namespace, checkpoint: str, folder: str) -> VerifyReport:
    """Verify ``folder`` against ``checkpoint`` with the command's options, and print the verdict."""
    from chclip_convert.verification.verify import verify_folder

    options = {"vision_heads": args.vision_heads, "text_heads": args.text_heads, "config": args.config}
    report = verify_folder(checkpoint, folder, vocab=args.vocab, **options)
    print(report.to_text())
    return report


def _reverse(args: argparse.Namespace) -> int:
    from chclip_convert.conversion.reverse import reverse_folder

    print(reverse_folder(args.folder, args.output, bare=args.bare, overwrite=args.overwrite).to_text())
    return 0


def _inspect(args: argparse.Namespace) -> int:
    """Print the key report, as a table or as JSON; EXIT_PROBLEMS when it lists any problem."""
    report = _key_report(args)
    if args.json:
        print(json.dumps(_report_json(report, args), indent=2, ensure_ascii=False))
    else:
        print(_report_text(report, args))
    return 0 if report.ok else EXIT_PROBLEMS


def _key_report(args: argparse.Namespace) -> ConversionReport:
    from chclip_convert.conversion.inspection import inspect_checkpoint

    return inspect_checkpoint(args.checkpoint, vision_heads=args.vision_heads, text_heads=args.text_heads)


def _report_json(report: ConversionReport, args: argparse.Namespace) -> dict:
    """``report.to_dict()``; with --status or --name, its ``sources`` and ``targets`` hold only the keys shown
    (``ok``, ``summary`` and ``problems`` always describe the whole report)."""
    shown = {(row["side"], row["key"]) for row in _shown_rows(report, args)}
    data = report.to_dict()
    for side in ("source", "target"):
        data[f"{side}s"] = [record for record in data[f"{side}s"] if (side, record["key"]) in shown]
    return data


def _report_text(report: ConversionReport, args: argparse.Namespace) -> str:
    """The summary, notes, the table of keys (filtered by --status and --name) and, if any, the problems with
    their fixes."""
    from chclip_convert.conversion.inspection import rows_to_text

    rows = _shown_rows(report, args)
    lines = [f"{args.checkpoint}: {report.summary()}", *(f"note: {note}" for note in report.notes)]
    if args.status != "all" or args.name.strip():
        lines.append(f"{len(rows)} of {len(report.rows())} keys shown ({_filters(args)})")
    lines += ["", rows_to_text(rows)]
    if not report.ok:
        lines += ["", report.format_problems()]
    return "\n".join(lines)


def _shown_rows(report: ConversionReport, args: argparse.Namespace) -> list[dict]:
    from chclip_convert.conversion.inspection import filter_rows

    return filter_rows(report.rows(), status=args.status, text=args.name, regex=args.regex)


def _filters(args: argparse.Namespace) -> str:
    given = [f"--status {args.status}"] if args.status != "all" else []
    if args.name.strip():
        given.append(f"--name {args.name.strip()}" + (" --regex" if args.regex else ""))
    return ", ".join(given)


class _ByteBar:
    """A tqdm bar of the bytes written, fed with :class:`~chclip_convert.conversion.pipeline.WriteProgress`."""

    def __init__(self) -> None:
        self._bar = None

    def update(self, progress) -> None:
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(
                total=progress.bytes_total, unit="B", unit_scale=True, desc="writing weights", file=sys.stderr
            )
        self._bar.update(progress.bytes_done - self._bar.n)

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
