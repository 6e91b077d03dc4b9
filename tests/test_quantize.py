"""The quantizer's stages, each on small data, and `dcq convert` on every source kind."""

import io
import pickle
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

import dcqformat
from dcqformat import DcqError
from dcqformat.cli import sample_data
from dcqformat.conversion import ConvertConfig, convert
from dcqformat.pipeline.imaging import sobel
from dcqformat.pipeline.sources import expand_braces, iter_images, open_source
from dcqformat.quantize.color import lab_to_srgb, srgb_to_lab
from dcqformat.quantize.gradcam import gradcam_pp
from dcqformat.quantize.kmeans import kmeans
from dcqformat.quantize.model import AttentionNet
from dcqformat.quantize.palette import assign, refine_palette
from dcqformat.quantize.reassign import best_palettes, lloyd, palette_errors

FAST = {"model_epochs": 1, "model_images": 200, "refine_steps": 3, "refine_images": 8, "clusters": 4}


def test_lab_roundtrip_and_white():
    rgb = torch.rand(1000, 3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(lab_to_srgb(srgb_to_lab(rgb)), rgb, atol=1e-4)
    white = srgb_to_lab(torch.ones(3))
    assert abs(white[0] - 100) < 1e-3 and white[1:].abs().max() < 1e-2


def test_kmeans_finds_blobs_and_is_deterministic():
    g = torch.Generator().manual_seed(1)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.3 * torch.randn(200, 2, generator=g) for c in centres])
    found, assignment = kmeans(x, 3, seed=5)
    assert sorted(torch.cdist(centres, found).min(1).values.tolist())[-1] < 0.2
    assert torch.bincount(assignment).tolist() == [200, 200, 200]
    again, _ = kmeans(x, 3, seed=5)
    assert torch.equal(found, again)
    few, _ = kmeans(x[:2], 5, seed=0)  # more centres than points
    assert len(few) == 2


def test_gradcam_maps():
    torch.manual_seed(0)
    model = AttentionNet(3).eval()
    cams, feats, logits = gradcam_pp(model, torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0]), (20, 20))
    assert cams.shape == (4, 20, 20) and cams.min() >= 0 and cams.max() <= 1 + 1e-6
    assert feats.shape == (4, 32) and logits.shape == (4, 3)


def test_palette_choice_is_the_least_error_and_lloyd_never_worsens():
    g = torch.Generator().manual_seed(3)
    pixels = torch.cat([torch.randn(30, 50, 3, generator=g) * 3 + 40, torch.randn(30, 50, 3, generator=g) * 3 - 40])
    palettes = torch.randn(3, 4, 3, generator=g) * 20
    err = palette_errors(pixels, palettes, chunk=7)
    brute = torch.stack([torch.stack([torch.cdist(im, p).pow(2).amin(1).sum() for p in palettes]) for im in pixels])
    assert torch.allclose(err, brute, rtol=1e-4)
    assert torch.equal(best_palettes(pixels, palettes), brute.argmin(1))
    fitted, ids, history = lloyd(pixels, palettes, rounds=4, max_pixels=10_000, seed=0)
    assert all(b <= a + 1e-3 for a, b in zip(history, history[1:])) and history[-1] < history[0] / 10
    assert set(ids[:30].tolist()).isdisjoint(ids[30:].tolist())  # the two colour groups take different palettes
    again = lloyd(pixels, palettes, rounds=4, max_pixels=10_000, seed=0)
    assert torch.equal(fitted, again[0])


def test_refinement_lowers_its_loss_and_assign_is_nearest():
    imgs = torch.from_numpy(sample_data.load_photo_crops(16).images)
    pal = srgb_to_lab(torch.tensor([[0.1, 0.1, 0.1], [0.4, 0.3, 0.3], [0.7, 0.6, 0.5], [0.9, 0.9, 0.9]]))
    refined, log = refine_palette(imgs, pal, steps=15)
    assert log["loss_after"] <= log["loss_before"] and refined.shape == (4, 3)
    pal8 = torch.tensor([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 0, 255]]], dtype=torch.uint8)
    img = torch.tensor([[[[10, 10, 10], [250, 240, 245], [200, 30, 20], [20, 20, 220]]]], dtype=torch.uint8)
    assert assign(img, pal8, torch.zeros(1, dtype=torch.long)).tolist() == [[[0, 1, 2, 3]]]
    assert sobel(torch.zeros(1, 3, 5, 5)).abs().max() == 0


