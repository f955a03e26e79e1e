"""The diff against planted changes: two original checkpoints, an original and a converted folder, the
flash-attention and the standard layout, fp16 and its float32 conversion; tensors missing, added or reshaped;
NaN; the optimizer never read; and the ``diff`` command's JSON, exit codes and errors.

The checkpoints are the real cn_clip model's (ViT-B-16 cut to two layers a tower, seeded weights), saved as
training does. Every expected number is computed here with torch from the tensors planted, not by the code
under test."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support import ROOT
from support.files import present_pages
from support.original import REDUCED, build_model, save, training_checkpoint

from chclip_convert import convert_checkpoint, convert_state_dict
from chclip_convert.changes.diff import CheckpointDiff, diff_checkpoints, measure_change
from chclip_convert.cli.main import main
from chclip_convert.cli.runs import EXIT_DIFFERS
from chclip_convert.conversion.demo import DAMAGE, damaged_copy
from chclip_convert.conversion.views import CHECKPOINT, FOLDER, MappedCheckpoint
from chclip_convert.files import checkpoint as checkpoint_module
from chclip_convert.files.folder import load_folder_state
from chclip_convert.mapping.parts import EMBEDDINGS, LAYER, TEXT, VISION, Part, fold_layers, layer_span, span_label
from chclip_convert.mapping.report import collapse_layers
from chclip_convert.mapping.table import IGNORED

# Both sides are summed in float64, over the whole tensor here and in chunks by the diff: the norms and dot
# products differ only by float64 rounding in the order of summation, at most n·ε ≈ 3e-10 relative over the
# largest planted tensor (2.4 M elements, ε = 1.1e-16) and typically far less. 1e-9 leaves room, and is still
# millions of times finer than the smallest planted change (one element of a 3072 × 768 weight, 8e-3).
RELATIVE = 1e-9

WIDTH = 768  # ViT-B-16's vision width and RoBERTa-base's hidden size: one third of a fused q/k/v weight
FUSED = "visual.transformer.resblocks.1.attn.in_proj_weight"
TRANSPOSED = "text_projection"  # [text width, embed] in cn_clip, transposed into text_projection.weight
PLAIN = "bert.encoder.layer.1.intermediate.dense.weight"
Q, K, V = (f"vision_model.encoder.layers.1.self_attn.{p}_proj.weight" for p in "qkv")
PLANTED_TARGETS = {Q, "text_projection.weight", "text_model.encoder.layer.1.intermediate.dense.weight"}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("diff")


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    """The original tensors (no prefix) of a seeded cn_clip ViT-B-16, two layers a tower, cloned."""
    model = build_model(REDUCED["ViT-B-16"], seed=31)
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def training_file(state: dict[str, torch.Tensor], path, **extra):
    """``state`` saved as cn_clip's training saves it: ``module.`` keys inside a training dict."""
    checkpoint = {"epoch": 3, "step": 1200, "name": "muge", "state_dict": {f"module.{k}": v for k, v in state.items()}}
    return save({**checkpoint, **extra}, path)


