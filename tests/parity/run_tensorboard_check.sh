#!/usr/bin/env bash
# ctest parity.tensorboard_reads_our_events: trains fuji-test for a few steps, then reads the
# event files with TensorBoard's own EventAccumulator (pip `tensorboard` for python3 on PATH,
# installed by scripts/setup). A python without tensorboard is a failure, not a skip.
# Usage: run_tensorboard_check.sh <path to axlearn>
set -euo pipefail
axlearn="${1:?usage: run_tensorboard_check.sh <path to axlearn>}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if ! python3 -c "import tensorboard" 2>/dev/null; then
  echo "FAIL: python3 cannot import tensorboard; install it with pip (scripts/setup does)" >&2
  exit 1
fi
tmp="$(mktemp -d "${TMPDIR:-/tmp}/axlearn_tb.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
"$axlearn" train --config fuji-test --trainer_dir "$tmp/run" --max_step 6 \
  --set log_every_n_steps=1 --set summary_writer.write_every_n_steps=1 > "$tmp/log.txt"
python3 "$here/check_tensorboard_events.py" "$tmp/run"
