"""The command line: its subcommands, convert without one (also with the flags of transformers' script), usage
errors, reports, exit codes, one-paragraph errors without tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support import ROOT
from support.converted import assert_model_holds, reload_strictly
from support.original import REDUCED, build_model, save, training_checkpoint

from chclip_convert.cli.main import EXIT_PROBLEMS, build_parser, main, with_command
from chclip_convert.files.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    model = build_model(REDUCED["ViT-L-14-336"], seed=8)
    return save(training_checkpoint(model), tmp_path_factory.mktemp("cli") / "epoch_3.pt")


def run_module(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "chclip_convert", *args], capture_output=True, text=True, env=env, cwd=ROOT
    )


@pytest.mark.slow  # another Python process
def test_module_entry_point_converts_and_prints_summary(checkpoint, tmp_path):
    result = run_module(str(checkpoint), str(tmp_path / "hf"), "--report", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stderr
    assert "custom" in result.stdout and "336 px" in result.stdout
    assert "writing weights" in result.stderr  # the progress bar
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["report"]["ok"] is True
    assert report["architecture"]["image_size"] == 336
    model = reload_strictly(tmp_path / "hf")
    assert model.config.vision_config.image_size == 336
    assert_model_holds(model, load_checkpoint(checkpoint).state_dict)


@pytest.mark.slow  # another Python process
def test_the_flags_of_transformers_script_convert(checkpoint, tmp_path):
    """Called as transformers' conversion script was: no subcommand, its three flags."""
    assert main([str(checkpoint), str(tmp_path / "first"), "--no-progress"]) == 0
    config = str(tmp_path / "first" / "config.json")
    flags = ["--checkpoint_path", str(checkpoint), "--pytorch_dump_folder_path", str(tmp_path / "second")]
    result = run_module(*flags, "--config_path", config)
    assert result.returncode == 0, result.stderr
    source = load_checkpoint(checkpoint).state_dict
    for folder in ("first", "second"):
        assert_model_holds(reload_strictly(tmp_path / folder), source)


@pytest.mark.slow  # another Python process
def test_contradicting_config_fails_with_one_paragraph(checkpoint, tmp_path):
    assert main([str(checkpoint), str(tmp_path / "ok"), "--no-progress"]) == 0
    config = json.loads((tmp_path / "ok" / "config.json").read_text())
    config["vision_config"]["image_size"] = 224
    (tmp_path / "wrong.json").write_text(json.dumps(config))
    result = run_module(str(checkpoint), str(tmp_path / "bad"), "--config", str(tmp_path / "wrong.json"))
    assert result.returncode == 1
    assert "vision_config.image_size = 224" in result.stderr and "it must be 336" in result.stderr
    assert str(checkpoint) in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow  # another Python process
def test_unused_key_is_fatal_unless_no_strict(checkpoint, tmp_path):
    state = dict(load_checkpoint(checkpoint).state_dict)
    state["visual.head.weight"] = torch.zeros(4)
    extra = save({"state_dict": state}, tmp_path / "extra.pt")
    result = run_module(str(extra), str(tmp_path / "strict"), "--report", str(tmp_path / "r.json"))
    assert result.returncode == 1 and "visual.head.weight" in result.stderr and "Traceback" not in result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ok"] is False and report["report"]["problems"]["unused"] == ["visual.head.weight"]
    assert main([str(extra), str(tmp_path / "lenient"), "--no-strict", "--no-progress"]) == 0
    saved = json.loads((tmp_path / "lenient" / "conversion_report.json").read_text())
    assert any("dropped" in note for note in saved["report"]["notes"])


@pytest.mark.slow  # another Python process
def test_missing_arguments_and_files(tmp_path):
    assert run_module().returncode == 2
    result = run_module(str(tmp_path / "nope.pt"), str(tmp_path / "out"))
    assert result.returncode == 1 and "nope.pt: no such file" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # another Python process
