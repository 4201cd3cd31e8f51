#!/usr/bin/env bash
# Every GPU measurement in one run of about 8 minutes at most: the GPU-marked tests, training speed and
# memory per precision with and without torch.compile (gpu_train.py), per-video inference latency, and
# extraction frames/s, each stage under its own time limit so that one slow stage cannot eat the others.
# Each stage's output goes to $OUT/<stage>.txt (or a new temporary folder) as well as to the terminal.
#
#   bash benchmarks/gpu_check.sh            # on a machine with a CUDA GPU
#   bash benchmarks/gpu_check.sh --quick    # anywhere: the smallest settings on the CPU, to check the script
#
# PYTHON picks the interpreter (default: python). Record the results in benchmarks/RESULTS.md (## GPU).
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
OUT_DIR=${OUT:-$(mktemp -d -t vidtempo-gpu-check-XXXX)}
mkdir -p "$OUT_DIR"
failed=""

stage() {  # stage NAME SECONDS COMMAND...
    local name=$1 limit=$2 started
    shift 2
    started=$(date +%s)
    echo "== $name (at most ${limit}s): $*" | tee "$OUT_DIR/$name.txt"
    timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$OUT_DIR/$name.txt"
    local status=${PIPESTATUS[0]}
    [ "$status" -eq 0 ] || failed="$failed $name"
    echo "== $name: exit status $status after $(( $(date +%s) - started ))s" | tee -a "$OUT_DIR/$name.txt"
}

stage environment 60 "$PYTHON" -c '
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "cudnn", torch.backends.cudnn.version())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i} {p.name}, compute capability {p.major}.{p.minor}, {p.total_memory / 2**30:.1f} GiB")
if not torch.cuda.is_available():
    print("no CUDA GPU")'
command -v nvidia-smi >/dev/null && stage nvidia-smi 30 nvidia-smi

if [ "${1:-}" = "--quick" ]; then
    stage gpu_tests 120 "$PYTHON" -m pytest -q -m gpu tests/test_gpu.py
    stage gpu_train 120 "$PYTHON" benchmarks/gpu_train.py --device cpu --quick
    stage inference_latency 120 "$PYTHON" benchmarks/inference_latency.py --device cpu --quick
    stage extract_throughput 120 "$PYTHON" benchmarks/extract_throughput.py --device cpu --quick
else
    stage gpu_tests 120 "$PYTHON" -m pytest -q -m gpu tests/test_gpu.py
    stage gpu_train 210 "$PYTHON" benchmarks/gpu_train.py --steps 20 --compile
    stage inference_latency 60 "$PYTHON" benchmarks/inference_latency.py --device cuda --members 4 --repeats 2
    stage extract_throughput 60 "$PYTHON" benchmarks/extract_throughput.py --device cuda --repeats 2
fi
echo "all output is in $OUT_DIR"
if [ -n "$failed" ]; then
    echo "failed or cut short (status 124: the time limit):$failed"
    exit 1
fi
