"""DCQDataset with DataLoader, workers, samplers, pickling, augmentations; device decoding."""

import os
import pickle
import warnings

import numpy as np
import pytest
import torch
from common import make_spec, write_spec
from torch.utils.data import DataLoader, DistributedSampler

from dcqformat.loaders import (
    CenterCrop,
    DCQDataset,
    DCQLoader,
    DeviceDecoder,
    RandomCrop,
    RandomResizedCrop,
    Resize,
    random_crop_flip,
)

MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory):
    spec = make_spec(np.random.default_rng(5), bits=2, channels=3, n=64, sizes=[(12, 12)], n_palettes=4)
    spec.meta = {"classes": [f"k{i}" for i in range(10)]}
    return spec, write_spec(spec, tmp_path_factory.mktemp("ds") / "d.dcq")


def chw(a):
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


def test_items_layouts_dtypes_and_transforms(spec_path):
    spec, path = spec_path
    ds = DCQDataset(path)
    assert len(ds) == 64 and ds.classes[3] == "k3" and ds.class_to_idx["k3"] == 3
    assert ds.targets == [s.label for s in spec.samples]
    x, y = ds[5]
    assert x.dtype == torch.uint8 and torch.equal(x, chw(spec.expected(5))) and y == spec.samples[5].label
    x, _ = DCQDataset(path, layout="HWC")[5]
    assert torch.equal(x, torch.from_numpy(spec.expected(5)))
    x, _ = DCQDataset(path, mean=MEAN, std=STD)[5]
    want = (chw(spec.expected(5)).float() / 255 - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    assert x.dtype == torch.float32 and torch.allclose(x, want, atol=1e-6)
    x, y = DCQDataset(path, transform=lambda t: t.float().mean(), target_transform=lambda v: v + 100)[5]
    assert x.ndim == 0 and y == spec.samples[5].label + 100
    img, _ = DCQDataset(path, output="pil")[5]
    assert np.array_equal(np.asarray(img), spec.expected(5))
    arr, _ = DCQDataset(path, output="numpy")[5]
    assert isinstance(arr, np.ndarray)
    batch = DCQDataset(path).__getitems__([1, 2, 3])
    for k, (bx, by) in enumerate(batch):
        assert torch.equal(bx, chw(spec.expected(k + 1))) and by == spec.samples[k + 1].label


def test_random_crop_is_a_crop_of_the_padded_image(spec_path):
    spec, path = spec_path
    torch.manual_seed(0)
    ds = DCQDataset(path, augment=RandomCrop(12, padding=3))
    items = ds.__getitems__(list(range(16)))
    for i, (x, _) in enumerate(items):
        padded = np.pad(spec.expected(i), ((3, 3), (3, 3), (0, 0)))
        candidates = [padded[a : a + 12, b : b + 12] for a in range(7) for b in range(7)]
        candidates += [c[:, ::-1] for c in candidates]
        got = x.permute(1, 2, 0).numpy()
        assert any(np.array_equal(got, c) for c in candidates), i


def test_other_augmentations_give_one_size(tmp_path):
    spec = make_spec(np.random.default_rng(1), bits=3, channels=3, n=20, sizes=[(9, 14), (20, 7), (16, 16)])
    path = write_spec(spec, tmp_path / "v.dcq")
    for aug, mean in [(RandomResizedCrop(8), None), (Resize((10, 6)), MEAN), (CenterCrop(8), None)]:
        ds = DCQDataset(path, augment=aug, mean=mean, std=STD if mean else None)
        xs = torch.stack([x for x, _ in ds.__getitems__(list(range(20)))])
        assert xs.shape == (20, 3, *((8, 8) if not isinstance(aug, Resize) else (10, 6)))
    x, _ = DCQDataset(path, augment=CenterCrop(5))[2]  # 16x16 -> centre 5x5
    assert torch.equal(x, chw(spec.expected(2)[5:10, 5:10]))
    x, _ = DCQDataset(path)[1]  # without augment, varying sizes decode one by one
    assert x.shape == (3, 20, 7)


def test_dataloader_with_workers_sees_every_sample(spec_path):
    spec, path = spec_path
    ds = DCQDataset(path, augment=RandomCrop(12, padding=2), mean=MEAN, std=STD)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pin_memory without an accelerator warns
        loader = DataLoader(ds, batch_size=10, shuffle=True, num_workers=2, persistent_workers=True,
                            pin_memory=True)
        for _ in range(2):
            batches = list(loader)
            labels = torch.cat([y for _, y in batches])
            assert sorted(labels.tolist()) == sorted(s.label for s in spec.samples)
    last = batches[-1][0]
    assert last.shape == (4, 3, 12, 12) and last.dtype == torch.float32


def test_distributed_sampler_two_ranks_see_each_sample_once(spec_path):
    spec, path = spec_path
    ds = DCQDataset(path)
    for epoch in range(2):
        seen = []
        for rank in range(2):
            sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=3)
            sampler.set_epoch(epoch)
            for x, _ in DataLoader(ds, batch_size=8, sampler=sampler, num_workers=1):
                seen += [bytes(t.numpy().tobytes()) for t in x]
        expected = sorted(bytes(chw(spec.expected(i)).numpy().tobytes()) for i in range(64))
        assert sorted(seen) == expected


