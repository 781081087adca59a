#!/usr/bin/env bash
# The README's test command (scripts/test.sh) under a private Node of one LTS line: `bash scripts/test-node.sh 24
# [vitest args]` (npm run test:node24). scripts/provision-node.sh provisions it (cached); its bin/ goes first on
# PATH, so that the whole run uses that one runtime: npx and vitest's forks, bin/ferry.js (`#!/usr/bin/env node`)
# and every `node` the tests start (they spawn process.execPath).
set -euo pipefail
cd "$(dirname "$0")/.."
line=${1:?usage: test-node.sh 24|22 [vitest args]}
shift
node=$(bash scripts/provision-node.sh "$line" | tail -1)
# npm ci's addon build (scripts/build-native.mjs) finds this runtime's headers beside it: nothing to download.
PATH=$(dirname "$node"):$PATH
export PATH
echo "test-node: node $(node --version) ($node), N-API $(node -p process.versions.napi)" >&2
exec bash scripts/test.sh "$@"
