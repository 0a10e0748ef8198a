#!/usr/bin/env bash
# Run the torch layers' tests on another torch than the one uv.lock pins.
#
#   tools/test-other-torch.sh VERSION [PYTEST ARGS...]
#
# Builds (or reuses) a virtual environment outside the repository with
# torch==VERSION, the workspace packages (client, readers, datasets,
# checkpoint, dcp) and tools/locals3 installed editable from this checkout,
# and the test dependencies at the versions uv.lock pins (torch and its CUDA
# packages excepted), then runs pytest there with the root pyproject's
# options. Tests: the paths among PYTEST ARGS, else the dcp, checkpoint and
# datasets packages' tests.
#
# Environment:
#   S3TORCH_TORCH_VENV  where the venv goes (default: $TMPDIR/s3torch-torch-VERSION)
#   UV_PYTHON           the interpreter (uv's own variable; default: uv's choice)
#   UV_FIND_LINKS       a folder of wheels, e.g. a CPU build: VERSION=2.13.0+cpu
#                       (uv's own variable, like UV_INDEX for another index)
#
# Example: UV_FIND_LINKS=/opt/wheels tools/test-other-torch.sh 2.13.0+cpu -x
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -lt 1 || $1 == -* ]]; then
    echo "usage: $0 TORCH_VERSION [PYTEST ARGS...]   (e.g. $0 2.13.0+cpu -x)" >&2
    exit 2
fi
version=$1
shift
venv=${S3TORCH_TORCH_VENV:-${TMPDIR:-/tmp}/s3torch-torch-$version}
case "$(realpath -m "$venv")/" in
    "$(pwd -P)"/*) echo "$0: the venv must be outside the repository: $venv" >&2; exit 2 ;;
esac

# uv.lock's pins as constraints, less torch and what only its default
# (CUDA) build pulls in, so that VERSION decides those.
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
uv export --frozen --no-hashes --all-packages --no-emit-workspace --group dev --quiet \
    | grep -Ev '^(#| |-e )|^(torch|triton|nvidia-[a-z0-9-]*|cuda-[a-z0-9-]*)[= ]' >"$constraints"

[[ -x $venv/bin/python ]] || uv venv --quiet "$venv"
uv pip install --quiet --python "$venv/bin/python" --constraints "$constraints" \
    "torch==$version" numpy pytest hypothesis torchdata "s3torchconnector[dcp]" \
    -e packages/s3torch-client -e packages/s3torch-readers \
    -e packages/s3torch-datasets -e packages/s3torch-checkpoint \
    -e packages/s3torch-dcp -e tools/locals3

"$venv/bin/python" -c 'import sys, torch; print(f"torch {torch.__version__}, Python {sys.version.split()[0]}")'
given_path=false
for arg in "$@"; do
    [[ -e ${arg%%::*} ]] && given_path=true
done
if ! $given_path; then  # pytest alone would run every testpath, the whole repository
    set -- "$@" packages/s3torch-dcp/tests packages/s3torch-checkpoint/tests \
        packages/s3torch-datasets/tests
fi
exec "$venv/bin/python" -m pytest -p no:cacheprovider -q "$@"
