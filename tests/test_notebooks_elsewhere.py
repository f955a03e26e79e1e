"""The notebooks' stored outputs hold on another CPU.

nbval runs the notebooks again the way another machine would compute them: ATen's portable kernels instead of
the AVX ones, MKL held to SSE4.2 and one thread, so reductions and matrix products sum in another order and
floats differ in their last bits (measured on the demo: feature and logit differences from cn_clip move between
~2e-7 and ~1e-6). Every stored output must still match, so none may print a number that depends on those bits.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from support import ROOT

OTHER_CPU = {
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


@pytest.mark.slow  # every notebook run again, in another process
def test_stored_outputs_hold_with_other_kernels_and_one_thread():
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval",
        "--nbval-sanitize-with", "notebooks/nbval_sanitize.cfg", "notebooks",
    ]  # fmt: skip
    env = {**os.environ, **OTHER_CPU, "HF_HUB_OFFLINE": "1"}
    env.pop("CHCLIP_CHECKPOINT", None)
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
