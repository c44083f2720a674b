#!/usr/bin/env bash
# `axlearn train` under mpirun, one process per device.
#
#   mpi_train.sh MPIEXEC AXLEARN match   fuji-test trained 8 steps on 2 ranks (FSDP) and 4 ranks
#                                        (data x model) logs the losses of the one-process run
#                                        within 1e-5 relative
#   mpi_train.sh MPIEXEC AXLEARN kill    a rank killed with SIGKILL mid-run: the job ends non-zero
#                                        within 60 s instead of hanging
set -euo pipefail
mpiexec=$1
axlearn=$2
mode=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run_mpi() {  # NP DIR MESH [extra args]
  local np=$1 dir=$2 mesh=$3
  shift 3
  timeout 600 "$mpiexec" --allow-run-as-root --oversubscribe -np "$np" -x OMP_WAIT_POLICY=passive \
    "$axlearn" train --config=fuji-test --trainer_dir="$dir" --set "mesh_shape=$mesh" "$@"
}

if [[ $mode == match ]]; then
  common=(--max_step 8 --set log_every_n_steps=1)
  "$axlearn" train --config=fuji-test --trainer_dir="$work/single" "${common[@]}" > "$work/single.log"
  for c in "2 fsdp [1,1,1,2,1,1]" "4 data_model [1,2,1,1,1,2]"; do
    read -r np name mesh <<< "$c"
    if ! run_mpi "$np" "$work/$name" "$mesh" "${common[@]}" > "$work/$name.log" 2>&1; then
      echo "mpirun -np $np ($name) failed:"; cat "$work/$name.log"; exit 1
    fi
    grep -q "over $np devices (mpi)" "$work/$name.log" || { echo "$name: not an MPI run"; cat "$work/$name.log"; exit 1; }
    python3 - "$work/single/metrics.jsonl" "$work/$name/metrics.jsonl" "$name" <<'PY'
import json, sys
def losses(path):
    out = {}
    for line in open(path):
        r = json.loads(line)
        if "loss" in r:
            out[r["step"]] = r["loss"]
    return out
ref, got, name = losses(sys.argv[1]), losses(sys.argv[2]), sys.argv[3]
assert len(ref) == 8 and sorted(got) == sorted(ref), (name, sorted(ref), sorted(got))
worst = max(abs(got[s] - ref[s]) / abs(ref[s]) for s in ref)
print(f"{name}: 8 losses, worst relative difference {worst:.2e}")
assert worst <= 1e-5, f"{name}: losses differ from one process by {worst:.2e}"
PY
  done
  echo "mpi training matches one process"
elif [[ $mode == kill ]]; then
  run_mpi 2 "$work/run" "[1,1,1,2,1,1]" --max_step 100000 > "$work/kill.log" 2>&1 &
  launcher=$!
  # Wait for training to start, then kill one rank.
  for _ in $(seq 300); do grep -q "step " "$work/kill.log" 2>/dev/null && break; sleep 0.2; done
  victim=$(pgrep -f -n "axlearn train --config=fuji-test --trainer_dir=$work/run" || true)
  [[ -n $victim ]] || { echo "no rank found"; cat "$work/kill.log"; kill $launcher; exit 1; }
  start=$(date +%s)
  kill -KILL "$victim"
  status=0
  for _ in $(seq 600); do kill -0 $launcher 2>/dev/null || break; sleep 0.1; done
  if kill -0 $launcher 2>/dev/null; then
    echo "the job still runs 60 s after a rank was killed"; kill -KILL $launcher; exit 1
  fi
  wait $launcher || status=$?
  echo "job ended with status $status $(( $(date +%s) - start )) s after rank pid $victim was killed"
  [[ $status -ne 0 ]] || { echo "expected a non-zero status"; cat "$work/kill.log"; exit 1; }
else
  echo "usage: $0 MPIEXEC AXLEARN match|kill" >&2; exit 2
fi
