#!/usr/bin/env bash
# What benchmarks/gpu.sh needs on a GPU machine whose Python has torch, triton, transformers,
# accelerate, peft, pillow, pyyaml, rich and safetensors but not prsl's other dependencies (the lent
# H200 image: Python 3.12, no downloads there). Run HERE, where pip reaches the package registry;
# it fills .whl/ (ignored by git, about 3 MB), which gpu.sh installs from:
#   - wheels of pydantic and its three dependencies, for CPython 3.12 on x86-64 Linux, at the
#     versions this checkout's environment has (.venv, from make install);
#   - .whl/site/pycocoevalcap: the Python modules of pycocoevalcap, without its Java jars and data
#     (100 MB; the benchmarks import prsl.evaluate, which imports the COCO metrics, but score nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
# the versions this checkout's environment runs (pydantic needs one exact pydantic-core)
pins=$($PY -c 'from importlib.metadata import version as v
print(" ".join(f"{n}=={v(n)}" for n in ("pydantic", "pydantic-core", "annotated-types", "typing-inspection")))')
rm -rf .whl && mkdir -p .whl/site
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
# shellcheck disable=SC2086  # $pins: one argument per package
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl $pins
tmp=$(mktemp -d)
$PY -m pip download -q --no-deps --only-binary=:all: -d "$tmp" pycocoevalcap
$PY - "$tmp"/pycocoevalcap-*.whl .whl/site <<'EOF'
import sys, zipfile
wheel, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        if name.startswith("pycocoevalcap/") and name.endswith(".py"):
            archive.extract(name, target)
EOF
rm -rf "$tmp"
du -sh .whl
