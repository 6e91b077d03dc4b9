"""Hostile or unlucky input on the surfaces beside the single-file reader (issue 25): each test
failed before its fix."""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest
from common import make_spec, write_spec

import dcqformat
from dcqformat import CorruptFile, DcqError


def test_zstd_reader_shared_by_threads(tmp_path):
    """python-zstandard's decompressors are not thread-safe: each thread gets its own, and 8
    threads decoding one reader all see the right pixels."""
    spec = make_spec(np.random.default_rng(3), bits=2, channels=3, n=64, codec="zstd", sizes=[(16, 16), (24, 20)],
                     n_palettes=4)
    reader = dcqformat.open(write_spec(spec, tmp_path / "z.dcq"))
    expected = [reader[i].copy() for i in range(len(reader))]
    decompressors: set[int] = set()
    failures: list[str] = []
    lock = threading.Lock()

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        with lock:
            decompressors.add(id(reader._decoder._decompressor()))
        for _ in range(60):
            idx = sorted(rng.choice(len(reader), 8, replace=False).tolist())
            try:
                for i in idx:
                    if not np.array_equal(reader[i], expected[i]):
                        failures.append(f"sample {i}: wrong pixels")
            except CorruptFile as exc:
                failures.append(str(exc))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
    assert len(decompressors) == 8  # one per thread, never shared


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_meta_with_nan_is_not_json(tmp_path, constant):
    """RFC 8259 has no NaN or infinities; Python's json reads them. META (and every JSON the
    library reads) refuses them, naming the constant."""
    from dcqformat.format.meta import parse_meta

    with pytest.raises(CorruptFile, match=f"{constant} is not JSON"):
        parse_meta(f'{{"name": "x", "extra": {constant}}}'.encode())
    assert parse_meta(b'{"name": "x", "extra": 1e308}').raw["extra"] == 1e308


# -- WebDataset shards --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Shards of .dcqi + .cls pairs (10 samples each, file order) and their sidecar."""
    from dcqformat.loaders.wds import write_shards

    d = tmp_path_factory.mktemp("pairs")
    spec = make_spec(np.random.default_rng(5), bits=2, channels=3, n=30, sizes=[(8, 8)], n_palettes=2)
    side, names = write_shards(write_spec(spec, d / "src.dcq"), str(d / "p-%06d.tar"), maxcount=10, shuffle=False,
                               block=0)
    return d, side, names


def rewrite_tar(src: str, dst, edit) -> None:
    """Copy tar ``src`` to ``dst``, each member through ``edit(name, data) -> (name, data) | None``."""
    import io
    import tarfile

    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for m in tin.getmembers():
            out = edit(m.name, tin.extractfile(m).read())
            if out is None:
                continue
            m.name, data = out[0], out[1]
            m.size = len(data)
            tout.addfile(m, io.BytesIO(data))


def labels_read(urls, side, handler=None) -> list[int]:
    import webdataset as wds

    from dcqformat.loaders.wds import dcq_pipeline

    pipe = dcq_pipeline(urls, side, batch_size=100, shuffle=0, handler=handler or wds.reraise_exception)
    return [int(y) for _, labels in pipe for y in labels]


@pytest.mark.parametrize("text,value", [(b"3", 3), (b"-1", -1), (b" 7\n", 7), (b"+2", 2), ("5", 5), (9, 9)])
def test_labels_parse_strictly(text, value):
    from dcqformat.format.dcqi import parse_label

    assert parse_label(text) == value


@pytest.mark.parametrize("text", [b"1_0", b"-99999999999999999999", b"2147483648", b"-2", b"", b"3.0", b"\xd9\xa3",
                                  b"1 2", b"0x10"])
def test_bad_labels_are_library_errors(text):
    from dcqformat.format.dcqi import parse_label

    with pytest.raises(CorruptFile, match="label"):
        parse_label(text)


def test_a_bad_label_goes_through_the_handler(pairs, tmp_path):
    import webdataset as wds

    d, side, names = pairs
    bad = tmp_path / names[0].rsplit("/", 1)[-1]
    rewrite_tar(names[0], bad, lambda n, b: (n, b"1_0" if n == "000000002.cls" else b))
    with pytest.raises(CorruptFile, match="label is not ASCII decimal digits"):
        labels_read(str(bad), side)
    with pytest.warns(UserWarning, match="label"):
        got = labels_read(str(bad), side, wds.warn_and_continue)
    assert len(got) == 9


