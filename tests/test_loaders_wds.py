"""WebDataset shards: members, handler, pipeline, DDP splitting, corrupt shards, CLI."""

import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from common import make_spec, write_spec

import dcqformat
from dcqformat import DcqError
from dcqformat.format.dcqi import parse_block
from dcqformat.loaders import RandomCrop
from dcqformat.loaders.wds import dcq_pipeline, dcqi_handler, epoch_batches, parse_dcqi, write_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("wds")
    spec = make_spec(np.random.default_rng(9), bits=3, channels=3, n=40, sizes=[(8, 8)], masked=0.3, patch=(4, 4))
    spec.meta = {"classes": list("abcdefghij")}
    spec.codec = "zstd"
    path = write_spec(spec, d / "src.dcq")
    # file order, one member per sample (the layout of spec/WEBDATASET.md version 1)
    side, names = write_shards(path, str(d / "train-%06d.tar"), maxcount=10, shuffle=False, block=0)
    return spec, d, side, names


def urls(d):
    return str(d / "train-{000000..000003}.tar")


def test_shards_and_sidecar(shards):
    spec, d, side, names = shards
    assert side == d / "train.dcq" and len(names) == 4
    with tarfile.open(names[0]) as tar:
        members = tar.getnames()
    assert sorted(members[:2]) == ["000000000.cls", "000000000.dcqi"]
    s = dcqformat.open(side)
    assert len(s) == 0 and s.meta["webdataset"]["samples"] == 40 and s.meta["classes"][0] == "a"
    np.testing.assert_array_equal(s.palettes, spec.palettes)


def test_handler_decodes_every_sample_exactly(shards):
    spec, d, side, _ = shards
    ds = wds.WebDataset(urls(d), shardshuffle=False).decode(dcqi_handler(side)).to_tuple("dcqi", "cls")
    got = list(ds)
    assert len(got) == 40
    for i, (img, label) in enumerate(got):
        np.testing.assert_array_equal(img, spec.expected(i))
        assert label == spec.samples[i].label


def test_pipeline_batches_and_augments(shards):
    spec, d, side, _ = shards
    batches = list(dcq_pipeline(urls(d), side, batch_size=16, shuffle=0, reconstruct="none"))
    assert [len(x) for x, _, _ in batches] == [16, 16, 8]
    x = torch.cat([b[0] for b in batches])
    want = [tuple(spec.expected(i).transpose(2, 0, 1).flatten().tolist()) for i in range(40)]
    assert sorted(tuple(v.flatten().tolist()) for v in x) == sorted(want)  # the shard order is shuffled
    x, y = next(iter(dcq_pipeline(f"pipe:cat {d}/train-000001.tar", side, batch_size=5, shuffle=5,
                                  augment=RandomCrop(6, padding=1, flip=0.5), mean=[0.5] * 3, std=[0.5] * 3,
                                  reconstruct="mean")))
    assert x.shape == (5, 3, 6, 6) and x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1


def test_two_ranks_and_workers_see_each_sample_once(shards, monkeypatch):
    spec, d, side, _ = shards
    seen = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        loader = wds.WebLoader(dcq_pipeline(urls(d), side, batch_size=4, shuffle=20, reconstruct="none"),
                               batch_size=None, num_workers=2)
        seen += [tuple(x.flatten().tolist()) for xb, *_ in loader for x in xb]
    want = [tuple(spec.expected(i).transpose(2, 0, 1).flatten().tolist()) for i in range(40)]
    assert sorted(seen) == sorted(want)


def test_epoch_length():
    assert epoch_batches(50000, 256, world_size=2, num_workers=4) == 25
    assert epoch_batches(10, 256) == 1


def test_resampled_pipeline_with_epoch(shards):
    _, d, side, _ = shards
    pipe = dcq_pipeline(urls(d), side, batch_size=8, shuffle=0, resampled=True, epoch_batches=7, reconstruct="mean")
    assert len(list(pipe)) == 7 and len(list(pipe)) == 7


