"""The streaming weight statistics against statistics taken directly from whole tensors, on the demo, on a
damaged copy and on a sharded folder; how many tensors they hold at once; and the plots and histogram picker
that show them, driven as a person would (pointer moves, typing) without a browser."""

from __future__ import annotations

import gc
import warnings
import weakref

import pytest
import torch
from matplotlib.figure import Figure

from chclip_convert import convert_checkpoint, convert_state_dict
from chclip_convert.changes.weight_stats import compare_weights
from chclip_convert.conversion.demo import DAMAGE, DEMO_ARCHITECTURE, damaged_copy
from chclip_convert.files.checkpoint import SourceCheckpoint, load_checkpoint
from chclip_convert.files.folder import FolderTensors, load_folder_state
from chclip_convert.notebook.fonts import CJK_FAMILY, use_cjk_font
from chclip_convert.notebook.histogram import HistogramUI
from chclip_convert.notebook.plotting.weights import RATIO, draw_comparisons, hover_label, plot_layers, plot_similarity
from chclip_convert.tensor_stats import COMPARED, DIFFERS, EQUAL, ONLY_IN_A, ONLY_IN_B, SHAPE_DIFFERS

# Both sides are summed in float64, over the whole tensor here and over chunks in the code: the results differ
# only by float64 rounding (relative ~1e-15 per step), and the standard deviation, taken as E[x²] − mean², by at
# most ~1e-16·mean²/var relative (1e-14 for layer norms with mean 1 and std 0.1). 1e-9 leaves room, and is still
# a million times finer than any real difference between tensors (float16 rounding alone is ~1e-4).
RELATIVE = 1e-9


def direct_stats(tensor: torch.Tensor) -> dict[str, float]:
    values = tensor.to(torch.float64).reshape(-1)
    return {
        "mean": values.mean().item(),
        "std": values.std(unbiased=False).item() if values.numel() > 1 else 0.0,
        "absmax": values.abs().max().item(),
        "norm": values.norm().item(),
    }


def assert_stats_equal(found: dict[str, float], expected: dict[str, float], name: str) -> None:
    for key, number in expected.items():
        assert found[key] == pytest.approx(number, rel=RELATIVE, abs=1e-12), (name, key)


@pytest.fixture
def converted(demo_checkpoint, tmp_path):
    return convert_checkpoint(demo_checkpoint, tmp_path / "hf").output_dir


def test_streaming_statistics_equal_direct_ones(demo_checkpoint, converted):
    comparisons = compare_weights(demo_checkpoint, converted)
    expected = convert_state_dict(load_checkpoint(demo_checkpoint).state_dict).state_dict
    written = load_folder_state(converted)
    assert [c.target for c in comparisons] == sorted(expected)
    for c in comparisons:
        assert c.agrees and c.kind == EQUAL and c.max_abs_diff == 0.0 and c.norm_ratio == 1.0, c.target
        assert_stats_equal(c.source_stats, direct_stats(expected[c.target]), c.target)
        assert_stats_equal(c.converted_stats, direct_stats(written[c.target]), c.target)
    layers = {c.layer for c in comparisons if c.tower == "vision" and c.layer is not None}
    assert layers == set(range(DEMO_ARCHITECTURE.vision_layers))


def test_damaged_copy_shows_the_altered_tensor_and_only_it(demo_checkpoint, converted):
    damaged = damaged_copy(demo_checkpoint)
    by_name = {c.target: c for c in compare_weights(damaged, converted)}
    altered = by_name["text_model.encoder.layer.0.attention.self.query.weight"]
    source = load_checkpoint(damaged).state_dict[DAMAGE["altered"]].to(torch.float64)
    written = load_folder_state(converted)[altered.target].to(torch.float64)
    assert altered.kind == DIFFERS and altered.status == "bytes"
    assert altered.max_abs_diff == pytest.approx((written - source).abs().max().item(), rel=RELATIVE)
    assert altered.norm_ratio == pytest.approx((written.norm() / source.norm()).item(), rel=RELATIVE)
    dropped = by_name["vision_model.encoder.layers.1.mlp.fc2.bias"]  # dropped from the source
    assert dropped.kind == ONLY_IN_B and dropped.kind_text == "only in converted"
    assert by_name["vision_model.post_layernorm.weight"].kind == SHAPE_DIFFERS  # cut to half its length
    others = [c for name, c in by_name.items() if c.kind in COMPARED and name != altered.target]
    assert others and all(c.max_abs_diff == 0.0 and c.norm_ratio == 1.0 and c.agrees for c in others)


