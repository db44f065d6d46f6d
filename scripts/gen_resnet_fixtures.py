#!/usr/bin/python3
"""Writes the ResNet and LARS parity fixtures under tests/fixtures/resnet/.

Run with Debian's PyTorch: /usr/bin/python3 scripts/gen_resnet_fixtures.py
Check that a checkpoint's teacher backbone loads into torchvision, strictly:
    /usr/bin/python3 scripts/gen_resnet_fixtures.py check-load CHECKPOINT.safetensors resnet50

The networks are torchvision's own (torchvision.models.resnetNN with fc =
nn.Identity(), as the official MultiCropWrapper sets it), the head, wrapper,
loss, schedules and clipping the official ones (from gen_fixtures.py), and the
optimizer the official utils.LARS, copied verbatim. A ResNet-18 is 11.7 M
weights, too many to check in, so every weight is made by a formula that
TypeScript reproduces bit for bit (integers, one division, one multiply-add,
rounded to f32): value = offset + scale * u(i, k), where u on [-0.5, 0.5) is a
32-bit integer hash (lowbias32) of i + k * 0x9E3779B9 and k the key's index in the
spec list saved in the metadata. A hash, not a sequence that repeats (an earlier
Weyl sequence with period 65,521 made the wide layers' weights correlated, and
PyTorch's own outputs then moved with the thread count).
Tensors of more than 4096 elements are stored as every stride-th element of
their flattened form (about 2048 of them, 512 in the training fixture), with
their exact sum of squares.
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from gen_fixtures import (  # noqa: E402  (the official-layout DINO pieces)
    DINOHead,
    DINOLoss,
    MultiCropWrapper,
    cancel_gradients_last_layer,
    clip_gradients,
    cosine_scheduler,
    get_params_groups,
    load_safetensors,
    save_safetensors,
)

torch.set_num_threads(1)
OUT = os.path.join(HERE, "..", "tests", "fixtures", "resnet")
ARCHS = ["resnet18", "resnet34", "resnet50", "resnet101"]
MASK = np.uint64(0xFFFFFFFF)


class LARS(torch.optim.Optimizer):
    """
    Almost copy-paste from https://github.com/facebookresearch/barlowtwins/blob/main/main.py
    (facebookresearch/dino utils.py, verbatim)
    """
    def __init__(self, params, lr=0, weight_decay=0, momentum=0.9, eta=0.001,
                 weight_decay_filter=None, lars_adaptation_filter=None):
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum,
                        eta=eta, weight_decay_filter=weight_decay_filter,
                        lars_adaptation_filter=lars_adaptation_filter)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            for p in g['params']:
                dp = p.grad

                if dp is None:
                    continue

                if p.ndim != 1:
                    dp = dp.add(p, alpha=g['weight_decay'])

                if p.ndim != 1:
                    param_norm = torch.norm(p)
                    update_norm = torch.norm(dp)
                    one = torch.ones_like(param_norm)
                    q = torch.where(param_norm > 0.,
                                    torch.where(update_norm > 0,
                                                (g['eta'] * param_norm / update_norm), one), one)
                    dp = dp.mul(q)

                param_state = self.state[p]
                if 'mu' not in param_state:
                    param_state['mu'] = torch.zeros_like(p)
                mu = param_state['mu']
                mu.mul_(g['momentum']).add_(dp)

                p.add_(mu, alpha=-g['lr'])


# ---- weights by formula ----------------------------------------------------------
def pattern(shape, k, scale=1.0, offset=0.0):
    """offset + scale * u(i, k), u on [-0.5, 0.5) from 24 bits of a hash, computed exactly in f64 then rounded to f32."""
    n = int(np.prod(shape)) if len(shape) else 1
    x = (np.arange(n, dtype=np.uint64) + np.uint64(k) * np.uint64(0x9E3779B9)) & MASK
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x7FEB352D)) & MASK
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x846CA68B)) & MASK
    x ^= x >> np.uint64(16)
    u = (x >> np.uint64(8)).astype(np.float64) / 16777216.0 - 0.5
    return torch.from_numpy((offset + scale * u).astype(np.float32).reshape(shape))


def spec_for(name, t, branch_ends=()):
    """[scale, offset] of a trainable tensor, or None to keep it (buffers, the fixed weight_g)."""
    if not t.is_floating_point() or name.endswith(("running_mean", "running_var", "weight_g")):
        return None
    if name in branch_ends:
        # The last batch norm of a residual branch scaled down (torchvision's zero_init_residual, softened): with
        # scales around 1 the gradients grow with depth, and PyTorch's own gradients then differ by 1e-2 between its
        # AVX2 and default kernels; at 0.2 by under 1e-5.
        return [0.1, 0.2]
    root12 = math.sqrt(12)  # u has variance 1/12
    if t.ndim == 4:  # conv: torchvision's kaiming_normal_(fan_out, relu) spread
        return [root12 * math.sqrt(2 / (t.shape[0] * t.shape[2] * t.shape[3])), 0.0]
    if t.ndim == 2:  # Linear (head): trunc_normal(0.02) spread
        return [root12 * 0.02, 0.0]
    if name.endswith("bias"):
        return [0.2, 0.0]
    return [0.4, 1.0]  # batch-norm scales around 1


def fill(model):
    """Sets every trainable tensor by formula; returns the specs as [key, scale, offset]."""
    specs = []
    last = {torchvision.models.resnet.BasicBlock: "bn2", torchvision.models.resnet.Bottleneck: "bn3"}
    branch_ends = {f"{n}.{last[type(m)]}.weight" for n, m in model.named_modules() if type(m) in last}
    with torch.no_grad():
        for name, t in model.state_dict().items():
            s = spec_for(name, t, branch_ends)
            if s is None:
                continue
            t.copy_(pattern(list(t.shape), len(specs), *s))
            specs.append([name, s[0], s[1]])
    return specs


def resnet(arch):
    m = torchvision.models.__dict__[arch]()
    m.fc = nn.Identity()
    return m


def sampled(out, name, t, limit):
    """The whole tensor when small, else every stride-th element and the sum of squares."""
    t = t.detach().float()
    if t.numel() <= 4096:
        out[name] = t.clone()
        return
    stride = math.ceil(t.numel() / limit)
    out[f"{name}.sub"] = t.flatten()[::stride].clone()
    out[f"{name}.sumsq"] = t.double().pow(2).sum().reshape([])


# ---- the fixtures ----------------------------------------------------------------
def keys():
    """Every torchvision ResNet's state_dict keys and shapes, with fc = Identity (no fc keys)."""
    return {arch: [[k, list(v.shape)] for k, v in resnet(arch).state_dict().items()] for arch in ARCHS}


