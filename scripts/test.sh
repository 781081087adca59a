#!/usr/bin/env bash
# The test command (README, CI): set up the host, then run every test (unit, integration, end to end).
# Extra arguments go to vitest, e.g. `npm test -- test/unit`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npx eslint . >&2
npx tsc -p tsconfig.json --noEmit
exec npx vitest run "$@"