def _odd_images():
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    out = {"rgb.png": rgb, "gray.png": rgb.convert("L"), "rgba.png": rgb.convert("RGBA"),
           "pal.png": rgb.convert("P"), "tiny.png": Image.new("RGB", (1, 1), (5, 6, 7)),
           "big.jpg": Image.fromarray(rng.integers(0, 256, (70, 50, 3), dtype=np.uint8)),
           "g16.png": Image.fromarray(rng.integers(0, 65535, (8, 8)).astype(np.uint16))}
    blobs = {}
    for name, im in out.items():
        buf = io.BytesIO()
        im.save(buf, "JPEG" if name.endswith(".jpg") else "PNG")
        blobs[name] = buf.getvalue()
    blobs["corrupt.png"] = b"\x89PNG\r\n\x1a\nnot really"
    return blobs


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    d = tmp_path_factory.mktemp("src")
    blobs = _odd_images()
    for k, (name, data) in enumerate(blobs.items()):
        folder = d / "folder" / ("a" if k % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    photos = sample_data.load_photo_crops(60)
    with tarfile.open(d / "s-000000.tar", "w") as t1, tarfile.open(d / "s-000001.tar", "w") as t2:
        for i in range(60):
            buf = io.BytesIO()
            Image.fromarray(photos.images[i]).save(buf, "PNG")
            for ext, data in (("png", buf.getvalue()), ("cls", str(photos.labels[i]).encode())):
                info = tarfile.TarInfo(f"k{i:04d}.{ext}")
                info.size = len(data)
                (t1 if i < 30 else t2).addfile(info, io.BytesIO(data))
    cifar = d / "cifar"
    cifar.mkdir()
    batch = {b"data": photos.images[:40].transpose(0, 3, 1, 2).reshape(40, -1), b"labels": photos.labels[:40].tolist()}
    (cifar / "data_batch_1").write_bytes(pickle.dumps(batch))
    (cifar / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in photos.classes]}))
    np.savez(d / "x.npz", x=photos.images[:40], y=photos.labels[:40], classes=np.array(photos.classes))
    return d


def test_sources_detect_convert_and_report(sources):
    assert expand_braces("a-{000..002}.tar") == ["a-000.tar", "a-001.tar", "a-002.tar"]
    folder = list(iter_images(open_source(sources / "folder")))
    assert len(folder) == 8 and sum(i.image is None for i in folder) == 1
    shapes = {i.image.shape for i in folder if i.image is not None}
    assert (1, 1, 3) in shapes and (70, 50, 3) in shapes and all(s[2] == 3 for s in shapes)
    gray = [i.image for i in iter_images(open_source(sources / "folder"), channels=1) if i.image is not None]
    assert all(g.shape[2] == 1 for g in gray)
    shards = open_source(str(sources / "s-{000000..000001}.tar"))
    items = list(iter_images(shards))
    assert shards.kind == "webdataset" and len(items) == 60 and items[31].label >= 0
    cifar = open_source(sources / "cifar")
    assert cifar.kind == "cifar" and cifar.classes[0] == "astronaut" and len(list(iter_images(cifar))) == 40
    assert open_source(sources / "x.npz").kind == "npz"
    with pytest.raises(DcqError):
        open_source(sources / "nothing-here.bin")


def test_cifar_unpickler_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DcqError, match="refusing to unpickle"):
        list(iter_images(open_source(tmp_path)))


@pytest.mark.parametrize("kind", ["folder", "shards", "cifar", "npz"])
def test_convert_every_source_kind(sources, tmp_path, kind):
    src = {"folder": sources / "folder", "shards": str(sources / "s-{000000..000001}.tar"),
           "cifar": sources / "cifar", "npz": sources / "x.npz"}[kind]
    s = convert(str(src), tmp_path / "o.dcq", ConvertConfig(**FAST), progress=False)
    assert s.samples_in == s.written + s.reported
    r = dcqformat.open(tmp_path / "o.dcq", verify=True)
    assert len(r) == s.written and r.meta["quantizer"]["name"] == "dcq"
    assert r.meta["quantizer"]["config"]["bits"] == 2 and len(r.palettes) <= 4
    if kind == "folder":
        assert s.reported == 1 and r.meta["provenance"]["reported"] == 1
        (_, why), = s.problems  # named by its file, not only by its index
        assert why.startswith(str(src)) and "corrupt.png: " in why
        with pytest.raises(DcqError, match="unreadable"):
            convert(str(src), tmp_path / "f.dcq", ConvertConfig(on_error="fail", **FAST), progress=False)


