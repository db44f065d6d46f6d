#!/usr/bin/python3
"""Writes tests/fixtures/knn.safetensors: the top-1 and top-5 of the official eval_knn.py's weighted k-NN
(knn_classifier, after the official F.normalize of both feature sets) on small cases, ties included.

Run with Debian's PyTorch: /usr/bin/python3 scripts/gen_knn_fixtures.py

The official classifier, as eval_knn.py computes it: cosine similarities of each test feature to the memory, the k
largest (topk, sorted), their labels one-hot over num_classes, weighted by exp(similarity / T) and summed per class;
the classes ranked by a descending sort of those sums; top-1 the first, top-5 any of the first min(5, k).

Cases (each stored as <case>.train, <case>.train_labels, <case>.test, <case>.test_labels, <case>.expected = f64
[top1, top5], with k, T and num_classes in the metadata under <case>):
  random         300 x 32 memory, 100 queries, 10 classes, k 20, T 0.07, num_classes 10
  onehot_ties    one-hot features (exact ties between classes), k 2, num_classes 10
  copies_ties    each memory point 10 times, k 15, num_classes 10
  k3_classes1000 k 3 < 5 with ImageNet's 1000 classes: classes without votes fill the top 5 in sort order
"""
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_fixtures import OUT, save_safetensors  # noqa: E402


def official_knn(train, train_labels, test, test_labels, k, T, num_classes):
    train, test = F.normalize(train, dim=1, p=2), F.normalize(test, dim=1, p=2)
    sim = test @ train.t()  # [M, N]
    dist, idx = sim.topk(k, dim=1, largest=True, sorted=True)
    neighbours = torch.gather(train_labels.view(1, -1).expand(test.shape[0], -1), 1, idx)  # [M, k]
    one_hot = torch.zeros(test.shape[0] * k, num_classes).scatter_(1, neighbours.reshape(-1, 1), 1)
    votes = (one_hot.view(test.shape[0], k, num_classes) * (dist / T).exp().view(test.shape[0], k, 1)).sum(1)
    _, ranked = votes.sort(1, True)
    hit = ranked.eq(test_labels.view(-1, 1))
    top1 = hit.narrow(1, 0, 1).sum().item() * 100.0 / test.shape[0]
    top5 = hit.narrow(1, 0, min(5, k)).sum().item() * 100.0 / test.shape[0]
    return top1, top5


def main():
    g = torch.Generator().manual_seed(0)
    cases = {}
    centres = torch.randn(10, 32, generator=g)
    labels = torch.randint(0, 10, (400,), generator=g)
    points = centres[labels] + 1.5 * torch.randn(400, 32, generator=g)
    cases["random"] = (points[:300], labels[:300], points[300:], labels[300:], 20, 0.07, 10)

    eye = torch.eye(8)
    pick = torch.randint(0, 8, (60,), generator=g)
    onehot_labels = torch.randint(0, 10, (60,), generator=g)
    query = torch.randint(0, 8, (40,), generator=g)
    # Each query's label is that of a memory point at the same spot, so that the ties decide the hits.
    same = [torch.nonzero(pick == q).flatten() for q in query]
    query_labels = torch.stack([onehot_labels[s[torch.randint(0, len(s), (1,), generator=g)]][0] if len(s) else
                                torch.tensor(0) for s in same])
    cases["onehot_ties"] = (eye[pick], onehot_labels, eye[query], query_labels, 2, 0.07, 10)

    base = torch.randn(20, 16, generator=g)
    base_labels = torch.randint(0, 10, (20,), generator=g)
    copies = base.repeat(10, 1)
    copy_labels = torch.cat([base_labels, torch.randint(0, 10, (180,), generator=g)])
    near = torch.randint(0, 20, (50,), generator=g)
    queries = base[near] + 0.3 * torch.randn(50, 16, generator=g)
    # Each query labelled as one of the copies of its point.
    copy_of = near + 20 * torch.randint(0, 10, (50,), generator=g)
    cases["copies_ties"] = (copies, copy_labels, queries, copy_labels[copy_of], 15, 0.07, 10)

    cases["k3_classes1000"] = (points[:300], labels[:300], points[300:], labels[300:], 3, 0.07, 1000)

    tensors, meta = {}, {}
    for name, (tr, trl, te, tel, k, T, C) in cases.items():
        top1, top5 = official_knn(tr, trl, te, tel, k, T, C)
        tensors.update({
            f"{name}.train": tr.float(),
            f"{name}.train_labels": trl.long(),
            f"{name}.test": te.float(),
            f"{name}.test_labels": tel.long(),
            f"{name}.expected": torch.tensor([top1, top5], dtype=torch.float64),
        })
        meta[name] = json.dumps({"k": k, "T": T, "num_classes": C})
        print(f"{name}: top-1 {top1:.2f} top-5 {top5:.2f}")
    save_safetensors(os.path.join(OUT, "knn.safetensors"), tensors, meta)


if __name__ == "__main__":
    main()
