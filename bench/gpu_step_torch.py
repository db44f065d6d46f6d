#!/usr/bin/env python3
"""The PyTorch side of bench/compare_gpu_step.ts: the official DINO step in eager mode on one device,
built from the official-layout modules of scripts/gen_fixtures.py, with the official mixed precision
(main_dino.py: torch.cuda.amp.autocast + GradScaler for --use_fp16 true; bf16 as autocast without a scaler).

usage:
  gpu_step_torch.py step DEVICE PRECISION STEPS TF32 SIZES_JSON
      PRECISION fp32 | bf16 | fp16; TF32 0 | 1; SIZES_JSON as compare_gpu_step.ts passes it.
      Prints one line of JSON: seconds per step (after one warmup step), torch's peak memory, the loss.
  gpu_step_torch.py augment WORKERS IMAGES LOCAL_CROPS
      The official DataAugmentationDINO (bench/augment_torchvision.py) on WORKERS processes, as a DataLoader's
      workers would run it. Prints one line of JSON: images per second.
"""
import contextlib
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scripts"))


def step_bench(device, precision, steps, tf32, sizes):
    import torch
    from gen_fixtures import (DINOHead, DINOLoss, MultiCropWrapper, VisionTransformer, cancel_gradients_last_layer,
                              clip_gradients, get_params_groups)

    cuda = device.startswith("cuda")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    torch.manual_seed(0)
    B, K, D = sizes["batch"], sizes["outDim"], sizes["embedDim"]

    def build():
        vit = VisionTransformer(img_size=sizes["global"], patch_size=sizes["patch"], in_chans=3, embed_dim=D,
                                depth=sizes["depth"], num_heads=sizes["heads"])
        return MultiCropWrapper(vit, DINOHead(D, K, norm_last_layer=True))

    student, teacher = build().to(device), build().to(device)
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    ncrops = 2 + sizes["locals"]
    loss_fn = DINOLoss(K, ncrops, 0.04, 0.04, 0, 100).to(device)
    opt = torch.optim.AdamW(get_params_groups(student))
    g = torch.Generator().manual_seed(1)
    views = [torch.randn(B, 3, sizes["global"], sizes["global"], generator=g) for _ in range(2)]
    views += [torch.randn(B, 3, sizes["local"], sizes["local"], generator=g) for _ in range(sizes["locals"])]
    views = [v.to(device) for v in views]
    scaler = torch.cuda.amp.GradScaler() if precision == "fp16" and cuda else None
    low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    device_type = "cuda" if cuda else "cpu"

    def step(it):
        for i, group in enumerate(opt.param_groups):
            group["lr"] = 5e-4 * B / 256
            if i == 0:
                group["weight_decay"] = 0.04
        autocast = torch.autocast(device_type=device_type, dtype=low) if low is not None else contextlib.nullcontext()
        with autocast:
            teacher_output = teacher(views[:2])
            student_output = student(views)
            loss = loss_fn(student_output, teacher_output, 0)
        opt.zero_grad()
        if scaler is None:
            loss.backward()
            clip_gradients(student, 3.0)
            cancel_gradients_last_layer(1, student, 1)
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            clip_gradients(student, 3.0)
            cancel_gradients_last_layer(1, student, 1)
            scaler.step(opt)
            scaler.update()
        with torch.no_grad():
            m = 0.996
            for pq, pk in zip(student.parameters(), teacher.parameters()):
                pk.data.mul_(m).add_((1 - m) * pq.detach().data)
        return loss.item()  # synchronises, as this project's step does with its metrics

    step(0)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, loss = [], 0.0
    for i in range(steps):
        t0 = time.perf_counter()
        loss = step(i + 1)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    out = {"times": times, "loss": loss, "torch": torch.__version__}
    if cuda:
        out["max_allocated"] = torch.cuda.max_memory_allocated()
        out["max_reserved"] = torch.cuda.max_memory_reserved()
        out["device_name"] = torch.cuda.get_device_name()
    print(json.dumps(out))


def _augment_worker(args):
    n, local, seed = args
    import random

    import numpy as np
    import torch
    from PIL import Image
    torch.set_num_threads(1)
    sys.argv = [sys.argv[0], "0", str(local)]  # augment_torchvision.py reads its argv at import
    import importlib.util
    spec = importlib.util.spec_from_file_location("augment_torchvision", os.path.join(HERE, "augment_torchvision.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    random.seed(seed)
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)) for _ in range(n)]
    aug = module.DataAugmentationDINO((0.4, 1.0), (0.05, 0.4), local)
    aug(images[0])
    t0 = time.perf_counter()
    for img in images:
        aug(img)
    return n, time.perf_counter() - t0


def augment_bench(workers, n, local):
    import multiprocessing as mp
    with mp.get_context("fork").Pool(workers) as pool:
        pool.map(_augment_worker, [(2, local, i) for i in range(workers)])  # warm the workers' imports
        t0 = time.perf_counter()
        results = pool.map(_augment_worker, [(n, local, 100 + i) for i in range(workers)])
        wall = time.perf_counter() - t0
    total = sum(r[0] for r in results)
    # Each worker's own rate summed: the import and image set-up inside the timed map are left out.
    rate = sum(r[0] / r[1] for r in results)
    print(json.dumps({"images_per_s": rate, "wall_images_per_s": total / wall, "workers": workers,
                      "views_per_image": 2 + local}))


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "step":
        step_bench(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1", json.loads(sys.argv[6]))
    elif what == "augment":
        augment_bench(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        raise SystemExit(__doc__)
