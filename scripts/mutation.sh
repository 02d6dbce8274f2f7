#!/usr/bin/env bash
# The whole mutation pass over the risky modules, with mutmut 2.5.1, each module against the tests that
# cover it (the list is in scripts/mutation.py). Works on a copy of the checkout, so the tree is never
# left mutated. Prints the score per module and every surviving mutant. Run scripts/setup.sh first.
#   bash scripts/mutation.sh                      # every module (about 20-30 minutes on 2 cores)
#   bash scripts/mutation.sh services/leases.py   # one module
# CI runs a fixed sample instead: scripts/mutants.py.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -c "import mutmut" 2>/dev/null || .venv/bin/pip install -q -c constraints.txt "mutmut==2.5.1"
exec .venv/bin/python scripts/mutation.py "$@"
