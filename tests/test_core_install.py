"""The package alone converts, verifies and reverses.

``scripts/setup_core.sh`` (run by the test command) installs the CPU torch wheel and ``pip install .`` with no
extras into ``.venv-core``: no Jupyter, widgets, matplotlib, pandas, Pillow or cn_clip, as in a training environment.
The command line is run there on the embedded demo, from a folder outside the checkout so that the installed
package, not the source tree, is imported. In the full environment, a fresh interpreter shows that the core
never imports the notebook side even where it is installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT

# Each test starts another Python process (most in the core venv), which imports torch and transformers anew.
pytestmark = pytest.mark.slow
CORE_VENV = Path(os.environ.get("CHCLIP_CORE_VENV", ROOT / ".venv-core"))
NOTEBOOK_SIDE = (
    *("ipywidgets", "matplotlib", "jupyter", "jupyter_client", "jupyterlab", "IPython", "voila"),
    *("itables", "anywidget", "pandas"),  # the key grid
)
IMAGE_LIBRARIES = ("PIL", "torchvision", "cn_clip")  # verification needs them only to run the original model


@pytest.fixture(scope="module")
def core_python() -> Path:
    python = CORE_VENV / "bin" / "python"
    assert python.is_file(), f"{python} is missing: run `bash scripts/setup_core.sh` (scripts/test.sh does)"
    return python


def run(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    return subprocess.run([str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def cli(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run(python, "-m", "chclip_convert", *args, cwd=cwd)


def test_core_install_has_no_notebook_side(core_python, tmp_path):
    probe = (
        "import importlib.util as u, chclip_convert as c; print(c.__file__); print(*[m for m in {} if u.find_spec(m)])"
    )
    result = run(core_python, "-c", probe.format([*NOTEBOOK_SIDE, *IMAGE_LIBRARIES]), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    location, present = result.stdout.splitlines()
    assert Path(location).is_relative_to(CORE_VENV), "the installed package must be the one imported"
    assert present == "", f"the core install pulled in {present}"


def test_core_install_converts_reloads_verifies_and_reverses(core_python, tmp_path):
    made = run(
        core_python,
        "-c",
        "from chclip_convert.conversion.demo import write_demo_checkpoint as w; print(w('demo'))",
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    checkpoint = made.stdout.strip()
    converted = cli(core_python, checkpoint, "hf", "--no-progress", cwd=tmp_path)
    assert converted.returncode == 0, converted.stderr
    assert (tmp_path / "hf" / "preprocessor_config.json").is_file() and (tmp_path / "hf" / "tokenizer.json").is_file()
    report = json.loads((tmp_path / "hf" / "conversion_report.json").read_text())
    assert report["source_weights_digest_algorithm"].endswith("(chclip-convert v2)")  # BLAKE3, a core dependency
    verified = cli(core_python, "verify", checkpoint, "hf", cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "cn_clip: not installed" in verified.stdout and "Verified: all checks pass." in verified.stdout
    reversed_ = cli(core_python, "reverse", "hf", "back.pt", cwd=tmp_path)
    assert reversed_.returncode == 0, reversed_.stderr
    # One process (each imports torch and transformers anew): the folder reloads strictly with its tokenizer,
    # and the reversed file holds the demo's tensors.
    reload_and_compare = (
        "import sys, torch\n"
        "from transformers import AutoTokenizer, ChineseCLIPModel\n"
        "model, info = ChineseCLIPModel.from_pretrained('hf', output_loading_info=True)\n"
        "assert not any(info.values()), info\n"
        "assert AutoTokenizer.from_pretrained('hf')('一只猫')['input_ids'][0] == 2  # [CLS] first\n"
        "a = torch.load(sys.argv[1], weights_only=True)['state_dict']\n"
        "b = torch.load('back.pt', weights_only=True)['state_dict']\n"
        "assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)\n"
    )
    checked = run(core_python, "-c", reload_and_compare, checkpoint, cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr


def test_the_core_install_says_what_export_onnx_needs(core_python, tmp_path):
    """onnx, onnxruntime and onnxscript are the export extra's, not the core's: one line says what to install."""
    result = cli(core_python, "export-onnx", "hf", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: exporting to ONNX needs onnx, onnxruntime, onnxscript, which are not installed; install the export "
        "extra: pip install 'chclip-convert[export]'"
    ]


def test_the_core_never_imports_the_notebook_side(tmp_path):
    """In the full environment, where widgets and matplotlib are installed, converting, verifying (cn_clip
    left out) and reversing import none of them."""
    script = (
        "import sys\n"
        "from chclip_convert.cli.main import main\n"
        "from chclip_convert.conversion.demo import write_demo_checkpoint\n"
        "sys.modules['cn_clip'] = None  # verify without the original code, which brings in Pillow\n"
        "demo = str(write_demo_checkpoint('demo'))\n"
        "codes = [main([demo, 'hf', '--no-progress']), main(['verify', demo, 'hf']),\n"
        "         main(['reverse', 'hf', 'back.pt'])]\n"
        f"loaded = sorted({{m.split('.')[0] for m in sys.modules}} & set({list(NOTEBOOK_SIDE)!r}))\n"
        "print(codes, loaded)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[0, 0, 0] []"


def test_every_core_module_imports_without_the_notebook_side(tmp_path):
    """Each module outside chclip_convert.notebook, imported in a fresh interpreter, leaves widgets, plotting and
    Jupyter unloaded; the widgets, imported after, do load ipywidgets (so the probe can see them)."""
    script = (
        "import importlib, sys\n"
        "from pathlib import Path\n"
        "import chclip_convert\n"
        # the files, not pkgutil.walk_packages: walking imports each subpackage, the notebook layer included.
        "root = Path(chclip_convert.__path__[0])\n"
        "parts = [p.relative_to(root).with_suffix('').parts for p in root.rglob('*.py')]\n"
        "names = sorted('.'.join(('chclip_convert', *part)).removesuffix('.__init__')\n"
        "               for part in parts if part[0] not in ('notebook', '__main__'))\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        f"side = set({list(NOTEBOOK_SIDE)!r})\n"
        "core = sorted({m.split('.')[0] for m in sys.modules} & side)\n"
        "importlib.import_module('chclip_convert.notebook.key_grid')\n"
        "layer = sorted({m.split('.')[0] for m in sys.modules} & side)\n"
        "print(len(names), 'chclip_convert.verification.verify' in names, core, layer)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, env={**os.environ}
    )
    assert result.returncode == 0, result.stderr
    count, has_verify, core, layer = result.stdout.strip().splitlines()[-1].split(" ", 3)
    assert int(count) >= 40 and has_verify == "True"  # every core module, in every folder
    assert core == "[]", f"the core imported {core}"
    assert "ipywidgets" in layer


def test_core_install_writes_a_complete_folder_from_the_pt_file_alone(core_python, reduced_checkpoints, tmp_path):
    """A researcher with only the .pt file and `pip install .`: no vocab.txt beside it and no cn_clip, yet the
    folder gets its tokenizer (the standard vocabulary the package ships) and verification passes."""
    checkpoint = tmp_path / "run" / "epoch_latest.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(reduced_checkpoints["ViT-B-16"].read_bytes())
    converted = cli(core_python, str(checkpoint), "hf", "--no-progress", cwd=tmp_path)
    assert converted.returncode == 0, converted.stderr
    assert "warning" not in converted.stderr + converted.stdout
    assert "the standard Chinese-CLIP vocabulary, shipped with chclip-convert" in converted.stdout
    tokens = "from transformers import AutoTokenizer\nprint(AutoTokenizer.from_pretrained('hf')('一只猫')['input_ids'])"
    loaded = run(core_python, "-c", tokens, cwd=tmp_path)
    # cn_clip's ids for 一只猫: [CLS] 一 只 猫 [SEP] (checked against cn_clip.clip.tokenize in test_output.py)
    from cn_clip.clip import tokenize

    assert loaded.stdout.strip() == str(tokenize(["一只猫"])[0][:5].tolist()), loaded.stderr
    verified = cli(core_python, "verify", str(checkpoint), "hf", cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "cn_clip: not installed" in verified.stdout and "Verified: all checks pass." in verified.stdout
