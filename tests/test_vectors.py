"""The golden test vectors of spec/test-vectors: decoded forever, never regenerated."""

import json
from pathlib import Path

import numpy as np
import pytest

import dcqformat

HERE = Path(__file__).resolve().parents[1] / "spec" / "test-vectors"
MANIFEST = json.loads((HERE / "MANIFEST.json").read_text())


@pytest.mark.parametrize("name", sorted(MANIFEST["valid"]))
def test_valid_vector_decodes_exactly(name):
    expected = np.load(HERE / "valid" / f"{name}.npz")
    with dcqformat.open(HERE / "valid" / f"{name}.dcq", verify=True) as r:
        assert len(r) == MANIFEST["valid"][name]["samples"]
        for i in range(len(r)):
            np.testing.assert_array_equal(r[i], expected[f"x{i}"])
        np.testing.assert_array_equal(r.labels, expected["labels"])
        np.testing.assert_array_equal(r.source_indices, expected["source_index"])


@pytest.mark.parametrize("name", sorted(MANIFEST["invalid"]))
def test_invalid_vector_raises_its_error(name):
    spec = MANIFEST["invalid"][name]
    error = getattr(dcqformat, spec["error"])
    path = HERE / "invalid" / f"{name}.dcq"
    if spec["when"] == "open":
        with pytest.raises(error, match=None) as info:
            dcqformat.open(path)
    else:
        r = dcqformat.open(path)
        with pytest.raises(error) as info:
            for i in range(len(r)):
                r[i]
    assert type(info.value).__name__ == spec["error"]
    assert spec["message"] in str(info.value)


@pytest.mark.parametrize("name", sorted(n for n, v in MANIFEST["valid"].items() if v.get("canonical")))
def test_writer_reproduces_canonical_bytes(tmp_path, name):
    info = MANIFEST["valid"][name]
    e = np.load(HERE / "valid" / f"{name}.npz")
    patch = tuple(info["patch"]) if info["patch"] else None
    with dcqformat.DcqWriter(tmp_path / "x.dcq", bits=info["bits"], channels=e["palettes"].shape[2],
                             palettes=e["palettes"], meta=json.loads(str(e["meta"])), patch_size=patch) as w:
        for i in range(info["samples"]):
            idx = e[f"i{i}"]
            dropped = None
            if f"m{i}" in e:
                dropped = e[f"m{i}"].reshape(-(-idx.shape[0] // patch[0]), -(-idx.shape[1] // patch[1]))
            w.add(idx, palette=int(e["palette_ids"][i]), label=int(e["labels"][i]), dropped=dropped)
    assert (tmp_path / "x.dcq").read_bytes() == (HERE / "valid" / f"{name}.dcq").read_bytes()


def test_every_invalid_file_is_in_the_manifest():
    on_disk = {p.stem for p in (HERE / "invalid").glob("*.dcq")}
    assert on_disk == set(MANIFEST["invalid"])
    assert {p.stem for p in (HERE / "valid").glob("*.dcq")} == set(MANIFEST["valid"])
