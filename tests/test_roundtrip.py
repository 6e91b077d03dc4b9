"""Writer -> reader round trips over bits, channels, sizes, codecs and masks."""

import pickle

import numpy as np
import pytest
from common import check_roundtrip, make_spec, write_spec
from hypothesis import given
from hypothesis import strategies as st

import dcqformat
from dcqformat import DcqError

sizes = st.lists(st.tuples(st.integers(1, 19), st.integers(1, 19)), min_size=1, max_size=3)


@given(bits=st.integers(1, 8), channels=st.sampled_from([1, 3]),
       codec=st.sampled_from(["packed", "zstd", "ctx", "ctxs", "ctxg"]), n=st.integers(0, 24), sizes=sizes,
       masked=st.sampled_from([0.0, 0.5]), seed=st.integers(0, 2**32 - 1))
def test_roundtrip_property(tmp_path_factory, bits, channels, codec, n, sizes, masked, seed):
    rng = np.random.default_rng(seed)
    bits = min(bits, 4) if codec in ("ctx", "ctxs", "ctxg") else bits  # ctx, ctxs and ctxg code 1..4 bits
    patch = (int(rng.integers(1, 5)), int(rng.integers(1, 5))) if masked else None
    spec = make_spec(rng, bits=bits, channels=channels, n=n, codec=codec, sizes=sizes, masked=masked, patch=patch)
    path = write_spec(spec, tmp_path_factory.mktemp("rt") / "f.dcq")
    with dcqformat.open(path, verify=True) as r:
        assert (r.bits, r.channels, r.codec) == (bits, channels, codec)
        check_roundtrip(spec, r)
        for i, s in enumerate(spec.samples):
            np.testing.assert_array_equal(r.indices(i), np.where(
                np.repeat(np.repeat(s.dropped, patch[0], 0), patch[1], 1)[: s.indices.shape[0], : s.indices.shape[1]],
                0, s.indices) if s.dropped is not None else s.indices)
            m = r.mask(i)
            assert (m is None) == (s.dropped is None)
            if m is not None:
                np.testing.assert_array_equal(m, s.dropped)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_cifar_like_batch_both_layouts(tmp_path, bits):
    spec = make_spec(np.random.default_rng(bits), bits=bits, channels=3, n=300, sizes=[(32, 32)], n_palettes=20)
    check_roundtrip(spec, dcqformat.open(write_spec(spec, tmp_path / "c.dcq")))


def test_per_image_palettes_beyond_lut_cache(tmp_path, monkeypatch):
    from dcqformat.decode import batch as decode

    monkeypatch.setattr(decode, "_LUT_CACHE_BYTES", 1024)  # force per-batch tables
    spec = make_spec(np.random.default_rng(0), bits=2, channels=3, n=50, sizes=[(4, 4)], n_palettes=50)
    check_roundtrip(spec, dcqformat.open(write_spec(spec, tmp_path / "p.dcq")))


def test_fields_meta_and_source_index(tmp_path):
    pal = np.zeros((1, 4, 3), np.uint8)
    meta = {"name": "x", "classes": ["cat", "dog"], "quantizer": {"name": "test", "config": {"k": 1}}, "é": "ü"}
    with dcqformat.DcqWriter(tmp_path / "m.dcq", bits=2, palettes=pal, meta=meta) as w:
        for i, src in enumerate([10, 3, 77]):
            w.add(np.zeros((2, 3 + i), np.uint8), palette=0, label=i - 1, source_index=src)
    r = dcqformat.open(tmp_path / "m.dcq")
    assert r.meta == meta and r.classes == ["cat", "dog"]
    assert r.source_indices.tolist() == [10, 3, 77]
    assert r.labels.tolist() == [-1, 0, 1]
    assert r.shapes.tolist() == [[2, 3], [2, 4], [2, 5]]
    assert r.palettes.shape == (1, 4, 3) and not r.palettes.flags.writeable
    assert r[-1].shape == (2, 5, 3)
    with pytest.raises(IndexError):
        r[3]
    with pytest.raises(ValueError, match="one size"):
        r.decode_batch([0, 1])
    with pytest.raises(ValueError, match="out must be"):
        r.decode_batch([0], out=np.empty((1, 2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="layout"):
        r.decode_batch([0], layout="HWC")
    assert r.decode_batch([]).shape == (0, 0, 0, 3)


def test_weights_roundtrip(tmp_path):
    from safetensors.numpy import save

    tensors = {"enc.w": np.arange(12, dtype=np.float32).reshape(3, 4), "dec.b": np.ones(5, np.float16)}
    with dcqformat.DcqWriter(tmp_path / "w.dcq", bits=1, palettes=np.zeros((1, 2, 3), np.uint8)) as w:
        w.set_weights(save(tensors, metadata={"arch": "mae-tiny"}))
        w.add(np.zeros((2, 2), np.uint8), palette=0)
    got = dcqformat.open(tmp_path / "w.dcq", verify=True).weights()
    assert set(got) == set(tensors)
    for k in tensors:
        np.testing.assert_array_equal(got[k], tensors[k])
    with pytest.raises(DcqError, match="WGHT"), dcqformat.DcqWriter(tmp_path / "bad.dcq", bits=1) as w:
        w.set_weights(b"\x05" + bytes(7) + b"{}")
    assert not (tmp_path / "bad.dcq").exists()


def test_reader_pickles_as_its_path(tmp_path):
    spec = make_spec(np.random.default_rng(1), bits=2, channels=3, n=5)
    r = dcqformat.open(write_spec(spec, tmp_path / "p.dcq"))
    blob = pickle.dumps(r)
    assert len(blob) < 500  # no memory map inside
    r2 = pickle.loads(blob)
    check_roundtrip(spec, r2)
    r.close()
    r2.close()