def test_corrupt_samples_are_skipped_with_a_warning(shards, tmp_path):
    spec, d, side, names = shards
    bad = tmp_path / "bad-000000.tar"
    with tarfile.open(names[0]) as src, tarfile.open(bad, "w") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read()
            if m.name == "000000003.dcqi":
                data = data[:40] + bytes([data[40] ^ 0xFF]) + data[41:]
            m.size = len(data)
            dst.addfile(m, __import__("io").BytesIO(data))
    with pytest.warns(UserWarning):
        got = list(dcq_pipeline(str(bad), side, batch_size=100, shuffle=0, handler=wds.warn_and_continue,
                                 reconstruct="mean"))
    assert len(got[0][1]) == 9
    with pytest.raises(DcqError, match="checksum"):
        list(dcq_pipeline(str(bad), side, batch_size=100, shuffle=0, reconstruct="mean"))
    trunc = tmp_path / "trunc-000000.tar"
    trunc.write_bytes(open(names[1], "rb").read()[:3000])
    with pytest.warns(UserWarning):
        got = list(dcq_pipeline(str(trunc), side, batch_size=100, shuffle=0, handler=wds.warn_and_continue,
                                 reconstruct="mean"))
    assert 0 < sum(len(y) for _, y in got) < 10


def test_parse_dcqi_rejects_mutations(shards):
    _, d, _, names = shards
    with tarfile.open(names[0]) as tar:
        blob = tar.extractfile("000000001.dcqi").read()
    parse_dcqi(blob)
    rng = np.random.default_rng(0)
    for _ in range(300):
        b = bytearray(blob)
        if rng.random() < 0.3:
            b = b[: int(rng.integers(0, len(b)))]
        else:
            b[int(rng.integers(0, len(b)))] ^= int(rng.integers(1, 256))
        with pytest.raises(DcqError):
            parse_dcqi(bytes(b))
    assert struct.unpack_from("<4s", blob)[0] == b"DCQI"


