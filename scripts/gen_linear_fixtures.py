#!/usr/bin/python3
"""Writes tests/fixtures/linear.safetensors: the parity fixture of the linear evaluation.

Run with Debian's PyTorch: /usr/bin/python3 scripts/gen_linear_fixtures.py

What the official `eval_linear.py` computes, on a tiny ViT (the official-layout
VisionTransformer of gen_fixtures.py) and a few fixed images and labels:

- the features the linear layer sees: the CLS tokens of the last `n` blocks,
  each after the final norm, concatenated; with `avgpool_patchtokens`, the mean
  of the last block's normed patch tokens too. The official line only runs with
  n = 1 (it joins the two as columns of a [B, D, 2] tensor, so CLS and mean end up
  interleaved channel by channel); with n > 1 it fails on the shapes, and this
  project appends the mean after the concatenated CLS tokens (as DINOv2 does).
  Both are written: `features_n1_avg` (the official line itself), `features_n2_avg`
  and `features_n2`.
- a few epochs of the official classifier training on `features_n2_avg`:
  LinearClassifier (nn.Linear, weight N(0, 0.01), bias 0), SGD(momentum 0.9,
  weight decay 0) at lr x batch / 256, CosineAnnealingLR(epochs, eta_min 0) stepped
  per epoch, nn.CrossEntropyLoss, batches without drop_last in a fixed order per
  epoch (written, so that TypeScript takes the same batches); then the
  validation's top-1 / top-5 (vit_utils.accuracy) and loss.
"""
import json
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_fixtures import OUT, VisionTransformer, save_safetensors  # noqa: E402

torch.set_num_threads(1)

CFG = dict(img_size=16, patch_size=4, in_chans=3, embed_dim=16, depth=3, num_heads=2)
TRAIN = dict(images=10, labels=6, n_last_blocks=2, avgpool=True, epochs=3, batch=4, lr=8.0)


class LinearClassifier(nn.Module):
    """The official classifier: one nn.Linear, weight N(0, 0.01), bias 0."""

    def __init__(self, dim, num_labels):
        super().__init__()
        self.num_labels = num_labels
        self.linear = nn.Linear(dim, num_labels)
        self.linear.weight.data.normal_(mean=0.0, std=0.01)
        self.linear.bias.data.zero_()

    def forward(self, x):
        return self.linear(x.view(x.size(0), -1))


def official_features(model, x, n, avgpool):
    """The official feature line, for the n = 1 case it runs with."""
    intermediate_output = model.get_intermediate_layers(x, n)
    output = torch.cat([o[:, 0] for o in intermediate_output], dim=-1)
    if avgpool:
        patches = torch.mean(intermediate_output[-1][:, 1:], dim=1)
        output = torch.cat((output.unsqueeze(-1), patches.unsqueeze(-1)), dim=-1)
        output = output.reshape(output.shape[0], -1)
    return output


def features(model, x, n, avgpool):
    """The official features where the official line runs (n = 1); the mean appended after the CLS tokens otherwise."""
    if n == 1:
        return official_features(model, x, n, avgpool)
    intermediate_output = model.get_intermediate_layers(x, n)
    output = torch.cat([o[:, 0] for o in intermediate_output], dim=-1)
    if avgpool:
        output = torch.cat((output, torch.mean(intermediate_output[-1][:, 1:], dim=1)), dim=-1)
    return output


def accuracy(output, target, topk=(1,)):
    """vit_utils.accuracy: percent of rows whose target is among the top k."""
    maxk = max(topk)
    _, pred = output.topk(maxk, 1, True, True)
    pred = pred.t()
    correct = pred.eq(target.reshape(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum(0) * 100.0 / target.size(0) for k in topk]


def main():
    torch.manual_seed(0)
    model = VisionTransformer(**CFG)
    model.eval()
    n_img = TRAIN["images"]
    images = torch.randn(n_img, CFG["in_chans"], CFG["img_size"], CFG["img_size"])
    labels = torch.randint(0, TRAIN["labels"], (n_img,))
    out = {f"backbone.{k}": v for k, v in model.state_dict().items()}
    out["images"] = images
    out["labels"] = labels
    with torch.no_grad():
        out["features_n1_avg"] = official_features(model, images, 1, True)
        out["features_n2_avg"] = features(model, images, 2, True)
        out["features_n2"] = features(model, images, 2, False)
        # The generalisation agrees with the official line where that runs.
        assert torch.equal(features(model, images, 1, False), official_features(model, images, 1, False))
    feats = out["features_n2_avg"]

    classifier = LinearClassifier(feats.shape[1], TRAIN["labels"])
    out["init.linear.weight"] = classifier.linear.weight.detach().clone()
    out["init.linear.bias"] = classifier.linear.bias.detach().clone()
    batch, epochs = TRAIN["batch"], TRAIN["epochs"]
    optimizer = torch.optim.SGD(classifier.parameters(), TRAIN["lr"] * batch / 256.0, momentum=0.9, weight_decay=0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs, eta_min=0)
    order_gen = torch.Generator().manual_seed(1)
    orders, lrs, losses = [], [], []
    for _ in range(epochs):
        classifier.train()
        order = torch.randperm(n_img, generator=order_gen)
        orders.append(order)
        lrs.append(optimizer.param_groups[0]["lr"])
        for start in range(0, n_img, batch):  # no drop_last, as the official DataLoader
            idx = order[start:start + batch]
            loss = nn.CrossEntropyLoss()(classifier(feats[idx]), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        scheduler.step()
    out["orders"] = torch.stack(orders)
    out["lrs"] = torch.tensor(lrs, dtype=torch.float64)
    out["losses"] = torch.tensor(losses, dtype=torch.float64)
    out["final.linear.weight"] = classifier.linear.weight.detach().clone()
    out["final.linear.bias"] = classifier.linear.bias.detach().clone()
    out["momentum.linear.weight"] = optimizer.state[classifier.linear.weight]["momentum_buffer"]
    out["momentum.linear.bias"] = optimizer.state[classifier.linear.bias]["momentum_buffer"]
    classifier.eval()
    with torch.no_grad():
        logits = classifier(feats)
        acc1, acc5 = accuracy(logits, labels, topk=(1, 5))
        out["logits"] = logits
        out["eval"] = torch.tensor([acc1.item(), acc5.item(), nn.CrossEntropyLoss()(logits, labels).item()],
                                   dtype=torch.float64)
    meta = {"cfg": CFG, "train": TRAIN, "torch": torch.__version__}
    save_safetensors(os.path.join(OUT, "linear.safetensors"), out, {k: json_of(v) for k, v in meta.items()})
    size = os.path.getsize(os.path.join(OUT, "linear.safetensors"))
    print(f"wrote {len(out)} tensors ({size} bytes) to tests/fixtures/linear.safetensors")


def json_of(v):
    return v if isinstance(v, str) else json.dumps(v)


if __name__ == "__main__":
    main()
