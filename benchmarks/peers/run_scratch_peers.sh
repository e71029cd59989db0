#!/bin/bash
# Peer training, back to back, each with a 50-min wall budget on the 2 cores; each training
# run writes its facts to benchmarks/results/peers.json (training), and the last step scores
# every peer's val masks into peers.json (accuracy).
set -x
cd "$(dirname "$0")/../.."
date
benchmarks/.venv-cellpose/bin/python benchmarks/peers/cellpose_scratch.py --budget-min 50
date
benchmarks/.venv-cellpose/bin/python benchmarks/peers/cellpose_scratch.py --predict
date
benchmarks/.venv-stardist/bin/python benchmarks/peers/stardist_scratch.py --train --predict --budget-min 50
date
.venv/bin/python benchmarks/accuracy.py --data ../shared/data --peers-only
date
echo ALLDONE
