"""Throughput of the weights digest's candidate hashes and of the conversion's fused digest + NaN/Inf pass.

    flock /tmp/bench.lock .venv/bin/python benchmarks/bench_digest.py [--gib 1] [--rounds 3]

Over --gib GiB of fp16 tensors in memory (64 tensors, each of a ViT-H-14 MLP weight's size order), hashed
one tensor at a time as the digest's leaves are: BLAKE3 on one thread and on every core (the ``blake3``
package), BLAKE2b-256 (v1's hash), SHA-256 as OpenSSL runs it and, on a CPU with SHA instructions, with
them hidden from OpenSSL (``OPENSSL_ia32cap``), as on a CPU without. Then the per-tensor work the conversion
does beside the writing: the v1 way (BLAKE2b-256 of the tensor, then a NaN/Inf pass over it) and the v2 way
(:func:`~chclip_convert.conversion.tensor_checks.digest_and_check`, BLAKE3 and the NaN/Inf check fused in
chunks) at several chunk sizes. Each method runs in a fresh process; the median of --rounds rounds, in MB/s
(10^6 bytes per second).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from bench_convert import NO_SHA_NI, cpu_model, has_sha_ni

MEASURE = r"""
import hashlib, statistics, sys, time
import blake3, torch
from chclip_convert.conversion import tensor_checks
from chclip_convert.conversion.provenance import ALGORITHM
from chclip_convert.conversion.state_dict import is_finite
from chclip_convert.files.safetensors_writer import raw_bytes

method, gib, rounds, chunk, threads = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
torch.manual_seed(0)
tensors = [torch.randn(int(gib * 2**30) // 64 // 2, dtype=torch.float16) for _ in range(64)]
tensor_checks.CHUNK_BYTES, tensor_checks.HASH_THREADS = chunk, threads == "auto"

def leaf(new):
    for tensor in tensors:
        digest = new()
        digest.update(raw_bytes(tensor))
        digest.hexdigest()

def v1_beside():
    for tensor in tensors:
        hashlib.blake2b(raw_bytes(tensor), digest_size=32).hexdigest()
        is_finite(tensor)

METHODS = {
    "blake3-1": lambda: leaf(lambda: blake3.blake3(max_threads=1)),
    "blake3-auto": lambda: leaf(lambda: blake3.blake3(max_threads=blake3.blake3.AUTO)),
    "blake2b": lambda: leaf(lambda: hashlib.blake2b(digest_size=32)),
    "sha256": lambda: leaf(hashlib.sha256),
    "nan-inf": lambda: [is_finite(tensor) for tensor in tensors],
    "v1-beside": v1_beside,
    "v2-fused": lambda: [tensor_checks.digest_and_check(tensor, ALGORITHM) for tensor in tensors],
}
rates = []
for _ in range(rounds + 1):  # the first round warms up
    started = time.perf_counter()
    METHODS[method]()
    rates.append(sum(t.numel() * 2 for t in tensors) / 1e6 / (time.perf_counter() - started))
print(statistics.median(rates[1:]))
"""


def measure(method: str, gib: float, rounds: int, chunk: int = 16 << 20, threads="1", env: dict | None = None) -> float:
    """MB/s of ``method`` in a fresh process (so that OpenSSL reads ``env``)."""
    command = [sys.executable, "-c", MEASURE, method, str(gib), str(rounds), str(chunk), threads]
    done = subprocess.run(command, env={**os.environ, **(env or {})}, capture_output=True, text=True, check=True)
    return float(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sha_ni = has_sha_ni()
    print(f"{cpu_model()}, {os.cpu_count()} cores, sha_ni {'present' if sha_ni else 'absent'}; {os.getloadavg()}")
    rows = [
        ("BLAKE3, 1 thread", "blake3-1", {}),
        ("BLAKE3, every core (max_threads=AUTO)", "blake3-auto", {}),
        ("BLAKE2b-256 (v1)", "blake2b", {}),
        ("SHA-256 (OpenSSL)", "sha256", {}),
    ]
    if sha_ni:
        rows.append(("SHA-256, SHA instructions hidden", "sha256", {"env": NO_SHA_NI}))
    rows += [
        ("NaN/Inf check alone", "nan-inf", {}),
        ("v1: BLAKE2b-256, then NaN/Inf", "v1-beside", {}),
    ]
    for threads in ("1", "auto"):
        for mib in (4, 16, 64):
            fused = f"v2: BLAKE3 ({threads} thread) + NaN/Inf fused, {mib} MiB chunks"
            rows.append((fused, "v2-fused", {"chunk": mib << 20, "threads": threads}))
    print(f"| over {args.gib:g} GiB of fp16 tensors | MB/s |\n|---|---|")
    for label, method, options in rows:
        print(f"| {label} | {measure(method, args.gib, args.rounds, **options):.0f} |", flush=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
