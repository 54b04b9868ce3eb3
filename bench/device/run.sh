#!/usr/bin/env bash
# The CUDA check of issue 12, as one command on a lent GPU machine (device tool),
# after `.venv/bin/python -m bench.device.pack` here:
#
#   run(command="bash bench/device/run.sh", carry=[".device"], timeout_s=540)
#
# It installs the packed wheels, then runs bench.embed on the packed fp16 copy of
# the model (loaded as fp32) at about 2,000 and 20,000 chunks: memoryd embed end
# to end through an embedded PostgreSQL against plain sentence-transformers fp32
# batch 32 (target >= 5x), with "auto"'s timed CUDA candidates.  Everything it
# prints also lands in $OUT.  Locally (a CPU check of the script itself):
#   PYTHON=.venv/bin/python SKIP_WHEELS=1 OUT=/tmp/out SIZES=4 bash bench/device/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-/tmp/memoryd-device-out}
SIZES=${SIZES:-"57 570"}  # generated conversations: about 35 chunks each
mkdir -p "$OUT"
if [ -z "${SKIP_WHEELS:-}" ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device/wheels/*.whl
    export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
} 2>&1 | tee "$OUT/machine.txt"
for n in $SIZES; do
    subset=0
    [ "$n" = "${SIZES##* }" ] && subset=250
    "$PYTHON" -m bench.embed --model .device/model --conversations "$n" --repeats 2 --subset "$subset" 2>&1 \
        | grep -v -e "Loading weights" -e "Writing model" | tee "$OUT/embed-$n.txt"
done
