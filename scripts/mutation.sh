#!/usr/bin/env bash
# The whole mutation pass over the risky modules: every mutant mutmut 2.5.1 makes of each module, each
# against the tests that cover it (the list is in scripts/mutation.py), 4 at a time in copies of the
# checkout, so the tree is never left mutated. Prints the score per module and every surviving mutant;
# every mutant's result, with the test that killed it, goes to stderr. Run scripts/setup.sh first.
#   bash scripts/mutation.sh                      # every module
#   bash scripts/mutation.sh services/leases.py   # one module
#   bash scripts/mutation.sh --jobs 1 dicom/      # one mutant at a time
# CI runs a fixed sample instead: scripts/mutants.py.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -c "import mutmut" 2>/dev/null || .venv/bin/pip install -q -c constraints.txt "mutmut==2.5.1"
exec .venv/bin/python scripts/mutation.py "$@"
