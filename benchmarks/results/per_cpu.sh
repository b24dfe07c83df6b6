#!/bin/sh
# The per-CPU-kind records of this CPU, in one go (from the repository root, on a quiet machine; about 55 minutes on
# a 2-core Zen 4 EPYC, and 45 more for step 6). NAME names the CPU kind, e.g. epyc_avx512vnni; WORK holds the
# artifacts bench makes and reuses (export/bench/ inside it).
#   1. bench --res 512 --stages 1,5, every backend this CPU runs natively, eager fp32 beside    -> cpu_512_NAME
#   2. the same under ONEDNN_MAX_CPU_ISA=AVX2 (torch and OpenVINO's convolutions as on an AVX2-only CPU), with
#      the IRs of step 1 (built for this CPU)                                                      -> cpu_512_NAME_capped_avx2
#   3. an INT8 IR built under the cap (7-bit weights) and timed there                             -> ..._int8_for_avx2
#   4. where OpenVINO spends its time, with and without the cap (K = 1, 256 x 256)                 -> profile_openvino.md
#   5. a 12 MP photo at K = 5: eager against the K = 5 INT8 IR, same tiling   -> benchmarks/runtime/photo_12mp_NAME.json
#   6. where the CPU offers CPUID faulting: bench --res 512 with its defaults as on an AVX2-only CPU (--as-cpu avx2:
#      every library sees AVX2 only; its own artifacts, INT8 built for AVX2; about 45 more minutes) -> cpu_512_NAME_as_avx2
# Usage: sh benchmarks/results/per_cpu.sh NAME [WORK]
set -e
NAME=${1:?usage: per_cpu.sh NAME [WORK]}
WORK=${2:-/tmp/scaoed-per-cpu}
E=$WORK/export
B=$E/bench
mkdir -p "$B" "$WORK/avx2/export/bench"
scaoed-deploy bench --res 512 --stages 1,5 --iters 5 --export-dir "$E" --name "cpu_512_$NAME"
ONEDNN_MAX_CPU_ISA=AVX2 scaoed-deploy bench --res 512 --stages 1,5 --iters 5 --export-dir "$E" \
    --backends torch,openvino,openvino-int8 --name "cpu_512_${NAME}_capped_avx2"
cp "$B/scaoednet_k5_t16_fp32.onnx" "$B/scaoednet_k5_t16_fp32.parity.json" "$WORK/avx2/export/bench/"
ONEDNN_MAX_CPU_ISA=AVX2 scaoed-deploy bench --res 512 --stages 5 --iters 5 --export-dir "$WORK/avx2/export" \
    --backends torch,openvino-int8 --name "cpu_512_${NAME}_capped_avx2_int8_for_avx2"
python3 benchmarks/results/profile_openvino.py "$B/scaoednet_k1_t16_fp32_openvino.xml" \
    "$B/scaoednet_k1_t16_int8_openvino.xml" --res 256 > benchmarks/results/profile_openvino.md
python3 benchmarks/runtime/photo_12mp.py "photo_12mp_$NAME" torch "$B/scaoednet_k5_t16_int8_openvino.xml" \
    --stages 5 --tile 512 --tile-batch 1
if grep -qw cpuid_fault /proc/cpuinfo; then
    mkdir -p "$WORK/as_avx2/export"
    scaoed-deploy --as-cpu avx2 bench --res 512 --export-dir "$WORK/as_avx2/export" --name "cpu_512_${NAME}_as_avx2"
else
    echo "step 6 left out: this CPU offers no CPUID faulting (--as-cpu needs it)" >&2
fi