def forward_parity():
    """ResNet-18: training-mode forward, every gradient and the moved buffers; then evaluation mode. The metadata
    also holds every depth's keys and shapes."""
    model = resnet("resnet18")
    specs = fill(model)
    x = pattern([4, 3, 40, 40], 1000, math.sqrt(12)).requires_grad_(True)
    r = pattern([4, 512], 1001, 1.0)
    out = {"x": x.detach().clone(), "r": r}
    model.train()
    y = model(x)
    (y * r).sum().backward()
    out["train.output"] = y.detach().clone()
    out["train.grad.x"] = x.grad.clone()
    for n, p in model.named_parameters():
        sampled(out, f"train.grad.{n}", p.grad, 2048)
    for n, b in model.named_buffers():
        out[f"train.buffer.{n}"] = b.clone()
    model.eval()
    with torch.no_grad():
        out["eval.output"] = model(x)
    meta = {"specs": json.dumps(specs), "keys": json.dumps(keys(), separators=(",", ":")), "torch": torch.__version__,
            "torchvision": torchvision.__version__}
    save_safetensors(os.path.join(OUT, "resnet18.safetensors"), out, meta)
    print(f"wrote {len(out)} tensors to tests/fixtures/resnet/resnet18.safetensors")


def forward_parity_50():
    """ResNet-50 (Bottleneck blocks): the same checks as the ResNet-18's, every large tensor sampled. 16 images, so
    that training-mode batch norm over layer4's 1 x 1 maps has 16 values a channel (with 2, each is sent to about +-1
    and the summation order decides the sign: PyTorch's outputs then differ between 1 and 2 threads)."""
    model = resnet("resnet50")
    specs = fill(model)
    x = pattern([16, 3, 32, 32], 1000, math.sqrt(12)).requires_grad_(True)
    r = pattern([16, 2048], 1001, 1.0)
    out = {"x": x.detach().clone(), "r": r}
    model.train()
    y = model(x)
    (y * r).sum().backward()
    out["train.output"] = y.detach().clone()
    out["train.grad.x"] = x.grad.clone()
    for n, p in model.named_parameters():
        sampled(out, f"train.grad.{n}", p.grad, 256)
    for n, b in model.named_buffers():
        if b.is_floating_point():
            sampled(out, f"train.buffer.{n}", b, 256)
    model.eval()
    with torch.no_grad():
        out["eval.output"] = model(x)
    meta = {"specs": json.dumps(specs), "torch": torch.__version__, "torchvision": torchvision.__version__}
    save_safetensors(os.path.join(OUT, "resnet50.safetensors"), out, meta)
    print(f"wrote {len(out)} tensors to tests/fixtures/resnet/resnet50.safetensors")


