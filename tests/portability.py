"""Run the numerically sensitive tests under other CPU kernels and thread counts.

``make test-portability`` (or ``.venv/bin/python tests/portability.py [ENV ...]``) reruns the
tests whose outcome rests on floats (generation compared across computations, thresholds on
tiny trained models, training that must reach given weights) once per environment of
``calibration.ENVIRONMENTS``: AVX-512 (if the CPU has it) with one and two threads, AVX2 only,
and no SIMD at all, each pinning ATen, MKL and oneDNN together. A test that passes only on the
machine it was tuned on fails here. It prints one line per environment and exits non-zero if any
failed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from calibration import ENVIRONMENTS

HERE = Path(__file__).resolve().parent

SENSITIVE = [
    "test_attacks_captioner.py",
    "test_attacks_classifier.py",
    "test_attacks_properties.py",
    "test_losses.py",
    "test_losses_properties.py",
    "test_models_blip2.py",
    "test_models_training.py",
    "test_models_ved.py",
    "test_models_vlm.py",
    "test_train.py",
    "test_train_adversarial.py",
    "test_train_fare.py",
    "test_evaluate.py",
    "test_train_distributed.py",
    "test_evaluate_distributed.py",
]


def main(names: list[str]) -> int:
    failed = []
    for name in names or list(ENVIRONMENTS):
        env = {**os.environ, **ENVIRONMENTS[name]}
        env["OMP_NUM_THREADS"] = ENVIRONMENTS[name]["PRSL_TEST_THREADS"]
        began = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SENSITIVE],
            cwd=HERE,
            env=env,
            capture_output=True,
            text=True,
        )
        summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
        print(f"{name:10s} {summary}  ({time.perf_counter() - began:.0f} s)", flush=True)
        if done.returncode != 0:
            failed.append(name)
            print(done.stdout[-4000:], done.stderr[-2000:], sep="\n", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
