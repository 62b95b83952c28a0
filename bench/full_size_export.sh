#!/usr/bin/env bash
# Issue 3, item 6: full-size SV3D on a CPU-only machine (24 GB RAM, no GPU).
#
#   bash bench/full_size_export.sh            # WORK=/tmp/sv3d_full by default
#
# 1. make-checkpoint --config full (random weights, official layout, 9.4 GB fp32)
# 2. sv3d-trt export --precision fp16 (no --calibrate: recording 50-step full-size
#    trajectories needs a GPU; fp16 builds do not use the calibration set)
# 3. sv3d-trt build --backend tensorrt-rtx --precision fp16 --target sm89 (skipped, and said so,
#    when tensorrt_rtx is not installed)
# Each stage runs under /usr/bin/time -v; the wall time and peak RSS of each are printed and
# written to $WORK/summary.txt. Run the stages one after the other on a quiet machine: export and
# build each need ~10 GB.
set -euo pipefail

WORK=${WORK:-/tmp/sv3d_full}
CKPT="$WORK/full_sv3d_p.safetensors"
mkdir -p "$WORK"
SUMMARY="$WORK/summary.txt"
: > "$SUMMARY"

stage() {  # stage NAME CMD...: run CMD under /usr/bin/time -v, record wall time and peak RSS
    local name=$1; shift
    echo "== $name: $*"
    /usr/bin/time -v -o "$WORK/$name.time" "$@"
    local wall rss
    wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$WORK/$name.time")
    rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$WORK/$name.time")
    printf '%-16s wall %-10s peak RSS %6.2f GB   %s\n' "$name" "$wall" "$(awk "BEGIN {print $rss / 1048576}")" "$*" \
        | tee -a "$SUMMARY"
}

if [ ! -f "$CKPT" ]; then
    stage make-checkpoint sv3d-trt make-checkpoint --config full --variant sv3d_p "$CKPT"
fi
stage export sv3d-trt export --checkpoint "$CKPT" --out "$WORK/onnx" --precision fp16
ls -la "$WORK/onnx" | tee -a "$SUMMARY"
if python -c "import tensorrt_rtx" 2>/dev/null; then
    stage build sv3d-trt build --onnx "$WORK/onnx" --out "$WORK/engines" --backend tensorrt-rtx \
        --precision fp16 --target sm89
    ls -la "$WORK/engines" | tee -a "$SUMMARY"
else
    echo "tensorrt_rtx not installed: build skipped (pip install tensorrt-rtx-cu13)" | tee -a "$SUMMARY"
fi
echo "summary: $SUMMARY"
