#!/usr/bin/env bash
# The contract lints clean, breaks nothing against main, and every committed copy matches it.
set -euo pipefail
buf=.ci/tools/node_modules/.bin/buf
"$buf" lint

# buf breaking (FILE rules, buf.yaml) against what main had: on a branch, the commit it
# forked from; on main itself (a clean clone), the previous commit. A shallow clone
# without that commit cannot be compared: say so instead of passing silently.
base_branch=""
for ref in main origin/main; do
  git rev-parse --verify -q "$ref^{commit}" >/dev/null && { base_branch=$ref; break; }
done
against=""
if [ -n "$base_branch" ] && [ "$(git rev-parse HEAD)" != "$(git rev-parse "$base_branch")" ]; then
  against=$(git merge-base HEAD "$base_branch")
elif git rev-parse --verify -q HEAD~1 >/dev/null; then
  against=$(git rev-parse HEAD~1)
fi
if [ -n "$against" ]; then
  "$buf" breaking --against ".git#ref=$against"
  echo "buf breaking: nothing broken against $against"
elif [ "$(git rev-parse --is-shallow-repository)" = true ]; then
  echo "buf breaking: this shallow clone lacks the commit to compare against; fetch more history (git fetch --unshallow)" >&2
  exit 1
else
  echo "buf breaking: skipped, HEAD is the first commit"
fi

.venv/bin/python scripts/gen_protos.py --check
.venv/bin/python clients/python/gen_stubs.py --check
bash clients/go/gen.sh --check
# buf.gen.yaml (what teams run) writes the same Go stubs as gen.sh, but for the header's protoc line.
gen=$(mktemp -d); trap 'rm -rf "$gen"' EXIT
"$buf" generate -o "$gen"
diff -r -I '^// 	protoc  ' "$gen/clients/go/sidecarv1" clients/go/sidecarv1
echo "buf generate (buf.gen.yaml) matches clients/go/sidecarv1"
