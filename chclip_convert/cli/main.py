"""The ``chclip-convert`` command: one subcommand per task, over the library's functions.

Without a subcommand it converts, so ``chclip-convert CHECKPOINT OUTPUT_DIR`` and the flags of the script
transformers once carried (``--checkpoint_path``, ``--pytorch_dump_folder_path``, ``--config_path``) still work.
``chclip-convert COMMAND --help`` shows a command's options and examples; docs/cli.md explains them.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from chclip_convert import __version__
from chclip_convert.cli import runs as cli_run
from chclip_convert.errors import ConversionError, MappingError, OutputError
from chclip_convert.names import DTYPE_CHOICES, STATUS_FILTERS

if TYPE_CHECKING:
    from chclip_convert.mapping.report import ConversionReport
    from chclip_convert.verification.verify import VerifyReport

EXIT_ERROR = 1
EXIT_VERIFY_FAILED = 3
EXIT_PROBLEMS = 4
EXIT_INTERRUPTED = 130  # as a shell reports a process ended by Ctrl-C (128 + SIGINT)
EXIT_BROKEN_PIPE = 141  # as a shell reports a writer whose reader went away (128 + SIGPIPE)

PROG = "chclip-convert"
REMOVED_MODES = {"--verify-only": "verify", "--reverse": "reverse"}  # gone: named in the usage error
_RAW = argparse.RawDescriptionHelpFormatter

EPILOG = f"""\
Without a COMMAND it converts: {PROG} CHECKPOINT OUTPUT_DIR [options].
{PROG} COMMAND --help shows a command's options and examples; docs/cli.md explains each.