def test_pickles_without_the_map_and_reopens(spec_path):
    _, path = spec_path
    ds = DCQDataset(path)
    ds[0]  # opens the file in this process
    blob = pickle.dumps(ds)
    assert len(blob) < 2000
    clone = pickle.loads(blob)
    assert clone._reader is None and torch.equal(clone[3][0], ds[3][0])


def test_batch_sampler_decodes_whole_batches_into_shared_memory(spec_path, monkeypatch):
    """A BatchSampler with batch_size=None: dataset[indices] is a collated batch, which the
    workers decode straight into shared memory (no collate copy) and which equals get_batch's."""
    spec, path = spec_path
    for kw in ({}, {"mean": MEAN, "std": STD, "layout": "HWC"}):
        ds = DCQDataset(path, **kw)
        x, y = ds[[3, 1, 4]]
        want = ds.get_batch([3, 1, 4])
        assert torch.equal(x, want[0]) and torch.equal(y, want[1]) and not x.is_shared()
        assert torch.equal(ds[np.array([2])][0][0], ds[2][0])
        sampler = torch.utils.data.BatchSampler(torch.utils.data.SequentialSampler(ds), 24, drop_last=False)
        got = list(DataLoader(ds, sampler=sampler, batch_size=None, num_workers=2))
        assert [len(b[0]) for b in got] == [24, 24, 16]
        assert torch.equal(torch.cat([b[0] for b in got]), ds.get_batch(np.arange(64))[0])
        assert torch.cat([b[1] for b in got]).tolist() == [s.label for s in spec.samples]
        if not kw:
            assert torch.equal(got[0][0][0], chw(spec.expected(0)))
    import dcqformat.loaders.dataset as module
    import dcqformat.loaders.memory as memory

    monkeypatch.setattr(memory, "get_worker_info", lambda: object())  # as in a worker
    monkeypatch.setattr(module, "get_worker_info", lambda: object())
    monkeypatch.setattr(module, "set_parallel", lambda enabled: None)  # which would stay single-threaded
    for kw in ({}, {"augment": RandomCrop(12, padding=2), "mean": MEAN, "std": STD}):
        x, _ = DCQDataset(path, **kw)[[0, 5]]
        assert x.is_shared() and x.shape == (2, 3, 12, 12)


