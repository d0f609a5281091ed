#!/usr/bin/env bash
# The GPU figures of benchmarks/README.md in one call that fits a few minutes of a lent device:
#   1. the device's own bf16 matmul rate (the ceiling our steps work against),
#   2. ViT-B/16 at 224, bf16, batch 256: img/s, MFU, peak device memory,
#   3. the DETR (ResNet-50, 100 queries) train step, bf16, batch 8 of 896 x 1152,
#   4. the attention kernels table (explicit, xla, cudnn, blockwise; forward + backward, bf16),
#   5. M2 (ViT-Ti/16) at 224, bf16, batch 256,
#   6. the same ViT-B/16 and DETR steps in fp32, last, for what bf16 buys.
# Each part runs under its own time limit and appends JSON lines (tagged "part") to
# $OUT/gpu.jsonl, so a part that fails or runs out leaves the others' figures.
#
#   bash benchmarks/gpu.sh                 # on the device machine, from the repository root
#   SMOKE=1 bash benchmarks/gpu.sh         # every part at toy sizes, on any backend (a CPU check)
#   PARTS="vit_b16_bf16 detr_bf16" bash benchmarks/gpu.sh     # only those parts
#
# MFU is against PEAK_GFLOPS, by default 989,400 (the datasheet's dense bf16 rate of an H100/H200
# SXM); part 1's measured rate is the practical ceiling beside it. Packages that the device image
# lacks travel as wheels in .whl/ (ml-collections, grain, tensorflow-datasets, ...).
set -u
OUT=${OUT:-/tmp/gpu_bench}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
PEAK=${PEAK_GFLOPS:-989400}
LOG=$OUT/gpu.jsonl
export PYTHONUNBUFFERED=1

if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

# part NAME SECONDS ARGS...: one program, its JSON lines tagged with the part's name; PARTS="a b"
# runs only the parts named.
part() {
  local name=$1 limit=$2 t0=$SECONDS
  shift 2
  case " ${PARTS:-$name} " in *" $name "*) ;; *) return 0 ;; esac
  echo "== $name" >&2
  timeout "$limit" "$PY" "$@" 2>>"$OUT/stderr.log" \
    | grep --line-buffered '^{' | sed -u "s/^{/{\"part\": \"$name\", /" | tee -a "$LOG"
  echo "   $name: $((SECONDS - t0)) s, exit ${PIPESTATUS[0]}" >&2
}

if [ "${SMOKE:-0}" = 1 ]; then
  MM="--n 256 --reps 2"
  VIT="--batch 2 --steps 1 --warmup 1"
  DETR="--batch 1 --steps 1 --warmup 1 --canvas 128x160:112x150"
  ATT="--seq 256,512 --batch 1 --heads 2 --head-dim 32 --steps 1"
else
  MM="--n 8192 16384"
  VIT="--batch 256 --steps 20 --warmup 2"
  DETR="--batch 8 --steps 5 --warmup 2"
  ATT="--seq 1024,4096,16384 --batch 4 --heads 12 --head-dim 64 --steps 5 --mem-cap-gib 64"
fi
BF16=--config.model.dtype=bfloat16

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || true
  "$PY" -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, \
'optax', optax.__version__, jax.devices())"; } | tee "$OUT/device.txt"

part matmul 60 benchmarks/matmul_peak.py --backend jax --dtype bfloat16 $MM
part vit_b16_bf16 150 benchmarks/train_step.py --model b16 $VIT --peak-gflops "$PEAK" $BF16
part detr_bf16 150 benchmarks/train_step.py --model detr $DETR --peak-gflops "$PEAK" $BF16
part attention 150 benchmarks/attention_kernels.py --impl explicit,xla,cudnn,blockwise $ATT \
  --backward --dtype bfloat16 --timeout 40
part m2_bf16 90 benchmarks/train_step.py --model m2 $VIT --peak-gflops "$PEAK" $BF16
part vit_b16_fp32 120 benchmarks/train_step.py --model b16 $VIT --peak-gflops "$PEAK"
part detr_fp32 120 benchmarks/train_step.py --model detr $DETR --peak-gflops "$PEAK"
echo "total $SECONDS s" >&2