exit codes:
  0 done, 1 an error in the input or output (one paragraph), 2 a usage error,
  3 verification (or an exported model's check) failed, 4 inspect found problems, 5 diff --exit-code found differences,
  130 stopped by Ctrl-C (nothing half-written is left), 141 the reader went away (| head)
"""


class CommandLine(argparse.ArgumentParser):
    """A parser that records its option strings (``flags``); the top level's ``commands`` holds each
    subcommand's parser (of this class too) by name."""

    commands: dict[str, CommandLine]

    def __init__(self, *args, **kwargs) -> None:
        self.flags: set[str] = set()  # before argparse adds --help
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.flags.update(action.option_strings)
        return action


def build_parser() -> CommandLine:
    """The parser: ``--version`` and the subcommands."""
    parser = CommandLine(
        prog=PROG,
        description="Convert original Chinese-CLIP (cn_clip) checkpoints into transformers ChineseCLIPModel folders\n"
        "(no config.json needed); check, reverse, inspect and compare them.",
        epilog=EPILOG,
        formatter_class=_RAW,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(metavar="COMMAND", title="commands")
    for add in (_add_convert, _add_verify, _add_reverse, _add_inspect, cli_run.add_commands, _add_export_onnx):
        add(functools.partial(_command, commands))
    parser.commands = dict(commands.choices)
    return parser


def _command(
    commands, name: str, summary: str, run: Callable[[argparse.Namespace], int], examples: Sequence[str], **kwargs: str
) -> argparse.ArgumentParser:
    """A subcommand's parser, its help ending with ``examples``; ``run`` carries it out.

    ``commands`` is what ``add_subparsers`` returned; ``kwargs`` go to ``add_parser`` (``usage``, say).
    """
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)
    sub = commands.add_parser(name, help=summary, description=summary, epilog=epilog, formatter_class=_RAW, **kwargs)
    sub.set_defaults(run=run)
    return sub


def _add_convert(command: cli_run.AddCommand) -> None:
    summary = "convert a cn_clip checkpoint into a ChineseCLIPModel folder (the default command)"
    examples = (
        f"{PROG} convert epoch_latest.pt chinese-clip-hf",
        f"{PROG} convert clip_cn_vit-h-14.pt vit-h-fp16 --dtype float16 --report report.json",
        f"{PROG} epoch_latest.pt chinese-clip-hf --verify     (no command: convert; exit 3 if a check fails)",
        "python -m chclip_convert --checkpoint_path x.pt --pytorch_dump_folder_path out --config_path config.json",
    )
    sub = command("convert", summary, _convert, examples, usage="%(prog)s CHECKPOINT OUTPUT_DIR [options]")
    sub.add_argument("checkpoint", nargs="?", metavar="CHECKPOINT", help="original .pt (training dict or state dict)")
    sub.add_argument("output_dir", nargs="?", metavar="OUTPUT_DIR", help="folder to write (must not exist or be empty)")
    sub.add_argument("--checkpoint_path", dest="legacy_checkpoint", help=argparse.SUPPRESS)
    sub.add_argument("--pytorch_dump_folder_path", dest="legacy_output", help=argparse.SUPPRESS)
    sub.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto", help="auto keeps every tensor's dtype")
    sub.add_argument(
        "--vocab",
        help="vocab.txt for the tokenizer (default: beside the checkpoint, else the standard Chinese-CLIP one this "
        "package ships); with --verify, also the reference the tokenizer is checked against",
    )
    _add_config(sub, "optional config.json, checked against the weights")
    sub.add_argument("--overwrite", action="store_true", help="replace a non-empty OUTPUT_DIR once done")
    sub.add_argument(
        "--report",
        metavar="REPORT.json",
        help="also write the key-by-key report to this file; with --verify, the verdict in it too",
    )
    sub.add_argument(
        "--max-shard-size",
        default="5GB",
        metavar="SIZE",
        help="shard the weights above this size: bytes, or KB/MB/GB/TB as save_pretrained reads them (default 5GB)",
    )
    _add_heads(sub)
    sub.add_argument("--no-strict", dest="strict", action="store_false", help="drop unused source keys")
    sub.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    sub.add_argument(
        "--sha256", action="store_true", help="also record the whole file's SHA-256 (reads every byte, optimizer too)"
    )
    sub.add_argument("--verify", action="store_true", help="after converting, check the folder against the original")
    cli_run.add_card_options(sub)
    sub.add_argument(
        "--record-paths",
        action="store_true",
        help="record absolute paths in conversion_report.json (default: the checkpoint relative to the folder)",
    )


def _add_verify(command: cli_run.AddCommand) -> None:
    summary = "check a converted folder against the original checkpoint (exit 3 if a check fails)"
    examples = (
        f"{PROG} verify epoch_latest.pt chinese-clip-hf",
        f"{PROG} verify epoch_latest.pt chinese-clip-hf --vocab vocab.txt --report verify.json",
    )
    sub = command("verify", summary, _verify, examples)
    sub.add_argument("checkpoint", metavar="CHECKPOINT", help="the original .pt checkpoint")
    sub.add_argument("folder", metavar="FOLDER", help="the converted folder to check")
    sub.add_argument(
        "--vocab",
        help="the reference vocabulary the folder's tokenizer is checked against (default: vocab.txt beside the "
        "checkpoint, else the standard Chinese-CLIP one this package ships)",
    )
    _add_heads(sub)
    _add_config(sub, "the config.json the folder was converted with, if any")
    sub.add_argument("--report", metavar="REPORT.json", help="also write every check's verdict to this file")


def _add_reverse(command: cli_run.AddCommand) -> None:
    summary = "turn a ChineseCLIPModel folder back into an original cn_clip .pt checkpoint"
    examples = (
        f"{PROG} reverse chinese-clip-hf epoch_back.pt",
        f"{PROG} reverse chinese-clip-hf weights.pt --bare --overwrite",
    )
    sub = command("reverse", summary, _reverse, examples)
    sub.add_argument("folder", metavar="FOLDER", help="a ChineseCLIPModel folder (this tool's or one from elsewhere)")
    sub.add_argument("output", metavar="OUTPUT.pt", help="the checkpoint to write")
    sub.add_argument("--bare", action="store_true", help="a bare state dict, not cn_clip's training dict")
    sub.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT.pt")


def _add_inspect(command: cli_run.AddCommand) -> None:
    summary = "show how every key of a checkpoint maps, writing nothing (exit 4 if the report lists problems)"
    examples = (
        f"{PROG} inspect epoch_latest.pt --status problems           (exit 4 if there are any)",
        f"{PROG} inspect epoch_latest.pt --json > keys.json",
        f"{PROG} inspect epoch_latest.pt --name resblocks.1          (layer 1, not 10 or 11)",
        f"{PROG} inspect epoch_latest.pt --name 'q_proj|k_proj' --regex",
    )
    sub = command("inspect", summary, _inspect, examples)
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
        help="show only keys whose name or counterpart (original or transformers name) holds every word of TEXT "
        "(case-insensitive); a number at either end of a word matches whole layer numbers: resblocks.1 is not "
        "resblocks.10",
    )
    sub.add_argument("--regex", action="store_true", help="TEXT of --name is a regular expression")
    _add_heads(sub)