def planted(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of ``state`` with three tensors changed: the q third of a fused q/k/v weight (k and v kept), one
    column of the text projection (a row once transposed), one element of a plain weight."""
    changed = dict(state)
    generator = torch.Generator().manual_seed(5)
    fused = state[FUSED].clone()
    fused[:WIDTH] += 0.01 * torch.randn(WIDTH, WIDTH, generator=generator)
    projection = state[TRANSPOSED].clone()
    projection[:, 7] *= 1.5
    plain = state[PLAIN].clone()
    plain[3, 4] += 0.25
    changed.update({FUSED: fused, TRANSPOSED: projection, PLAIN: plain})
    return changed


def expected_pairs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, tuple]:
    """The planted tensors under transformers' names, each as (A, B), derived here by hand: the q third of the
    fused weight, the projection transposed, the plain weight as it is."""
    return {
        Q: (a[FUSED][:WIDTH], b[FUSED][:WIDTH]),
        "text_projection.weight": (a[TRANSPOSED].t(), b[TRANSPOSED].t()),
        "text_model.encoder.layer.1.intermediate.dense.weight": (a[PLAIN], b[PLAIN]),
    }


def assert_change_matches(change, a: torch.Tensor, b: torch.Tensor) -> None:
    """``change`` (the diff's) against ‖B − A‖ / ‖A‖, max |B − A| and the cosine computed here in float64."""
    x, y = a.to(torch.float64), b.to(torch.float64)
    d = y - x
    assert not change.equal, change.key
    assert change.relative_change == pytest.approx((d.norm() / x.norm()).item(), rel=RELATIVE), change.key
    # float32 → float64 is exact and both sides subtract the same float64 pairs, so the largest difference is
    # the same number exactly, not merely close.
    assert change.max_abs == d.abs().max().item(), change.key
    cosine = (x.reshape(-1) @ y.reshape(-1) / (x.norm() * y.norm())).item()
    assert change.cosine == pytest.approx(cosine, rel=RELATIVE), change.key
    assert change.relative_change > 1e-4  # a planted change, far above the tolerance


@pytest.fixture(scope="module")
def original(state, work):
    return training_file(state, work / "original" / "epoch1.pt")


@pytest.fixture(scope="module")
def changed(state, work):
    return training_file(planted(state), work / "changed" / "epoch2.pt")


@pytest.fixture(scope="module")
def targets(state) -> set[str]:
    """Every transformers name the conversion makes from ``state``."""
    return set(convert_state_dict(state).state_dict)


@pytest.fixture(scope="module")
def original_folder(original, work):
    return convert_checkpoint(original, work / "original-hf").output_dir


@pytest.mark.slow  # full-width checkpoint
def test_planted_changes_between_two_originals_are_named_exactly(state, original, changed, targets):
    diff = diff_checkpoints(original, changed)
    assert (diff.a_kind, diff.b_kind) == (CHECKPOINT, CHECKPOINT)
    assert {c.key for c in diff.differs} == PLANTED_TARGETS
    assert set(diff.equal) == targets - PLANTED_TARGETS
    assert {K, V} <= set(diff.equal)  # the other two thirds of the fused weight are untouched
    assert not (diff.only_in_a or diff.only_in_b or diff.shape_differs or diff.not_compared)
    assert not diff.identical
    pairs = expected_pairs(state, planted(state))
    for change in diff.differs:
        assert_change_matches(change, *pairs[change.key])
    for change in diff.changes:
        if change.equal:
            assert (change.relative_change, change.max_abs, change.norm_diff) == (0.0, 0.0, 0.0)
    text = diff.to_text()
    assert f"{len(targets)} tensors in both: {len(targets) - 3} equal, 3 differ" in text
    assert "layer 1" in text and "q_proj.weight" in text  # the vision layer's line names its changed tensor


@pytest.mark.slow  # full-width checkpoint
def test_a_checkpoint_and_its_own_conversion_are_identical(original, original_folder, targets):
    diff = diff_checkpoints(original, original_folder)
    assert (diff.a_kind, diff.b_kind) == (CHECKPOINT, FOLDER)
    assert diff.identical and not diff.differs
    assert set(diff.equal) == targets == set(load_folder_state(original_folder))
    assert "Identical: every tensor is bit-identical after mapping." in diff.to_text()
    reverse = diff_checkpoints(original_folder, original)  # either side may be the folder
    assert reverse.identical and reverse.equal == diff.equal


@pytest.mark.slow  # full-width checkpoint
def test_fp16_checkpoint_and_its_float32_conversion_are_equal(work):
    """cn_clip's --precision fp16 checkpoint (fp16 matrices, fp32 norms), converted to float32: every value
    is the same number in another dtype, and the diff ignores dtype."""
    model = build_model(REDUCED["ViT-B-16"], seed=32)
    checkpoint = save(training_checkpoint(model, fp16=True), work / "fp16" / "epoch1.pt")
    folder = convert_checkpoint(checkpoint, work / "fp16-hf", dtype="float32").output_dir
    with MappedCheckpoint(checkpoint) as source:
        assert {source.spec(name).dtype for name in source.names()} == {torch.float16, torch.float32}
    assert {t.dtype for t in load_folder_state(folder).values()} == {torch.float32}
    diff = diff_checkpoints(checkpoint, folder)
    assert diff.identical and len(diff.equal) == len(load_folder_state(folder))


@pytest.mark.slow  # full-width checkpoint
def test_original_against_the_converted_folder_of_a_changed_checkpoint(state, original, changed, work, targets):
    folder = convert_checkpoint(changed, work / "changed-hf").output_dir
    diff = diff_checkpoints(original, folder)
    assert {c.key for c in diff.differs} == PLANTED_TARGETS
    assert set(diff.equal) == targets - PLANTED_TARGETS
    assert not (diff.only_in_a or diff.only_in_b or diff.shape_differs)
    pairs = expected_pairs(state, planted(state))
    for change in diff.differs:
        assert_change_matches(change, *pairs[change.key])


@pytest.mark.slow  # full-width checkpoint
def test_flash_attention_layout_equals_the_standard_one_and_shows_a_planted_change(state, original, work, targets):
    """A --use-flash-attention model's raw state dict (fused ``Wqkv`` in both towers, ``out_proj`` in BERT),
    made by cn_clip's own converter; then the key third of one text layer's ``Wqkv`` changed."""
    from cn_clip.clip.model import convert_state_dict as to_flash_layout

    flash = to_flash_layout({f"module.{k}": v.clone() for k, v in state.items()})
    fused = "module.bert.encoder.layer.1.attention.self.Wqkv.weight"
    assert fused in flash and "module.visual.transformer.resblocks.0.attn.Wqkv.weight" in flash
    same = diff_checkpoints(original, save({"state_dict": flash, "epoch": 1}, work / "flash" / "same.pt"))
    assert same.identical and set(same.equal) == targets

    before = flash[fused].clone()
    flash[fused][WIDTH : 2 * WIDTH, :3] -= 0.5  # in place: cn_clip's converter gave a fresh tensor (torch.cat)
    diff = diff_checkpoints(original, save({"state_dict": flash, "epoch": 1}, work / "flash" / "changed.pt"))
    key = "text_model.encoder.layer.1.attention.self.key.weight"
    (change,) = diff.differs
    assert change.key == key and set(diff.equal) == targets - {key}
    assert_change_matches(change, before[WIDTH : 2 * WIDTH], flash[fused][WIDTH : 2 * WIDTH])


def test_missing_added_and_reshaped_tensors(demo_checkpoint, tmp_path):
    """The demo's damaged copy: one tensor dropped, an unknown one added (kept under its own name), one cut
    to half its length, one altered (:data:`chclip_convert.conversion.demo.DAMAGE`)."""
    damaged = damaged_copy(demo_checkpoint)
    diff = diff_checkpoints(demo_checkpoint, damaged)
    assert diff.only_in_a == ["vision_model.encoder.layers.1.mlp.fc2.bias"]
    assert diff.only_in_b == [DAMAGE["added"]]
    assert diff.shape_differs == {"vision_model.post_layernorm.weight": ([64], [32])}
    assert [c.key for c in diff.differs] == ["text_model.encoder.layer.0.attention.self.query.weight"]
    assert not diff.identical
    record = diff.to_dict()
    assert record["shape_differs"] == ["vision_model.post_layernorm.weight"]
    assert record["shapes"] == {"vision_model.post_layernorm.weight": {"a": [64], "b": [32]}}

    folder = convert_checkpoint(demo_checkpoint, tmp_path / "hf").output_dir
    against_folder = diff_checkpoints(damaged, folder)
    assert against_folder.only_in_a == [DAMAGE["added"]]  # no folder holds a name the table has no rule for
    assert against_folder.only_in_b == ["vision_model.encoder.layers.1.mlp.fc2.bias"]
    assert list(against_folder.shape_differs) == ["vision_model.post_layernorm.weight"]


@pytest.mark.parametrize(("rows", "split"), [(189, True), (190, False)])
def test_a_fused_weight_that_cannot_be_split_keeps_its_own_name(demo_checkpoint, tmp_path, rows, split):
    """Cut a fused q/k/v weight (192 rows in the demo) to 189 rows and it still splits, into three of 63 rows
    of another shape; to 190 rows it cannot split, so it is compared under its original name."""
    checkpoint = torch.load(demo_checkpoint, weights_only=True)
    name = "visual.transformer.resblocks.0.attn.in_proj_weight"
    checkpoint["state_dict"][f"module.{name}"] = checkpoint["state_dict"][f"module.{name}"][:rows].clone()
    diff = diff_checkpoints(demo_checkpoint, save(checkpoint, tmp_path / "cut.pt"))
    thirds = [f"vision_model.encoder.layers.0.self_attn.{p}_proj.weight" for p in "qkv"]
    if split:
        assert diff.shape_differs == {key: ([64, 64], [63, 64]) for key in thirds}
        assert not (diff.only_in_a or diff.only_in_b)
    else:
        assert (diff.only_in_a, diff.only_in_b, diff.shape_differs) == (sorted(thirds), [name], {})
    assert not diff.differs


def demo_with(demo_checkpoint, path, changes: dict[str, torch.Tensor]):
    """A copy of the demo checkpoint with ``changes`` (original names, no prefix) put in."""
    checkpoint = torch.load(demo_checkpoint, weights_only=True)
    checkpoint["state_dict"].update({f"module.{key}": value for key, value in changes.items()})
    return save(checkpoint, path)


@pytest.mark.slow  # full-width checkpoint
def test_what_the_conversion_leaves_out_is_listed_not_compared(demo_checkpoint, tmp_path):
    from safetensors.torch import save_file

    pooler = {"bert.pooler.dense.weight": torch.ones(64, 64), "bert.pooler.dense.bias": torch.zeros(64)}
    pooled = demo_with(demo_checkpoint, tmp_path / "pooled.pt", pooler)
    diff = diff_checkpoints(pooled, demo_checkpoint)
    assert diff.identical  # the pooler is in neither list: cn_clip does not use it
    assert diff.not_compared == {key: IGNORED[key] for key in pooler}
    assert "Not compared (2):" in diff.to_text() and "bert.pooler.dense.bias: BERT pooler" in diff.to_text()

    folder = convert_checkpoint(demo_checkpoint, tmp_path / "hf").output_dir
    tensors = load_folder_state(folder)
    tensors["text_model.embeddings.position_ids"] = torch.arange(64)[None]  # older transformers saved it
    save_file(tensors, str(folder / "model.safetensors"))
    buffered = diff_checkpoints(demo_checkpoint, folder)
    assert buffered.identical and list(buffered.not_compared) == ["text_model.embeddings.position_ids"]


def test_nan_in_the_same_places_is_equal_and_in_one_side_differs(demo_checkpoint, tmp_path):
    state = torch.load(demo_checkpoint, weights_only=True)["state_dict"]
    weight = state["module.visual.ln_post.weight"].clone()
    weight[[2, 9]] = float("nan")
    bias = state["module.visual.ln_pre.bias"].clone()
    bias[4] = float("nan")
    a = demo_with(demo_checkpoint, tmp_path / "a.pt", {"visual.ln_post.weight": weight})
    b = demo_with(demo_checkpoint, tmp_path / "b.pt", {"visual.ln_post.weight": weight, "visual.ln_pre.bias": bias})
    diff = diff_checkpoints(a, b)
    assert "vision_model.post_layernorm.weight" in diff.equal  # NaN at the same places on both sides
    (change,) = diff.differs
    assert change.key == "vision_model.pre_layrnorm.bias"
    assert math.isnan(change.max_abs)
    record = json.loads(json.dumps(diff.to_dict(), allow_nan=False))  # JSON has no NaN: it says null
    assert record["differs"][0]["max_abs"] is None
    (only,) = diff_checkpoints(demo_checkpoint, a).differs  # NaN where the original has a number
    assert only.key == "vision_model.post_layernorm.weight"


def test_measure_change_on_small_tensors():
    a = torch.tensor([3.0, 4.0, 0.0])
    same = measure_change("x", a, a.clone())
    assert same.equal and (same.relative_change, same.max_abs, same.cosine, same.norm_a) == (0.0, 0.0, 1.0, 5.0)
    moved = measure_change("x", a, torch.tensor([3.0, 4.0, 5.0]))  # ‖B − A‖ = 5 = ‖A‖; cos = 25 / (5·√50)
    assert not moved.equal and (moved.relative_change, moved.max_abs) == (1.0, 5.0)
    assert moved.cosine == pytest.approx(1 / math.sqrt(2), rel=1e-15)
    assert measure_change("x", a.half(), a.double()).equal  # dtype ignored
    zero = measure_change("x", torch.zeros(3), a)
    assert not zero.equal and zero.relative_change == math.inf and zero.cosine is None
    assert zero.to_dict()["relative_change"] is None  # JSON has no infinity either
    inf = torch.tensor([1.0, math.inf])
    assert measure_change("x", inf, inf.clone()).equal
    assert not measure_change("x", torch.tensor([1.0, 2.0]), inf).equal


def test_nan_equal_in_one_chunk_does_not_hide_a_difference_in_another(monkeypatch):
    """Tensors are compared a chunk at a time (256 Ki elements, far fewer than a real vocabulary's embeddings): a
    NaN matched in one chunk must not make a difference in another chunk count as equal."""
    import chclip_convert.tensor_stats as engine

    monkeypatch.setattr(engine, "CHUNK", 4)
    a = torch.arange(1.0, 9.0)
    a[0] = float("nan")
    b = a.clone()
    assert measure_change("x", a, b.clone()).equal
    b[6] = 100.0  # in the second chunk; the first chunk's NaN is at the same place on both sides
    assert not measure_change("x", a, b).equal


@pytest.mark.slow  # full-width checkpoint
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/pagemap")
def test_the_optimizer_state_is_never_read(state, original, work, monkeypatch):
    """A training checkpoint whose optimizer holds moments far larger than the weights: the diff skips the
    entry, gives the same result as without it, and leaves the moments' pages unread (the way
    ``test_streaming`` checks the conversion)."""
    moments = {index: {"exp_avg": torch.randn(8 << 20), "exp_avg_sq": torch.rand(8 << 20)} for index in range(2)}
    trained = training_file(state, work / "optimizer" / "epoch1.pt", optimizer={"state": moments, "param_groups": []})
    assert MappedCheckpoint(trained).source.skipped == ["optimizer"]
    mapped, real_load = [], checkpoint_module._torch_load

    def keep_mapping(path):  # hold torch's mapping after the diff, to look at its pages
        mapped.append((path, real_load(path)))
        return mapped[-1][1]

    monkeypatch.setattr(checkpoint_module, "_torch_load", keep_mapping)
    diff = diff_checkpoints(trained, original)
    assert diff.identical
    assert diff.to_dict()["equal"] == diff_checkpoints(original, original).to_dict()["equal"]
    ((loaded, is_mapped),) = [held for path, held in mapped if path == trained]
    assert is_mapped
    for key, tensor in loaded["state_dict"].items():  # the diff read every weight: the check can see reads
        present, pages = present_pages(tensor)
        assert present == pages, f"{key}: only {present} of {pages} pages read"
    tensors = [loaded["optimizer"]["state"][i][name] for i in range(2) for name in ("exp_avg", "exp_avg_sq")]
    present, pages = map(sum, zip(*(present_pages(t) for t in tensors), strict=True))
    # Read-around may map the pages next to a weight; reading the moments would map all of them.
    assert present < pages / 4, f"{present} of the optimizer's {pages} pages were read"


REQUIRED = {"a": str, "b": str, "only_in_a": list, "only_in_b": list, "shape_differs": list, "equal": list,
            "differs": list}  # fmt: skip


@pytest.mark.slow  # full-width checkpoint
def test_diff_json_has_the_promised_shape(original, changed, capsys):
    assert main(["diff", str(original), str(changed), "--json"]) == 0  # different, but no --exit-code
    printed = json.loads(capsys.readouterr().out, parse_constant=_refuse)  # stdout is JSON and nothing else
    for key, kind in REQUIRED.items():
        assert isinstance(printed[key], kind), key
    assert (printed["a"], printed["b"]) == (str(original), str(changed))
    for key in ("only_in_a", "only_in_b", "shape_differs", "equal"):
        assert all(isinstance(name, str) for name in printed[key]), key
    assert {entry["key"] for entry in printed["differs"]} == PLANTED_TARGETS
    for entry in printed["differs"]:
        assert {"key", "relative_change", "max_abs", "cosine"} <= set(entry)
        assert all(isinstance(entry[k], float) for k in ("relative_change", "max_abs", "cosine")), entry
    assert set(printed["equal"]).isdisjoint(PLANTED_TARGETS) and Q not in printed["equal"]


def _refuse(constant: str):
    raise AssertionError(f"{constant} is not JSON")


@pytest.mark.slow  # full-width checkpoint
def test_diff_exit_code(original, changed, original_folder, capsys):
    assert main(["diff", str(original), str(changed), "--exit-code"]) == EXIT_DIFFERS == 5
    assert main(["diff", str(original), str(original_folder), "--exit-code"]) == 0
    out = capsys.readouterr().out
    assert "3 differ" in out and "Identical" in out


@pytest.mark.slow  # another Python process
def test_diff_of_a_missing_path_is_one_paragraph_naming_it(original, tmp_path):
    missing = tmp_path / "nowhere" / "epoch9.pt"
    result = subprocess.run(
        [sys.executable, "-m", "chclip_convert", "diff", str(original), str(missing), "--exit-code"],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stdout == ""
    err = result.stderr.strip()
    assert err.startswith("error: ") and str(missing) in err and "no such file" in err
    assert "\n\n" not in err and "Traceback" not in err


def test_the_summary_names_a_layer_tensor_whose_number_ends_its_name():
    """An unknown key such as ``visual.prompts.0`` sits in layer 0; the summary names it whole, not a crash."""
    moved = measure_change("visual.prompts.0", torch.ones(4), torch.full((4,), 3.0))
    still = measure_change("vision_model.encoder.layers.0.mlp.fc1.bias", torch.ones(4), torch.ones(4))
    diff = CheckpointDiff(Path("a"), Path("b"), CHECKPOINT, CHECKPOINT, [], [], {}, [still, moved])
    # The layer: ‖ΔW‖ = ‖2·1₄‖ = 4 over ‖W‖ = √(4 + 4) for its two tensors, 1.41; the prompt alone 4 / 2 = 2.
    assert "layer 0        1.41e+00  (1 of 2 differ; most: visual.prompts.0 2.00e+00)" in diff.to_text()


def test_fold_layers_folds_only_consecutive_layers_of_one_tower():
    """What the summaries print as ``layers 0–1``: a gap in the numbers, another tower or a part that does not
    fold ends a run."""
    parts = [Part(VISION, EMBEDDINGS), *(Part(VISION, LAYER, n) for n in (0, 1, 3)), Part(TEXT, LAYER, 4)]
    parts.append(Part(TEXT, LAYER, 5))
    folded = list(fold_layers(parts, lambda part: part.layer != 5))
    assert folded == [parts[0], parts[1:3], [parts[3]], [parts[4]], parts[5]]
    assert [span_label(run) for run in folded if isinstance(run, list)] == ["layers 0–1", "layer 3", "layer 4"]


def test_one_function_writes_both_layer_notations():
    """The summaries' ``layers 0–8`` and the reports' ``layers.{0...8}`` come from one function, so the two
    kinds of text always agree on which layers a run holds."""
    assert [layer_span(numbers) for numbers in ([3], [2, 0, 1], [0, 1, 2, 5])] == [
        "layer 3", "layers 0–2", "layers 0–2, 5"
    ]  # fmt: skip
    assert [layer_span(numbers, in_key=True) for numbers in ([3], [2, 0, 1], [0, 2, 5])] == ["3", "{0...2}", "{0,2,5}"]
    run = [Part(TEXT, LAYER, n) for n in range(9)]
    assert span_label(run) == "layers 0–8" and span_label(run[:1]) == run[0].label == "layer 0"
    keys = [f"text_model.encoder.layer.{n}.output.dense.bias" for n in range(9)]
    assert collapse_layers(keys) == ["text_model.encoder.layer.{0...8}.output.dense.bias"]
