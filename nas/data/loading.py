"""Seeded loaders over a split, training augmentation, and evaluation sums.

A loader reads any torch Dataset: in-memory tensors in the main process, or samples streamed from
disk by `workers` loader processes. Batches never depend on the number of workers: the order comes
from a sampler seeded by (seed, epoch), and each sample's augmentation from a generator seeded by
(seed, epoch, index).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, SequentialSampler, Subset


def crop_padding(side: int) -> int:
    """Zero padding of the random crop for images of `side` pixels: side / 8, the standard
    CIFAR-10 crop's 4 pixels on 32 (0 below 8 pixels: no crop)."""
    return side // 8


class Augmented(Dataset):
    """Training augmentation of normalised image tensors.

    `crop_flip`: random crop (zero padding of `crop_padding(side)`, then a window of the original
    size) and, where `flips`, a horizontal flip with probability 1/2: the standard CIFAR-10
    augmentation (pad 4 on 32x32) scaled to the image. `cutout`: zero a `cutout` x `cutout`
    square centred on a uniformly drawn pixel, clipped at the border (DeVries and Taylor 2017, as
    used by DARTS's final training); zero is the mean pixel after normalisation. Sample i's
    draws come from a generator seeded by (`seed`, i), so they are the same in any loader worker
    and on any rank.

    A (C, L) sequence is only ever cropped along L (padding `crop_padding(L)`); it never flips and
    takes no cutout (nas/data/defaults.py refuses one).
    """

    def __init__(
        self, base: Dataset, seed: int, crop_flip: bool, cutout: int, flips: bool = True
    ) -> None:
        self.base = base
        self.seed = seed
        self.crop_flip = crop_flip
        self.cutout = cutout
        self.flips = flips

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.base[index]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        if image.dim() == 2:
            return (_crop_sequence(image, generator) if self.crop_flip else image), label
        height, width = image.shape[-2:]
        if self.crop_flip:
            pad = crop_padding(min(height, width))
            if pad:
                padded = torch.nn.functional.pad(image, (pad,) * 4)
                top, left = torch.randint(0, 2 * pad + 1, (2,), generator=generator).tolist()
                image = padded[:, top : top + height, left : left + width]
            if self.flips and int(torch.randint(0, 2, (1,), generator=generator)):
                image = image.flip(-1)
        if self.cutout:
            centre_y = int(torch.randint(0, height, (1,), generator=generator))
            centre_x = int(torch.randint(0, width, (1,), generator=generator))
            half = self.cutout // 2
            image = image.clone()
            image[
                :,
                max(centre_y - half, 0) : min(centre_y + half, height),
                max(centre_x - half, 0) : min(centre_x + half, width),
            ] = 0.0
        return image, label


def _crop_sequence(sequence: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random window of the sequence's length L from it zero-padded by `crop_padding(L)`."""
    length = sequence.shape[-1]
    pad = crop_padding(length)
    if not pad:
        return sequence
    start = int(torch.randint(0, 2 * pad + 1, (1,), generator=generator))
    return torch.nn.functional.pad(sequence, (pad, pad))[:, start : start + length]


def loader(
    dataset: Dataset,
    batch_size: int,
    train: bool,
    seed: int,
    epoch: int,
    augment: bool = False,
    cutout: int = 0,
    shard: tuple[int, int] = (0, 1),
    workers: int = 0,
    flips: bool = True,
) -> DataLoader:
    """A loader for one epoch of this process's shard (`shard` = (rank, world size)).

    Training loaders shuffle with a DistributedSampler seeded by (seed, epoch) (`set_epoch`), so a
    resumed run sees the same batches, and drop the last partial batch (BatchNorm needs more than
    one sample). Rank r takes every W-th index of one permutation of the whole split, so step k's
    batches of the W ranks together are step k's batch of one process with W times the batch size.
    Evaluation loaders read rank r's every W-th sample in order (sum the metrics over the ranks).
    `workers` loader processes read the samples (0: the main process); with CUDA the batches are
    pinned for faster copies to the GPU.
    """
    rank, world = shard
    streaming = {
        "num_workers": workers,
        "pin_memory": workers > 0 and torch.cuda.is_available(),
        "persistent_workers": False,
    }
    if not train:
        part = dataset if world == 1 else Subset(dataset, range(rank, len(dataset), world))
        return DataLoader(part, batch_size=batch_size, sampler=SequentialSampler(part), **streaming)
    source: Dataset = dataset
    if augment or cutout:
        source = Augmented(dataset, seed * 100_003 + epoch, augment, cutout, flips)
    sampler = DistributedSampler(
        source, num_replicas=world, rank=rank, shuffle=True, seed=seed * 100_003, drop_last=True
    )
    sampler.set_epoch(epoch)
    return DataLoader(source, batch_size=batch_size, sampler=sampler, drop_last=True, **streaming)


@torch.no_grad()
def classifier_sums(
    network: Callable[[torch.Tensor], torch.Tensor],
    dataset: Dataset,
    batch_size: int,
    device: torch.device,
    shard: tuple[int, int] = (0, 1),
    workers: int = 0,
) -> list[float]:
    """[summed cross-entropy, correct predictions] of `network` on this process's share of
    `dataset`; sum them over the ranks and divide by len(dataset) for the means.
    """
    loss_sum = correct = 0.0
    for images, labels in loader(dataset, batch_size, False, 0, 0, shard=shard, workers=workers):
        images, labels = images.to(device), labels.to(device)
        logits = network(images)
        loss_sum += torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(dim=1) == labels).sum().item()
    return [loss_sum, correct]


def batches_per_epoch(dataset: Dataset, batch_size: int, world: int = 1) -> int:
    """Number of full batches a training loader yields on each of `world` processes."""
    return len(dataset) // world // batch_size


def check_batch_size(dataset: Dataset, batch_size: int, what: str) -> None:
    """Raise NasError if `dataset` cannot fill one batch."""
    from nas.errors import NasError

    if len(dataset) < batch_size:
        raise NasError(
            f"the {what} split has {len(dataset)} samples, fewer than one batch of {batch_size}; "
            "lower --batch-size"
        )


def cycle(loader_factory: Callable[[int], DataLoader]) -> Iterator:
    """Endless iterator over successive loaders (loader_factory(0), loader_factory(1), ...)."""
    round_ = 0
    while True:
        yield from loader_factory(round_)
        round_ += 1
