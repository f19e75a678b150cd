#!/usr/bin/env bash
# The paper grid's wall time at the authors' recipe on one GPU.
#
#   bash benchmarks/gpu_grid.sh OUTDIR [estimate|full|both]
#
# estimate (the default, a few minutes): benchmarks/train.py --measure grid, one configuration at
#   a time and all 64 batched (timed steps of the coarse stage extrapolated to 50,000 steps and two
#   stages, for several group overheads), plus the measuring of one configuration of each N:
#   OUTDIR/grid_wall.json (figures, provenance) and OUTDIR/grid_wall.log.
# full: the whole grid batched for real (sweep --batch-configs 64 at --scale paper, with the
#   fastest overhead of OUTDIR/grid_wall.json if there is one), stopped after FULL_SECONDS (default
#   420). It runs in GRID_DIR (default /tmp/gmmmem_grid), so that a second call on the same machine
#   resumes from its checkpoints; the log and the records written so far are copied to OUTDIR.
# both: estimate, then full.
#
# GMMMEM_GIT_COMMIT names the commit in the provenance where the copy has no .git.
set -euo pipefail
out=$(realpath -m "${1:?usage: bash benchmarks/gpu_grid.sh OUTDIR [estimate|full|both]}")
mode=${2:-estimate}
case $mode in estimate|full|both) ;; *) echo "unknown mode $mode: estimate, full or both" >&2; exit 2;; esac
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
python3 -c 'import torch; assert torch.cuda.is_available(), "no CUDA GPU"; print(torch.__version__, torch.cuda.get_device_name())'
if [ "$mode" != full ]; then
    python3 benchmarks/train.py --device cuda --measure grid --recipe paper --steps 40 --repeats 2 \
        --overheads 5e5 5e6 2e7 5e7 --out "$out/grid_wall.json" 2>&1 | tee "$out/grid_wall.log"
fi
if [ "$mode" != estimate ]; then
    grid=${GRID_DIR:-/tmp/gmmmem_grid}
    mkdir -p "$grid"
    timeout "${FULL_SECONDS:-420}" python3 - "$out/grid_wall.json" "$grid/grid.jsonl" <<'PY' 2>&1 | tee -a "$grid/grid.log" || true
import json, os, sys, time
from gmmmem import train
from gmmmem.sweep import run_sweep

estimate, records = sys.argv[1:]
if os.path.exists(estimate):
    figures = json.load(open(estimate))["figures"]
    steps = {float(k.rsplit("overhead", 1)[1]): v for k, v in figures.items()
             if k.startswith("grid_step_seconds_batched_overhead")}
    train.GROUP_OVERHEAD["cuda"] = min(steps, key=steps.get)
print(f"group overhead {train.GROUP_OVERHEAD['cuda']:g}")
began = time.perf_counter()
run_sweep("paper", records, scale="paper", device="cuda", batch=64, progress=True,
          report=lambda line: print(f"{time.perf_counter() - began:7.0f} s  {line}"))
print(f"the paper grid at the authors' recipe, batched: {time.perf_counter() - began:.0f} s in this call")
PY
    cp "$grid/grid.log" "$out/"
    if [ -f "$grid/grid.jsonl" ]; then cp "$grid/grid.jsonl" "$out/"; fi
fi
