"""The user's own data: image folders by class (in memory or streamed), npz arrays, CSV tables
(the commands on them: test_data_files_cli.py).

`folder_sample` and `npz_sample` make a small dataset of each kind for the dataset conformance
test (tmp_path -> DataConfig).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from nas.config import DataConfig
from nas.data import (
    CsvOptions,
    FolderOptions,
    NpzOptions,
    labels_of,
    load_dataset,
    loader,
)
from nas.data import folder as folder_module
from nas.errors import NasError


def write_images(
    root: Path,
    classes: int = 3,
    per_class: int = 6,
    size: tuple[int, int] = (8, 8),
    mode: str = "L",
    seed: int = 0,
    first: int = 0,
) -> Path:
    """`per_class` random PNG images in each of `classes` folders named c0, c1, ... (from
    c`first`)."""
    generator = np.random.default_rng(seed)
    channels = {"L": (), "RGB": (3,)}[mode]
    for label in range(first, first + classes):
        (root / f"c{label}").mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            pixels = generator.integers(0, 256, (size[1], size[0], *channels), dtype=np.uint8)
            Image.fromarray(pixels, mode).save(root / f"c{label}" / f"{index}.png")
    return root


def write_digits(root: Path, count: int, side: int = 8) -> Path:
    """The first `count` scikit-learn digits as grey PNG files by class (folders 0..9), upscaled
    to `side` x `side`."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for index in range(count):
        pixels = (digits.images[index] * 255 / 16).astype(np.uint8)
        image = Image.fromarray(pixels, "L").resize((side, side), Image.Resampling.BILINEAR)
        (root / str(digits.target[index])).mkdir(parents=True, exist_ok=True)
        image.save(root / str(digits.target[index]) / f"{index}.png")
    return root


def folder_config(root: Path, **options: object) -> DataConfig:
    return DataConfig(name="folder", options=FolderOptions(data_dir=str(root), **options))


def npz_config(path: Path) -> DataConfig:
    return DataConfig(name="npz", options=NpzOptions(data_file=str(path)))


def folder_sample(tmp_path: Path) -> DataConfig:
    """A folder of 3 classes of 8x8 grey PNG images, held in memory."""
    return folder_config(write_images(tmp_path / "images"))


