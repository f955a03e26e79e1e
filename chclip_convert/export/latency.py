"""How long each tower takes on this machine: PyTorch against every exported variant in onnxruntime.

The image tower (``vision_model*.onnx``, ``get_image_features``) and the text tower (``text_model*.onnx``,
``get_text_features``) are timed apart, at a few batch sizes, on the packaged photo (each copy with its own
slight noise, so no two rows are the same) and the sample captions. Each figure is the median of ``repeats``
calls after two warm-ups, in this process, torch and onnxruntime on as many threads (torch's count).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from chclip_convert.export.graphs import GRAPH_BY_NAME, TEXT, VISION, GraphSpec, run_torch
from chclip_convert.export.runtime import open_session, run_session
from chclip_convert.export.writer import VARIANTS, Variant
from chclip_convert.progress import OnProgress, Progress
from chclip_convert.verification.model_outputs import SAMPLE_CAPTIONS, folder_processor, sample_image, tokenize_captions

TOWERS = {"image": GRAPH_BY_NAME[VISION], "text": GRAPH_BY_NAME[TEXT]}
PYTORCH = "PyTorch"
TIMING = "timing the towers"  # the stage of the progress events


@dataclass(frozen=True)
class Latency:
    """One figure: a tower at a batch size, on one runtime (``PyTorch`` or ``onnxruntime <variant>``)."""

    tower: str
    batch: int
    runtime: str
    milliseconds: float


def runtime_name(variant: Variant) -> str:
    """``onnxruntime fp32``, ``onnxruntime int8``: how a variant's figures are labelled."""
    return f"onnxruntime {variant.name}"


def exported_variants(onnx_dir: str | Path) -> list[Variant]:
    """The variants ``onnx_dir`` holds both towers of, in ``VARIANTS`` order (float32 first)."""
    onnx_dir = Path(onnx_dir)
    return [v for v in VARIANTS if all((onnx_dir / g.file_name(v.suffix)).is_file() for g in TOWERS.values())]


def median_ms(call: Callable[[], object], repeats: int) -> float:
    """Median milliseconds of ``call()`` over ``repeats`` calls, after two warm-ups."""
    for _ in range(2):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def batch_inputs(processor, batch: int) -> dict[str, torch.Tensor]:
    """``batch`` images (the photo, each with its own seeded noise) and captions (the samples, repeated)."""
    pixels = processor.image_processor(images=[sample_image()] * batch, return_tensors="pt")["pixel_values"]
    pixels = pixels + 0.05 * torch.randn(pixels.shape, generator=torch.Generator().manual_seed(batch))
    text = tokenize_captions(processor.tokenizer, (SAMPLE_CAPTIONS * (batch // len(SAMPLE_CAPTIONS) + 1))[:batch])
    return {"pixel_values": pixels, "input_ids": text["input_ids"], "attention_mask": text["attention_mask"]}


def measure_latency(
    folder: str | Path,
    onnx_dir: str | Path | None = None,
    *,
    batches: Sequence[int] = (1, 8),
    repeats: int = 20,
    progress: OnProgress | None = None,
) -> list[Latency]:
    """Time both towers of ``folder``'s PyTorch model and of every variant exported into ``onnx_dir`` (default
    ``folder/onnx``), at each of ``batches``; ``progress`` hears of each figure before it is measured."""
    from transformers import ChineseCLIPModel

    folder = Path(folder)
    onnx_dir = Path(onnx_dir) if onnx_dir is not None else folder / "onnx"
    processor = folder_processor(folder)
    model = ChineseCLIPModel.from_pretrained(folder, dtype=torch.float32).eval()
    runtimes = [PYTORCH, *(runtime_name(variant) for variant in exported_variants(onnx_dir))]
    variants = {runtime_name(variant): variant for variant in exported_variants(onnx_dir)}
    total, figures = len(runtimes) * len(batches) * len(TOWERS), []
    for runtime in runtimes:  # one runtime's sessions open at a time: memory holds one model's more
        if runtime == PYTORCH:
            runners = {tower: _torch_runner(model, graph) for tower, graph in TOWERS.items()}
        else:
            suffix, threads = variants[runtime].suffix, torch.get_num_threads()
            runners = {
                tower: _onnx_runner(open_session(onnx_dir / g.file_name(suffix), threads), g)
                for tower, g in TOWERS.items()
            }
        for batch in batches:
            inputs = batch_inputs(processor, batch)
            for tower, run in runners.items():
                if progress is not None:
                    stage = f"{TIMING}: {tower}, batch {batch}, {runtime}"
                    progress(Progress(done=len(figures), total=total, unit="figures", stage=stage))
                milliseconds = median_ms(lambda: run(inputs), repeats)  # noqa: B023 (called here)
                figures.append(Latency(tower, batch, runtime, milliseconds))
        del runners
    return figures


def _torch_runner(model, graph: GraphSpec) -> Callable[[dict], object]:
    return lambda inputs: run_torch(model, graph, inputs)


def _onnx_runner(session, graph: GraphSpec) -> Callable[[dict], object]:
    return lambda inputs: run_session(session, graph, inputs)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows of it elsewhere."""
    import platform

    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:  # not Linux
        lines = []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    return model or platform.processor() or "unknown CPU"


def machine_name() -> str:
    """The CPU's model name and core count, as the figures' title names the machine they were measured on."""
    import os

    return f"{cpu_model()}, {os.cpu_count()} cores"