def test_missing_tensor_in_the_folder_is_source_only(demo_checkpoint, tmp_path):
    from safetensors.torch import save_file

    folder = convert_checkpoint(demo_checkpoint, tmp_path / "hf").output_dir
    state = load_folder_state(folder)
    del state["logit_scale"]
    save_file(state, str(folder / "model.safetensors"))
    (missing,) = [c for c in compare_weights(demo_checkpoint, folder) if not c.agrees]
    assert missing.target == "logit_scale" and missing.kind == ONLY_IN_A and missing.status == "missing"


def test_a_fused_weight_that_cannot_split_shows_its_three_targets_and_is_not_read(demo_checkpoint, converted, tmp_path,
                                                                                  monkeypatch):  # fmt: skip
    """Cut the demo's fused vision q/k/v weight (192 rows) to 190: no third is the right size, so each of q, k
    and v is a shape difference naming the source it would come from, and the cut tensor is never read."""
    name = "visual.transformer.resblocks.0.attn.in_proj_weight"
    checkpoint = torch.load(demo_checkpoint, weights_only=True)
    checkpoint["state_dict"][f"module.{name}"] = checkpoint["state_dict"][f"module.{name}"][:190].clone()
    torch.save(checkpoint, tmp_path / "cut.pt")
    reads, read = [], SourceCheckpoint.read
    monkeypatch.setattr(SourceCheckpoint, "read", lambda self, key: reads.append(key) or read(self, key))
    by_name = {c.target: c for c in compare_weights(tmp_path / "cut.pt", converted)}
    thirds = [by_name[f"vision_model.encoder.layers.0.self_attn.{p}_proj.weight"] for p in "qkv"]
    for c in thirds:
        assert (c.kind, c.status, c.source, c.max_abs_diff) == (SHAPE_DIFFERS, "shape", name, None), c.target
        assert c.source_stats is None and c.converted_stats is not None and c.kind_text == "shape differs"
    assert name not in reads and len(reads) == len(set(reads))  # every other source tensor read once
    assert {c.target for c in by_name.values() if not c.agrees} == {c.target for c in thirds}


def test_sharded_folder_gives_the_same_statistics(demo_checkpoint, tmp_path):
    single = convert_checkpoint(demo_checkpoint, tmp_path / "single").output_dir
    sharded = convert_checkpoint(demo_checkpoint, tmp_path / "sharded", max_shard_size="1MB").output_dir
    assert len(list(sharded.glob("model-*.safetensors"))) > 1
    assert compare_weights(demo_checkpoint, sharded) == compare_weights(demo_checkpoint, single)


def test_each_tensor_is_read_once_and_few_are_held(demo_checkpoint, converted, monkeypatch):
    """Each source tensor is read once (a fused q/k/v weight too, then split); each converted tensor is read
    once and freed before the next is read. The source's tensors are views of the memory-mapped file, held by
    the checkpoint's dict from the start (page cache, not the process's memory), so only reads are counted."""
    alive, peak, reads = set(), [0], {"source": [], "converted": []}

    def read_source(self, key, read=SourceCheckpoint.read):
        reads["source"].append(key)
        return read(self, key)

    def read_converted(self, key, read=FolderTensors.read):
        tensor = read(self, key)
        reads["converted"].append(key)
        token = object()
        alive.add(token)
        peak[0] = max(peak[0], len(alive))
        weakref.finalize(tensor, alive.discard, token)
        return tensor

    monkeypatch.setattr(SourceCheckpoint, "read", read_source)
    monkeypatch.setattr(FolderTensors, "read", read_converted)
    gc.disable()  # tensors are freed by reference counting alone, as they are in the notebook
    try:
        comparisons = compare_weights(demo_checkpoint, converted)
    finally:
        gc.enable()
    assert sorted(reads["converted"]) == [c.target for c in comparisons]
    assert sorted(reads["source"]) == sorted(load_checkpoint(demo_checkpoint).state_dict)
    assert peak[0] == 1


def test_layer_plots_have_integer_ticks_and_name_tensors_on_hover(demo_checkpoint, converted):
    comparisons = compare_weights(damaged_copy(demo_checkpoint), converted)
    figure = Figure(figsize=(12, 10))
    hover = draw_comparisons(figure, comparisons)
    figure.canvas.draw()
    vision = figure.axes[0]
    ticks = [tick for tick in vision.get_xticks() if vision.get_xlim()[0] <= tick <= vision.get_xlim()[1]]
    assert ticks and all(float(tick).is_integer() for tick in ticks)
    assert vision.get_yscale() == "symlog" and vision.get_ylim()[0] < 0.0 < vision.get_ylim()[1]  # zero is inside
    altered = "text_model.encoder.layer.0.attention.self.query.weight"
    drawn = [(d.artist, d.comparisons.index(c)) for d in hover.drawn for c in d.comparisons if c.target == altered]
    artist, index = drawn[0]  # in the difference column: the text tower's spike
    x, y = artist.axes.transData.transform(artist.get_offsets()[index])
    move(figure, x, y)
    assert hover.text.startswith(altered) and "norm ratio" in hover.text
    visible = [a for a in hover.annotations.values() if a.get_visible()]
    (comparison,) = [c for c in comparisons if c.target == altered]
    assert len(visible) == 1 and visible[0].get_text() == hover_label(comparison)  # hover.text, wrapped
    move(figure, 1, 1)  # off every axes: the label goes
    assert hover.text == "" and not any(a.get_visible() for a in hover.annotations.values())


