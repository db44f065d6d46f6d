#!/usr/bin/python3
"""Writes the fine-tuning parity fixture, tests/fixtures/finetune.safetensors.

Run with Debian's PyTorch: /usr/bin/python3 scripts/gen_finetune_fixtures.py

Two steps of the fine-tuning recipe of lib/eval/finetune.ts in PyTorch: the official-layout ViT of
gen_fixtures.py with an nn.Linear head on its CLS feature, BEiT's layer-wise learning-rate decay as parameter
groups (get_parameter_groups of BEiT's optim_factory: layer id 0 for the embeddings, i + 1 for block i,
depth + 1 for the final norm and the head; scale = decay ** (depth + 1 - id); no weight decay for 1-D weights,
biases, cls_token and pos_embed), torch.optim.AdamW with each group's lr = lr x scale, and
nn.CrossEntropyLoss(label_smoothing). Drop path is 0 (its random stream is PyTorch's global one); the images
are given already prepared (the augmentation is tested on its own). After each step, the weights and AdamW's
moments, so that each step can be checked from PyTorch's state before it.
"""
import json
import os
import sys

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from gen_fixtures import VisionTransformer, save_safetensors  # noqa: E402

torch.set_num_threads(1)
OUT = os.path.join(HERE, "..", "tests", "fixtures", "finetune.safetensors")
CFG = dict(img_size=16, patch_size=4, in_chans=3, embed_dim=32, depth=2, num_heads=2)
HYPER = dict(classes=5, batch=6, lr=[1e-2, 8e-3], weight_decay=0.3, layer_decay=0.65, smoothing=0.1, steps=2)


class Finetuned(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = VisionTransformer(**CFG)
        self.head = nn.Linear(CFG["embed_dim"], HYPER["classes"])
        with torch.no_grad():
            self.head.weight.normal_(0, 0.01)
            self.head.bias.zero_()

    def forward(self, x):
        return self.head(self.backbone(x))


def layer_id(name, depth):
    """BEiT's get_num_layer_for_vit, with the head and the final norm in the top layer."""
    if name.startswith("backbone."):
        k = name[len("backbone."):]
        if k in ("cls_token", "pos_embed") or k.startswith("patch_embed"):
            return 0
        if k.startswith("blocks."):
            return int(k.split(".")[1]) + 1
    return depth + 1


def parameter_groups(model, weight_decay, layer_decay):
    depth = CFG["depth"]
    groups = {}
    for name, p in model.named_parameters():
        no_decay = p.ndim == 1 or name.endswith(".bias") or name.split(".")[-1] in ("cls_token", "pos_embed")
        lid = layer_id(name, depth)
        key = f"layer_{lid}_{'no_decay' if no_decay else 'decay'}"
        if key not in groups:
            groups[key] = {"params": [], "names": [], "weight_decay": 0.0 if no_decay else weight_decay,
                           "lr_scale": layer_decay ** (depth + 1 - lid)}
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return list(groups.values())


def main():
    torch.manual_seed(0)
    h = HYPER
    model = Finetuned()
    groups = parameter_groups(model, h["weight_decay"], h["layer_decay"])
    opt = torch.optim.AdamW([{k: v for k, v in g.items() if k != "names"} for g in groups])
    loss_fn = nn.CrossEntropyLoss(label_smoothing=h["smoothing"])
    gen = torch.Generator().manual_seed(1)
    out = {}
    for k, v in model.state_dict().items():
        out[f"init.{k}"] = v.clone()
    for s in range(h["steps"]):
        x = torch.randn(h["batch"], CFG["in_chans"], CFG["img_size"], CFG["img_size"], generator=gen)
        y = torch.randint(0, h["classes"], (h["batch"],), generator=gen)
        out[f"input.{s}"] = x
        out[f"labels.{s}"] = y
        for g in opt.param_groups:
            g["lr"] = h["lr"][s] * g["lr_scale"]
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        out[f"loss.{s}"] = loss.detach().reshape([])
        for k, v in model.state_dict().items():
            out[f"step{s}.{k}"] = v.clone()
        for name, p in model.named_parameters():
            st = opt.state[p]
            out[f"adam{s}.exp_avg.{name}"] = st["exp_avg"].clone()
            out[f"adam{s}.exp_avg_sq.{name}"] = st["exp_avg_sq"].clone()
    meta = {"cfg": json.dumps(CFG), "hyper": json.dumps(HYPER), "torch": torch.__version__}
    save_safetensors(OUT, out, meta)
    print(f"wrote {len(out)} tensors to tests/fixtures/finetune.safetensors")


if __name__ == "__main__":
    main()
