"""Resumable conversion (issue 18, item 2): killed after any stage, the same command continues and
writes the same bytes as an uninterrupted run; nothing partial at the destination."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from common import gradient_npz

import dcqformat
from dcqformat import DcqError

ARGS = ["--bits", "2", "--clusters", "3", "--epochs", "1", "--refine-steps", "2", "--drop-patches", "0.25",
        "--mae-epochs", "1", "--mae-seconds", "1000"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return gradient_npz(tmp_path_factory.mktemp("resume") / "src.npz", n=40, side=16, step=12, noise=25,
                        classes=list("abcd"), seed=9)


def _convert(src, dst, *extra, kill_after=None):
    env = {**os.environ, "DCQ_KILL_AFTER": kill_after or ""}
    return subprocess.run([sys.executable, "-m", "dcqformat", "convert", str(src), str(dst), *ARGS, *extra],
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ref.dcq"
    run = _convert(source, out)
    assert run.returncode == 0, run.stderr
    assert not (out.parent / ".ref.dcq.work").exists()  # removed after success
    return out.read_bytes()


@pytest.mark.parametrize("stage", ["model", "clusters", "palettes", "mae"])
def test_killed_after_a_stage_resumes_to_the_same_bytes(source, reference, tmp_path, stage):
    out = tmp_path / "out.dcq"
    killed = _convert(source, out, kill_after=stage)
    assert killed.returncode == -9  # SIGKILL: no cleanup ran
    assert not out.exists() and (tmp_path / ".out.dcq.work" / "state.json").exists()
    again = _convert(source, out)
    assert again.returncode == 0, again.stderr
    assert f"{stage} done" in again.stderr and "resuming from" in again.stderr  # the kept stages were used
    assert out.read_bytes() == reference
    assert not (tmp_path / ".out.dcq.work").exists()


def test_other_settings_start_over_and_no_resume_too(source, reference, tmp_path):
    out = tmp_path / "out.dcq"
    assert _convert(source, out, kill_after="clusters").returncode == -9
    other = _convert(source, out, "--seed", "3")  # another conversion: the kept stages are not used
    assert other.returncode == 0 and out.read_bytes() != reference
    out.unlink()
    assert _convert(source, out, kill_after="palettes").returncode == -9
    fresh = _convert(source, out, "--no-resume")
    assert fresh.returncode == 0 and out.read_bytes() == reference


def test_a_work_dir_that_is_not_one_is_left_alone(source, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    with pytest.raises(DcqError, match="not a dcq work directory"):
        dcqformat.convert(str(source), tmp_path / "x.dcq", method="mediancut", work_dir=str(precious),
                          progress=False)
    assert (precious / "thesis.tex").read_text() == "do not delete"
