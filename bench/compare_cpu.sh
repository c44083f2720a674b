#!/usr/bin/env bash
# Training-step throughput on CPU: `axlearn bench train-step` next to the PyTorch and JAX peers
# in bench/peers/, same model, batch, sequence length, optimizer and thread count, one after the
# other in this script. Prints a markdown table (docs/performance.md, "Training step") and keeps
# the raw JSON lines in $OUT (default: a temp file, path printed at the end).
#
#   bench/compare_cpu.sh [BUILD_DIR]        # BUILD_DIR holds the `axlearn` binary (default: build)
#   THREADS=2 STEPS=10 WAIT_POLICY=passive CONFIGS="f32-small f32-dim512 bf16-small" bench/compare_cpu.sh
#   REPEATS=2 bench/compare_cpu.sh build  # every config and framework twice, interleaved; the
#                                         # table keeps each one's fastest run (shared machines)
#
# Needs: python3 with jax + optax (PATH), Debian's /usr/bin/python3 with python3-torch, and
# libopenblas0-pthread (apt-get install libopenblas0-pthread): Debian's torch links the
# reference BLAS by default, which runs f32 matmuls at ~2 GFLOP/s; we point it at OpenBLAS with
# LD_LIBRARY_PATH instead of changing the system's BLAS alternative.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-$ROOT/build}"
AXLEARN="$BUILD/axlearn"
THREADS="${THREADS:-$(nproc)}"
STEPS="${STEPS:-8}"
WARMUP="${WARMUP:-1}"
REPEATS="${REPEATS:-1}"
# Passive: with spinning OpenMP threads, torch's OpenMP pool and OpenBLAS's own threads fight
# over the cores (f32-small: 870 tok/s active vs 2880 passive); axlearn and JAX measure the same
# either way (docs/performance.md).
WAIT_POLICY="${WAIT_POLICY:-passive}"
CONFIGS="${CONFIGS:-f32-small f32-dim512 bf16-small}"
OUT="${OUT:-$(mktemp /tmp/compare_cpu.XXXXXX.jsonl)}"
OPENBLAS_DIR=/usr/lib/x86_64-linux-gnu/openblas-pthread
TORCH_PY=/usr/bin/python3
JAX_PY="${JAX_PY:-python3}"

[[ -x "$AXLEARN" ]] || { echo "no $AXLEARN; build the axlearn target first" >&2; exit 1; }
[[ -e "$OPENBLAS_DIR/libblas.so.3" ]] ||
  { echo "missing $OPENBLAS_DIR: apt-get install libopenblas0-pthread" >&2; exit 1; }

# The issue's target models, as overrides of fuji-nano (dim 256, 4 layers, 8 heads / 4 kv
# heads, ffn = 8/3 dim rounded up to 64 = 704, rope theta 1e4) and as peer flags.
SMALL_SET=(--set model.decoder.vocab_size=8192 --set input.max_len=256
           --set input.global_batch_size=8)
SMALL_PEER=(--dim 256 --layers 4 --heads 8 --kv_heads 4 --ffn 704 --vocab 8192 --seq 256 --batch 8)
DIM512_SET=(--set model.decoder.dim=512 --set model.decoder.transformer.num_layers=8
            --set model.decoder.vocab_size=8192 --set input.max_len=512
            --set input.global_batch_size=8)
DIM512_PEER=(--dim 512 --layers 8 --heads 8 --kv_heads 4 --ffn 1408 --vocab 8192 --seq 512 --batch 8)

export OMP_NUM_THREADS="$THREADS" OMP_WAIT_POLICY="$WAIT_POLICY" OPENBLAS_NUM_THREADS="$THREADS"
CPUS="0-$((THREADS - 1))"
PIN=(taskset -c "$CPUS")
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

