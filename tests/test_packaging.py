"""The installed layout: dcqformat.loaders comes from loaders/, data files ship, the core needs no torch."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_core_imports_without_torch():
    code = "import sys, dcqformat, dcqformat.cli; assert 'torch' not in sys.modules; print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "ok"


def test_wheel_contents(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (wheel,) = tmp_path.glob("dcqformat-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = [p.relative_to(ROOT).as_posix() for p in (ROOT / "dcqformat").rglob("*.py")]
    sources += ["dcqformat/" + p.relative_to(ROOT).as_posix() for p in (ROOT / "loaders").rglob("*.py")]
    missing = [s for s in sources + ["dcqformat/cli/data/photo_crops.png", "dcqformat/cli/data/photo_crops.json",
                                     "dcqformat/py.typed"] if s not in names]
    assert not missing, f"the wheel lacks {missing}"
    assert not any(n.startswith(("loaders/", "tests/")) for n in names)