def npz_sample(tmp_path: Path) -> DataConfig:
    """An npz file of 30 uint8 3x8x8 images with text labels."""
    generator = np.random.default_rng(0)
    tmp_path.mkdir(parents=True, exist_ok=True)
    x = generator.integers(0, 256, (30, 3, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "data.npz", x=x, y=np.array(["cat", "dog", "owl"] * 10))
    return npz_config(tmp_path / "data.npz")


def _decodes(monkeypatch) -> list[str]:
    """Record every image whose pixels Pillow decodes (headers alone are not counted)."""
    seen: list[str] = []
    original = ImageFile.ImageFile.load

    def load(image):  # noqa: ANN001, ANN202
        if image.tile:  # pixels not decoded yet
            seen.append(str(getattr(image, "filename", "")))
        return original(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return seen


def _samples(dataset) -> Counter:  # noqa: ANN001
    """Each sample as (label, rounded pixels), counted."""
    return Counter(
        (int(label), tuple(image.flatten().round(decimals=4).tolist()))
        for image, label in (dataset[i] for i in range(len(dataset)))
    )


# -- folders -------------------------------------------------------------------------------------


def test_folder_classes_test_split_and_statistics(tmp_path) -> None:
    root = write_images(tmp_path / "d", classes=3, per_class=6)
    write_images(root / "test", classes=2, per_class=2, seed=1)
    data = load_dataset(folder_config(root))
    assert data.class_names == ("c0", "c1", "c2") and data.num_classes == 3
    assert (data.in_channels, data.image_size, data.input_scale) == (1, 8, 255.0)
    assert len(data.train) == 18 and len(data.test) == 4  # test/ is not a class
    assert labels_of(data.test).tolist() == [0, 0, 1, 1]
    images = data.train.tensors[0]  # normalised with the training images' statistics
    assert abs(float(images.mean())) < 1e-4 and abs(float(images.std()) - 1) < 0.05


def test_folder_without_test_holds_out_a_fifth(tmp_path) -> None:
    data = load_dataset(folder_config(write_images(tmp_path, classes=2, per_class=10)))
    assert (len(data.train), len(data.test)) == (16, 4)


def test_image_size_resizes_mixed_sizes_and_colour_makes_every_image_rgb(tmp_path) -> None:
    write_images(tmp_path, classes=2, per_class=3, size=(12, 8), mode="L")
    write_images(tmp_path, classes=1, per_class=3, size=(20, 30), mode="RGB", first=2)
    data = load_dataset(folder_config(tmp_path, image_size=6))
    assert data.class_names == ("c0", "c1", "c2")
    assert (data.in_channels, data.image_size) == (3, 6)
    assert tuple(data.train.tensors[0].shape[1:]) == (3, 6, 6)


def test_streamed_folder_gives_the_samples_of_the_in_memory_one(tmp_path) -> None:
    root = write_images(tmp_path, classes=3, per_class=5, mode="RGB")
    in_memory = load_dataset(folder_config(root))
    streamed = load_dataset(folder_config(root, memory_limit_mb=0))
    assert not hasattr(streamed.train, "tensors") and hasattr(in_memory.train, "tensors")
    assert (streamed.mean, streamed.std) == (in_memory.mean, in_memory.std)
    for part in ("train", "test"):
        assert _samples(getattr(streamed, part)) == _samples(getattr(in_memory, part))
        assert torch.equal(labels_of(getattr(streamed, part)), labels_of(getattr(in_memory, part)))


def test_streamed_folder_decodes_only_the_statistics_sample(tmp_path, monkeypatch) -> None:
    root = write_images(tmp_path, classes=2, per_class=10)
    monkeypatch.setattr(folder_module, "STATS_SAMPLE", 4)
    decoded = _decodes(monkeypatch)
    data = load_dataset(folder_config(root, memory_limit_mb=0))
    assert len(decoded) == 4  # the 20 images' headers are read, 4 decoded
    data.train[0]
    assert len(decoded) == 5  # a sample is decoded when it is read
    decoded.clear()
    load_dataset(folder_config(root))  # small enough: decoded once into memory
    assert len(decoded) == 4 + 20


def _epoch(dataset, workers: int, shard=(0, 1), batch_size: int = 4) -> list:  # noqa: ANN001
    batches = loader(dataset, batch_size, True, 3, 1, True, 2, shard, workers, flips=True)
    return [(images.clone(), labels.clone()) for images, labels in batches]


def test_streamed_batches_do_not_depend_on_workers_and_repeat_on_resume(tmp_path) -> None:
    data = load_dataset(folder_config(write_images(tmp_path), memory_limit_mb=0))
    first = _epoch(data.train, workers=0)
    for again in (_epoch(data.train, workers=2), _epoch(data.train, workers=0)):
        assert len(again) == len(first) == 14 // 4
        for (images, labels), (same_images, same_labels) in zip(first, again):
            assert torch.equal(images, same_images) and torch.equal(labels, same_labels)


def test_rank_shards_partition_a_streamed_folder(tmp_path) -> None:
    data = load_dataset(folder_config(write_images(tmp_path, per_class=8), memory_limit_mb=0))
    whole = _epoch(data.train, 0, (0, 1), batch_size=4)
    ranks = [_epoch(data.train, 0, (rank, 2), batch_size=2) for rank in range(2)]
    assert len(whole) == len(ranks[0]) == len(ranks[1]) == 19 // 4
    for step, (images, labels) in enumerate(whole):
        together = [part for rank in ranks for part in zip(*rank[step])]
        assert _samples(together) == _samples(list(zip(images, labels)))
    test_parts = [
        [
            pair
            for batch in loader(data.test, 2, False, 0, 0, shard=(rank, 2))
            for pair in zip(*batch)
        ]
        for rank in range(2)
    ]
    assert _samples(test_parts[0] + test_parts[1]) == _samples(data.test)
    assert len(test_parts[0]) + len(test_parts[1]) == len(data.test)


def test_an_image_broken_in_a_loader_worker_is_one_line_naming_it(tmp_path) -> None:
    root = write_images(tmp_path, size=(64, 64))
    write_images(root / "test", classes=2, per_class=2, size=(64, 64))
    broken = root / "test" / "c1" / "0.png"  # the statistics sample holds training images only
    broken.write_bytes(broken.read_bytes()[:200])
    data = load_dataset(folder_config(root, memory_limit_mb=0))
    with pytest.raises(NasError) as error:
        list(loader(data.test, 2, False, 0, 0, workers=2))
    assert str(error.value).startswith(f"{broken}: not a readable image"), str(error.value)


# -- npz -----------------------------------------------------------------------------------------


def test_npz_images_labels_of_any_values_and_test_arrays(tmp_path) -> None:
    generator = np.random.default_rng(0)
    x = generator.integers(0, 256, (20, 3, 6, 6), dtype=np.uint8)
    y = np.array([10, 20, 30, 40] * 5)
    x_test = generator.integers(0, 256, (4, 3, 6, 6), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x_test, y_test=np.array([40, 10, 10, 30]))
    data = load_dataset(npz_config(tmp_path / "d.npz"))
    assert data.class_names == ("10", "20", "30", "40") and data.input_scale == 255.0
    assert (data.kind, data.in_channels, data.image_size, len(data.train)) == ("image", 3, 6, 20)
    assert labels_of(data.test).tolist() == [3, 0, 0, 2]
    assert torch.allclose(data.train.tensors[0].mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)


@pytest.mark.parametrize("shape", [(30, 40), (30, 2, 40)])
def test_npz_sequences(tmp_path, shape) -> None:
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    np.savez(tmp_path / "s.npz", x=x, y=np.array(["a", "b", "c"] * 10))
    data = load_dataset(npz_config(tmp_path / "s.npz"))
    channels = 1 if len(shape) == 2 else shape[1]
    assert (data.kind, data.in_channels, data.image_size) == ("sequence", channels, 40)
    assert (len(data.train), len(data.test), data.input_scale) == (24, 6, 1.0)
    assert tuple(data.train.tensors[0].shape[1:]) == (channels, 40)


# -- bad data: one line naming the file ----------------------------------------------------------


def _empty_class(root: Path) -> tuple[DataConfig, str]:
    write_images(root)
    (root / "c3").mkdir()
    return folder_config(root), "c3"


def _corrupt_image(root: Path) -> tuple[DataConfig, str]:
    write_images(root)
    (root / "c1" / "2.png").write_bytes(b"not a picture")
    return folder_config(root), "2.png"


def _truncated_image(root: Path) -> tuple[DataConfig, str]:
    write_images(root, size=(64, 64))
    path = root / "c0" / "1.png"
    path.write_bytes(path.read_bytes()[:200])
    return folder_config(root), "1.png"


def _mixed_sizes(root: Path) -> tuple[DataConfig, str]:
    write_images(root)
    Image.new("L", (9, 9)).save(root / "c2" / "odd.png")
    return folder_config(root), "odd.png"


def _not_square(root: Path) -> tuple[DataConfig, str]:
    write_images(root, size=(8, 6))
    return folder_config(root), "--image-size"


def _one_class(root: Path) -> tuple[DataConfig, str]:
    write_images(root, classes=1)
    return folder_config(root), "at least 2"


def _unseen_test_class(root: Path) -> tuple[DataConfig, str]:
    write_images(root, classes=2)
    write_images(root / "test", classes=3)
    return folder_config(root), "c2"


def _no_folder(root: Path) -> tuple[DataConfig, str]:
    return folder_config(root / "nowhere"), "does not exist"


def _npz(root: Path, **arrays: np.ndarray) -> DataConfig:
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / "d.npz", **arrays)
    return npz_config(root / "d.npz")


_X = np.zeros((10, 1, 4, 4), dtype=np.float32)
_Y = np.arange(10) % 2


BAD = {
    "empty class folder": _empty_class,
    "corrupt image": _corrupt_image,
    "truncated image": _truncated_image,
    "mixed sizes": _mixed_sizes,
    "non-square images": _not_square,
    "one class": _one_class,
    "test class unseen in training": _unseen_test_class,
    "missing folder": _no_folder,
    "npz lengths differ": lambda root: (_npz(root, x=_X, y=_Y[:9]), "9 labels for 10"),
    "npz without y": lambda root: (_npz(root, x=_X), "no array y"),
    "npz x_test without y_test": lambda root: (_npz(root, x=_X, y=_Y, x_test=_X), "y_test"),
    "npz unseen test label": lambda root: (
        _npz(root, x=_X, y=_Y, x_test=_X[:2], y_test=np.array([0, 7])),
        "label 7",
    ),
    "npz non-square": lambda root: (_npz(root, x=np.zeros((10, 1, 4, 5)), y=_Y), "square"),
    "npz object labels": lambda root: (
        _npz(root, x=_X, y=np.array([None, "a"] * 5, dtype=object)),
        "Python objects",
    ),
    "npz not an archive": lambda root: (
        (root.mkdir(), (root / "d.npz").write_text("x,y\n"), npz_config(root / "d.npz"))[-1],
        "not a",
    ),
    "csv missing label column": lambda root: (
        (
            root.mkdir(),
            (root / "t.csv").write_text("a,b\n1,2\n"),
            DataConfig(name="csv", options=CsvOptions(data_file=str(root / "t.csv"), target="y")),
        )[-1],
        "no column 'y'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_data_is_one_line_naming_the_file(tmp_path, case: str) -> None:
    config, detail = BAD[case](tmp_path / "data")
    with pytest.raises(NasError) as error:
        load_dataset(config)
    message = str(error.value)
    options = config.options
    named = getattr(options, "data_dir", None) or getattr(options, "data_file", None)
    assert str(named) in message and detail in message, message
    assert "\n" not in message


def test_mixed_sizes_name_two_files(tmp_path) -> None:
    config, _ = _mixed_sizes(tmp_path)
    with pytest.raises(NasError, match=r"c0/0.png is 8x8 but .*c2/odd.png is 9x9; give --image"):
        load_dataset(config)