run_one() {  # label dtype steps set-array-name peer-array-name
  local label=$1 dtype=$2 steps=$3
  local -n set=$4 peer=$5
  echo "== $label: axlearn" >&2
  "${PIN[@]}" "$AXLEARN" bench train-step --config=fuji-nano "${set[@]}" \
    --steps "$steps" --warmup "$WARMUP" --dtype "$dtype" |
    python3 -c "import json,sys; r=json.loads(sys.stdin.read()); r['config']='$label'; print(json.dumps(r))" >>"$OUT"
  echo "== $label: torch" >&2
  LD_LIBRARY_PATH="$OPENBLAS_DIR" "${PIN[@]}" "$TORCH_PY" "$ROOT/bench/peers/torch_train_step.py" \
    --label "$label" "${peer[@]}" --steps "$steps" --warmup "$WARMUP" --dtype "$dtype" \
    --threads "$THREADS" >>"$OUT"
  echo "== $label: jax" >&2
  "${PIN[@]}" "$JAX_PY" "$ROOT/bench/peers/jax_train_step.py" \
    --label "$label" "${peer[@]}" --steps "$steps" --warmup "$WARMUP" --dtype "$dtype" \
    --threads "$THREADS" >>"$OUT"
}

for ((rep = 0; rep < REPEATS; rep++)); do
for c in $CONFIGS; do
  case $c in
    f32-small) run_one f32-small f32 "$STEPS" SMALL_SET SMALL_PEER ;;
    bf16-small) run_one bf16-small bf16 "$STEPS" SMALL_SET SMALL_PEER ;;
    # ~0.8 TFLOP per step: fewer timed steps keep the script within minutes.
    f32-dim512) run_one f32-dim512 f32 "$(( (STEPS + 1) / 2 ))" DIM512_SET DIM512_PEER ;;
    *) echo "unknown config $c" >&2; exit 1 ;;
  esac
done
done

LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$OUT" "$THREADS" "$WAIT_POLICY" "$LOAD_BEFORE" "$LOAD_AFTER" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by, runs = {}, {}
for r in rows:  # per config and framework, the run with the fastest median step
    runs[(r["config"], r["framework"])] = runs.get((r["config"], r["framework"]), 0) + 1
    best = by.setdefault(r["config"], {}).get(r["framework"])
    if best is None or r["step_ms"] < best["step_ms"]:
        by[r["config"]][r["framework"]] = r
print(f"threads {sys.argv[2]}, OMP_WAIT_POLICY={sys.argv[3]}, load average "
      f"before {sys.argv[4]}, after {sys.argv[5]}; tok/s from the median step (in brackets: "
      f"ratios of the fastest steps); best of {max(runs.values())} run(s) each\n")
print("| config | params | axlearn tok/s | torch tok/s | jax tok/s | axlearn / torch "
      "| axlearn / jax | axlearn MFU | axlearn GFLOP/s | peak RSS MB axlearn / torch / jax |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for cfg, r in by.items():
    a, t, j = r.get("axlearn"), r.get("torch"), r.get("jax")
    tok = lambda x: f"{x['tokens_per_s']:.0f}" if x else "-"
    def ratio(x):
        if not (a and x):
            return "-"
        return (f"{x['step_ms'] / a['step_ms']:.2f}x "
                f"({x['step_ms_min'] / a['step_ms_min']:.2f}x)")
    rss = " / ".join(f"{x['peak_rss_mb']:.0f}" if x else "-" for x in (a, t, j))
    mfu = f"{100 * a['mfu']:.0f}%" if a else "-"
    if a and "mfu_bf16" in a:
        mfu += f" ({100 * a['mfu_bf16']:.0f}% of bf16 peak)"
    gf = f"{a['gflops']:.0f}" if a else "-"
    params = f"{a['params'] / 1e6:.1f}M" if a else "-"
    print(f"| {cfg} | {params} | {tok(a)} | {tok(t)} | {tok(j)} | {ratio(t)} | {ratio(j)} "
          f"| {mfu} | {gf} | {rss} |")
for cfg, r in by.items():
    counts = {fw: x["params"] for fw, x in r.items()}
    if len(set(counts.values())) > 1:
        print(f"WARNING: {cfg}: parameter counts differ: {counts}")
PY
echo "raw results: $OUT" >&2
