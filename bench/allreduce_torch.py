#!/usr/bin/python3
"""One rank of bench/compare_distributed.ts's all-reduce benchmark (PyTorch's side): torch.distributed with Gloo
(env://: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), gradients of the given shapes averaged as DDP does: flattened
into 25 MB buckets, one asynchronous all_reduce per bucket, then divided by the world size and split back.

usage: allreduce_torch.py SHAPES_JSON CALLS
Rank 0 prints one line of JSON: the seconds of each call, after two warmups.
"""
import json
import sys
import time

import torch
import torch.distributed as dist

shapes, calls = json.loads(sys.argv[1]), int(sys.argv[2])
dist.init_process_group("gloo", init_method="env://")
world, rank = dist.get_world_size(), dist.get_rank()
grads = [torch.ones(s) for s in shapes]
BUCKET = 25 * 1024 * 1024


def allreduce_mean(ts):
    buckets, current, size = [], [], 0
    for t in ts:
        if current and size + t.numel() * t.element_size() > BUCKET:
            buckets.append(current)
            current, size = [], 0
        current.append(t)
        size += t.numel() * t.element_size()
    if current:
        buckets.append(current)
    flats = [torch.cat([t.reshape(-1) for t in b]) for b in buckets]
    works = [dist.all_reduce(f, async_op=True) for f in flats]
    for w in works:
        w.wait()
    out = []
    for f, b in zip(flats, buckets):
        f.div_(world)
        out.extend(x.view_as(t) for x, t in zip(f.split([t.numel() for t in b]), b))
    return out


times = []
for i in range(calls + 2):
    t0 = time.perf_counter()
    allreduce_mean(grads)
    if i >= 2:
        times.append(time.perf_counter() - t0)
dist.destroy_process_group()
if rank == 0:
    print(json.dumps(times))
