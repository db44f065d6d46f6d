#!/usr/bin/python3
"""Writes the `.pth` fixtures under tests/fixtures/pth/ with torch.save, as the
official DINO repository publishes its weights.

Run with Debian's PyTorch: /usr/bin/python3 scripts/gen_pth_fixtures.py

- backbone.pth: a bare backbone state dict (as dino_deitsmall16_pretrain.pth).
- full.pth: a full checkpoint as main_dino.py saves it: student (DDP, so
  `module.` keys), teacher, optimizer (AdamW after one step), epoch, args
  (an argparse.Namespace) and dino_loss (the center).
- student_only.pth: a checkpoint holding only the student (DDP keys) and the epoch, whose default --checkpoint-key
  (teacher) must be refused naming "student".
- kinds.pth: tensors of every dtype the reader takes, and views (storage
  offsets, transposes, shared storages).
- legacy.pth: the pre-1.6 format, which must be refused with how to convert.
- evil.pth: a zip whose pickle calls os.system, which must be refused unrun.
- script.pth: a TorchScript archive (torch.jit.save), which must be refused with how to save its weights.
- expected.safetensors: the features PyTorch computes for a fixed input with
  the teacher and the student, and kinds.pth's tensors, to compare against.
"""
import argparse
import collections
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_fixtures import DINOHead, MultiCropWrapper, VisionTransformer, get_params_groups, save_safetensors  # noqa: E402

torch.set_num_threads(1)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "pth")


class Evil:
    """Unpickling this in Python would run a shell command."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/dino-pth-evil-ran",))


def network(seed):
    torch.manual_seed(seed)
    backbone = VisionTransformer(img_size=32, patch_size=8, in_chans=3, embed_dim=24, depth=2, num_heads=3)
    head = DINOHead(24, 64, hidden_dim=48, bottleneck_dim=16)
    return MultiCropWrapper(backbone, head)


def main():
    os.makedirs(OUT, exist_ok=True)
    student, teacher = network(0), network(1)
    args = argparse.Namespace(
        arch="vit_tiny", patch_size=8, out_dim=64, norm_last_layer=True, lr=0.0005, use_fp16=False,
        global_crops_scale=(0.4, 1.0), local_crops_number=8, data_path="/path/to/imagenet/train", seed=0,
        output_dir=".", dist_url="env://", momentum_teacher=0.996,
    )
    # One AdamW step, so the optimizer state holds tensors (exp_avg, exp_avg_sq) and ints.
    optimizer = torch.optim.AdamW(get_params_groups(student))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    student.head(student.backbone(x)).sum().backward()
    optimizer.step()

    class DDP(torch.nn.Module):  # DistributedDataParallel's state dict: every key under module.
        def __init__(self, module):
            super().__init__()
            self.module = module

    torch.save(teacher.backbone.state_dict(), os.path.join(OUT, "backbone.pth"))
    torch.save({
        "student": DDP(student).state_dict(),
        "teacher": teacher.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": 3,
        "args": args,
        "dino_loss": {"center": torch.full((1, 64), 0.25)},
    }, os.path.join(OUT, "full.pth"))
    torch.save({"student": DDP(student).state_dict(), "epoch": 3}, os.path.join(OUT, "student_only.pth"))

    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    kinds = collections.OrderedDict([
        ("f32", base), ("offset", base[1:, 2:]), ("transposed", base.t()), ("shared", base[2]),
        ("f16", torch.linspace(-2, 2, 5).half()), ("bf16", torch.linspace(-2, 2, 5).bfloat16()),
        ("f64", torch.linspace(-2, 2, 5).double()), ("i64", torch.arange(-3, 3)), ("i32", torch.arange(4, dtype=torch.int32)),
        ("u8", torch.arange(250, 256, dtype=torch.uint8)), ("bool", torch.tensor([True, False, True])),
        ("scalar", torch.tensor(7.5)), ("empty", torch.zeros(0, 3)),
        ("param", torch.nn.Parameter(torch.ones(2))),
    ])
    torch.save(kinds, os.path.join(OUT, "kinds.pth"))
    torch.save({"w": torch.ones(2)}, os.path.join(OUT, "legacy.pth"), _use_new_zipfile_serialization=False)
    torch.save({"w": torch.ones(2), "payload": Evil()}, os.path.join(OUT, "evil.pth"))
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), os.path.join(OUT, "script.pth"))

    with torch.no_grad():
        expected = {
            "teacher_features": teacher.backbone(x), "student_features": student.backbone(x),
            "teacher_output": teacher.head(teacher.backbone(x)), "input": x,
        }
    for k, v in kinds.items():
        expected[f"kinds.{k}"] = v.detach().float().contiguous() if v.dtype in (torch.float16, torch.bfloat16) else v.detach().contiguous()
    expected = {k: (v.to(torch.int64) if v.dtype in (torch.bool, torch.int32) else v) for k, v in expected.items()}
    save_safetensors(os.path.join(OUT, "expected.safetensors"), expected, {})


if __name__ == "__main__":
    main()
