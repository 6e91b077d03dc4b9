"""The dcq command line, run as a user would: in a subprocess."""

import json
import subprocess
import sys

import numpy as np
import pytest
from common import make_spec, write_spec
from PIL import Image

import dcqformat


def dcq(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dcqformat", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    spec = make_spec(np.random.default_rng(3), bits=2, channels=3, n=12, sizes=[(8, 8)])
    spec.meta = {"name": "cli", "classes": [f"c{i}" for i in range(10)]}
    return spec, write_spec(spec, tmp_path_factory.mktemp("cli") / "s.dcq")


def test_help_has_examples():
    r = dcq("--help")
    assert r.returncode == 0
    assert "examples:" in r.stdout and "dcq verify train.dcq" in r.stdout
    r = dcq()
    assert r.returncode == 2 and "usage: dcq" in r.stderr


def test_version():
    r = dcq("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"dcq {dcqformat.__version__} " \
        f"(dcqformat {dcqformat.__version__}, spec {dcqformat.SPEC_VERSION})"


def test_info(sample):
    spec, path = sample
    r = dcq("info", path)
    assert r.returncode == 0, r.stderr
    assert "12 samples, 2-bit" in r.stdout and "DATA" in r.stdout and "bits/pixel" in r.stdout
    info = json.loads(dcq("info", path, "--json").stdout)
    assert info["samples"] == 12 and info["codec"] == "packed" and info["meta"]["name"] == "cli"
    assert {s["tag"] for s in info["sections"]} >= {"DATA", "RECS", "DCRC", "PALT", "META"}


def test_verify_ok_and_corrupt(sample, tmp_path):
    _, path = sample
    r = dcq("verify", path)
    assert r.returncode == 0 and "ok" in r.stdout
    bad = tmp_path / "bad.dcq"
    blob = bytearray(path.read_bytes())
    blob[70] ^= 1  # inside DATA
    bad.write_bytes(bytes(blob))
    r = dcq("verify", path, bad)
    assert r.returncode == 1
    assert "FAILED" in r.stdout and "checksum mismatch" in r.stdout and str(path) + ": ok" in r.stdout


def test_errors_are_one_line(tmp_path):
    (tmp_path / "text.txt").write_text("hello")
    for target, words in [(tmp_path / "text.txt", "not a dcq file"), (tmp_path / "missing.dcq", "No such file")]:
        r = dcq("info", target)
        assert r.returncode == 1
        assert r.stderr.startswith("dcq: error:") and words in r.stderr and r.stderr.count("\n") == 1


def test_export_png_tree_and_npz(sample, tmp_path):
    spec, path = sample
    r = dcq("export", path, tmp_path / "png")
    assert r.returncode == 0, r.stderr
    files = sorted((tmp_path / "png").rglob("*.png"))
    assert len(files) == 12
    reader = dcqformat.open(path)
    for i in range(12):
        label = spec.samples[i].label
        folder = f"c{label}" if label >= 0 else "unlabelled"
        img = np.asarray(Image.open(tmp_path / "png" / folder / f"{i:08d}.png"))
        np.testing.assert_array_equal(img, reader[i])
    r = dcq("export", path, tmp_path / "x.npz", "--limit", 5)
    assert r.returncode == 0, r.stderr
    z = np.load(tmp_path / "x.npz")
    np.testing.assert_array_equal(z["x"], reader.decode_batch(range(5)))
    assert z["y"].tolist() == [s.label for s in spec.samples[:5]]


def test_demo_on_the_embedded_set(tmp_path):
    r = dcq("demo", "--dataset", "photo-crops", "--limit", "64", "--epochs", "1", "--out", tmp_path / "demo")
    assert r.returncode == 0, r.stderr
    assert "dataset: photo-crops, 64 images 32x32, 10 classes" in r.stdout
    assert "mediancut" in r.stdout and "PSNR" in r.stdout and (tmp_path / "demo" / "preview.png").exists()
    with dcqformat.open(tmp_path / "demo" / "demo-dcq.dcq", verify=True) as rd:
        assert len(rd) == 64 and rd.classes[0] == "astronaut" and rd.meta["quantizer"]["name"] == "dcq"


def test_info_summarises_long_number_lists():
    from dcqformat.cli.commands import _brief

    meta = {"cluster_sizes": list(range(1, 101)), "rounds": [3.0, 2.5], "nested": [{"x": [0] * 20}], "name": "dcq"}
    assert _brief(meta) == {"cluster_sizes": "100 values, 1 .. 100, median 50.5", "rounds": [3.0, 2.5],
                            "nested": [{"x": "20 values, 0 .. 0, median 0"}], "name": "dcq"}
