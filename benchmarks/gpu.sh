#!/usr/bin/env bash
# The GPU check, prepared to run once on one H100/H200 in under 8 minutes (its parts' limits, with
# 5 s each to stop, add up to 7.5). All its tables go to one
# file, $OUT/gpu_results.md (OUT defaults to benchmarks/). Each part has its own time limit and runs
# whatever happened before it, so a first run that fails part-way still leaves the tables it finished;
# each part ends with its exit status and seconds.
#
#   1. the fused PRSL kernel compiled for CUDA: its parity tests (fp32, bf16, fp16, ragged ignore
#      masks, k up to 128, start > 0, in-place mode) and GPT-2's vocabulary in bf16 at k 10/100/128;
#      and BIM's steps run under torch.cuda.set_sync_debug_mode("error"): no host sync per step;
#   2. benchmarks/losses.py on CUDA, N in {1024, 4096, 16384} x V = 50257, fp32 and bf16: torch CE,
#      the torch PRSL reference, fused, fused in place (time, peak memory, bandwidth floor);
#   3. benchmarks/attacks.py --arch vit-gpt2 in bf16: the authors' per-image protocol (with and
#      without its JPEG round trip) against batched BIM-10, with and without per-step generation,
#      per-step outputs generated several steps at once, and a static KV cache;
#   4. the same batched rows in fp32 (the earlier H100 reference point: 24 images/s);
#   5. benchmarks/train.py --arch vit-gpt2 in bf16: PRSL vs CE tokens/s, and CE-AT with PGD-2.
#
# Run from the repository root: bash benchmarks/gpu.sh   (python3 must import torch, triton,
# transformers and prsl's dependencies; src/ is put on PYTHONPATH, no install needed). Where a
# machine lacks some of them and cannot download (the lent H200), run benchmarks/gpu_deps.sh on a
# machine that can, carry .whl/ along, and this script installs from it first.
set -u
OUT_DIR=$(realpath -m "${OUT:-$(dirname "$0")}")  # relative to where it was called from
cd "$(dirname "$0")/.."
mkdir -p "$OUT_DIR"
FILE="$OUT_DIR/gpu_results.md"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then  # made by benchmarks/gpu_deps.sh
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
[ -d .whl/site ] && export PYTHONPATH="$PYTHONPATH:$PWD/.whl/site"

part() {  # part TITLE SECONDS COMMAND...: run one part under its own limit, append what it printed
  local title=$1 limit=$2
  shift 2
  local began=$SECONDS
  {
    echo
    echo "## $title"
    echo
    echo "\`$*\`"
    echo
    echo '```'
  } >>"$FILE"
  timeout --kill-after=5 "$limit" "$@" >>"$FILE" 2>&1
  local rc=$? stopped=""
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then stopped=" (stopped at its ${limit} s limit)"; fi
  {
    echo '```'
    echo
    echo "exit $rc after $((SECONDS - began)) s$stopped"
  } >>"$FILE"
  echo "$title: exit $rc, $((SECONDS - began)) s"
}

{
  echo "# prsl GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo '```'
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
  $PY - <<'EOF' 2>&1
import importlib, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
for name in ("triton", "transformers", "accelerate", "pydantic", "prsl"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"))
    except Exception as err:  # a missing package is reported, and the parts needing it fail
        print(name, "MISSING:", err)
EOF
  echo '```'
} >"$FILE"

# Without a visible GPU these tests would all skip and the part pass: make it fail instead.
export PY
part "1. on CUDA: fused PRSL kernel parity; attack steps never synchronise" 120 bash -c '
  $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else \"no CUDA device visible: the GPU tests cannot run\")" &&
  CI=true $PY -m pytest -q -p no:cacheprovider tests/test_losses_triton.py tests/test_attacks_gpu.py -m gpu -rA'

part "2. losses on CUDA, V = 50257" 75 \
  $PY benchmarks/losses.py --devices cuda --sizes 1024 4096 16384 --dtypes float32 bfloat16 --repeats 5
part "3. attacks, ViT-GPT2, bf16" 110 \
  $PY benchmarks/attacks.py --arch vit-gpt2 --device cuda --dtype bfloat16 --batch 32 --images 64 \
  --per-image-images 2 --repeats 3 --static-cache
part "4. attacks, ViT-GPT2, fp32 (per-image on 1 image)" 45 \
  $PY benchmarks/attacks.py --arch vit-gpt2 --device cuda --dtype float32 --batch 32 --images 64 \
  --per-image-images 1 --repeats 2 --no-jpeg
part "5. fine-tuning, ViT-GPT2, bf16" 75 \
  $PY benchmarks/train.py --arch vit-gpt2 --device cuda --dtype bfloat16 --steps 10 --repeats 3 --adversarial 2
echo "tables: $FILE"