class LarsToy(nn.Module):
    """Parameters of every kind LARS tells apart: matrices, convs, biases, norm scales, all-zero weights."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 6)
        self.conv = nn.Conv2d(3, 4, 2)
        self.norm = nn.LayerNorm(5)
        self.zero = nn.Parameter(torch.zeros(3, 3))
        self.frozen = nn.Parameter(torch.zeros(2, 2))


def lars_parity():
    """Three utils.LARS steps with DINO's parameter groups and schedules; one parameter has no gradient at step 1."""
    model = LarsToy()
    with torch.no_grad():
        for k, (n, p) in enumerate(model.named_parameters()):
            if n != "zero":
                p.copy_(pattern(list(p.shape), 50 + k, 2.0, 0.1))
    out = {}
    for n, p in model.named_parameters():
        out[f"init.{n}"] = p.detach().clone()
    opt = LARS(get_params_groups(model))
    lrs, wds = [0.5, 0.3, 0.1], [0.04, 0.2, 0.4]
    for s in range(3):
        for i, group in enumerate(opt.param_groups):
            group["lr"] = lrs[s]
            if i == 0:
                group["weight_decay"] = wds[s]
        for k, (n, p) in enumerate(model.named_parameters()):
            p.grad = pattern(list(p.shape), 100 * (s + 1) + k, 1.0)
            out[f"step{s}.grad.{n}"] = p.grad.clone()
        model.frozen.grad = None if s == 0 else model.frozen.grad
        opt.step()
        for n, p in model.named_parameters():
            out[f"step{s}.param.{n}"] = p.detach().clone()
            if "mu" in opt.state[p]:
                out[f"step{s}.mu.{n}"] = opt.state[p]["mu"].clone()
    meta = {"lr": json.dumps(lrs), "weight_decay": json.dumps(wds), "torch": torch.__version__}
    save_safetensors(os.path.join(OUT, "lars.safetensors"), out, meta)
    print(f"wrote {len(out)} tensors to tests/fixtures/resnet/lars.safetensors")


HEAD = dict(out_dim=64, hidden_dim=48, bottleneck_dim=16, use_bn=True, norm_last_layer=True)
HYPER = dict(
    arch="resnet18", batch=3, local_crops=2, global_size=32, local_size=16, epochs=4, iters_per_epoch=1,
    warmup_epochs=1, lr=3.0, min_lr=1e-6, weight_decay=0.04, weight_decay_end=0.4, momentum_teacher=0.9,
    clip_grad=3.0, freeze_last_layer=2, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=2,
    first_iteration=1, steps=3,
)


