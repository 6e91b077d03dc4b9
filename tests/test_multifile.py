"""Datasets of many .dcq files (issue 13, item 4): written by dcq convert --samples-per-file, read
as one by DCQDataset, DCQLoader and DistributedSampler, with the same pixels as one file."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from common import gradient_npz
from torch.utils.data import DataLoader, DistributedSampler

import dcqformat
from dcqformat import DcqError
from dcqformat.format.multifile import MANIFEST, DcqSet, DcqSetWriter, resolve
from dcqformat.loaders import DCQDataset, DCQLoader, RandomCrop

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    d = tmp_path_factory.mktemp("multi")
    gradient_npz(d / "src.npz", n=50, side=16, step=12, noise=40, classes=list("abcde"), seed=2)
    one = d / "one.dcq"
    dcqformat.convert(str(d / "src.npz"), one, method="mediancut", drop_patches=0.25, mae_size="tiny", mae_epochs=1,
                      model_epochs=1, progress=False)
    many = d / "many"
    summary = dcqformat.convert(str(d / "src.npz"), many, method="mediancut", drop_patches=0.25, mae_size="tiny",
                                mae_epochs=1, model_epochs=1, progress=False, samples_per_file=16)
    return d, one, many, summary


def test_convert_writes_parts_and_a_manifest(converted):
    d, one, many, summary = converted
    manifest = json.loads((many / MANIFEST).read_text())
    assert [f["samples"] for f in manifest["files"]] == [16, 16, 16, 2] and manifest["samples"] == 50
    assert manifest["classes"] == list("abcde") and summary.written == 50
    assert sorted(p.name for p in many.iterdir()) == [MANIFEST] + [f"part-{k:05d}.dcq" for k in range(4)]
    assert summary.file_bytes == sum(p.stat().st_size for p in many.iterdir())
    for part in resolve(many):
        dcqformat.open(part, verify=True)


@pytest.mark.parametrize("reconstruct", ["mae", "mean", "none"])
def test_a_directory_reads_as_the_single_file(converted, reconstruct):
    d, one, many, _ = converted
    kw = {"augment": RandomCrop(14, padding=2, flip=0.5), "mean": MEAN, "std": STD, "reconstruct": reconstruct}
    single, multi = DCQDataset(one, **kw), DCQDataset(many, **kw)
    assert len(multi) == 50 and multi.classes == list("abcde") and multi.targets == single.targets
    order = np.random.default_rng(0).permutation(50)
    for batch in (order[:20], order[20:]):
        a = single.get_batch(batch, torch.Generator().manual_seed(1))
        b = multi.get_batch(batch, torch.Generator().manual_seed(1))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    plain_single, plain_multi = DCQDataset(one, layout="HWC"), DCQDataset(many, layout="HWC")
    assert torch.equal(plain_single.get_batch(order)[0], plain_multi.get_batch(order)[0])


def test_lists_globs_workers_loader_and_sampler(converted):
    d, one, many, _ = converted
    parts = resolve(many)
    assert resolve([parts[0], parts[1]]) == parts[:2] and resolve(str(many / "part-*.dcq")) == parts
    listed = DCQDataset([parts[0], parts[1]])
    assert len(listed) == 32
    ds = DCQDataset(many, mean=MEAN, std=STD)
    seen = torch.cat([y for _, y in DataLoader(ds, batch_size=8, shuffle=True, num_workers=2)])
    assert sorted(seen.tolist()) == sorted(ds.targets)
    loaded = torch.cat([y for _, y in DCQLoader(ds, batch_size=8, shuffle=True)])
    assert sorted(loaded.tolist()) == sorted(ds.targets)
    ranks = [list(DistributedSampler(ds, num_replicas=2, rank=r, shuffle=True, seed=0)) for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == list(range(50))


def test_device_view_and_palette_ids_span_files(converted):
    d, one, many, _ = converted
    s = DcqSet(resolve(many))
    assert s.palette_ids.max() == len(s.palettes) - 1  # per-image palettes, numbered across files
    packed, pids, grids = DCQDataset(many, reconstruct="none").packed(np.array([0, 20, 49]))
    assert packed.shape[0] == 3 and pids.tolist() == s.palette_ids[[0, 20, 49]].tolist()


def test_bad_sets_are_named(converted, tmp_path):
    d, one, many, _ = converted
    pal = np.zeros((1, 4, 3), np.uint8)
    with dcqformat.DcqWriter(tmp_path / "other.dcq", bits=2, palettes=pal, meta={"classes": ["x"]}) as w:
        w.add(np.zeros((4, 4), np.uint8), palette=0)
    with pytest.raises(DcqError, match="classes differs|differs"):
        DcqSet([resolve(many)[0], tmp_path / "other.dcq"])
    r = subprocess.run([sys.executable, "-m", "dcqformat", "convert", d / "src.npz", many, "--samples-per-file",
                        "8", "--method", "mediancut", "--quiet"], capture_output=True, text=True)
    assert r.returncode == 1 and "exists" in r.stderr


def test_preview_refills_like_the_loaders_and_shows_a_sidecar(converted, tmp_path):
    from PIL import Image

    from dcqformat.cli.preview import preview
    from dcqformat.cli.refill import refilling_decoder
    from dcqformat.loaders.wds import write_shards

    d, one, many, _ = converted
    with dcqformat.open(one) as r:
        refilled = refilling_decoder(r)(np.arange(6))
        plain = r.decode_batch(np.arange(6))
    want = DCQDataset(one, layout="HWC").get_batch(np.arange(6))[0].numpy()  # reconstruct="mae"
    assert np.array_equal(refilled, want) and not np.array_equal(refilled, plain)
    with Image.open(preview(one, tmp_path / "p.png", count=6)) as im:
        assert im.size[0] > 6 * 64
    side, _ = write_shards(one, str(tmp_path / "w-%06d.tar"))
    assert len(dcqformat.open(side)) == 0
    with Image.open(preview(side, tmp_path / "side.png", count=4)) as im:
        assert im.size[0] > 4 * 64  # its palettes


@pytest.mark.parametrize("codec", ["packed", "zstd"])
def test_one_gather_per_batch_equals_file_by_file(converted, tmp_path, codec):
    """Packed sets gather a batch from a table of the whole set in one kernel call; zstd sets
    decompress file by file: both give the streams and drop masks of the single file."""
    d, one, many, _ = converted
    if codec == "zstd":
        many = tmp_path / "zstd"
        dcqformat.convert(str(d / "src.npz"), many, method="mediancut", drop_patches=0.25, mae_size="tiny",
                          mae_epochs=1, model_epochs=1, progress=False, samples_per_file=16, codec="zstd")
    s = DcqSet(resolve(many))
    assert (s._table is not None) == (codec == "packed")
    single = dcqformat.open(one)
    order = np.random.default_rng(3).permutation(50)
    streams = [s.streams(order)]
    if s._table is not None:
        s._table = None
        streams.append(s.streams(order))
    want = single.streams(order)
    for got in streams:
        assert got.any_masked()
        np.testing.assert_array_equal(got.stream_lengths(), want.stream_lengths())
        for k in range(50):
            n = int(want.stream_lengths()[k])
            assert got.data[got.offsets[k]:got.offsets[k] + n].tobytes() == \
                want.data[want.offsets[k]:want.offsets[k] + n].tobytes()
            a, b = got.dropped(k), want.dropped(k)
            assert (a is None and b is None) or np.array_equal(a, b)
        np.testing.assert_array_equal(s.palettes[got.palette_ids], single.palettes[want.palette_ids])


def test_full_parts_leave_no_empty_part(tmp_path):
    with DcqSetWriter(tmp_path / "set", 2, bits=1, palettes=np.zeros((1, 2, 3), np.uint8)) as w:
        for _ in range(4):
            w.add(np.zeros((2, 2), np.uint8), palette=0, label=0)
    assert [f["samples"] for f in json.loads((tmp_path / "set" / MANIFEST).read_text())["files"]] == [2, 2]


def test_a_full_part_is_told_before_and_after_it_gets_its_name(tmp_path):
    """before_part sees the complete temporary file while the name is still free (a conversion
    records the part there, so a kill at any moment leaves no named part without its record);
    on_part sees the named part. The last part, closed with the set, is neither."""
    seen = []

    def before(tmp, part):
        with dcqformat.open(tmp, verify=True) as r:  # complete and valid already
            seen.append(("before", part.name, len(r), part.exists()))

    def after(part):
        seen.append(("after", part.name, part.exists()))

    with DcqSetWriter(tmp_path / "set", 2, into=tmp_path / "work", bits=1, before_part=before, on_part=after,
                      palettes=np.zeros((1, 2, 3), np.uint8)) as w:
        for _ in range(5):
            w.add(np.zeros((2, 2), np.uint8), palette=0, label=0)
    assert seen == [("before", "part-00000.dcq", 2, False), ("after", "part-00000.dcq", True),
                    ("before", "part-00001.dcq", 2, False), ("after", "part-00001.dcq", True)]


def test_the_cli_takes_a_dataset_directory(converted, tmp_path):
    """`dcq verify DIR` checks the manifest, then every part; `dcq info DIR` lists the parts and
    their sum, then the first part (--json: all of them); `dcq export DIR` exports the parts as
    one dataset; `dcq to-wds DIR` refuses by name (each part has its own codec model)."""
    import shutil

    _, _, many, _ = converted

    def dcq(*args):
        return subprocess.run([sys.executable, "-m", "dcqformat", *map(str, args)], capture_output=True, text=True)

    ok = dcq("verify", many)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count(": ok (") == 4 and "part-00003.dcq: ok (2 samples" in ok.stdout
    info = dcq("info", many)
    text = " ".join(info.stdout.split())  # lines wrap at the terminal's width
    assert info.returncode == 0 and "4 part file(s), 50 samples" in text
    assert "the first part (part-00000.dcq)" in text and "section" in text
    js = json.loads(dcq("info", many, "--json").stdout)
    assert js["samples"] == 50 and [p["samples"] for p in js["parts"]] == [16, 16, 16, 2]
    assert js["file_bytes"] == sum(p.stat().st_size for p in many.glob("*.dcq"))
    bad = tmp_path / "bad"
    shutil.copytree(many, bad)
    shutil.copy(bad / "part-00000.dcq", bad / "part-00009.dcq")  # a part the manifest does not list
    failed = dcq("verify", bad, many / "part-00000.dcq")
    assert failed.returncode == 1 and "FAILED" in failed.stdout and "not in the manifest" in failed.stdout
    assert "part-00000.dcq: ok" in failed.stdout  # the other argument still checked
    assert dcq("info", bad).returncode != 0 and "not in the manifest" in dcq("info", bad).stderr
    # export reads the parts as one dataset (the refill as the loaders do it); to-wds says what to do
    exported = dcq("export", many, tmp_path / "x.npz", "--limit", "40")
    assert exported.returncode == 0, exported.stderr
    with np.load(tmp_path / "x.npz") as z:
        want = DCQDataset(many, layout="HWC").get_batch(np.arange(40))
        assert np.array_equal(z["x"], want[0].numpy()) and np.array_equal(z["y"], want[1].numpy())
        assert np.array_equal(z["source_index"], DcqSet(resolve(many)).source_indices[:40])
    shards = dcq("to-wds", many, tmp_path / "w-%06d.tar")
    assert shards.returncode == 1 and "dataset directory" in shards.stderr and "Traceback" not in shards.stderr
