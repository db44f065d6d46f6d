#!/usr/bin/python3
"""The PyTorch side of bench/compare_train_step.ts: the same DINO step in eager mode,
built from the official-layout modules of scripts/gen_fixtures.py.

usage: train_step_torch.py THREADS STEPS [fp32|bf16] [TRACE.json]
bf16 is CPU autocast (torch.autocast("cpu", dtype=torch.bfloat16)) around both forwards and the loss.
Prints one line of JSON: seconds per step (each, after one warmup step) and the peak resident memory.
With TRACE.json, one more step runs under torch.autograd.profiler.profile(use_kineto=False), written there as a
Chrome trace (bench/profile_step.ts reads it).
STEPS "serve" takes turns with the other sides (bench/bench_step.ts's `StepServer`): after the warmup step it prints
{"ready": true}, then runs a step for each byte read from stdin, printing {"seconds": ...}, and at the end of stdin
prints {"peakMB": ...}.
"""
import contextlib
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import torch  # noqa: E402
from gen_fixtures import (DINOHead, DINOLoss, MultiCropWrapper, VisionTransformer, cancel_gradients_last_layer,  # noqa: E402
                          clip_gradients, get_params_groups)

threads, serve = int(sys.argv[1]), sys.argv[2] == "serve"
steps = 0 if serve else int(sys.argv[2])
precision = sys.argv[3] if len(sys.argv) > 3 else "fp32"
autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext
torch.set_num_threads(threads)
torch.manual_seed(0)
B, K = 64, 4096


def build():
    vit = VisionTransformer(img_size=28, patch_size=4, in_chans=1, embed_dim=192, depth=12, num_heads=3)
    return MultiCropWrapper(vit, DINOHead(192, K))


student, teacher = build(), build()
teacher.load_state_dict(student.state_dict())
for p in teacher.parameters():
    p.requires_grad = False
loss_fn = DINOLoss(K, 8, 0.04, 0.04, 0, 100)
opt = torch.optim.AdamW(get_params_groups(student))
g = torch.Generator().manual_seed(1)
views = [torch.randn(B, 1, 28, 28, generator=g) for _ in range(2)] + [torch.randn(B, 1, 12, 12, generator=g) for _ in range(6)]


def step(it):
    for i, group in enumerate(opt.param_groups):
        group["lr"] = 5e-4 * B / 256
        if i == 0:
            group["weight_decay"] = 0.04
    with autocast():
        teacher_output = teacher(views[:2])
        student_output = student(views)
        loss = loss_fn(student_output, teacher_output, 0)
    opt.zero_grad()
    loss.backward()
    clip_gradients(student, 3.0)
    cancel_gradients_last_layer(1, student, 1)
    opt.step()
    with torch.no_grad():
        m = 0.996
        for pq, pk in zip(student.parameters(), teacher.parameters()):
            pk.data.mul_(m).add_((1 - m) * pq.detach().data)
    return loss.item()


step(0)
if serve:
    print(json.dumps({"ready": True}), flush=True)
    while sys.stdin.buffer.read(1):
        t0 = time.perf_counter()
        step(1)
        print(json.dumps({"seconds": time.perf_counter() - t0}), flush=True)
    print(json.dumps({"peakMB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    sys.exit(0)
times = []
for i in range(steps):
    t0 = time.perf_counter()
    step(i + 1)
    times.append(time.perf_counter() - t0)
report = {"times": times, "peakMB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
if len(sys.argv) > 4:
    with torch.autograd.profiler.profile(use_kineto=False) as prof:
        t0 = time.perf_counter()
        step(steps + 1)
        report["profiled"] = time.perf_counter() - t0
    prof.export_chrome_trace(sys.argv[4])
print(json.dumps(report))