def dino_resnet_parity():
    """Three official DINO iterations (train_one_epoch) on a ResNet-18 with a batch-norm head and LARS."""
    h = HYPER
    build = lambda: MultiCropWrapper(resnet(h["arch"]), DINOHead(512, **HEAD))  # noqa: E731
    student, teacher = build(), build()
    specs = fill(student)
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    student.train()
    teacher.train()  # the official code never puts the teacher in eval mode
    ncrops = 2 + h["local_crops"]
    loss_fn = DINOLoss(HEAD["out_dim"], ncrops, h["warmup_teacher_temp"], h["teacher_temp"],
                       h["warmup_teacher_temp_epochs"], h["epochs"])
    opt = LARS(get_params_groups(student))
    ipe = h["iters_per_epoch"]
    lr_s = cosine_scheduler(h["lr"] * h["batch"] / 256.0, h["min_lr"], h["epochs"], ipe, warmup_epochs=h["warmup_epochs"])
    wd_s = cosine_scheduler(h["weight_decay"], h["weight_decay_end"], h["epochs"], ipe)
    mom_s = cosine_scheduler(h["momentum_teacher"], 1, h["epochs"], ipe)
    sizes = [h["global_size"]] * 2 + [h["local_size"]] * h["local_crops"]
    out = {}
    for s in range(h["steps"]):
        images = [pattern([h["batch"], 3, z, z], 2000 + 10 * s + i, math.sqrt(12)) for i, z in enumerate(sizes)]
        it = h["first_iteration"] + s
        epoch = it // ipe
        for i, group in enumerate(opt.param_groups):
            group["lr"] = lr_s[it]
            if i == 0:
                group["weight_decay"] = wd_s[it]
        teacher_output = teacher(images[:2])
        student_output = student(images)
        loss = loss_fn(student_output, teacher_output, epoch)
        opt.zero_grad()
        loss.backward()
        clip_gradients(student, h["clip_grad"])
        cancel_gradients_last_layer(epoch, student, h["freeze_last_layer"])
        opt.step()
        with torch.no_grad():
            m = mom_s[it]
            for pq, pk in zip(student.parameters(), teacher.parameters()):
                pk.data.mul_(m).add_((1 - m) * pq.detach().data)
        tag = f"after{s + 1}"
        out[f"{tag}.loss"] = loss.detach().reshape([])
        out[f"{tag}.center"] = loss_fn.center.clone()
        for net, model in [("student", student), ("teacher", teacher)]:
            for n, b in model.named_buffers():
                out[f"{tag}.{net}.{n}"] = b.clone()
            for n, p in model.named_parameters():
                sampled(out, f"{tag}.{net}.{n}", p, 512)
        for n, p in student.named_parameters():
            if p in opt.state:
                sampled(out, f"{tag}.mu.{n}", opt.state[p]["mu"], 512)
    meta = {"specs": json.dumps(specs), "head": json.dumps(HEAD), "hyper": json.dumps(HYPER), "torch": torch.__version__}
    save_safetensors(os.path.join(OUT, "dino_resnet18.safetensors"), out, meta)
    print(f"wrote {len(out)} tensors to tests/fixtures/resnet/dino_resnet18.safetensors")


def check_load(path, arch):
    """A checkpoint's teacher.backbone.* keys into torchvision's ResNet with fc = Identity, strict=True."""
    tensors, _ = load_safetensors(path)
    prefix = "teacher.backbone."
    backbone = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    model = resnet(arch)
    model.load_state_dict(backbone, strict=True)
    model.eval()
    with torch.no_grad():
        y = model(torch.zeros(1, 3, 64, 64))
    print(f"torchvision.models.{arch}() with fc = Identity: load_state_dict of {len(backbone)} teacher.backbone "
          f"tensors, strict=True; output {list(y.shape)}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "check-load":
        check_load(sys.argv[2], sys.argv[3])
    else:
        os.makedirs(OUT, exist_ok=True)
        forward_parity()
        forward_parity_50()
        lars_parity()
        dino_resnet_parity()