def _fds_on(path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
        except OSError:
            pass
    return count


def test_no_file_descriptor_leaks(spec_path):
    _, path = spec_path
    ds = DCQDataset(path)
    assert _fds_on(path) == 1  # the memory map of this process
    for _ in range(3):
        for _ in DataLoader(ds, batch_size=16, num_workers=2):
            pass
        DCQDataset(path)[0]
    assert _fds_on(path) == 1


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8])
def test_device_decoder_matches_cpu_decode(tmp_path, bits):
    spec = make_spec(np.random.default_rng(bits), bits=bits, channels=3, n=20, sizes=[(7, 9)])
    path = write_spec(spec, tmp_path / "g.dcq")
    ds = DCQDataset(path)
    packed, pid, dropped, label = next(iter(DataLoader(ds.packed_view(), batch_size=20)))
    assert dropped.shape == (20, 0, 0)
    assert packed.dtype == torch.uint8 and packed.shape == (20, (63 * bits + 7) // 8)
    assert label.tolist() == [s.label for s in spec.samples]
    img = ds.device_decoder(dtype=torch.uint8)(packed, pid)
    assert torch.equal(img, torch.stack([chw(spec.expected(i)) for i in range(20)]))
    norm = DeviceDecoder(spec.palettes, bits, 7, 9, mean=MEAN, std=STD)(packed, pid)
    cpu = torch.stack([x for x, _ in DCQDataset(path, mean=MEAN, std=STD).__getitems__(list(range(20)))])
    assert torch.allclose(norm, cpu, atol=1e-6)


def test_random_crop_flip_on_tensors():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    y = random_crop_flip(x, padding=2, generator=g)
    assert y.shape == x.shape
    for b in range(2):
        padded = torch.nn.functional.pad(x[b], (2, 2, 2, 2))
        options = [padded[:, i : i + 6, j : j + 6] for i in range(5) for j in range(5)]
        assert any(torch.equal(y[b], o) or torch.equal(y[b], o.flip(2)) for o in options)


def test_dcqloader_epochs_shuffle_and_seed(spec_path):
    spec, path = spec_path
    ds = DCQDataset(path, augment=RandomCrop(12, padding=2), mean=MEAN, std=STD)
    loader = DCQLoader(ds, batch_size=10, shuffle=True, seed=1)
    assert len(loader) == 7
    first = [y for _, y in loader]
    second = [y for _, y in loader]  # the next epoch: another order
    for labels in (first, second):
        assert sorted(torch.cat(labels).tolist()) == sorted(s.label for s in spec.samples)
    assert not all(torch.equal(a, b) for a, b in zip(first, second))
    again = DCQLoader(ds, batch_size=10, shuffle=True, seed=1)
    x1 = [x for x, _ in again]
    again.set_epoch(0)
    x2 = [x for x, _ in again]
    assert all(torch.equal(a, b) for a, b in zip(x1, x2))  # same seed and epoch: same batches
    assert x1[0].shape == (10, 3, 12, 12) and x1[-1].shape == (4, 3, 12, 12)
    assert len(DCQLoader(ds, batch_size=10, drop_last=True)) == 6


def test_dcqloader_with_distributed_sampler_and_early_exit(spec_path):
    spec, path = spec_path
    ds = DCQDataset(path)
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=4)
        seen += [bytes(t.numpy().tobytes()) for x, _ in DCQLoader(ds, batch_size=7, sampler=sampler) for t in x]
    assert sorted(seen) == sorted(bytes(chw(spec.expected(i)).numpy().tobytes()) for i in range(64))
    for _ in DCQLoader(ds, batch_size=4, prefetch=1):
        break  # the producer thread must not hang on a full queue


def test_dcqloader_passes_errors_on(tmp_path):
    spec = make_spec(np.random.default_rng(0), bits=2, channels=3, n=8, sizes=[(4, 4), (5, 5)])
    ds = DCQDataset(write_spec(spec, tmp_path / "v.dcq"))
    with pytest.raises(ValueError, match="differ in size"):
        list(DCQLoader(ds, batch_size=4))


def test_crops_do_not_flip_unless_asked():
    """As torchvision: RandomCrop and RandomResizedCrop never flip by default; flip=p flips that often."""
    from dcqformat.loaders import RandomResizedCrop

    hs, ws = np.full(2000, 32), np.full(2000, 32)
    g = torch.Generator().manual_seed(0)
    for aug in (RandomCrop(32, padding=4), RandomResizedCrop(24)):
        assert not aug.windows(hs, ws, g)[1].any()
    flips = RandomCrop(32, padding=4, flip=0.5).windows(hs, ws, g)[1]
    assert 0.4 < flips.mean() < 0.6


def test_dcqloader_resumes_mid_epoch_exactly(tmp_path):
    spec = make_spec(np.random.default_rng(4), bits=2, channels=3, n=90, sizes=[(12, 12)])
    path = write_spec(spec, tmp_path / "r.dcq")

    def loader() -> DCQLoader:
        ds = DCQDataset(path, augment=RandomCrop(10, padding=2, flip=0.5), mean=MEAN, std=STD)
        return DCQLoader(ds, batch_size=8, shuffle=True, seed=11)

    full = loader()
    reference = [list(full) for _ in range(2)]  # two whole epochs
    interrupted = loader()
    it = iter(interrupted)
    for _ in range(5):
        next(it)
    state = interrupted.state_dict()
    assert state["epoch"] == 0 and state["batches_done"] == 5
    resumed = loader()
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == len(reference[0]) - 5
    for (x, y), (rx, ry) in zip(rest, reference[0][5:]):
        assert torch.equal(x, rx) and torch.equal(y, ry)
    assert resumed.state_dict()["epoch"] == 1  # the epoch completed: the next one follows
    for (x, y), (rx, ry) in zip(resumed, reference[1]):
        assert torch.equal(x, rx) and torch.equal(y, ry)
    with pytest.raises(ValueError, match="batch_size"):
        DCQLoader(DCQDataset(path), batch_size=4, seed=11).load_state_dict(state)
