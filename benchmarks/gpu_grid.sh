#!/usr/bin/env bash
# The paper grid's wall time at the authors' recipe on one GPU, one configuration at a time and
# all 64 batched (benchmarks/train.py --measure grid: timed steps of the coarse stage extrapolated
# to 50,000 steps and two stages, for several group overheads, and the measuring of one
# configuration of each N), in a few minutes. Writes OUTDIR/grid_wall.json (figures, provenance)
# and OUTDIR/grid_wall.log.
#
#   bash benchmarks/gpu_grid.sh OUTDIR          # the estimate
#   bash benchmarks/gpu_grid.sh OUTDIR full     # then the whole grid batched for real, with the
#                                               # fastest overhead, stopped after FULL_SECONDS
#                                               # (default 480): OUTDIR/grid.jsonl, OUTDIR/grid.log
#
# GMMMEM_GIT_COMMIT names the commit in the provenance where the copy has no .git.
set -euo pipefail
out=$(realpath -m "${1:?usage: bash benchmarks/gpu_grid.sh OUTDIR [full]}")
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
python3 -c 'import torch; assert torch.cuda.is_available(), "no CUDA GPU"; print(torch.__version__, torch.cuda.get_device_name())'
python3 benchmarks/train.py --device cuda --measure grid --recipe paper --steps 40 --repeats 2 \
    --overheads 5e5 5e6 2e7 5e7 --out "$out/grid_wall.json" 2>&1 | tee "$out/grid_wall.log"
if [ "${2:-}" = full ]; then
    timeout "${FULL_SECONDS:-480}" python3 - "$out" <<'PY' 2>&1 | tee "$out/grid.log" || true
import json, sys, time
from gmmmem import train
from gmmmem.sweep import run_sweep

out = sys.argv[1]
figures = json.load(open(f"{out}/grid_wall.json"))["figures"]
steps = {float(k.rsplit("overhead", 1)[1]): v for k, v in figures.items()
         if k.startswith("grid_step_seconds_batched_overhead")}
train.GROUP_OVERHEAD["cuda"] = min(steps, key=steps.get)
print(f"group overhead {train.GROUP_OVERHEAD['cuda']:g} (the fastest step)")
began = time.perf_counter()
run_sweep("paper", f"{out}/grid.jsonl", scale="paper", device="cuda", batch=64, progress=False,
          report=lambda line: print(f"{time.perf_counter() - began:7.0f} s  {line}"))
print(f"the paper grid at the authors' recipe, batched: {time.perf_counter() - began:.0f} s")
PY
fi
