"""Sharing what was trained: the average of chosen epochs against planted values, slim checkpoints loaded by cn_clip
as its training and its ``--resume`` load them, and bad inputs refused by name with nothing left behind."""

from __future__ import annotations

import shlex
import sys

import pytest
import torch
from cn_clip.clip.model import CLIP, convert_weights, resize_pos_embed
from cn_clip.clip.model import convert_state_dict as to_flash_layout
from support.files import in_small_disk, present_pages, tree_sha256
from support.original import NARROW, REDUCED, build_model, model_kwargs, save, tiny_rn50

from chclip_convert import average_checkpoints, convert_checkpoint, diff_checkpoints, slim_checkpoint
from chclip_convert.changes.drift import measure_drift
from chclip_convert.cli.main import main
from chclip_convert.conversion.demo import write_demo_run
from chclip_convert.errors import CheckpointReadError, ConversionError, OutputError, UnsupportedCheckpointError
from chclip_convert.files import checkpoint as checkpoint_module
from chclip_convert.mapping.parts import part_of
from chclip_convert.mapping.precision import in_fp16_layout

EPOCHS = (1, 2, 3)


def planted_offsets(state: dict[str, torch.Tensor], seed: int = 11) -> dict[str, torch.Tensor]:
    """A seeded offset per float tensor: epoch e holds the model's weights + e × offset."""
    generator = torch.Generator().manual_seed(seed)
    return {key: torch.randn(v.shape, generator=generator) * 0.01 if v.is_floating_point() else torch.zeros_like(v)
            for key, v in state.items()}  # fmt: skip


def epoch_file(folder, state, epoch: int, *, optimizer: bool = True):
    """cn_clip's training dict for ``epoch`` (module. keys, AdamW moments as big as the weights)."""
    data = {
        "epoch": epoch,
        "step": 100 * epoch,
        "name": "planted",
        "state_dict": {f"module.{k}": v for k, v in state.items()},
    }
    if optimizer:
        floats = [v for v in state.values() if v.is_floating_point()]
        moments = {i: {"step": torch.tensor(100.0 * epoch), "exp_avg": torch.randn_like(v), "exp_avg_sq": v.abs()}
                   for i, v in enumerate(floats)}  # fmt: skip
        data["optimizer"] = {"state": moments, "param_groups": [{"lr": 1e-5, "params": list(moments)}]}
    return save(data, folder / f"epoch{epoch}.pt")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The narrow model's weights, its planted offsets and three epoch files (read only)."""
    folder = tmp_path_factory.mktemp("planted")
    base = build_model(NARROW, seed=3).state_dict()
    offsets = planted_offsets(base)
    states = {
        e: {k: base[k] + e * offsets[k] if base[k].is_floating_point() else base[k] for k in base} for e in EPOCHS
    }
    return base, states, [epoch_file(folder / "checkpoints", states[e], e) for e in EPOCHS]


