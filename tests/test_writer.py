"""Writer behaviour: atomic writes, input checks, streaming memory, compact records."""

import os
import tracemalloc

import numpy as np
import pytest
from common import make_spec, write_spec

import dcqformat
from dcqformat import DcqWriter

PAL = np.zeros((1, 4, 3), np.uint8)


def test_failure_leaves_nothing_behind(tmp_path):
    dest = tmp_path / "out.dcq"
    dest.write_bytes(b"previous content")
    with pytest.raises(RuntimeError), DcqWriter(dest, bits=2, palettes=PAL) as w:
        w.add(np.zeros((4, 4), np.uint8), palette=0)
        raise RuntimeError("boom")
    assert dest.read_bytes() == b"previous content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.dcq"]


def test_file_appears_only_on_close(tmp_path):
    w = DcqWriter(tmp_path / "a.dcq", bits=2, palettes=PAL)
    w.add(np.zeros((4, 4), np.uint8), palette=0)
    assert not (tmp_path / "a.dcq").exists()
    w.close()
    assert (tmp_path / "a.dcq").exists() and len(os.listdir(tmp_path)) == 1
    with pytest.raises(ValueError, match="closed"):
        w.add(np.zeros((4, 4), np.uint8), palette=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"bits": 0}, "bits"),
        ({"bits": 9}, "bits"),
        ({"bits": 2, "channels": 4}, "channels"),
        ({"bits": 2, "codec": "lz4"}, "codec"),
        ({"bits": 2, "block_size": 1000}, "block_size"),
    ],
)
def test_bad_writer_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        DcqWriter(tmp_path / "x.dcq", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_bad_samples_are_refused(tmp_path):
    with DcqWriter(tmp_path / "x.dcq", bits=2, palettes=PAL, patch_size=2) as w:
        for bad, match in [
            ({"indices": np.full((2, 2), 4, np.uint8), "palette": 0}, "0..3"),
            ({"indices": np.zeros((2, 2, 3), np.uint8), "palette": 0}, r"\(H, W\)"),
            ({"indices": np.zeros((0, 2), np.uint8), "palette": 0}, "size"),
            ({"indices": np.zeros((2, 2), np.uint8), "palette": 5}, "palette id"),
            ({"indices": np.zeros((4, 4), np.uint8), "palette": 0, "dropped": np.zeros((3, 3), bool)}, "mask"),
            ({"indices": np.zeros((2, 2), np.float32), "palette": 0}, "integer"),
        ]:
            with pytest.raises(ValueError, match=match):
                w.add(**bad)
        with pytest.raises(ValueError, match="palette must be"):
            w.add_palette(np.zeros((5, 3), np.uint8))
        w.add(np.zeros((2, 2), np.uint8), palette=0)
    assert len(dcqformat.open(tmp_path / "x.dcq")) == 1


def test_records_of_uniform_dataset_take_two_bytes(tmp_path):
    # 32x32 2-bit images in order with shared palettes: only palette_id and label are stored.
    spec = make_spec(np.random.default_rng(0), bits=2, channels=3, n=5000, sizes=[(32, 32)], n_palettes=20)
    path = write_spec(spec, tmp_path / "c.dcq")
    r = dcqformat.open(path)
    stored = {name: f.width for name, f in r._records.fields.items() if f.width}
    assert stored == {"palette_id": 1, "label": 1}
    assert path.stat().st_size - 5000 * 256 < 5000 * 2 + 2048


def test_writer_memory_does_not_grow_with_samples(tmp_path):
    def peak(n):
        tracemalloc.start()
        with DcqWriter(tmp_path / f"m{n}.dcq", bits=2, palettes=PAL) as w:
            idx = np.zeros((32, 32), np.uint8)
            for i in range(n):
                w.add(idx, palette=0, label=i % 10)
        p = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return p

    small, large = peak(2000), peak(20000)
    assert large < small * 1.5 + 200_000, (small, large)


def test_zstd_is_smaller_and_dictionary_is_stored(tmp_path):
    rng = np.random.default_rng(0)
    smooth = [np.repeat(rng.integers(0, 4, (8, 1)), 32, 1).astype(np.uint8) for _ in range(300)]
    sizes = {}
    for codec in ("packed", "zstd"):
        with DcqWriter(tmp_path / f"{codec}.dcq", bits=2, palettes=PAL, codec=codec, dict_samples=100) as w:
            for s in smooth:
                w.add(s, palette=0)
        sizes[codec] = (tmp_path / f"{codec}.dcq").stat().st_size
        r = dcqformat.open(tmp_path / f"{codec}.dcq", verify=True)
        for i in (0, 150, 299):
            np.testing.assert_array_equal(r.indices(i), smooth[i])
    assert sizes["zstd"] < 0.5 * sizes["packed"]
    assert "ZDCT" in [s["tag"] for s in r.info()["sections"]]
