#!/usr/bin/env bash
# One rank of an MPI job exits before a collective; every other rank must fail with the
# communicator's timeout Error (not earlier, not much later), refuse the next call at once, and
# the job must end within 60 s instead of hanging.
#
#   run_die_test.sh MPIEXEC MPI_COLLECTIVES NUM_RANKS DIE_RANK collective|setup
set -uo pipefail
if (($# != 5)); then
  echo "usage: $0 MPIEXEC MPI_COLLECTIVES NUM_RANKS DIE_RANK collective|setup" >&2
  exit 2
fi
mpiexec=$1 exe=$2 np=$3 die_rank=$4 phase=$5
timeout_ms=5000

fail() {
  echo "run_die_test: FAILED: $*"
  exit 1
}

start=$(date +%s)
# By default mpirun kills the whole job as soon as one rank exits with a non-zero status, which
# would end the survivors before their timeout is ever tested.
out=$(OMPI_MCA_orte_abort_on_non_zero_status=0 timeout 90 \
  "$mpiexec" --allow-run-as-root --oversubscribe -np "$np" \
  "$exe" --die-rank="$die_rank" --die-after-ms=300 --die-phase="$phase" --timeout-ms="$timeout_ms" 2>&1)
rc=$?
elapsed=$(($(date +%s) - start))
echo "$out"

((rc != 124)) || fail "the job hung and was killed after 90 s"
((elapsed < 60)) || fail "the job took ${elapsed} s"
! grep -q "FAILED" <<<"$out" || fail "a rank reported a failure"
grep -q "^rank $die_rank: exiting before the collective" <<<"$out" || fail "rank $die_rank did not exit as planned"

pattern="^rank [0-9]+: error after [0-9]+ ms: .*timed out after $timeout_ms ms on rank [0-9]+: another rank probably died"
errors=$(grep -E "$pattern" <<<"$out")
n=$(grep -c . <<<"$errors")
((n == np - 1)) || fail "$n of $((np - 1)) surviving ranks reported the timeout"
# Each survivor waited for the timeout, but not much longer.
while read -r ms; do
  ((ms >= timeout_ms && ms < timeout_ms + 5000)) || fail "a rank gave up after $ms ms, timeout is $timeout_ms ms"
done < <(sed -E 's/^rank [0-9]+: error after ([0-9]+) ms.*/\1/' <<<"$errors")
refused=$(grep -cE "^rank [0-9]+: next call refused after [0-9] ms: .*unusable after an earlier failure" <<<"$out")
((refused == np - 1)) || fail "$refused of $((np - 1)) surviving ranks refused the next call at once"
echo "run_die_test: passed: $((np - 1)) ranks failed with the timeout error; job took ${elapsed} s"