def move(figure, x: float, y: float) -> None:
    from matplotlib.backend_bases import MouseEvent

    event = MouseEvent("motion_notify_event", figure.canvas, x, y)
    figure.canvas.callbacks.process("motion_notify_event", event)


def test_ratio_plot_centres_on_one_and_one_sided_tensors_are_marked(demo_checkpoint, converted):
    comparisons = compare_weights(damaged_copy(demo_checkpoint), converted)
    ax = Figure().subplots()
    drawn = plot_layers(ax, comparisons, "vision", RATIO)
    low, high = ax.get_ylim()
    assert low <= 0.9 and high >= 1.1
    assert [c.target for c in drawn["problems"].comparisons] == ["vision_model.encoder.layers.1.mlp.fc2.bias"]


def test_histogram_picker_narrows_by_search_and_reads_one_tensor(demo_checkpoint, converted, monkeypatch):
    ui = HistogramUI(demo_checkpoint, converted)
    everything = len(ui.tensor.options)
    ui.search.value = "layers.3 Q_PROJ"
    assert list(ui.tensor.options) == [
        "vision_model.encoder.layers.3.self_attn.q_proj.bias",
        "vision_model.encoder.layers.3.self_attn.q_proj.weight",
    ]
    assert ui.tensor.value in ui.tensor.options and f"2 of {everything}" in ui.count.value
    reads = []
    read = FolderTensors.read
    monkeypatch.setattr(FolderTensors, "read", lambda self, key: reads.append(key) or read(self, key))
    ui.tensor.value = "vision_model.encoder.layers.3.self_attn.q_proj.weight"
    assert reads == ["vision_model.encoder.layers.3.self_attn.q_proj.weight"]
    assert "identical values" in ui.caption.value and b"<svg" in bytes(ui.image.value)
    ui.search.value = "no such tensor"
    assert list(ui.tensor.options) == [] and ui.tensor.value is None


def test_captions_render_in_a_font_with_chinese_glyphs():
    from matplotlib import font_manager

    assert use_cjk_font() == CJK_FAMILY, "install the notebooks extra (mplfonts) or Debian's fonts-noto-cjk"
    captions = ["一位穿军装的女士", "a photo of 一只狗"]
    figure = Figure()
    ax = figure.subplots()
    plot_similarity(ax, torch.tensor([[1.0, 2.0]]), captions, "一张照片", ["photo"])
    labels = [label.get_text() for label in ax.get_xticklabels()]
    assert labels == captions
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)" for each box it draws
        figure.canvas.draw()
    for label in ax.get_xticklabels():
        assert "NotoSansCJK" in font_manager.findfont(label.get_fontproperties()).replace(" ", "")


def test_without_ipympl_the_figure_is_a_sharp_vector_image(demo_checkpoint, converted):
    from chclip_convert.notebook.plotting.figures import comparison_view

    view = comparison_view(compare_weights(demo_checkpoint, converted))
    (image,) = view.children
    assert image.format == "svg+xml" and b"<svg" in bytes(image.value)


def test_nan_and_inf_show_in_the_statistics_and_the_histogram(tmp_path):
    """A checkpoint with NaN and Inf values converts (with a warning); its statistics say NaN instead of a
    finite largest magnitude, and its histogram draws the finite values and counts the rest."""
    from chclip_convert.conversion.demo import write_demo_checkpoint
    from chclip_convert.notebook.plotting.weights import plot_histogram

    checkpoint = write_demo_checkpoint(tmp_path / "demo")
    training = torch.load(checkpoint, weights_only=True)
    name = "module.visual.ln_post.weight"
    broken = training["state_dict"][name].clone()
    broken[0], broken[1] = float("nan"), float("inf")
    training["state_dict"][name] = broken
    torch.save(training, checkpoint)
    with pytest.warns(UserWarning, match="NaN or Inf"):
        convert_checkpoint(checkpoint, tmp_path / "hf")
    found = {c.target: c for c in compare_weights(checkpoint, tmp_path / "hf")}["vision_model.post_layernorm.weight"]
    assert found.source_stats["absmax"] != found.source_stats["absmax"]  # NaN, not the largest finite value
    ax = Figure().subplots()
    drawn = plot_histogram(ax, broken, broken, "vision_model.post_layernorm.weight")
    assert set(drawn) == {"source", "converted"} and "4 NaN/Inf not drawn" in ax.get_title()
