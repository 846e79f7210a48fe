#!/usr/bin/python3
"""generate_train.py — PyTorch reference values for tests/test_train.c: the image augmentation
of tg_batches_set_augment.

Run with a Python that has torch (Debian's python3-torch 1.13 is at /usr/bin/python3):

    /usr/bin/python3 tests/reference/generate_train.py

It rebuilds tests/reference/train_reference.txt next to this script (format: generate.py's).

torchvision's RandomCrop(size, padding=p) pads the image with p zeros on each side and cuts out
a window of the image's size whose top-left corner (top, left) is uniform in [0, 2p]^2;
RandomHorizontalFlip() then mirrors it with probability 1/2. tapegrad draws the corner and the
flip from its own counter-based hash, so the test cannot ask for PyTorch's draws; instead this
file holds every outcome for one image, computed the way torchvision computes it (F.pad, a
slice, torch.flip), and the test checks that each augmented sample is one of them and that the
draws cover them all.

Graph "augment": `image` is a [2, 4, 5] image (two planes, values 1..40); `out_<top>_<left>_<flip>`
is its crop with padding 2 at corner (top, left), flipped when <flip> is 1.
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no __pycache__ left in the source tree
from refio import emit, write  # noqa: E402

PAD = 2
image = torch.arange(1, 41, dtype=torch.float64).reshape(2, 4, 5)
emit("augment", "image", image)
h, w = image.shape[-2:]
padded = F.pad(image, (PAD, PAD, PAD, PAD))  # zeros, as RandomCrop's default fill
for top in range(2 * PAD + 1):
    for left in range(2 * PAD + 1):
        crop = padded[..., top:top + h, left:left + w]
        for flip in (0, 1):
            out = torch.flip(crop, dims=[-1]) if flip else crop
            emit("augment", f"out_{top}_{left}_{flip}", out)

write("train_reference.txt", "generate_train.py")
