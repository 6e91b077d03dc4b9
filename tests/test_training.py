"""A real two-epoch training run learns through each loader path (CPU).

The tiny CNN trains on 512 embedded photo crops quantized to 2 bits and is tested on 128
held-out crops in their original colours; chance is about 10%.
"""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from train_util import MEAN, STD, photo_split, train

from dcqformat.loaders import DCQDataset, RandomCrop, random_crop_flip
from dcqformat.loaders.wds import dcq_pipeline, write_shards

MIN_ACCURACY = 0.35


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    torch.set_num_threads(2)
    return photo_split(tmp_path_factory.mktemp("train"))


def check(acc: float, losses: list[float]) -> None:
    assert losses[1] < losses[0], losses
    assert acc >= MIN_ACCURACY, acc


def test_learns_through_dcqdataset_with_workers(split):
    path, test_x, test_y = split
    ds = DCQDataset(path, augment=RandomCrop(32, padding=4, flip=0.5), mean=MEAN, std=STD)
    check(*train(lambda: DataLoader(ds, batch_size=32, shuffle=True, num_workers=2, persistent_workers=False),
                 test_x, test_y))


def test_learns_through_the_webdataset_pipeline(split, tmp_path):
    path, test_x, test_y = split
    side, shards = write_shards(path, str(tmp_path / "p-%06d.tar"), maxcount=128)
    pipe = dcq_pipeline(str(tmp_path / "p-{000000..000003}.tar"), side, batch_size=32, shuffle=256,
                        augment=RandomCrop(32, padding=4, flip=0.5), mean=MEAN, std=STD)
    import webdataset as wds

    check(*train(lambda: wds.WebLoader(pipe, batch_size=None, num_workers=2), test_x, test_y))


def test_learns_through_device_decoding_on_cpu_tensors(split):
    path, test_x, test_y = split
    ds = DCQDataset(path, mean=MEAN, std=STD)
    decoder = ds.device_decoder()  # would live on the GPU: decoder.to("cuda")
    sent = []

    def batches():
        for packed, pids, dropped, labels in DataLoader(ds.packed_view(), batch_size=32, shuffle=True, num_workers=2):
            sent.append(packed.numel())
            yield random_crop_flip(decoder(packed, pids, dropped), padding=4, fill=(0 - 0.5) / 0.25), labels

    check(*train(batches, test_x, test_y))
    pixels_float32 = 512 * 2 * 3 * 32 * 32 * 4
    assert sum(sent) * 40 < pixels_float32  # 2-bit RGB indices: 1/48 of the float32 pixels


def test_wds_and_dataset_give_the_same_pixels(split, tmp_path):
    path, _, _ = split
    side, _ = write_shards(path, str(tmp_path / "q-%06d.tar"), maxcount=1000, shuffle=False)
    x_wds, y_wds = next(iter(dcq_pipeline(str(tmp_path / "q-000000.tar"), side, batch_size=512, shuffle=0)))
    x_ds = torch.stack([x for x, _ in DCQDataset(path).__getitems__(list(range(512)))])
    assert torch.equal(x_wds, x_ds)
    assert np.array_equal(y_wds.numpy(), DCQDataset(path).targets)