def _add_export_onnx(command: cli_run.AddCommand) -> None:
    summary = "export a folder (or a checkpoint, converted first) to ONNX files, checked by onnxruntime (exit 3 if not)"
    examples = (
        f"{PROG} export-onnx chinese-clip-hf                          (writes chinese-clip-hf/onnx/)",
        f"{PROG} export-onnx epoch_latest.pt chinese-clip-hf          (converts, then exports into its onnx/)",
        f"{PROG} export-onnx chinese-clip-hf --dtype float16 --quantize --report export.json",
    )
    sub = command("export-onnx", summary, _export_onnx, examples, usage="%(prog)s SOURCE [OUTPUT] [options]")
    sub.add_argument("source", metavar="SOURCE", help="a ChineseCLIPModel folder, or an original .pt checkpoint")
    sub.add_argument(
        "output",
        nargs="?",
        metavar="OUTPUT",
        help="from a folder: where the .onnx files go (default SOURCE/onnx); from a checkpoint: the folder to "
        "convert into, the .onnx files in its onnx/ (default <checkpoint name>-hf beside it)",
    )
    sub.add_argument(
        "--dtype", choices=("float32", "float16"), default="float32", help="float16 adds *_fp16.onnx files"
    )
    sub.add_argument("--quantize", action="store_true", help="add *_quantized.onnx files (int8 dynamic quantization)")
    sub.add_argument("--opset", type=_opset, default=18, metavar="N", help="ONNX opset, 17 or later (default 18)")
    sub.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT once the new one passes")
    sub.add_argument("--keep-failed", action="store_true", help="keep files that fail their check (exit 3)")
    sub.add_argument(
        "--no-original", dest="original", action="store_false",
        help="do not also check the files against cn_clip's own model on the source checkpoint",
    )  # fmt: skip
    sub.add_argument("--report", metavar="REPORT.json", help="also write every check's verdict to this file")
    sub.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _opset(text: str) -> int:
    if not text.isdigit() or int(text) < 17:  # LayerNormalization and PyTorch 2's attention need 17 or later
        raise argparse.ArgumentTypeError(f"{text!r} is not an opset of 17 or later")
    return int(text)


def _add_config(sub: argparse.ArgumentParser, text: str) -> None:
    sub.add_argument("--config", "--config_path", dest="config", metavar="CONFIG", help=text)