def test_dcqi_allocation_is_bounded_by_the_member(pairs):
    """A 57-byte member claiming a 16384x16384 image with one kept patch and no pixels took 47 s
    and 6.6 GB; 65535x65535 a MemoryError; a mask past the member's end a ValueError."""
    import struct
    import time
    import zlib

    from dcqformat.format.dcqi import DCQI, DCQI_MAGIC, parse_dcqi

    def member(h, w, ph, pw, body):
        head = DCQI.pack(DCQI_MAGIC, 1, 2, 3, 1, 0, h, w, 0, ph, pw, 0)
        return head[:-4] + struct.pack("<I", zlib.crc32(head[:-4] + body)) + body

    start = time.perf_counter()
    with pytest.raises(CorruptFile, match="payload size"):
        parse_dcqi(member(16384, 16384, 16384, 8192, b"\x02"))  # 2 patches, the first kept: 2^27 pixels, 0 bytes
    with pytest.raises(CorruptFile, match="image too large"):
        parse_dcqi(member(65535, 65535, 65535, 65535, b"\x00"))
    with pytest.raises(CorruptFile, match="ends inside its drop mask"):
        parse_dcqi(member(64, 64, 1, 1, b"\x00" * 10))  # a 4096-patch grid needs 512 mask bytes
    with pytest.raises(CorruptFile, match="padding bits"):
        parse_dcqi(member(4, 4, 4, 4, b"\xfe"))
    assert time.perf_counter() - start < 5


def test_a_shard_that_lost_samples_says_so(pairs, tmp_path):
    """A shard cut at a member boundary is a valid tar with fewer samples: read in silence before."""
    import webdataset as wds

    d, side, names = pairs
    short = tmp_path / names[1].rsplit("/", 1)[-1]
    keep = {f"{i:09d}" for i in range(10, 16)}
    rewrite_tar(names[1], short, lambda n, b: (n, b) if n.split(".")[0] in keep else None)
    with pytest.raises(CorruptFile, match="gave 6 samples, the sidecar records 10: samples were lost"):
        labels_read(str(short), side)
    with pytest.warns(UserWarning, match="samples were lost"):
        assert len(labels_read([names[0], str(short), names[2]], side, wds.warn_and_continue)) == 26


def test_a_sample_that_does_not_match_the_sidecar_is_skipped(pairs, tmp_path):
    """Checks made while batching stopped the stream under warn_and_continue; now they are errors
    of that sample, before batching."""
    import struct
    import zlib

    import webdataset as wds

    d, side, names = pairs

    def palette_99(name, data):
        if name != "000000004.dcqi":
            return name, data
        b = bytearray(data)
        struct.pack_into("<I", b, 8, 99)
        struct.pack_into("<I", b, 28, zlib.crc32(bytes(b[:28]) + bytes(b[32:])))
        return name, bytes(b)

    bad = tmp_path / names[0].rsplit("/", 1)[-1]
    rewrite_tar(names[0], bad, palette_99)
    with pytest.warns(UserWarning, match="does not match the sidecar"):
        got = labels_read([str(bad), names[1]], side, wds.warn_and_continue)
    assert len(got) == 19
    with pytest.raises(CorruptFile, match="does not match the sidecar"):
        labels_read(str(bad), side)


def test_tar_layer_errors_are_library_errors(pairs, tmp_path):
    import webdataset as wds

    d, side, names = pairs
    renamed = tmp_path / "renamed-000000.tar"
    rewrite_tar(names[0], renamed, lambda n, b: (n.replace(".dcqi", ".dcqx"), b))
    with pytest.raises(CorruptFile, match="neither a .dcqb member nor a .dcqi"):  # was a KeyError
        labels_read(str(renamed), side)
    garbage = tmp_path / "garbage-000000.tar"
    garbage.write_bytes(b"not a tar" * 200)
    with pytest.raises(CorruptFile, match="does not read as a tar") as info:  # was tarfile.ReadError
        labels_read(str(garbage), side)
    assert info.value.__cause__ is not None
    dup = tmp_path / "dup-000000.tar"
    rewrite_tar(names[0], dup, lambda n, b: (n.replace("000000001.", "000000000."), b))
    with pytest.warns(UserWarning, match="duplicate"):
        assert len(labels_read([str(dup), names[1]], side, wds.warn_and_continue)) >= 10
    with pytest.raises(DcqError, match="cannot be read"):  # was FileNotFoundError
        labels_read(names[0], tmp_path / "missing.dcq")


