#!/usr/bin/python3
"""The reference side of bench/compare_decode.ts: the official evaluation's input pipeline on image files
(torchvision's ImageFolder loader, PIL.Image.open(...).convert("RGB"), then Resize(256, bicubic), CenterCrop(224),
ToTensor, Normalize), in one process on one thread. With --write N DIR it first writes N JPEGs of 500 x 375 (the
size of an average ImageNet image) at quality 90 into DIR, seeded, for both sides to read.

usage: decode_torchvision.py DIR [--write N]
Prints one line of JSON: images per second (best of 3 passes over every file of DIR).
"""
import json
import os
import sys
import time

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

torch.set_num_threads(1)


def write(n, folder):
    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    y, x = np.mgrid[0:375, 0:500].astype(np.float64)
    for i in range(n):
        base = np.stack([np.sin(x / (5 + i % 7)) * 90 + 128, np.cos(y / 9.0) * 90 + 128, (x + y + i) % 256], -1)
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, f"{i:04d}.jpg"), quality=90)


def main():
    folder = sys.argv[1]
    if "--write" in sys.argv:
        write(int(sys.argv[sys.argv.index("--write") + 1]), folder)
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".jpg"))
    transform = transforms.Compose([
        transforms.Resize(256, interpolation=3),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        batch = torch.stack([transform(Image.open(f).convert("RGB")) for f in files])
        best = max(best, len(files) / (time.perf_counter() - t0))
    assert batch.shape == (len(files), 3, 224, 224)
    print(json.dumps({"images_per_s": best}))


if __name__ == "__main__":
    main()