def test_cli_to_wds(tmp_path):
    spec = make_spec(np.random.default_rng(2), bits=2, channels=1, n=25, sizes=[(5, 5)])
    src = write_spec(spec, tmp_path / "s.dcq")
    r = subprocess.run([sys.executable, "-m", "dcqformat", "to-wds", str(src), str(tmp_path / "o" / "x-%06d.tar"),
                        "--maxcount", "10"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "3 shard(s)" in r.stdout and (tmp_path / "o" / "x.dcq").exists()


@pytest.fixture(scope="module")
def sorted_shards(tmp_path_factory):
    """A class-sorted source (as an ImageFolder conversion is): 10 classes of 60 samples, in order."""
    d = tmp_path_factory.mktemp("sorted")
    pals = np.zeros((1, 4, 3), np.uint8)
    with dcqformat.DcqWriter(d / "src.dcq", bits=2, palettes=pals, meta={"classes": list("abcdefghij")}) as w:
        for label in range(10):
            for _ in range(60):
                w.add(np.zeros((4, 4), np.uint8), palette=0, label=label)
    side, names = write_shards(d / "src.dcq", str(d / "s-%06d.tar"), shards=4)
    return d, side, names


def test_to_wds_shuffles_a_class_sorted_source(sorted_shards):
    d, side, names = sorted_shards
    assert len(names) == 4
    first = next(iter(dcq_pipeline(names, side, batch_size=64, shuffle=100)))[1]
    histogram = np.bincount(first.numpy(), minlength=10)
    assert (histogram > 0).sum() >= 8, histogram  # before: [64, 0, 0, ...]
    with tarfile.open(names[0]) as tar:
        (block,) = [tar.extractfile(m).read() for m in tar.getmembers()]
    labels = [label for _, label in parse_block(block)]
    assert labels != sorted(labels)  # samples in a shuffled order


def test_shard_order_changes_per_epoch_and_agrees_across_ranks(sorted_shards):
    d, side, names = sorted_shards
    from dcqformat.loaders.wds import EpochShards

    a, b = EpochShards(names, seed=3), EpochShards(names, seed=3)
    orders = []
    for epoch in range(4):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        order_a, order_b = [s["url"] for s in a], [s["url"] for s in b]
        assert order_a == order_b and sorted(order_a) == sorted(names)  # every rank the same
        orders.append(order_a)
    assert len({tuple(o) for o in orders}) > 1  # but not the same every epoch


def test_every_sample_once_per_epoch_with_workers(sorted_shards):
    d, side, names = sorted_shards
    pipe = dcq_pipeline(names, side, batch_size=32, shuffle=50, epoch_batches=epoch_batches(600, 32, 1, 2))
    labels = torch.cat([y for _, y in wds.WebLoader(pipe, batch_size=None, num_workers=2)])
    assert len(labels) == 600 and np.bincount(labels.numpy()).tolist() == [60] * 10


def test_too_few_shards_for_the_workers_is_an_error(sorted_shards, tmp_path):
    d, side, _ = sorted_shards
    _, one = write_shards(d / "src.dcq", str(tmp_path / "one-%06d.tar"))  # 600 samples: one shard
    pipe = dcq_pipeline(one, side, batch_size=32, epoch_batches=epoch_batches(600, 32, 1, 2))
    with pytest.raises(DcqError, match=r"1 shard\(s\) cannot feed 1 rank\(s\) x 2 worker\(s\)"):
        list(wds.WebLoader(pipe, batch_size=None, num_workers=2))



def test_blocks_keep_shards_small_and_decode_every_sample(tmp_path):
    """spec/WEBDATASET.md §2.1: samples go 512 to a .dcqb member; shards <= 1.2x the .dcq bytes."""
    rng = np.random.default_rng(0)
    pals = rng.integers(0, 256, (20, 4, 3), dtype=np.uint8)
    images = rng.integers(0, 4, (2000, 32, 32), dtype=np.uint8)
    with dcqformat.DcqWriter(tmp_path / "c.dcq", bits=2, palettes=pals) as w:
        for i in range(2000):
            w.add(images[i], palette=i % 20, label=i % 10)
    side, names = write_shards(tmp_path / "c.dcq", str(tmp_path / "b-%06d.tar"))  # one shard, 4 blocks
    shard_bytes = sum(Path(n).stat().st_size for n in names)
    assert shard_bytes <= 1.2 * (tmp_path / "c.dcq").stat().st_size, shard_bytes
    assert dcqformat.open(side).meta["webdataset"]["member"] == "dcqb"
    got = {}
    for x, y in dcq_pipeline(names, side, batch_size=300, shuffle=500, layout="HWC"):
        for img, label in zip(x.numpy(), y.tolist()):
            got.setdefault(label, []).append(img)
    want = {c: sorted(pals[np.arange(2000)[np.arange(2000) % 10 == c] % 20][k][images[i]].tobytes()
                      for k, i in enumerate(np.flatnonzero(np.arange(2000) % 10 == c)))
            for c in range(10)}
    assert {c: sorted(v.tobytes() for v in imgs) for c, imgs in got.items()} == want


def test_a_corrupt_block_is_an_error_or_skipped(tmp_path):
    pals = np.zeros((1, 4, 3), np.uint8)
    with dcqformat.DcqWriter(tmp_path / "c.dcq", bits=2, palettes=pals) as w:
        for i in range(40):
            w.add(np.full((4, 4), i % 4, np.uint8), palette=0, label=i % 2)
    side, names = write_shards(tmp_path / "c.dcq", str(tmp_path / "k-%06d.tar"), block=10, maxcount=20)
    assert len(names) == 2
    blob = bytearray(Path(names[0]).read_bytes())
    blob[600] ^= 0xFF  # inside the first block
    Path(names[0]).write_bytes(bytes(blob))
    with pytest.raises(DcqError, match="dcqb"):
        list(dcq_pipeline(names, side, batch_size=8, shuffle=0))
    with pytest.warns(UserWarning):
        labels = [y for _, y in dcq_pipeline(names, side, batch_size=8, shuffle=0, handler=wds.warn_and_continue)]
    assert 20 <= sum(len(y) for y in labels) < 40  # the bad block skipped, the other shard read



def test_streaming_from_a_loopback_http_server(sorted_shards):
    """Shards and their sidecar from http:// URLs (webdataset's opener: curl), as from a bucket."""
    import functools
    import http.server
    import threading

    d, side, names = sorted_shards
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(d))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        urls = f"{base}/s-{{000000..000003}}.tar"
        from dcqformat.loaders.wds import sidecar_of

        assert sidecar_of(urls) == f"{base}/s.dcq" and sidecar_of(f"{base}/s-000002.tar") == f"{base}/s.dcq"
        pipe = dcq_pipeline(urls, batch_size=64, shuffle=100)  # no sidecar given: fetched beside the shards
        labels = torch.cat([y for _, y in wds.WebLoader(pipe, batch_size=None, num_workers=2)])
        assert np.bincount(labels.numpy()).tolist() == [60] * 10
    finally:
        server.shutdown()
        server.server_close()


def _coded_source(tmp_path: Path, masked: bool = True) -> tuple[Path, np.ndarray]:
    """A ctxs file (stripes of 64 rows), every fifth sample masked; and every sample's image."""
    from test_ctx import smooth_map

    rng = np.random.default_rng(4)
    path = tmp_path / "c.dcq"
    with dcqformat.DcqWriter(path, bits=2, palettes=rng.integers(0, 256, (3, 4, 3), dtype=np.uint8), codec="ctxs",
                             patch_size=4) as w:
        for i in range(30):
            dropped = rng.random((20, 20)) < 0.3 if masked and i % 5 == 4 else None
            w.add(smooth_map(rng, 80, 80, 2), palette=i % 3, label=i % 7, dropped=dropped)
    return path, dcqformat.open(path).decode_batch(np.arange(30), layout="NCHW")


def test_shards_keep_the_files_codec(tmp_path):
    """Unmasked samples of a ctxs file go to CODED members (spec/WEBDATASET.md §2): the shards
    stay about the file's size, against several times that as packed bits, and decode the same
    (masked samples go packed)."""
    plain, _ = _coded_source(tmp_path / "plain", masked=False)
    _, names = write_shards(plain, str(tmp_path / "k" / "s-%06d.tar"), shards=1)
    _, packed = write_shards(plain, str(tmp_path / "p" / "s-%06d.tar"), shards=1, keep_codec=False)
    coded_bytes, packed_bytes = Path(names[0]).stat().st_size, Path(packed[0]).stat().st_size
    assert coded_bytes < 1.25 * plain.stat().st_size and coded_bytes < 0.6 * packed_bytes, (coded_bytes, packed_bytes)
    path, want = _coded_source(tmp_path)
    side, names = write_shards(path, str(tmp_path / "m" / "s-%06d.tar"), shards=1, shuffle=False)
    assert dcqformat.open(side).codec == "ctxs" and len(dcqformat.open(side)) == 0
    with tarfile.open(names[0]) as tar:
        block = parse_block(tar.extractfile(tar.getmembers()[0]).read())
    assert [s.coded for s, _ in block] == [i % 5 != 4 for i in range(30)]
    got = torch.cat([batch[0] for batch in dcq_pipeline(names, side, batch_size=7, shuffle=0, reconstruct="none")])
    holes = np.array([i % 5 == 4 for i in range(30)])
    np.testing.assert_array_equal(got.numpy()[~holes], want[~holes])


def test_a_coded_payload_that_does_not_decode_is_an_error_of_its_sample(tmp_path):
    from crafted import refresh_member

    path, _ = _coded_source(tmp_path)
    side, names = write_shards(path, str(tmp_path / "s-%06d.tar"), shards=1, shuffle=False, block=0)
    bad = tmp_path / "bad-000000.tar"
    with tarfile.open(names[0]) as src, tarfile.open(bad, "w") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read()
            if m.name == "000000002.dcqi":
                data = refresh_member(data[:40] + bytes([data[40] ^ 0x5A]) + data[41:])  # CRC made right
            m.size = len(data)
            dst.addfile(m, __import__("io").BytesIO(data))
    with pytest.raises(DcqError, match="coded payload of source index 2"):
        list(dcq_pipeline(str(bad), side, batch_size=8, shuffle=0, reconstruct="none"))
    with pytest.warns(UserWarning, match="coded payload"):
        got = list(dcq_pipeline(str(bad), side, batch_size=8, shuffle=0, reconstruct="none",
                                handler=wds.warn_and_continue))
    assert sum(len(batch[1]) for batch in got) == 29


def test_parse_dcqi_flags_by_version(tmp_path):
    """CODED is a version 2 flag, never with MASKED; a packed sidecar takes no CODED member."""
    from crafted import refresh_member

    path, _ = _coded_source(tmp_path)
    blob = bytearray(dcqformat.format.dcqi.encode_dcqi(dcqformat.open(path), 0, coded=True))
    assert blob[4] == 2 and blob[7] == 2 and parse_dcqi(bytes(blob)).coded
    for version, flags in ((1, 2), (2, 3), (2, 4)):
        b = bytearray(blob)
        b[4], b[7] = version, flags
        with pytest.raises(DcqError, match="bad .dcqi header"):
            parse_dcqi(refresh_member(bytes(b)))
    side, names = write_shards(path, str(tmp_path / "p" / "s-%06d.tar"), shards=1, keep_codec=False)
    with tarfile.open(names[0]) as tar:
        assert not any(s.coded for s, _ in parse_block(tar.extractfile(tar.getmembers()[0]).read()))
    from dcqformat.loaders.wds import SampleCheck

    with pytest.raises(DcqError, match="sidecar's codec is packed"):
        SampleCheck.of(dcqformat.open(side))(parse_dcqi(bytes(blob)))