def test_fifos_and_devices_are_refused_not_read(tmp_path):
    """A FIFO blocked every command forever; /dev/zero and an empty file failed without saying why."""
    import os
    import subprocess
    import sys

    from dcqformat import NotADcqFile
    from dcqformat.mae import load_mae

    fifo = tmp_path / "f.dcq"
    os.mkfifo(fifo)
    with pytest.raises(NotADcqFile, match="not a regular file .a FIFO"):
        dcqformat.open(fifo)
    with pytest.raises(NotADcqFile, match="character device"):
        load_mae("/dev/zero")
    (tmp_path / "empty.dcq").write_bytes(b"")
    dcq = [sys.executable, "-m", "dcqformat"]
    for args in (["info", str(fifo)], ["export", str(fifo), str(tmp_path / "out")],
                 ["verify", str(fifo), "/dev/zero", str(tmp_path / "empty.dcq")]):
        r = subprocess.run(dcq + args, capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
    said = r.stdout + r.stderr
    assert "a FIFO" in said and "character device" in said and "empty (0 bytes)" in said


def test_a_huge_safetensors_header_is_refused_before_reading(tmp_path):
    import struct

    from dcqformat.mae import load_mae

    path = tmp_path / "m.safetensors"
    with open(path, "wb") as f:  # 1 GiB, sparse: read whole before the fix
        f.write(struct.pack("<Q", 1 << 40) + b"{}")
        f.truncate(1 << 30)
    tracemalloc.start()
    try:
        with pytest.raises(CorruptFile, match="header length out of range"):
            load_mae(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"{peak:,} bytes allocated"


# -- dcq export ---------------------------------------------------------------------------------
HOSTILE_CLASSES = ["../../esc", "/abs/olute", "..", "a/../../b", "nul\x00byte", "x" * 300, ".hidden", "", "%41",
                   "back\\slash", "ok"]


def test_export_never_writes_outside_its_folder(tmp_path):
    """Class names from META became folder names as they were: ../../esc wrote outside out/, a
    NUL gave a ValueError traceback, 300 characters ENAMETOOLONG."""
    import subprocess
    import sys
    from urllib.parse import unquote

    from dcqformat import DcqWriter

    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    pals = np.zeros((1, 4, 3), np.uint8)
    with DcqWriter(work / "h.dcq", bits=2, palettes=pals, meta={"classes": HOSTILE_CLASSES}) as w:
        for label in range(len(HOSTILE_CLASSES)):
            w.add(np.full((4, 4), label % 4, np.uint8), palette=0, label=label)
    before = set(tmp_path.rglob("*"))
    r = subprocess.run([sys.executable, "-m", "dcqformat", "export", str(work / "h.dcq"), str(work / "out")],
                       capture_output=True, text=True, timeout=120, cwd=work)
    assert r.returncode == 0, r.stderr
    made = set(tmp_path.rglob("*")) - before
    assert made and all(p.is_relative_to(work / "out") for p in made), sorted(map(str, made))
    folders = sorted(p for p in (work / "out").iterdir())
    assert len(folders) == len(HOSTILE_CLASSES) and all(len(list(f.glob("*.png"))) == 1 for f in folders)
    back = {unquote(f.name) for f in folders if "~" not in f.name}
    assert back == (set(HOSTILE_CLASSES) - {"x" * 300, ""}) | {"%empty"}
    assert "were not safe as file names and were escaped" in r.stdout


@pytest.mark.parametrize("name", HOSTILE_CLASSES + ["\udcff", "é" * 150])
def test_path_component_is_one_safe_name(name):
    from urllib.parse import unquote

    from dcqformat.cli.commands import MAX_COMPONENT, path_component

    out = path_component(name)
    assert out and "/" not in out and "\\" not in out and "\x00" not in out and out not in (".", "..")
    assert not out.startswith(".") and len(out.encode("utf-8", "surrogatepass")) <= MAX_COMPONENT
    if len(name.encode("utf-8", "surrogatepass")) <= 150 and name:
        assert unquote(out, errors="surrogatepass") == name


def test_the_writer_refuses_nan_in_meta(tmp_path):
    from dcqformat import DcqWriter

    with pytest.raises(ValueError, match="without NaN"):
        DcqWriter(tmp_path / "n.dcq", bits=2, meta={"drop": {"fraction": float("nan")}})
    assert not list(tmp_path.iterdir())


# -- dataset directories ------------------------------------------------------------------------
def make_set(root, parts=3, per=10):
    """A dataset directory of ``parts`` part files and its manifest; the manifest, parsed."""
    import json

    from dcqformat.format.multifile import MANIFEST, DcqSetWriter

    pals = np.zeros((2, 4, 3), np.uint8)
    with DcqSetWriter(root / "set", per, bits=2, palettes=pals) as w:
        for i in range(parts * per):
            w.add(np.full((4, 4), i % 4, np.uint8), palette=i % 2, label=i % 3)
    return root / "set", json.loads((root / "set" / MANIFEST).read_text())


def write_manifest_json(directory, manifest) -> None:
    import json

    (directory / "manifest.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))


def dataset_len(directory) -> int:
    from dcqformat.format.multifile import open_set

    return len(open_set(directory))


def edited(manifest, **changes):
    import copy

    m = copy.deepcopy(manifest)
    for key, value in changes.items():
        if key.startswith("entry0_"):
            m["files"][0][key[7:]] = value
        else:
            m[key] = value
    return m


@pytest.mark.parametrize("change,words", [
    ({"entry0_samples": 11, "samples": 31}, "other samples than the manifest says"),
    ({"entry0_bytes": 5}, "another size than the manifest says"),
    ({"samples": 0}, "not the sum"), ({"samples": -5}, "not the sum"), ({"samples": "12"}, "not the sum"),
    ({"samples": 1.5}, "not the sum"), ({"samples": 10**30}, "not the sum"),
    ({"entry0_samples": -1}, "samples is not a count"), ({"entry0_bytes": True}, "bytes is not a count"),
    ({"files": []}, "lists no part"), ({"entry0_path": ".."}, "not a plain file name"),
    ({"entry0_path": ""}, "not a plain file name"), ({"entry0_path": "."}, "not a plain file name"),
    ({"entry0_path": "a\x00b"}, "not a plain file name"), ({"entry0_path": "x" * 5000}, "not a plain file name"),
    ({"entry0_path": "../set/part-000000.dcq"}, "not a plain file name"),
    ({"entry0_path": "gone.dcq"}, "cannot be read"),
])
def test_a_manifest_that_disagrees_with_its_parts_is_named(tmp_path, change, words):
    from dcqformat import CorruptFile as Corrupt

    directory, manifest = make_set(tmp_path)
    write_manifest_json(directory, edited(manifest, **change))
    with pytest.raises(DcqError, match=words) as info:
        dataset_len(directory)
    if isinstance(info.value, Corrupt):
        assert info.value.section == "manifest"


@pytest.mark.parametrize("text", ["[]", "5", '"x"', "null", "[" * 100000 + "]" * 100000, '{"format": "dcq-set/1"}',
                                  '{"format": "dcq-set/1", "files": [5], "samples": 0}', "{", "NaN"])
def test_a_manifest_that_is_not_an_object_is_a_library_error(tmp_path, text):
    directory, _ = make_set(tmp_path, parts=2)
    write_manifest_json(directory, text)
    with pytest.raises(DcqError):
        dataset_len(directory)


def test_entries_listed_twice_removed_or_swapped_are_refused(tmp_path):
    directory, manifest = make_set(tmp_path)
    m = edited(manifest)
    m["files"] = m["files"] + m["files"][:1]
    m["samples"] += 10
    write_manifest_json(directory, m)
    with pytest.raises(DcqError, match="listed twice"):  # read 132 samples from 100 before
        dataset_len(directory)
    m = edited(manifest)
    m["files"] = [m["files"][0]] * 20000
    m["samples"] = 200000
    write_manifest_json(directory, m)
    with pytest.raises(DcqError, match="listed twice"):  # too many open files before
        dataset_len(directory)
    m = edited(manifest)
    m["files"] = m["files"][1:]
    m["samples"] -= 10
    write_manifest_json(directory, m)
    with pytest.raises(DcqError, match="not in the manifest"):  # read 20 of 30 in silence before
        dataset_len(directory)
    m = edited(manifest)
    m["files"][0]["path"], m["files"][1]["path"] = m["files"][1]["path"], m["files"][0]["path"]
    write_manifest_json(directory, m)
    with pytest.raises(DcqError, match="not the file the manifest lists"):  # same sizes: only the crc tells
        dataset_len(directory)
    write_manifest_json(directory, manifest)
    assert dataset_len(directory) == 30


def test_parts_stay_inside_the_directory_and_are_regular_files(tmp_path):
    """A manifest entry '..' read the .dcq files beside the directory; symlinked parts, a symlinked
    manifest and the no-manifest fallback opened anything (/etc/passwd, /dev/zero); a FIFO hung."""
    import os
    import shutil

    directory, manifest = make_set(tmp_path)
    outside = tmp_path / "outside.dcq"
    shutil.copy(directory / manifest["files"][0]["path"], outside)
    first = directory / manifest["files"][0]["path"]
    first.unlink()
    first.symlink_to(outside)
    with pytest.raises(DcqError, match="symbolic link"):
        dataset_len(directory)
    first.unlink()
    os.mkfifo(first)
    with pytest.raises(DcqError, match="not a regular file"):
        dataset_len(directory)
    first.unlink()
    shutil.copy(outside, first)
    (directory / "manifest.json").rename(tmp_path / "m.json")
    (directory / "manifest.json").symlink_to(tmp_path / "m.json")
    with pytest.raises(DcqError, match="symbolic link"):
        dataset_len(directory)
    (directory / "manifest.json").unlink()
    (directory / "zero.dcq").symlink_to("/dev/zero")
    with pytest.raises(DcqError, match="symbolic link"):  # the no-manifest fallback
        dataset_len(directory)
    (directory / "zero.dcq").unlink()
    (directory / "loop.dcq").symlink_to(directory / "loop.dcq")
    with pytest.raises(DcqError, match="symbolic link"):
        dataset_len(directory)
    (directory / "loop.dcq").unlink()
    assert dataset_len(directory) == 30
