#!/usr/bin/env bash
# ctest parity.hf_export_matches_pytorch: hf_export_dump exports small LLaMA models as Hugging
# Face directories with our logits beside them; check_hf_export.py rebuilds LlamaForCausalLM
# from the exported files in plain PyTorch (Debian's python with python3-torch, which
# scripts/setup installs) and compares. A python without torch is a failure, not a skip.
# Usage: run_hf_export_check.sh <path to hf_export_dump>
set -euo pipefail
dump="${1:?usage: run_hf_export_check.sh <path to hf_export_dump>}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${AXLEARN_PARITY_PYTHON:-/usr/bin/python3}"

if ! "$python" -c "import torch" 2>/dev/null; then
  echo "FAIL: $python cannot import torch; install python3-torch (scripts/setup does)" >&2
  exit 1
fi
tmp="$(mktemp -d "${TMPDIR:-/tmp}/axlearn_hf_export.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
"$dump" "$tmp"
"$python" "$here/check_hf_export.py" "$tmp"
