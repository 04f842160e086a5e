#!/usr/bin/env bash
# s/epoch of student:train against the reference SASRec (full CE, PyTorch), timed in turns on one machine:
#   tools/reference-sasrec/speed.sh DATASET SOURCE PREPARED_DIR [ROUNDS] [STEPS]
# e.g. tools/reference-sasrec/speed.sh amazon-beauty ../shared/data/amazon-beauty /tmp/beauty-file 2 10
# PREPARED_DIR is `npm run data:prepare -- --dataset DATASET --source SOURCE --out PREPARED_DIR` (the same sequences).
# Every row uses one thread. The reference runs pmixer's settings at maxlen 50, hidden 64, batch 128.
set -euo pipefail
cd "$(dirname "$0")/../.."
dataset=$1 source=$2 prepared=$3 rounds=${4:-2} steps=${5:-10}
variants='max-len=200,batch-size=32,batching=random,step-weight=batch,loss=ce,dropout=0.3,lr=0.002;loss=ce,batching=random,step-weight=batch;loss=ce;loss=sampled'
for r in $(seq 1 "$rounds"); do
  echo "round $r: reference (PyTorch, full CE, maxlen 50, hidden 64, batch 128)"
  OPENBLAS_NUM_THREADS=1 "${PYTHON:-python3}" tools/reference-sasrec/sasrec_ce.py --data "$prepared" --maxlen 50 --hidden-units 64 --time-steps "$steps" --threads 1
  echo "round $r: recdistill"
  RECDISTILL_THREADS=1 npx tsx src/cli/main.ts student:speed --dataset "$dataset" --source "$source" --variants "$variants" --rounds 1 --steps "$steps" --valid-users 0
done
