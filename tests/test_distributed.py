"""Conversion over 2 processes with torch.distributed (gloo) on one machine (issue 18, item 1):
every source sample once across the ranks' part files, labels and source indices right, the
same bytes from a second run, and the loaders read the result as one dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from common import gradient_npz

import dcqformat
from dcqformat.format.multifile import MANIFEST, resolve
from dcqformat.loaders import DCQDataset

ARGS = ["--bits", "2", "--clusters", "3", "--epochs", "2", "--refine-steps", "3", "--drop-patches", "0.25",
        "--drop-by", "both", "--mae-size", "tiny", "--mae-epochs", "1", "--mae-seconds", "1000"]


def torchrun(src, dst, *extra, kill_after=""):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                           "--standalone", "-m", "dcqformat", "convert", str(src), str(dst), *ARGS, *extra],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "DCQ_KILL_AFTER": kill_after})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("dist")
    src = gradient_npz(d / "src.npz", n=61, side=16, step=12, noise=25, classes=list("abcd"), seed=9)
    outs = []
    for k, extra in enumerate([[], [], ["--samples-per-file", "10"]]):
        out = d / f"out{k}"
        run = torchrun(src, out, *extra)
        assert run.returncode == 0, run.stdout + run.stderr
        assert run.stdout.count("wrote ") == 1  # rank 0 reports
        outs.append(out)
    return src, outs


def test_every_sample_once_with_its_label(runs):
    src, (out, _, small) = runs
    with np.load(src) as z:
        y = z["y"]
    for directory in (out, small):
        manifest = json.loads((directory / MANIFEST).read_text())
        assert manifest["samples"] == 61
        files = resolve(directory)
        names = [f.name for f in files]
        assert any(n.startswith("part-r000-") for n in names) and any(n.startswith("part-r001-") for n in names)
        sources, labels = [], []
        for f in files:
            with dcqformat.open(f, verify=True) as r:
                sources += r.source_indices.tolist()
                labels += r.labels.tolist()
                assert r.meta["quantizer"]["name"] == "dcq" and r.weights_blob() is not None
        assert sorted(sources) == list(range(61))
        assert all(labels[k] == int(y[s]) for k, s in enumerate(sources))
    # rank r holds the samples i with i % 2 == r
    with dcqformat.open(out / "part-r001-00000.dcq") as r:
        assert all(s % 2 == 1 for s in r.source_indices.tolist())


def test_deterministic_for_a_seed_and_world_size(runs):
    _, (a, b, _) = runs
    for f in resolve(a):
        assert f.read_bytes() == (b / f.name).read_bytes()


def test_the_loaders_read_the_ranks_parts_as_one(runs):
    _, (out, _, small) = runs
    one, many = DCQDataset(out, layout="HWC"), DCQDataset(small, layout="HWC")
    assert len(one) == len(many) == 61
    by_source = {int(s): i for i, s in enumerate(one.reader.source_indices)}
    for i, s in enumerate(many.reader.source_indices.tolist()):
        assert np.array_equal(many[i][0].numpy(), one[by_source[s]][0].numpy())


def test_killed_ranks_resume_to_the_same_bytes(runs, tmp_path):
    """Both ranks killed after the palettes (issue 18, item 2 under torchrun): the same command
    resumes from the ranks' kept stages and writes the uninterrupted run's bytes."""
    src, (reference, _, _) = runs
    out = tmp_path / "out"
    killed = torchrun(src, out, kill_after="palettes")
    assert killed.returncode != 0 and not out.exists()
    work = tmp_path / ".out.work"
    assert {p.name for p in work.iterdir()} == {"rank-0-of-2", "rank-1-of-2"}
    again = torchrun(src, out)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming from" in again.stdout + again.stderr
    assert [f.name for f in resolve(out)] == [f.name for f in resolve(reference)]
    for f in resolve(reference):
        assert f.read_bytes() == (out / f.name).read_bytes()
    assert not work.exists()


def test_killed_ranks_keep_their_finished_parts(runs, tmp_path):
    """Killed once a rank finished its second part: the rerun keeps the parts the ranks finished
    (the very files, moved into place) and writes the uninterrupted run's bytes."""
    src, (_, _, reference) = runs
    out = tmp_path / "out"
    killed = torchrun(src, out, "--samples-per-file", "10", kill_after="part-1")
    assert killed.returncode != 0 and not out.exists()
    kept = {p.name: p.stat().st_ino for p in (tmp_path / ".out.work" / "parts").glob("*.dcq")}
    assert len(kept) >= 2  # the killed rank's two parts at least
    again = torchrun(src, out, "--samples-per-file", "10")
    assert again.returncode == 0, again.stdout + again.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in reference.iterdir())
    for f in reference.iterdir():
        assert f.read_bytes() == (out / f.name).read_bytes(), f.name
    assert {name: (out / name).stat().st_ino for name in kept} == kept  # not written again
