"""Bad command-line values and odd inputs (issue 14, items 8-10): one line naming the option and
its range, exit status 2 (usage) or 1 (input), never a traceback; signals leave nothing behind."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from dcqformat import DcqWriter
from dcqformat.format.writer import remove_stale_temporaries
from dcqformat.pipeline.options import ConvertConfig, OptionError


def dcq(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dcqformat", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    np.savez(d / "ok.npz", x=rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8), y=np.arange(8) % 2)
    np.savez(d / "object.npz", x=np.array([np.zeros(3), "a"], dtype=object), y=np.arange(2))
    np.savez(d / "flat.npz", x=np.zeros(10, np.uint8), y=np.arange(10))
    np.savez(d / "short-y.npz", x=np.zeros((4, 8, 8, 3), np.uint8), y=np.arange(2))
    (d / "model.pkl").write_bytes(pickle.dumps({"weights": [1, 2]}))
    return d


@pytest.mark.parametrize("option, value, flag", [
    ("--patch-size", "-2", "--patch-size"), ("--patch-size", "0", "--patch-size"), ("--bins", "0", "--bins"),
    ("--device", "bogus", "--device"), ("--clusters", "0", "--clusters"), ("--clusters", "-3", "--clusters"),
    ("--epochs", "-1", "--epochs"), ("--adq-alpha", "5", "--adq-alpha"), ("--keep", "0", "--keep"),
    ("--drop-patches", "1", "--drop-patches"), ("--limit", "0", "--limit"), ("--mae-seconds", "-1", "--mae-seconds"),
    ("--refine-steps", "-1", "--refine-steps"),
] + ([] if torch.cuda.is_available() else [("--device", "cuda", "--device")]))
def test_convert_values_out_of_range(npz, tmp_path, option, value, flag):
    r = dcq("convert", npz / "ok.npz", tmp_path / "o.dcq", option, value, "--quiet")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"argument {flag}:" in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "o.dcq").exists()


@pytest.mark.parametrize("args", [
    ["export", "{f}", "{d}/e", "--limit", "-1"], ["to-wds", "{f}", "{d}/shard.tar"],
    ["to-wds", "{f}", "{d}/s-%06d.tar", "--maxcount", "0"], ["preview", "{f}", "--count", "0"],
])
def test_other_commands_values_out_of_range(npz, tmp_path, args):
    r = dcq(*[a.format(f=tmp_path / "x.dcq", d=tmp_path) for a in args])
    assert r.returncode == 2 and "error: argument" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("source, extra, message", [
    ("object.npz", [], "'x' must hold numbers"), ("flat.npz", [], "'x' must be (N, H, W)"),
    ("short-y.npz", [], "'y' must be 4 integer labels"),
    ("ok.npz", ["--model", "{d}/model.pkl"], "not an attention model saved by dcq"),
])
def test_unusable_inputs_are_input_errors(npz, tmp_path, source, extra, message):
    r = dcq("convert", npz / source, tmp_path / "o.dcq", "--epochs", "1", "--quiet",
            *[e.format(d=npz) for e in extra])
    assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_destination_directory_fails_before_the_run(npz, tmp_path):
    t = time.perf_counter()
    r = dcq("convert", npz / "ok.npz", tmp_path, "--quiet")
    assert r.returncode == 1 and "the destination is a directory" in r.stderr
    assert time.perf_counter() - t < 30


def test_config_checks_in_one_place():
    with pytest.raises(OptionError, match="clusters"):
        ConvertConfig(clusters=0).check()
    with pytest.raises(OptionError, match="unknown setting"):
        ConvertConfig.from_dict({"colours": 4})
    assert ConvertConfig.from_dict(ConvertConfig(bits=3).to_dict()) == ConvertConfig(bits=3)


def test_choice_pixels_of_a_25_megapixel_image():
    from dcqformat.quantize.dcq import choice_pixels

    rgb = torch.zeros(1, 5000, 5000, 3, dtype=torch.uint8)
    rgb[0, -1, -1] = 255  # the last pixel must be reachable
    lab = choice_pixels(rgb)
    assert lab.shape == (1, 64, 3) and lab[0, -1, 0] > lab[0, 0, 0]
    small = torch.arange(32 * 32 * 3, dtype=torch.int64).reshape(1, 32, 32, 3) % 256
    assert choice_pixels(small.to(torch.uint8)).shape == (1, 64, 3)


# -- temporaries ---------------------------------------------------------------------------------
def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    dst = tmp_path / "o.dcq"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".o.dcq.{int(dead.stdout)}.abcd1234.tmp"
    live = tmp_path / f".o.dcq.{os.getpid()}.efgh5678.tmp"
    other = tmp_path / f".p.dcq.{int(dead.stdout)}.abcd1234.tmp"
    for p in (stale, live, other):
        p.write_bytes(b"x" * 100)
    with DcqWriter(dst, bits=2, palettes=np.zeros((1, 4, 3), np.uint8)) as w:
        w.add(np.zeros((2, 2), np.uint8), palette=0)
    assert not stale.exists() and live.exists() and other.exists()
    assert remove_stale_temporaries(tmp_path / "p.dcq") == [other]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_conversion_leaves_nothing_after_the_next_run(tmp_path, sig):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "big.npz", x=rng.integers(0, 256, (20000, 16, 16, 3), dtype=np.uint8),
             y=np.arange(20000) % 10)
    dst = tmp_path / "o.dcq"
    proc = subprocess.Popen([sys.executable, "-m", "dcqformat", "convert", tmp_path / "big.npz", dst,
                             "--method", "mediancut", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".o.dcq.*.tmp")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert list(tmp_path.glob(".o.dcq.*.tmp")), "the writer never started"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == (143 if sig == signal.SIGTERM else -9), err
    assert b"Traceback" not in err
    if sig == signal.SIGTERM:
        assert not list(tmp_path.glob(".o.dcq.*.tmp")), "SIGTERM left a temporary file"  # (.o.dcq.work stays:
        # the stages a rerun resumes from)
    assert not dst.exists()
    np.savez(tmp_path / "small.npz", x=rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8), y=np.arange(4))
    r = dcq("convert", tmp_path / "small.npz", dst, "--method", "mediancut", "--quiet")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.npz", "o.dcq", "small.npz"]


def test_convert_refuses_an_existing_file_and_writes_usual_permissions(npz, tmp_path):
    dst = tmp_path / "o.dcq"
    r = dcq("convert", npz / "ok.npz", dst, "--method", "mediancut", "--quiet")
    assert r.returncode == 0, r.stderr
    assert dst.stat().st_mode & 0o777 == 0o666 & ~_umask()
    before = dst.read_bytes()
    r = dcq("convert", npz / "ok.npz", dst, "--method", "mediancut", "--bits", "3", "--quiet")
    assert r.returncode == 1 and "exists; --overwrite replaces it" in r.stderr and dst.read_bytes() == before
    r = dcq("convert", npz / "ok.npz", dst, "--method", "mediancut", "--bits", "3", "--quiet", "--overwrite")
    assert r.returncode == 0 and dst.read_bytes() != before


def test_export_npz_keeps_classes_and_info_wraps(tmp_path):
    import dcqformat

    dst = tmp_path / "c.dcq"
    classes = [f"class-number-{i}" for i in range(30)]
    with dcqformat.DcqWriter(dst, bits=1, palettes=np.zeros((1, 2, 3), np.uint8),
                             meta={"classes": classes, "quantizer": {"name": "x", "notes": "word " * 60}}) as w:
        w.add(np.zeros((2, 2), np.uint8), palette=0, label=3)
    r = dcq("export", dst, tmp_path / "e.npz")
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "e.npz") as z:
        assert z["classes"].tolist() == classes and z["y"].tolist() == [3]
    assert (tmp_path / "e.npz").stat().st_mode & 0o777 == 0o666 & ~_umask()
    info = dcq("info", dst).stdout.splitlines()
    assert max(len(line) for line in info) <= 80, info
    assert any(line.startswith("    ") for line in info)  # continuation lines are indented


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_quiet_on_every_command_and_one_line_per_stage(npz, tmp_path):
    """Not a terminal: one line per stage, no tqdm redraws; --quiet prints nothing but errors."""
    dst = tmp_path / "q.dcq"
    r = dcq("convert", npz / "ok.npz", dst, "--epochs", "1", "--clusters", "2", "--refine-steps", "1")
    assert r.returncode == 0 and "\r" not in r.stderr
    stages = [line.split(":")[0] for line in r.stderr.splitlines()]
    assert stages[:3] == ["load", "attention model", "features"] and "assign + write" in stages
    for args in (["info", dst], ["verify", dst], ["export", dst, tmp_path / "e.npz"],
                 ["to-wds", dst, tmp_path / "w-%06d.tar"], ["preview", dst, "--out", tmp_path / "p.png"]):
        r = dcq(*args, "--quiet")
        assert r.returncode == 0 and r.stdout == "" and r.stderr == "", (args, r.stdout, r.stderr)
    r = dcq("convert", npz / "ok.npz", tmp_path / "q2.dcq", "--method", "mediancut", "--quiet")
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""
    assert dcq("verify", tmp_path / "missing.dcq", "--quiet").returncode == 1