def _add_heads(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--vision-heads", type=int, metavar="N", help="vision attention heads (if not a known model)")
    sub.add_argument("--text-heads", type=int, metavar="N", help="text attention heads (if not a known model)")


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
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        return args.run(args)
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """The arguments of one command, ``run`` among them; exits 2 on a usage error, 0 after --help or --version."""
    parser = build_parser()
    argv = with_command(parser, argv)
    if argv[0] not in parser.commands:
        parser.parse_args(argv)  # -h, --help or --version: it prints and exits
    sub = parser.commands[argv[0]]
    args, unknown = sub.parse_known_intermixed_args(argv[1:])  # paths before, between or after options
    if unknown:  # said by the command's own parser, so its usage is the one shown
        sub.error(_unknown_options(parser, argv[0], unknown))
    if argv[0] == "convert":
        _resolve_convert_paths(sub, args)
    if argv[0] == "inspect":
        _check_name_filter(sub, args)
    return args


def with_command(parser: CommandLine, argv: Sequence[str]) -> list[str]:
    """``argv`` led by its command: one that starts with no command (a path, an option) is a ``convert``.

    Exits with a usage error when ``argv`` is empty or holds a removed mode flag (naming the command to use).
    """
    if not argv:
        parser.error(f"give a command ({', '.join(parser.commands)}), or CHECKPOINT OUTPUT_DIR to convert")
    removed = [token for token in argv if token.split("=", 1)[0] in REMOVED_MODES]
    if len(removed) > 1:
        parser.error(f"{' and '.join(removed)} were removed; use one command: verify or reverse")
    if removed:
        flag = removed[0].split("=", 1)[0]
        rest = [t for t in argv[argv[0] in parser.commands :] if t != flag and not t.startswith(f"{flag}=")]
        rest = [removed[0].split("=", 1)[1], *rest] if "=" in removed[0] else rest
        parser.error(f"{flag} was removed; use: {shlex.join([PROG, REMOVED_MODES[flag], *rest])}")
    if argv[0] in parser.commands or argv[0] in ("-h", "--help", "--version"):
        return list(argv)
    return ["convert", *argv]


def _unknown_options(parser: CommandLine, command: str, unknown: list[str]) -> str:
    """The usage error for arguments ``command`` does not take, naming the command an option belongs to."""
    for token in unknown:
        flag = token.split("=", 1)[0]
        owners = [name for name, sub in parser.commands.items() if flag in sub.flags]
        if owners:
            named = owners[0] if len(owners) == 1 else f"{', '.join(owners[:-1])} and {owners[-1]}"
            return f"{flag} is an option of {named}, not of {command}"
    return f"unrecognized arguments: {' '.join(unknown)}"


def _resolve_convert_paths(sub: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    spellings = (
        ("CHECKPOINT", "--checkpoint_path", args.checkpoint, args.legacy_checkpoint),
        ("OUTPUT_DIR", "--pytorch_dump_folder_path", args.output_dir, args.legacy_output),
    )
    for name, flag, positional, legacy in spellings:
        if positional and legacy:
            sub.error(f"give {name} or {flag}, not both")
    args.checkpoint = args.checkpoint or args.legacy_checkpoint
    args.output_dir = args.output_dir or args.legacy_output
    if not args.checkpoint or not args.output_dir:
        sub.error("give CHECKPOINT and OUTPUT_DIR (or --checkpoint_path and --pytorch_dump_folder_path)")


def _check_name_filter(sub: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse, as a usage error, a ``--name`` regular expression that does not compile."""
    from chclip_convert.conversion.inspection import NameFilterError, name_filter

    try:
        name_filter(args.name, regex=args.regex)
    except NameFilterError as error:
        sub.error(f"--name {args.name!r}: {error}")


def _convert(args: argparse.Namespace) -> int:
    """Convert and print the summary; with --verify, verify too. --report is written once, holding both."""
    from chclip_convert.cli.progress_bar import ProgressBar
    from chclip_convert.conversion.pipeline import convert_checkpoint

    bar = ProgressBar() if args.progress else None
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
            license=args.license,
            base_model=args.base_model,
            record_paths=args.record_paths,
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
        if not args.verify:
            return 0
        report = _verification(args, args.checkpoint, args.output_dir)
        record["verification"] = report.to_dict()
        return 0 if report.ok else EXIT_VERIFY_FAILED
    finally:  # also when verification stops on an error: the conversion itself succeeded
        if args.report:
            _write_json(args.report, record)


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


def _export_onnx(args: argparse.Namespace) -> int:
    """Export and print the verdict; --report holds it, also when a check failed and nothing was kept."""
    from chclip_convert.errors import ExportCheckError
    from chclip_convert.export.requirements import require_export_packages

    require_export_packages()  # before torch and transformers load: one line, at once
    from chclip_convert.cli.progress_bar import ProgressBar
    from chclip_convert.export.pipeline import export_onnx

    bar = ProgressBar() if args.progress else None
    options = {
        "dtype": args.dtype, "quantize": args.quantize, "overwrite": args.overwrite, "opset": args.opset,
        "compare_original": args.original,
    }  # fmt: skip
    try:
        report = export_onnx(
            args.source, args.output, keep_failed=args.keep_failed, progress=bar.update if bar else None, **options
        )
    except ExportCheckError as error:
        if bar:
            bar.close()
            bar = None
        if error.report is not None:
            print(error.report.to_text())
            if args.report:
                _write_json(args.report, error.report.to_dict())
        print(f"error: {error}", file=sys.stderr)
        return EXIT_VERIFY_FAILED
    finally:
        if bar:
            bar.close()
    print(report.to_text())
    if args.report:
        _write_json(args.report, report.to_dict())
    return 0 if report.ok else EXIT_VERIFY_FAILED


def _inspect(args: argparse.Namespace) -> int:
    """Print the key report, as a table or as JSON; EXIT_PROBLEMS when it lists any problem."""
    from chclip_convert.conversion.inspection import inspect_checkpoint

    report = inspect_checkpoint(args.checkpoint, vision_heads=args.vision_heads, text_heads=args.text_heads)
    if args.json:
        print(json.dumps(_report_json(report, args), indent=2, ensure_ascii=False))
    else:
        print(_report_text(report, args))
    return 0 if report.ok else EXIT_PROBLEMS


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
        counted = f"{len(rows)} of {len(report.rows())} keys shown ({_filters(args)})"
        lines.append(counted if rows else f"no key matches: 0 of {len(report.rows())} keys ({_filters(args)})")
    lines += ["", rows_to_text(rows)] if rows else []
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


def _write_json(path: str, data: dict) -> None:
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as error:
        raise OutputError(f"cannot write the report: {error.strerror or error}.", path=target) from error


if __name__ == "__main__":
    sys.exit(main())
