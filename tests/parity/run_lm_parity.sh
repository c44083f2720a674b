#!/usr/bin/env bash
# ctest parity.lm_matches_pytorch: runs lm_parity_dump into a temporary directory, then checks it
# against PyTorch with Debian's python (scripts/setup installs python3-torch). A python without
# torch is a failure, not a skip: the parity claim would otherwise go unchecked.
# Usage: run_lm_parity.sh <path to lm_parity_dump>
set -euo pipefail
dump="${1:?usage: run_lm_parity.sh <path to lm_parity_dump>}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python=/usr/bin/python3

if ! "$python" -c "import torch" 2>/dev/null; then
  echo "FAIL: $python cannot import torch; install python3-torch (scripts/setup does)" >&2
  exit 1
fi
tmp="$(mktemp -d "${TMPDIR:-/tmp}/axlearn_lm_parity.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
"$dump" "$tmp"
"$python" "$here/check_lm_parity.py" "$tmp"
