#!/usr/bin/env bash
# GPU recipe: train the in-context segmenter and the grounding model on one H100-class GPU, about five
# minutes each, then score both on held-out data. Nothing depends on it; record what it gives in
# bench/RESULTS.md.
#
#   bench/gpu_train.sh [--dry-run] [OUT]        (OUT default runs/gpu; run from the repository root)
#   env: MEDSEG (default ../shared/data/medseg), MEDGROUND (default .venv/bin/medground, else medground),
#        PYTHON (default .venv/bin/python, else python), THREADS (default 8, CPU threads for data work)
#
# --dry-run prints every command (prefixed "+ ") without running it; tests/mllm/test_gpu_scripts.py
# parses each printed medground command with the CLI's own parser.
#
# Sizes (chosen by estimate; not yet timed on a GPU: adjust STEPS from the printed times):
# - ICL (RidgeSeg): working resolution 128, the largest icl-train accepts (64 or 128), 16 episodes per
#   step instead of 4; --max-minutes 4.5 stops and saves inside the budget whatever the step rate, so
#   only --steps' upper bound is a guess. Held out: the shipped weights' fold A (dermoscopy, fetal
#   ultrasound, chest X-ray lungs, endoscopy), scored by icl-eval at k = 1, 2, 4, 8.
# - Grounding (tiny Qwen2-VL architecture from scratch, like the shipped bird-nano, which is 128 wide x
#   2 layers): 768 wide x 12 layers, vision tower 384 wide x 6 blocks (about 0.1 B parameters, 70x
#   bird-nano). The 2248 training records (about 0.5 M tokens an epoch at 224 x 224 px) limit what a
#   larger model can learn in five minutes, and the per-record CPU work of random crops (image
#   re-encoded on every access, one data-loader process) bounds the step rate near 0.1-0.2 s per
#   step of 32 records: 1500 steps is about 20 epochs in 3-5 minutes. Checkpoints every 250 steps, so
#   a run stopped early continues with the same command plus --resume last.
set -euo pipefail

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then
    DRY=1
    shift
fi
OUT=${1:-runs/gpu}
MEDSEG=${MEDSEG:-../shared/data/medseg}
THREADS=${THREADS:-8}
if [[ -x .venv/bin/medground ]]; then MG=${MEDGROUND:-.venv/bin/medground}; else MG=${MEDGROUND:-medground}; fi
if [[ -x .venv/bin/python ]]; then PY=${PYTHON:-.venv/bin/python}; else PY=${PYTHON:-python}; fi

run() {
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    if [[ $DRY == 0 ]]; then
        local start=$SECONDS
        "$@"
        echo "  ($((SECONDS - start)) s)"
    fi
}

if [[ $DRY == 0 ]]; then
    [[ -d "$MEDSEG" ]] || { echo "error: MEDSEG=$MEDSEG is not a folder (the shared medseg collection)" >&2; exit 2; }
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'error: no CUDA GPU visible')"
    mkdir -p "$OUT"
fi

# 1. In-context segmenter: train on the collection minus fold A, about 4.5 minutes, then score fold A.
run "$MG" icl-train "$MEDSEG" --out "$OUT/icl" \
    --held-out ph2_dermoscopy --held-out hc18_fetal_ultrasound \
    --held-out shenzhen_cxr_lung_xray --held-out kvasir_seg_endoscopy \
    --size 128 --episodes 16 --steps 20000 --max-minutes 4.5 --device cuda --threads "$THREADS" --seed 0 --fresh
run "$MG" icl-eval "$MEDSEG" --k 1,2,4,8 --model "$OUT/icl" --out "$OUT/icl-eval" --threads "$THREADS"

# 2. Grounding model: build the records (patient-clean splits), train about five minutes, score val/test.
run "$MG" build "$MEDSEG"/*/ --out "$OUT/medseg" --workers "$THREADS" --conversations 8
run "$MG" train --data "$OUT/medseg" --out "$OUT/ground" --base tiny --family qwen2-vl \
    --tiny-hidden 768 --tiny-layers 12 --tiny-vision-width 384 --tiny-vision-depth 6 \
    --max-steps 1500 --batch-size 32 --lr 5e-4 --warmup 0.03 --weight-decay 0.01 --augment 0.3 \
    --max-pixels 50176 --save-steps 250 --logging-steps 50 --seed 0
run "$PY" -c "from medground.mllm.grounder import Grounder; from medground.mllm.heldout import heldout_report; import json, sys; print(json.dumps(heldout_report(Grounder.from_pretrained(sys.argv[1]), sys.argv[2], ('val', 'test'), sys.argv[3]), indent=2))" \
    "$OUT/ground" "$OUT/medseg" "$OUT/ground-heldout"
run "$MG" eval "$OUT/ground-heldout/pred-test.jsonl" --protocol strict --out "$OUT/ground-heldout/strict-test"
