#!/usr/bin/python3
"""The PyTorch side of bench/compare_inference.ts: feature extraction in eager mode, no grad, evaluation mode, on
the weights the TypeScript side wrote: the official-layout ViT of scripts/gen_fixtures.py and torchvision's
resnet50 with fc = Identity.

usage: inference_torch.py WEIGHTS.safetensors THREADS ITERS DEVICE
WEIGHTS holds "vit.*" (ViT-S/16 backbone keys), "resnet.*" (resnet50 keys) and "input" [B, 3, 224, 224].
Prints one line of JSON: per model, the seconds of each timed batch (after one warmup batch) and the features of the
input batch's first 4 images, to check that both sides computed the same thing.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torchvision  # noqa: E402
from gen_fixtures import VisionTransformer, load_safetensors  # noqa: E402

path, threads, iters, device = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(threads)
tensors, _ = load_safetensors(path)
x = tensors["input"].to(device)


def part(prefix):
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


vit = VisionTransformer(img_size=224, patch_size=16, in_chans=3, embed_dim=384, depth=12, num_heads=6)
vit.load_state_dict(part("vit."), strict=True)
resnet = torchvision.models.resnet50()
resnet.fc = nn.Identity()
resnet.load_state_dict(part("resnet."), strict=True)

out = {}
with torch.no_grad():
    for name, model in [("vit_small/16", vit), ("resnet50", resnet)]:
        model.to(device).eval()
        model(x)  # warmup
        if device == "cuda":
            torch.cuda.synchronize()
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            y = model(x)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        out[name] = {"seconds": times, "features": y[:4].cpu().flatten().tolist()}
print(json.dumps(out))
