#!/usr/bin/env bash
# The precision artifacts for K = 1, 3, 5 with the demo weights, as build-engine makes them (CPU, no TensorRT):
# FP16 and BF16 (AutoCast + FP32 islands), INT8 for TensorRT (ModelOpt Q/DQ) and for ONNX Runtime CPU.
# Exit code 4 (TensorRT missing) is expected for the TensorRT targets; the precision ONNX is written before it.
#   bash benchmarks/precision/run.sh && python benchmarks/precision/summarize.py > benchmarks/precision/results.md
set -u
out=benchmarks/precision
for k in ${STAGES:-1 3 5}; do
  for p in fp16 bf16 int8 int8-ortcpu; do
    flags="--${p%%-*}"
    [ "$p" = int8-ortcpu ] && flags="--int8 --target onnxruntime-cpu"
    tmp=$(mktemp "$out/.k${k}_${p}.json.tmpXXXX")  # replaces the recorded JSON (rename) only when one was written
    scaoed-deploy build-engine $flags --stages "$k" --json > "$tmp" 2> "$out/.k${k}_${p}.log"
    rc=$?
    if [ -s "$tmp" ]; then mv "$tmp" "$out/k${k}_${p}.json"; else rm -f "$tmp"; fi
    echo "K=$k $p: exit $rc"
  done
done