def test_source_bytes_with_limit_are_the_bytes_read(sources, tmp_path):
    """--limit: 'x smaller than the source files' compares with the images read, not the whole shards."""
    src = str(sources / "s-{000000..000001}.tar")
    whole = convert(src, tmp_path / "all.dcq", ConvertConfig(method="mediancut"), progress=False)
    some = convert(src, tmp_path / "some.dcq", ConvertConfig(method="mediancut", limit=10), progress=False)
    with tarfile.open(sources / "s-000000.tar") as tar:
        pngs = [m.size for m in tar.getmembers() if m.name.endswith(".png")][:10]
    assert some.source_bytes == sum(pngs) and whole.source_bytes > 5 * some.source_bytes
    npz = convert(str(sources / "x.npz"), tmp_path / "n.dcq", ConvertConfig(method="mediancut", limit=4),
                  progress=False)
    size = (sources / "x.npz").stat().st_size
    assert npz.source_bytes is not None and npz.source_bytes < size


@pytest.mark.parametrize("method", ["mediancut", "octree", "kmeans"])
def test_baselines(sources, tmp_path, method):
    s = convert(str(sources / "x.npz"), tmp_path / "b.dcq", ConvertConfig(method=method, bits=3), progress=False)
    r = dcqformat.open(tmp_path / "b.dcq", verify=True)
    assert s.written == 40 and len(r.palettes) == 40 and r.bits == 3
    err = np.abs(r.decode_batch(range(40)).astype(int) - np.load(sources / "x.npz")["x"]).mean()
    assert err < 25, err


def test_same_seed_same_file(sources, tmp_path):
    for name in ("a", "b"):
        convert(str(sources / "x.npz"), tmp_path / f"{name}.dcq", ConvertConfig(**FAST), progress=False)
    assert (tmp_path / "a.dcq").read_bytes() == (tmp_path / "b.dcq").read_bytes()


def test_cli_convert_and_preview(sources, tmp_path):
    r = subprocess.run([sys.executable, "-m", "dcqformat", "convert", str(sources / "x.npz"), str(tmp_path / "c.dcq"),
                        "--epochs", "1", "--refine-steps", "2", "--clusters", "3"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "written" in r.stdout and "time: total" in r.stdout
    r = subprocess.run([sys.executable, "-m", "dcqformat", "preview", str(tmp_path / "c.dcq"), "--source",
                        str(sources / "x.npz"), "--out", str(tmp_path / "p.png"), "--count", "5"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    with Image.open(tmp_path / "p.png") as img:
        assert img.size[0] > 5 * 64


@pytest.mark.parametrize("features", ["lab", "both"])
def test_cluster_features_options(sources, tmp_path, features):
    cfg = ConvertConfig(cluster_features=features, **FAST)
    s = convert(str(sources / "x.npz"), tmp_path / "f.dcq", cfg, progress=False)
    r = dcqformat.open(tmp_path / "f.dcq", verify=True)
    assert s.written == 40 and r.meta["quantizer"]["config"]["cluster_features"] == features
    assert len(r.meta["quantizer"]["cluster_sizes"]) == 4 and sum(r.meta["quantizer"]["cluster_sizes"]) == 40
    with pytest.raises(ValueError, match="cluster_features"):
        convert(str(sources / "x.npz"), tmp_path / "g.dcq", ConvertConfig(cluster_features="hsv"), progress=False)


def test_export_names_pngs_after_the_source_files(sources, tmp_path):
    src = sources / "folder"
    convert(str(src), tmp_path / "f.dcq", ConvertConfig(method="mediancut"), progress=False)
    r = subprocess.run([sys.executable, "-m", "dcqformat", "export", str(tmp_path / "f.dcq"), str(tmp_path / "png"),
                        "--names-from", str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    got = sorted(p.relative_to(tmp_path / "png").with_suffix("").as_posix() for p in (tmp_path / "png").rglob("*.png"))
    want = sorted(f"{p.parent.name}/{p.stem}" for p in src.rglob("*") if p.is_file() and p.name != "corrupt.png")
    assert got == want
