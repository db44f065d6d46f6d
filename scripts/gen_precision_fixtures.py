#!/usr/bin/python3
"""Writes tests/fixtures/precision.safetensors: PyTorch's CPU autocast bf16 gradients of
the parity scenario's first step, beside the fp32 ones, for tests/precision_test.ts.

Run with Debian's PyTorch (1.13): /usr/bin/python3 scripts/gen_precision_fixtures.py

The network, weights and crops are those of tests/fixtures/parity.safetensors (written
by scripts/gen_fixtures.py, whose official-layout modules are used here): its initial
weights, the first step's crops, the teacher a copy of the student, a zero center and
the first step's teacher temperature. Both forwards and the loss run under
torch.autocast("cpu", dtype=torch.bfloat16), as the official loop wraps them in
torch.cuda.amp.autocast. PyTorch 1.13's CPU autocast casts only the matrix products
(linear, conv, matmul) to bf16 and leaves softmax, log-softmax and GELU to whatever
dtype reaches them, so its softmaxes and loss run in bf16 here, where CUDA's (and this
project's) run in fp32: the test compares the two within bf16 tolerance, not bit for bit.
"""
import json
import os

import numpy as np
import torch

from gen_fixtures import DINOLoss, OUT, build, load_safetensors, save_safetensors

torch.set_num_threads(1)


def main():
    tensors, meta = load_safetensors(os.path.join(OUT, "parity.safetensors"))
    h = json.loads(meta["hyper"])
    student, teacher = build(), build()
    student.load_state_dict({k[len("init."):]: v for k, v in tensors.items() if k.startswith("init.")})
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    ncrops = 2 + h["local_crops"]
    crops = [tensors[f"input.0.{i}"] for i in range(ncrops)]
    epoch = h["first_iteration"] // h["iters_per_epoch"]
    out, loss_values = {}, {}
    for name, precision in [("fp32", None), ("bf16", torch.bfloat16)]:
        loss_fn = DINOLoss(json.loads(meta["head"])["out_dim"], ncrops, h["warmup_teacher_temp"], h["teacher_temp"],
                           h["warmup_teacher_temp_epochs"], h["epochs"])
        student.zero_grad()
        with torch.autocast("cpu", dtype=precision or torch.bfloat16, enabled=precision is not None):
            teacher_output = teacher(crops[:2])
            student_output = student(crops)
            loss = loss_fn(student_output, teacher_output, epoch)
        loss.backward()
        loss_values[name] = float(loss)
        out[f"{name}.student_output"] = student_output.detach().float()
        for n, p in student.named_parameters():
            if p.grad is not None:
                out[f"{name}.grad.{n}"] = p.grad.detach().clone()
    teacher_temp = float(np.linspace(h["warmup_teacher_temp"], h["teacher_temp"], h["warmup_teacher_temp_epochs"])[epoch])
    meta_out = {"loss": json.dumps(loss_values), "epoch": epoch, "teacher_temp": teacher_temp, "torch": torch.__version__}
    save_safetensors(os.path.join(OUT, "precision.safetensors"), out, meta_out)
    print(f"wrote {len(out)} tensors to tests/fixtures/precision.safetensors; losses {loss_values}")


if __name__ == "__main__":
    main()
