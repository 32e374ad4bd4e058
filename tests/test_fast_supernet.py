"""The fast supernet path gives the reference path's outputs and gradients."""

import copy

import pytest
import torch

from nas.spaces import get_space
from nas.supernet import SearchNetwork


def _pair(space: str, prune: bool) -> tuple[SearchNetwork, SearchNetwork]:
    torch.manual_seed(0)
    reference = SearchNetwork(get_space(space), 3, 5, channels=4, layers=5)
    with torch.no_grad():
        for alpha in reference.arch_parameters():
            alpha.normal_()
    if prune:  # a mix: some edges keep several ops, some one, one only `none`
        ops = reference.space.ops
        for kind in ("normal", "reduce"):
            for edge in range(reference.space.num_edges):
                for op in range(1, len(ops)):
                    if (edge + op) % 3 == 0:
                        reference.prune(kind, edge, op, step=edge)
            for op in range(1, len(ops)):
                if reference.pruned_masks()[0][2, op] < 0:
                    reference.prune(kind, 2, op, step=99)
    fast = copy.deepcopy(reference).use_fast_path()
    return reference, fast


@pytest.mark.parametrize("space", ["darts", "tiny"])
@pytest.mark.parametrize("prune", [False, True])
@pytest.mark.parametrize("train", [True, False])
def test_fast_path_matches_reference(space: str, prune: bool, train: bool) -> None:
    reference, fast = _pair(space, prune)
    reference.train(train)
    fast.train(train)
    images = torch.randn(6, 3, 12, 12)
    labels = torch.randint(0, 5, (6,))
    outputs = []
    for net in (reference, fast):
        logits = net(images)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        grads = torch.autograd.grad(loss, list(net.parameters()))
        outputs.append((logits, grads))
    (ref_logits, ref_grads), (fast_logits, fast_grads) = outputs
    assert torch.allclose(fast_logits, ref_logits, rtol=1e-4, atol=1e-5)
    names = [name for name, _ in reference.named_parameters()]
    for name, a, b in zip(names, ref_grads, fast_grads):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-5), name
