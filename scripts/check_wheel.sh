#!/usr/bin/env bash
# What a user installs must work: build the wheel, install it into a fresh venv (no source tree on
# the path, no editable install), then run `dcq --version`, a small `dcq convert` with the default
# method, `dcq demo` on the embedded set, and a DataLoader pass over the converted file.
# Usage: scripts/check_wheel.sh [PYTHON] [TORCH_SPEC]   (make test runs it)
set -euo pipefail
PY="${1:-python3}"
TORCH_SPEC="${2:-torch==2.13.0}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_PY="${BUILD_PY:-$ROOT/.venv/bin/python}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
PIP_FLAGS=(--quiet --disable-pip-version-check)

"$BUILD_PY" -m pip wheel "${PIP_FLAGS[@]}" --no-deps --no-build-isolation -w "$WORK/dist" "$ROOT" 2>/dev/null
WHEEL="$(ls "$WORK"/dist/dcqformat-*.whl)"
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install "${PIP_FLAGS[@]}" "$TORCH_SPEC" 2>&1 | grep -v "is ignored" || true
"$WORK/venv/bin/python" -m pip install "${PIP_FLAGS[@]}" "$WHEEL[torch]" 2>&1 | grep -v "is ignored" || true

cd "$WORK"   # nothing of the source tree is importable from here
export PYTHONNOUSERSITE=1 PYTHONSAFEPATH=1
DCQ="$WORK/venv/bin/dcq"
VPY="$WORK/venv/bin/python"
"$DCQ" --version
"$VPY" - <<'PY'
import dcqformat, numpy as np
assert "site-packages" in dcqformat.__file__, dcqformat.__file__
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (64, 16, 16, 3), dtype=np.uint8)
np.savez("small.npz", x=x, y=np.arange(64) % 4)
PY
"$DCQ" convert small.npz small.dcq --bits 2 --clusters 4 --epochs 1 --refine-steps 1 --quiet
"$DCQ" convert small.npz small-mc.dcq --method mediancut --quiet >/dev/null
"$DCQ" verify small.dcq small-mc.dcq
"$DCQ" demo --dataset photo-crops --limit 64 --epochs 1 --out demo >demo.log 2>&1 || { cat demo.log; exit 1; }
"$VPY" - <<'PY'
import torch
from torch.utils.data import DataLoader
from dcqformat.loaders import DCQDataset, RandomCrop
ds = DCQDataset("small.dcq", augment=RandomCrop(16, padding=2), mean=[0.5] * 3, std=[0.25] * 3)
seen = 0
for images, labels in DataLoader(ds, batch_size=16, shuffle=True, num_workers=2):
    assert images.shape[1:] == (3, 16, 16) and images.dtype == torch.float32
    seen += len(labels)
assert seen == 64, seen
print("wheel ok: a DataLoader read 64 samples from the installed package")
PY
