#!/usr/bin/env bash
# The CPU thread policy under contention: another process keeps one core busy while bench times torch,
# ONNX Runtime and OpenVINO (fp32, K = 1, 256 x 256, demo weights), first with the default thread count
# (the cores this process may use), then with --threads 1. Records cpu_contention_default.* and
# cpu_contention_t1.* beside this script; each result's "load" says how busy the machine was.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -c "while True: pass" &
burner=$!
trap 'kill $burner' EXIT
sleep 2
common=(--res 256 --stages 1 --backends torch,onnxruntime,openvino --iters 5 --no-quality)
scaoed-deploy bench "${common[@]}" --name cpu_contention_default
scaoed-deploy bench "${common[@]}" --threads 1 --name cpu_contention_t1
