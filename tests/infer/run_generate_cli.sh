#!/usr/bin/env bash
# `axlearn generate` end to end: trains fuji-test for 3 steps into a temporary trainer dir, then
# continues a prompt from its checkpoint and prints what came out for ctest's regex.
set -euo pipefail
axlearn="$1"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
"$axlearn" train --config fuji-test --trainer_dir "$dir" --max_step 3 >/dev/null
text="$("$axlearn" generate --trainer_dir "$dir" --prompt "In the beginning" --max_new_tokens 8 \
        2>"$dir/generate.log")"
cat "$dir/generate.log"
echo "generated text: [$text]"
