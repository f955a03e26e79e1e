"""Shared fixtures and helpers: seeded cn_clip models saved as training does, fixed inputs for parity checks,
a tiny transformers config, and a strict reload of converted folders."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# The notebooks (run by nbval and by Voila in the browser tests) write into their work folder: a fresh one per
# test run, never the user's. Its last name is the default's, so stored outputs sanitise to the same text.
os.environ["CHCLIP_WORK"] = str(Path(tempfile.mkdtemp(prefix="chclip-tests-")) / "chclip-convert-work")

from original import REDUCED, build_model, save, training_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CAPTIONS = ["一位穿军装的女士", "一只猫", "一辆红色的汽车停在路边", "皮卡丘", "a photo of 一只狗"]


@pytest.fixture
def demo_checkpoint(tmp_path) -> Path:
    """The embedded demo checkpoint (small and fast) with its vocab.txt beside it, in a folder of its own."""
    from chclip_convert.conversion.demo import write_demo_checkpoint

    return write_demo_checkpoint(tmp_path / "demo")


def tree_sha256(path: Path) -> str | None:
    """SHA-256 of a file, or of every file below a folder in name order; ``None`` if there is nothing."""
    if path.is_dir():
        return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file())).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


PAGE = os.sysconf("SC_PAGE_SIZE")


def present_pages(tensor: torch.Tensor) -> tuple[int, int]:
    """(pages of ``tensor`` mapped into this process, pages it spans), from /proc/self/pagemap (bit 63)."""
    start = tensor.data_ptr()
    first, last = start // PAGE, (start + tensor.nbytes - 1) // PAGE
    with open("/proc/self/pagemap", "rb") as pagemap:
        pagemap.seek(first * 8)
        entries = pagemap.read((last - first + 1) * 8)
    present = sum(int.from_bytes(entries[i : i + 8], "little") >> 63 for i in range(0, len(entries), 8))
    return present, last - first + 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("checkpoints")


@pytest.fixture(scope="session")
def reduced_models():
    """Architecture name → seeded cn_clip CLIP (built once per session)."""
    return {name: build_model(variant, seed=index) for index, (name, variant) in enumerate(REDUCED.items())}


@pytest.fixture(scope="session")
def reduced_checkpoints(reduced_models, checkpoint_dir) -> dict[str, Path]:
    """Architecture name → training checkpoint file (``module.`` keys, epoch, step, name)."""
    return {
        name: save(training_checkpoint(model), checkpoint_dir / f"{name}.pt") for name, model in reduced_models.items()
    }


@pytest.fixture(scope="session")
def sample_image():
    """The real photograph the package ships for verification (no download)."""
    from chclip_convert.verification.model_outputs import sample_image as packaged

    return packaged()


def image_batch(image, size: int) -> torch.Tensor:
    """cn_clip's own preprocessing of the photo, plus a seeded noise image, as one batch."""
    from cn_clip.clip import image_transform

    photo = image_transform(size)(image)
    noise = torch.randn(3, size, size, generator=torch.Generator().manual_seed(7))
    return torch.stack([photo, noise])


def token_batch(captions: list[str] = CAPTIONS) -> torch.Tensor:
    from cn_clip.clip import tokenize

    return tokenize(captions)


WIDTH, TEXT_WIDTH, EMBED, LAYERS = 8, 12, 4, 2


def small_config():
    """A tiny ``ChineseCLIPConfig`` (``LAYERS`` layers a tower, vision width ``WIDTH``) for table-level tests."""
    from transformers import ChineseCLIPConfig

    return ChineseCLIPConfig(
        text_config={
            "vocab_size": 30,
            "hidden_size": TEXT_WIDTH,
            "intermediate_size": 20,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
        },
        vision_config={
            "hidden_size": WIDTH,
            "intermediate_size": 32,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": 2,
            "image_size": 8,
            "patch_size": 4,
        },
        projection_dim=EMBED,
    )


def reload_strictly(folder: Path, **kwargs):
    """``ChineseCLIPModel.from_pretrained(folder)``, failing on any key transformers reports missing, unexpected
    or of another shape: left alone, it fills such keys with fresh random values and only logs a line."""
    from transformers import ChineseCLIPModel

    model, info = ChineseCLIPModel.from_pretrained(folder, output_loading_info=True, **kwargs)
    assert not any(info.values()), f"{folder}: {info}"
    return model


def assert_model_holds(model, source_state: dict[str, torch.Tensor]) -> None:
    """The reloaded ``model`` holds exactly the tensors the mapping table makes from the original ``source_state``.

    One row is left out: on every load, transformers 5 zeroes row ``pad_token_id`` of the word embeddings, also
    when it was loaded (``ChineseCLIPPreTrainedModel._init_weights`` zeroes ``weight[padding_idx]``, a view that
    its guard for loaded tensors does not see). Only [PAD] positions read that row and attention masks them, so
    outputs do not depend on it; the written file holds the source's row (``load_folder_state`` shows it)."""
    from chclip_convert import convert_state_dict

    expected = dict(convert_state_dict(source_state).state_dict)
    state = model.state_dict()
    assert set(state) == set(expected), sorted(set(state) ^ set(expected))
    pad = model.config.text_config.pad_token_id
    words = "text_model.embeddings.word_embeddings.weight"
    keep = torch.arange(expected[words].shape[0]) != pad
    state[words], expected[words] = state[words][keep], expected[words][keep]
    different = [
        key for key in expected if state[key].dtype != expected[key].dtype or not torch.equal(state[key], expected[key])
    ]
    assert not different, different


def readme_commands() -> list[str]:
    """The set-up commands README.md opens with, in order."""
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S).group(1)
    return [line.split("#")[0].strip() for line in block.strip().splitlines()]


# The browser tests: Voila serves the notebooks on 127.0.0.1 and Debian's Chromium, driven by Playwright, types
# and clicks as a person would. Screenshots go to artifacts/screenshots/.
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Voila runs each notebook's cells before the page shows its widgets; the statistics notebook takes longest.
PAGE_TIMEOUT_MS = 180_000


@pytest.fixture(scope="session")
def voila_work(tmp_path_factory) -> Path:
    """The work folder of the notebooks Voila serves: their own, so the choices the browser tests make never
    reach the notebooks nbval runs."""
    return tmp_path_factory.mktemp("voila-work") / "chclip-convert-work"


@pytest.fixture(scope="session")
def voila_url(tmp_path_factory, voila_work):
    port = free_port()
    log = (tmp_path_factory.mktemp("voila") / "voila.log").open("w")
    command = [
        sys.executable, "-m", "voila", "notebooks", f"--port={port}", "--no-browser", "--Voila.ip=127.0.0.1",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CHCLIP_WORK": str(voila_work)}
    env.pop("CHCLIP_CHECKPOINT", None)
    server = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # poll the port until the server answers
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if server.poll() is not None:
                pytest.fail(f"voila exited early; see {log.name}")
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail(f"voila did not answer on {url} within 120 s; see {log.name}")
    yield url
    server.terminate()
    server.wait(timeout=30)
    log.close()


@pytest.fixture(scope="session")
def browser():
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed: scripts/test.sh installs it"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1300, "height": 1000})
    opened = context.new_page()
    yield opened
    context.close()


def open_notebook(page, url: str, name: str) -> None:
    page.goto(f"{url}/voila/render/{name}", timeout=PAGE_TIMEOUT_MS)
    page.wait_for_selector(".jupyter-widgets", timeout=PAGE_TIMEOUT_MS)


def field(page, label: str):
    return page.locator(f".widget-text:has(label:text-is('{label}')) input")