def test_an_unwritable_report_path_is_an_error_not_a_traceback(checkpoint, tmp_path):
    (tmp_path / "taken").write_text("a file where the report's folder should be")
    result = run_module(str(checkpoint), str(tmp_path / "hf"), "--report", str(tmp_path / "taken" / "r.json"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot write the report" in result.stderr and str(tmp_path / "taken" / "r.json") in result.stderr


def test_convert_with_verify_writes_the_report_once_holding_both(demo_checkpoint, tmp_path, monkeypatch, capsys):
    import chclip_convert.cli.main as cli

    written = []
    real = cli._write_json
    monkeypatch.setattr(cli, "_write_json", lambda path, data: written.append(path) or real(path, data))
    report = tmp_path / "r.json"
    assert main([str(demo_checkpoint), str(tmp_path / "hf"), "--no-progress", "--verify", "--report", str(report)]) == 0
    assert written == [str(report)]
    record = json.loads(report.read_text())
    assert record["report"]["ok"] is True and record["verification"]["ok"] is True
    assert "Verified: all checks pass." in capsys.readouterr().out


def test_each_subcommand_on_the_demo(demo_checkpoint, tmp_path, capsys):
    hf, back = tmp_path / "hf", tmp_path / "back.pt"
    assert main(["convert", str(demo_checkpoint), str(hf), "--no-progress"]) == 0
    assert main(["verify", str(demo_checkpoint), str(hf), "--report", str(tmp_path / "v.json")]) == 0
    assert json.loads((tmp_path / "v.json").read_text())["ok"] is True
    assert main(["reverse", str(hf), str(back)]) == 0
    assert main(["inspect", str(demo_checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "Verified: all checks pass." in out and "--reset-optimizer" in out
    assert "OK: source keys" in out and "visual.transformer.resblocks.0.attn.in_proj_weight" in out
    original, reversed_ = (torch.load(path, weights_only=True)["state_dict"] for path in (demo_checkpoint, back))
    assert original.keys() == reversed_.keys() and all(torch.equal(original[k], reversed_[k]) for k in original)


def test_no_subcommand_converts_as_convert_does(demo_checkpoint, tmp_path):
    assert main([str(demo_checkpoint), str(tmp_path / "default"), "--no-progress", "--dtype", "float16"]) == 0
    # the paths may stand on either side of the options
    assert main(["convert", "--dtype", "float16", str(demo_checkpoint), "--no-progress", str(tmp_path / "named")]) == 0
    weights = [(tmp_path / name / "model.safetensors").read_bytes() for name in ("default", "named")]
    assert weights[0] == weights[1]


def test_a_first_argument_that_is_no_command_means_convert():
    parser = build_parser()
    assert with_command(parser, ["a.pt", "out"]) == ["convert", "a.pt", "out"]
    assert with_command(parser, ["--checkpoint_path", "a.pt", "--pytorch_dump_folder_path", "out"])[0] == "convert"
    for unchanged in (["inspect", "a.pt"], ["convert-epochs", "--into", "x", "a.pt"], ["--help"], ["--version"]):
        assert with_command(parser, unchanged) == unchanged


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--verify-only", "a.pt", "hf"], "--verify-only was removed; use: chclip-convert verify a.pt hf"),
        (["hf", "o.pt", "--reverse", "--bare"], "--reverse was removed; use: chclip-convert reverse hf o.pt --bare"),
        (
            [],
            "give a command (convert, verify, reverse, inspect, diff, drift, convert-epochs, average, slim, export-",
        ),
        (["--verify-only", "--reverse", "a", "b"], "--verify-only and --reverse were removed; use one command"),
        (["convert", "--verify-only", "a.pt", "hf"], "--verify-only was removed; use: chclip-convert verify a.pt hf"),
        (["--verify-only=a.pt", "hf"], "--verify-only was removed; use: chclip-convert verify a.pt hf"),
        (["a.pt", "out", "--checkpoint_path", "b.pt"], "give CHECKPOINT or --checkpoint_path, not both"),
        (["a.pt", "o", "--pytorch_dump_folder_path", "o2"], "give OUTPUT_DIR or --pytorch_dump_folder_path, not both"),
    ],
)
def test_a_removed_mode_flag_says_which_command_to_use(argv, says, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2 and says in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["a.pt", "out", "--bare"], "chclip-convert convert: error: --bare is an option of reverse, not of convert"),
        (["verify", "a.pt", "hf", "--bare"], "chclip-convert verify: error: --bare is an option of reverse, not of"),
        (
            ["verify", "a.pt", "hf", "--dtype=float16"],
            "--dtype is an option of convert, convert-epochs, slim and export-onnx, not of",
        ),
        (["verify", "a.pt", "hf", "--verify"], "--verify is an option of convert, not of verify"),
        (["a.pt", "out", "--json"], "--json is an option of inspect, diff, drift and convert-epochs, not of convert"),
        (["diff", "a.pt", "b.pt", "--into", "x"], "chclip-convert diff: error: --into is an option of convert-epochs"),
        (["reverse", "hf", "o.pt", "--vocab", "v.txt"], "--vocab is an option of convert and verify, not of reverse"),
        (["verify", "a.pt", "hf", "--frobnicate"], "chclip-convert verify: error: unrecognized arguments: --frob"),
    ],
)
def test_an_option_of_another_command_is_a_usage_error(argv, says, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2 and says in capsys.readouterr().err


@pytest.mark.slow  # full-width checkpoint
def test_inspect_json_is_the_report_of_inspect_checkpoint(checkpoint, capsys):
    from chclip_convert.conversion.inspection import inspect_checkpoint

    assert main(["inspect", str(checkpoint), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)  # stdout holds the JSON and nothing else
    assert printed == json.loads(json.dumps(inspect_checkpoint(checkpoint).to_dict()))
    assert printed["ok"] is True and not any(printed["problems"].values())
    sources = {record["key"]: record for record in printed["sources"]}
    fused = sources["visual.transformer.resblocks.0.attn.in_proj_weight"]
    assert fused["status"] == "transformed" and fused["op"] == "split"
    assert fused["targets"] == [f"vision_model.encoder.layers.0.self_attn.{p}_proj.weight" for p in "qkv"]
    assert sources["visual.proj"]["targets"] == ["visual_projection.weight"]
    assert sources["visual.ln_post.weight"]["targets"] == ["vision_model.post_layernorm.weight"]
    query = sources["bert.encoder.layer.0.attention.self.query.weight"]
    assert query["status"] == "mapped" and query["targets"] == [
        "text_model.encoder.layer.0.attention.self.query.weight"
    ]


@pytest.mark.slow  # another Python process
def test_inspect_shows_an_unknown_key_and_exits_with_the_problems_code(checkpoint, tmp_path, capsys):
    state = dict(load_checkpoint(checkpoint).state_dict)
    state["visual.head.weight"] = torch.zeros(4)
    extra = save({"state_dict": state}, tmp_path / "extra.pt")
    assert main(["inspect", str(extra)]) == EXIT_PROBLEMS == 4
    out = capsys.readouterr().out
    assert "PROBLEMS" in out and "1 unused key(s)" in out and "--no-strict" in out
    assert any(row.startswith("source unused") and "visual.head.weight" in row for row in table_rows(out))
    assert main(["inspect", str(extra), "--status", "problems"]) == EXIT_PROBLEMS
    shown = table_rows(capsys.readouterr().out)
    assert len(shown) == 1 and "visual.head.weight" in shown[0]
    result = run_module("inspect", str(extra), "--json", "--status", "unused")
    assert result.returncode == EXIT_PROBLEMS, result.stderr
    printed = json.loads(result.stdout)
    assert printed["ok"] is False and printed["problems"]["unused"] == ["visual.head.weight"]
    assert [record["key"] for record in printed["sources"]] == ["visual.head.weight"] and printed["targets"] == []


@pytest.mark.slow  # full-width checkpoint
def test_inspect_filters_by_name_as_the_inspector_does(checkpoint, capsys):
    from chclip_convert.conversion.inspection import filter_rows, inspect_checkpoint

    rows = inspect_checkpoint(checkpoint).rows()
    assert main(["inspect", str(checkpoint), "--name", "resblocks.1", "--status", "transformed"]) == 0
    out = capsys.readouterr().out
    shown = filter_rows(rows, status="transformed", text="resblocks.1")
    assert shown and [line.split()[4] for line in table_rows(out)] == [row["key"] for row in shown]
    assert f"{len(shown)} of {len(rows)} keys shown (--status transformed, --name resblocks.1)" in out
    assert main(["inspect", str(checkpoint), "--json", "--name", r"^logit_scale$", "--regex"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["key"] for r in printed["sources"]] == [r["key"] for r in printed["targets"]] == ["logit_scale"]


@pytest.mark.slow  # full-width checkpoint
def test_inspect_refuses_a_bad_regular_expression_as_a_usage_error(checkpoint, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["inspect", str(checkpoint), "--name", "layers.(1", "--regex"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--name 'layers.(1': not a regular expression: missing ), unterminated subpattern" in err
    assert "Traceback" not in err


def table_rows(printed: str) -> list[str]:
    return [line for line in printed.splitlines() if line.startswith(("source ", "target "))]


def test_inspect_and_verify_errors_are_one_paragraph(tmp_path, capsys):
    for argv in (["inspect", str(tmp_path / "nope.pt")], ["verify", str(tmp_path / "nope.pt"), str(tmp_path)]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "no such file" in err and "Traceback" not in err


COMMANDS = ("convert", "verify", "reverse", "inspect", "diff", "drift", "convert-epochs")


def help_text(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS)
def test_each_commands_help_shows_two_to_four_examples(command, capsys):
    out = help_text([command, "--help"], capsys)
    examples = out.split("\nexamples:\n", 1)[1].splitlines()
    assert 2 <= len(examples) <= 4 and f"  chclip-convert {command} " in out


def test_the_top_level_help_lists_the_commands_and_exit_codes(capsys):
    out = help_text(["--help"], capsys)
    assert all(f"\n    {command} " in out or f"\n    {command}\n" in out for command in COMMANDS)
    assert "exit codes:" in out and "4 inspect found problems" in out and "docs/cli.md" in out


def test_help_imports_neither_torch_nor_transformers():
    show_help = (
        "import sys\nfrom chclip_convert.cli.main import main\n"
        f"for argv in [['--help'], *[[c, '--help'] for c in {COMMANDS!r}]]:\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "print(sorted({'torch', 'transformers'} & set(sys.modules)), file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", show_help], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and result.stderr.strip() == "[]", result.stderr


def test_version_comes_from_the_package_metadata(capsys):
    import tomllib
    from importlib import metadata

    import chclip_convert

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"chclip-convert {metadata.version('chclip-convert')}"
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chclip_convert.__version__ == metadata.version("chclip-convert") == declared
