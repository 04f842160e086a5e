#!/usr/bin/env bash
# Byte-identity check for refactors: reruns a fixed set of stages into OUT and, with REF, compares the files
# they write against an earlier run (timings and paths stripped).
#   tools/byte-identity.sh OUT [REF]
# Stages (ML-100K from ../shared/data/ml-100k, tfjs wasm, one thread):
#   ce/         student:train, defaults, --epochs 3
#   cache/      teacher:cache --teacher seqrec from ce/
#   distilled/  student:train --preset small --epochs 2, every distillation term from cache/ and --balance gradcos
#   eval/       eval of ce/
set -euo pipefail
OUT=${1:?usage: tools/byte-identity.sh OUT [REF]}
REF=${2:-}
HERE=$(cd "$(dirname "$0")/.." && pwd)
SRC=${RECDISTILL_ML100K:-$HERE/../shared/data/ml-100k}
[ -d "$SRC" ] || SRC=/work/shared/data/ml-100k
export RECDISTILL_THREADS=1
run() { (cd "$HERE" && nice -n 10 npx tsx src/cli/main.ts "$@"); }
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [ ! -f "$OUT/ce/metrics.json" ]; then
  run student:train --dataset ml-100k --source "$SRC" --epochs 3 --backend wasm --out "$OUT/ce" > "$OUT/ce.log" 2>&1
fi
if [ ! -f "$OUT/cache/manifest.json" ]; then
  run teacher:cache --dataset ml-100k --source "$SRC" --teacher seqrec --student-run "$OUT/ce" --backend wasm --out "$OUT/cache" > "$OUT/cache.log" 2>&1
fi
if [ ! -f "$OUT/distilled/metrics.json" ]; then
  run student:train --dataset ml-100k --source "$SRC" --preset small --epochs 2 --backend wasm --cache "$OUT/cache" \
    --lambda-kd 1 --lambda-cos 1 --lambda-l2 0.1 --lambda-ms 0.5 --lambda-emb 0.5 --lambda-rel 0.1 --balance gradcos \
    --out "$OUT/distilled" > "$OUT/distilled.log" 2>&1
fi
if [ ! -f "$OUT/eval/eval.json" ]; then
  run eval --student "$OUT/ce" --backend wasm --out "$OUT/eval" > "$OUT/eval.log" 2>&1
fi
[ -n "$REF" ] || { echo "wrote $OUT"; exit 0; }
exec node "$HERE/tools/byte-identity-compare.mjs" "$REF" "$OUT"