def written(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def float64_mean(states: list[dict[str, torch.Tensor]], weights: list[float], key: str) -> torch.Tensor:
    """Σ wᵢ·xᵢ / Σ wᵢ in float64, summed in the inputs' order, cast back: what the average must hold exactly."""
    total = torch.zeros(states[0][key].shape, dtype=torch.float64)
    for state, weight in zip(states, weights, strict=True):
        total += state[key].to(torch.float64) * weight
    return (total / sum(weights)).to(states[0][key].dtype)


def test_the_average_of_planted_epochs_is_their_float64_mean(run, tmp_path):
    _, states, files = run
    before = [tree_sha256(f) for f in files]
    summary = average_checkpoints(files, tmp_path / "avg.pt")
    data = written(tmp_path / "avg.pt")
    assert "optimizer" not in data and (data["epoch"], data["step"], data["name"]) == (3, 300, "planted")
    assert data["average"]["weights"] == [1 / 3] * 3
    assert data["average"]["epoch_and_step_of"] == data["average"]["inputs"][-1]
    assert [p.rsplit("/", 1)[-1] for p in data["average"]["inputs"]] == ["epoch1.pt", "epoch2.pt", "epoch3.pt"]
    assert not any(p.startswith("/") for p in data["average"]["inputs"])
    state = {k.removeprefix("module."): v for k, v in data["state_dict"].items()}
    assert set(state) == set(states[1])
    for key, tensor in state.items():
        assert tensor.dtype == states[1][key].dtype
        assert torch.equal(tensor, float64_mean([states[e] for e in EPOCHS], [1.0] * 3, key)), key
    # the planted offsets make the mean epoch 2 (up to float32 rounding of the inputs)
    assert torch.allclose(state["logit_scale"], states[2]["logit_scale"])
    assert summary.training_from == files[-1] and summary.tensors == len(state)
    assert [tree_sha256(f) for f in files] == before  # inputs untouched


def test_one_input_averages_to_exactly_itself(run, tmp_path):
    _, states, files = run
    average_checkpoints([files[1]], tmp_path / "one.pt")
    state = written(tmp_path / "one.pt")["state_dict"]
    assert all(torch.equal(state[f"module.{k}"], v) for k, v in states[2].items())


def test_weights_are_proportions_divided_by_their_sum(run, tmp_path):
    _, states, files = run
    summary = average_checkpoints(files[:2], tmp_path / "w.pt", weights=[1, 3])
    assert summary.weights == (0.25, 0.75)
    data = written(tmp_path / "w.pt")
    assert data["average"]["weights"] == [0.25, 0.75]
    for key in ("visual.proj", "bert.encoder.layer.1.output.dense.weight"):
        assert torch.equal(data["state_dict"][f"module.{key}"], float64_mean([states[1], states[2]], [1.0, 3.0], key))
    for bad in ([1.0], [1.0, -1.0], [0.0, 0.0], [float("nan"), 1.0]):
        with pytest.raises(ConversionError, match="weight"):
            average_checkpoints(files[:2], tmp_path / "bad.pt", weights=bad)
    assert not (tmp_path / "bad.pt").exists()


def test_a_flash_attention_input_averages_as_its_standard_layout(run, tmp_path):
    _, states, files = run
    flash = to_flash_layout({f"module.{k}": v.clone() for k, v in states[2].items()})
    assert any("Wqkv" in key for key in flash) and any("self.out_proj" in key for key in flash)
    flash_file = save({"epoch": 2, "step": 200, "name": "planted", "state_dict": flash}, tmp_path / "flash.pt")
    summary = average_checkpoints([files[0], flash_file], tmp_path / "mixed.pt")
    average_checkpoints([files[0], files[1]], tmp_path / "plain.pt")
    assert summary.flash_inputs == (flash_file,)
    mixed, plain = written(tmp_path / "mixed.pt")["state_dict"], written(tmp_path / "plain.pt")["state_dict"]
    assert mixed.keys() == plain.keys() and all(torch.equal(mixed[k], plain[k]) for k in plain)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/pagemap")
def test_the_optimizer_state_is_never_read(tmp_path, monkeypatch):
    state = build_model(NARROW, seed=4).state_dict()
    paths = []
    for epoch in (1, 2):
        data = {
            "epoch": epoch,
            "step": epoch,
            "name": "big",
            "state_dict": {f"module.{k}": v for k, v in state.items()},
            "optimizer": {"state": {i: {"exp_avg": torch.randn(4 << 20)} for i in range(3)}, "param_groups": []},
        }
        paths.append(save(data, tmp_path / f"e{epoch}.pt"))  # fmt: skip
    mapped, real_load = [], checkpoint_module._torch_load

    def keep_mapping(path):  # hold torch's mappings after the average, to look at their pages
        mapped.append(real_load(path))
        return mapped[-1]

    monkeypatch.setattr(checkpoint_module, "_torch_load", keep_mapping)
    average_checkpoints(paths, tmp_path / "avg.pt")
    slim_checkpoint(paths[0], tmp_path / "slim.pt", dtype="float16")  # a cast: the path that maps the file
    assert len(mapped) == 3
    for loaded, is_mapped in mapped:
        assert is_mapped
        moments = [loaded["optimizer"]["state"][i]["exp_avg"] for i in range(3)]
        present, pages = map(sum, zip(*(present_pages(m) for m in moments), strict=True))
        assert present < pages / 4, f"{present} of the optimizer's {pages} pages were read"


def test_slim_is_bit_exact_and_loads_in_cn_clip_strictly_and_through_resume(run, tmp_path):
    files = run[2]
    summary = slim_checkpoint(files[2], tmp_path / "slim.pt")
    assert summary.dropped == ("optimizer",) and summary.cast == 0
    assert summary.bytes_after < summary.bytes_before / 2
    text = summary.to_text()
    assert "size:" in text.splitlines()[1] and "--reset-optimizer" in text
    data = written(tmp_path / "slim.pt")
    source = written(files[2])
    assert set(data) == {"epoch", "step", "name", "state_dict"}
    assert (data["epoch"], data["step"], data["name"]) == (source["epoch"], source["step"], source["name"])
    assert list(data["state_dict"]) == list(source["state_dict"])  # the same keys, module. prefix and order
    assert all(torch.equal(data["state_dict"][k], v) and data["state_dict"][k].dtype == v.dtype
               for k, v in source["state_dict"].items())  # fmt: skip
    model = CLIP(**model_kwargs(NARROW))
    model.load_state_dict({k.removeprefix("module."): v for k, v in data["state_dict"].items()}, strict=True)
    resume_as_cn_clip_training(tmp_path / "slim.pt", CLIP(**model_kwargs(NARROW)))


class DistributedLike(torch.nn.Module):
    """What cn_clip's training loads into: the model under ``module`` (DistributedDataParallel's names)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.module = model


def resume_as_cn_clip_training(path, model: torch.nn.Module) -> None:
    """The steps of cn_clip/training/main.py's ``--resume`` with ``--reset-optimizer``, on the CPU."""
    wrapped = DistributedLike(model)
    checkpoint = torch.load(path, map_location="cpu")
    sd = {k: v for k, v in checkpoint["state_dict"].items() if "bert.pooler" not in k}
    resize_pos_embed(sd, wrapped, prefix="module.")
    wrapped.load_state_dict(sd)  # strict, as cn_clip calls it
    assert isinstance(checkpoint["epoch"], int) and isinstance(checkpoint["step"], int)
    assert "optimizer" not in checkpoint  # so cn_clip needs --reset-optimizer, as the summary says


def cn_clip_fp16(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``state`` loaded into cn_clip's ``model`` and put through cn_clip's own ``convert_weights``: its fp16 layout."""
    model.load_state_dict(state)
    convert_weights(model)
    return model.state_dict()


def test_slim_to_float16_writes_cn_clip_s_own_fp16_layout_and_still_loads(run, tmp_path):
    _, states, files = run
    summary = slim_checkpoint(files[0], tmp_path / "fp16.pt", dtype="float16")
    data = written(tmp_path / "fp16.pt")
    expected = cn_clip_fp16(states[1], CLIP(**model_kwargs(NARROW)))
    assert {torch.float16, torch.float32} <= {value.dtype for value in expected.values()}  # a mixed layout
    for key, value in expected.items():
        tensor = data["state_dict"][f"module.{key}"]
        assert tensor.dtype == value.dtype and torch.equal(tensor, value), key
    halved = [key for key, value in expected.items() if value.dtype == torch.float16]
    assert summary.cast_to == {"float16": len(halved)} and summary.kept_float32 == len(expected) - len(halved)
    assert "cn_clip's fp16 layout" in summary.to_text()
    resume_as_cn_clip_training(tmp_path / "fp16.pt", CLIP(**model_kwargs(NARROW)))


def test_slim_to_float16_of_an_all_half_checkpoint_puts_the_float32_ones_back(run, tmp_path):
    _, states, _ = run
    halves = {key: value.half() for key, value in states[1].items()}
    path = epoch_file(tmp_path / "half", halves, 1, optimizer=False)
    summary = slim_checkpoint(path, tmp_path / "fp16.pt", dtype="float16")
    state = written(tmp_path / "fp16.pt")["state_dict"]
    expected = cn_clip_fp16(halves, CLIP(**model_kwargs(NARROW)))  # load_state_dict casts into the fp32 model
    assert all(state[f"module.{key}"].dtype == value.dtype for key, value in expected.items())
    assert summary.cast_to == {"float32": summary.kept_float32} and summary.kept_float32 > 0


@pytest.mark.parametrize("model", [lambda: build_model(NARROW), tiny_rn50], ids=["ViT", "ResNet"])
def test_the_fp16_layout_by_name_is_what_convert_weights_does_to_cn_clip_s_models(model):
    built = model()
    convert_weights(built)
    state = built.state_dict()
    layouts = {"standard": state, "flash-attention": to_flash_layout(dict(state))}
    for layout, tensors in layouts.items():
        floats = {key: value for key, value in tensors.items() if value.is_floating_point()}
        wrong = sorted(key for key, value in floats.items() if in_fp16_layout(key) != (value.dtype == torch.float16))
        assert not wrong, (layout, wrong)


def test_the_average_converts_diffs_and_its_drift_sits_between_its_inputs(tmp_path):
    reference, files = write_demo_run(tmp_path / "run")
    epochs = files[:3]
    average = average_checkpoints(epochs, tmp_path / "run" / "checkpoints" / "avg.pt").output
    summary = convert_checkpoint(average, tmp_path / "avg-hf")
    assert "epoch1.pt × 0.333" in summary.model_card()
    assert diff_checkpoints(average, tmp_path / "avg-hf").identical
    drift = measure_drift(reference, [*epochs, average])
    assert [info.label for info in drift.epochs] == ["e1", "e2", "e3", "avg"]
    assert drift.epochs[-1].average_of == ("epoch1.pt", "epoch2.pt", "epoch3.pt")
    moved = [part for part in drift.parts if drift.moved(part)]
    assert moved
    for part in moved:
        *inputs, mean = drift.vs_reference[part]
        assert min(inputs) <= mean <= max(inputs), (part, inputs, mean)
    assert part_of("logit_scale") in moved


def test_inputs_of_other_architectures_are_refused_by_name(run, tmp_path, reduced_checkpoints):
    _, _, files = run
    other = reduced_checkpoints["ViT-B-16"]
    with pytest.raises(UnsupportedCheckpointError, match="architecture") as caught:
        average_checkpoints([files[0], other], tmp_path / "avg.pt")
    assert caught.value.path == other
    assert not list(tmp_path.iterdir())  # nothing partial, no lock left


def test_a_missing_tensor_or_a_non_checkpoint_is_named_and_nothing_is_written(run, tmp_path):
    _, states, files = run
    lacking = dict(states[2])
    del lacking["bert.encoder.layer.1.output.dense.bias"]
    lacking_file = epoch_file(tmp_path / "lacking", lacking, 2, optimizer=False)
    with pytest.raises(
        UnsupportedCheckpointError, match=r"lacks the tensor bert\.encoder\.layer\.1\.output\.dense\.bias"
    ):
        average_checkpoints([files[0], lacking_file], tmp_path / "out" / "avg.pt")
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointReadError) as caught:
        average_checkpoints([files[0], text], tmp_path / "out" / "avg.pt")
    assert caught.value.path == text
    assert not (tmp_path / "out").exists()


def test_an_existing_output_needs_overwrite_and_an_input_is_never_the_output(run, tmp_path):
    _, _, files = run
    target = tmp_path / "avg.pt"
    target.write_bytes(b"keep me")
    for call in (lambda: average_checkpoints(files, target), lambda: slim_checkpoint(files[0], target)):
        with pytest.raises(OutputError, match="exists"):
            call()
    assert target.read_bytes() == b"keep me"
    with pytest.raises(OutputError, match="one of the inputs"):
        slim_checkpoint(files[0], files[0], overwrite=True)
    average_checkpoints(files, target, overwrite=True)
    assert written(target)["epoch"] == 3


def test_the_commands_print_their_summaries(run, tmp_path, capsys):
    _, _, files = run
    assert main(["average", "--into", str(tmp_path / "a.pt"), *map(str, files), "--weights", "1", "1", "2",
                 "--no-progress"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "0.5000 ×" in out and "epoch 3, step 300, run planted (of epoch3.pt" in out
    assert main(["slim", str(files[0]), str(tmp_path / "s.pt"), "--dtype", "float16", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "→" in out.splitlines()[1] and "left out:   optimizer" in out
    assert main(["slim", str(files[0]), str(tmp_path / "s.pt"), "--no-progress"]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err


@pytest.mark.slow  # a reduced ViT-H-14 (0.4 GB of tensors)
def test_slim_of_a_wide_model_with_adamw_is_bit_exact(tmp_path):
    model = build_model(REDUCED["ViT-H-14"], seed=6)
    state = model.state_dict()
    path = epoch_file(tmp_path, state, 4)
    slim_checkpoint(path, tmp_path / "slim.pt")
    data = written(tmp_path / "slim.pt")["state_dict"]
    assert all(torch.equal(data[f"module.{k}"], v) for k, v in state.items())


@pytest.mark.slow  # other Python processes
def test_a_full_disk_ends_average_and_slim_in_one_paragraph_leaving_nothing(tmp_path):
    # 1 MiB holds none of the demo's 4.4 MB of weights: average and slim both fail part way through writing them.
    _, files = write_demo_run(tmp_path / "run")
    epochs, first = " ".join(shlex.quote(str(p)) for p in files[:3]), shlex.quote(str(files[0]))
    for command, fails in ((f'$PY average --into "$DISK/avg.pt" {epochs} --no-progress', "avg.pt"),
                           (f'$PY slim {first} "$DISK/slim.pt" --no-progress', "slim.pt")):  # fmt: skip
        before = [tree_sha256(f) for f in files]
        (tmp_path / fails).mkdir()
        done = in_small_disk(tmp_path / fails, "1m", command)
        assert done.stdout.splitlines()[-1] == "rc=1", done.stdout + done.stderr  # and `ls -A` listed nothing
        assert f"/disk/{fails}: writing failed: No space left on device; nothing was changed" in done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert [tree_sha256(f) for f in files] == before
