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
        "--mae-size", "tiny", "--mae-epochs", "1", "--mae-seconds", "1000"]


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


PARTS_RUN = """
import sys, dcqformat
dcqformat.convert(sys.argv[1], sys.argv[2], samples_per_file=6, progress=True, bits=2, clusters=3, model_epochs=1,
                  refine_steps=2, drop_patches=0.25, mae_size="tiny", mae_epochs=1,
                  mae_seconds=1000, batch=4)
"""


def _convert_parts(src, dst, kill_after=""):
    return subprocess.run([sys.executable, "-c", PARTS_RUN, str(src), str(dst)], capture_output=True, text=True,
                          env={**os.environ, "DCQ_KILL_AFTER": kill_after}, timeout=600)


def test_finished_part_files_are_kept(source, tmp_path):
    """A dataset directory killed after its third part: the rerun keeps the three parts, skips the
    rows they hold, and the directory equals an uninterrupted run's; nothing at the destination
    before it is complete."""
    reference = tmp_path / "ref"
    assert _convert_parts(source, reference).returncode == 0
    out = tmp_path / "out"
    killed = _convert_parts(source, out, kill_after="part-2")
    assert killed.returncode == -9 and not out.exists()
    kept = sorted(p.name for p in (tmp_path / ".out.work" / "parts").glob("*.dcq"))
    assert kept[:3] == ["part-00000.dcq", "part-00001.dcq", "part-00002.dcq"]
    again = _convert_parts(source, out)
    assert again.returncode == 0, again.stderr
    assert "3 finished part files kept: continuing after sample 18" in again.stderr
    names = sorted(p.name for p in reference.iterdir())
    assert names == sorted(p.name for p in out.iterdir()) and len(names) == 8  # 7 parts of 40 samples, manifest
    for name in names:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert not (tmp_path / ".out.work").exists()


def _nan_palettes(work):
    import numpy as np

    with np.load(work / "palettes.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["palettes_lab"] = np.full_like(arrays["palettes_lab"], np.nan)
    np.savez(work / "palettes.npz", **arrays)


def _extra_entry(work):
    import numpy as np

    with np.load(work / "clusters.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["cluster"] = np.concatenate([arrays["cluster"], arrays["cluster"][:1]])
    np.savez(work / "clusters.npz", **arrays)


def _max_values(work):
    import numpy as np

    with np.load(work / "clusters.npz") as z:
        arrays = {k: np.full_like(z[k], np.iinfo(z[k].dtype).max) for k in z.files}
    np.savez(work / "clusters.npz", **arrays)


def _truncate(name):
    def cut(work):
        blob = (work / name).read_bytes()
        (work / name).write_bytes(blob[: len(blob) // 2])
    return cut


@pytest.mark.parametrize("stage,tamper", [
    ("palettes", _nan_palettes), ("clusters", _extra_entry), ("clusters", _max_values),
    ("clusters", _truncate("clusters.npz")), ("model", _truncate("model.safetensors")),
    ("model", _truncate("model.npz")),
], ids=["nan-palettes", "extra-entry", "max-values", "truncated-clusters", "damaged-model", "truncated-model-npz"])
def test_a_tampered_checkpoint_runs_again(source, reference, tmp_path, stage, tamper):
    """Each gave a different file that verified (exit 0), a BadZipFile/IndexError traceback, or a
    damaged model blamed on a --model option never given: now the stage runs again."""
    out = tmp_path / "out.dcq"
    assert _convert(source, out, kill_after=stage).returncode == -9
    tamper(tmp_path / ".out.dcq.work")
    again = _convert(source, out)
    assert again.returncode == 0, again.stderr
    assert "does not match what was saved" in again.stderr and "Traceback" not in again.stderr
    assert "--model" not in again.stderr
    assert out.read_bytes() == reference


def test_a_kept_part_that_is_not_this_conversions_is_written_again(source, tmp_path):
    reference = tmp_path / "ref"
    assert _convert_parts(source, reference).returncode == 0
    out = tmp_path / "out"
    assert _convert_parts(source, out, kill_after="part-2").returncode == -9
    parts = tmp_path / ".out.work" / "parts"
    (parts / "part-00001.dcq").write_bytes((parts / "part-00000.dcq").read_bytes())  # a valid part, not this one
    again = _convert_parts(source, out)
    assert again.returncode == 0, again.stderr
    assert "kept part part-00001.dcq is not one this conversion finished" in again.stderr
    assert "1 finished part files kept: continuing after sample 6" in again.stderr
    for name in sorted(p.name for p in reference.iterdir()):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in reference.iterdir())
