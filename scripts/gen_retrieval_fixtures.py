#!/usr/bin/python3
"""Writes tests/fixtures/retrieval.safetensors: the features, whitening, similarities and scores of the official
eval_image_retrieval.py and eval_copy_detection.py, computed with the official-layout modules of gen_fixtures.py.

Run with Debian's PyTorch: /usr/bin/python3 scripts/gen_retrieval_fixtures.py

A small ViT (3 heads, as vit_tiny, so that its weights load with --arch vit_tiny; position embeddings made for 32 x 32
images, 4 x 4 patches of 8) looks at normalised images given as tensors (no decoding):
  retrieval: 5 database and 3 query images of different sizes, one of them (33 x 50) not a multiple of the patch,
             each alone (batch 1, as the official loaders), as `model(samples)` (CLS) and as the official
             `utils.multi_scale` (scales 1, 1/sqrt 2, 1/2, bilinear); then F.normalize, the similarity and the
             official `compute_map` with labels database [0, 1, 2, 0, 1], queries [0, 2, 1], ks [1, 2, 3]
  copy detection: 32 x 32 images, 4 queries, 6 database, 16 for whitening, in batches, as the official
             extract_features (CLS + GeM p = 4 of the last block's patch tokens); the official whitening (mean of
             the whitening set, covariance X^T X / N uncentred, utils.PCA with whit 0.5 and every direction) --
             with eigh in float64 (numpy's float32 eigh is the official's, and is not precise to 1e-5 near the
             eigenvalue floor) -- then F.normalize and the similarity queries x database.

The file holds:
  backbone.<key>                 the ViT's weights (official key names; strip "backbone." for the bare weights)
  db.<i>, q.<i>                  f32 [1, 3, H, W] the retrieval images
  cls_db, cls_q, ms_db, ms_q     f32 [n, 24] the CLS and multi-scale features (before F.normalize)
  sim_cls, sim_ms                f32 [5, 3] database x queries cosine similarities
  map_ms, pr_ms                  f64 [] and [3]: compute_map's mAP and mean precision at ks of the multi-scale ranks
  aps_ms                         f64 [3] each query's AP
  cd_q, cd_db, cd_wh             f32 [n, 3, 32, 32] the copy-detection images
  cd_feat_q, cd_feat_db          f32 [n, 48] their features
  cd_mean                        f32 [48] the whitening set's mean feature
  cd_sim                         f32 [4, 6] whitened, normalised similarities queries x database
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_fixtures import OUT, VisionTransformer, save_safetensors  # noqa: E402


def multi_scale(samples, model):
    """The official utils.multi_scale."""
    v = None
    for s in [1, 1 / 2 ** (1 / 2), 1 / 2]:  # we use 3 different scales
        if s == 1:
            inp = samples.clone()
        else:
            inp = nn.functional.interpolate(samples, scale_factor=s, mode='bilinear', align_corners=False)
        feats = model(inp).clone()
        if v is None:
            v = feats
        else:
            v += feats
    v /= 3
    v /= v.norm()
    return v


def compute_ap(ranks, nres):
    """The official utils.compute_ap."""
    nimgranks = len(ranks)
    ap = 0
    recall_step = 1. / nres
    for j in np.arange(nimgranks):
        rank = ranks[j]
        if rank == 0:
            precision_0 = 1.
        else:
            precision_0 = float(j) / rank
        precision_1 = float(j + 1) / (rank + 1)
        ap += (precision_0 + precision_1) * recall_step / 2.
    return ap


def compute_map(ranks, gnd, kappas=[]):
    """The official utils.compute_map."""
    map = 0.
    nq = len(gnd)  # number of queries
    aps = np.zeros(nq)
    pr = np.zeros(len(kappas))
    prs = np.zeros((nq, len(kappas)))
    nempty = 0
    for i in np.arange(nq):
        qgnd = np.array(gnd[i]['ok'])
        if qgnd.shape[0] == 0:
            aps[i] = float('nan')
            prs[i, :] = float('nan')
            nempty += 1
            continue
        try:
            qgndj = np.array(gnd[i]['junk'])
        except KeyError:
            qgndj = np.empty(0)
        pos = np.arange(ranks.shape[0])[np.in1d(ranks[:, i], qgnd)]
        junk = np.arange(ranks.shape[0])[np.in1d(ranks[:, i], qgndj)]
        k = 0
        ij = 0
        if len(junk):
            ip = 0
            while (ip < len(pos)):
                while (ij < len(junk) and pos[ip] > junk[ij]):
                    k += 1
                    ij += 1
                pos[ip] = pos[ip] - k
                ip += 1
        ap = compute_ap(pos, len(qgnd))
        map = map + ap
        aps[i] = ap
        pos += 1  # get it to 1-based
        for j in np.arange(len(kappas)):
            kq = min(max(pos), kappas[j])
            prs[i, j] = (pos <= kq).sum() / kq
        pr = pr + prs[i, :]
    map = map / (nq - nempty)
    pr = pr / (nq - nempty)
    return map, aps, pr, prs


class PCA():
    """The official utils.PCA."""

    def __init__(self, dim=256, whit=0.5):
        self.dim = dim
        self.whit = whit
        self.mean = None

    def train_pca(self, cov):
        d, v = np.linalg.eigh(cov)
        eps = d.max() * 1e-5
        n_0 = (d < eps).sum()
        if n_0 > 0:
            d[d < eps] = eps
        totenergy = d.sum()
        idx = np.argsort(d)[::-1][:self.dim]
        d = d[idx]
        v = v[:, idx]
        print("keeping %.2f %% of the energy" % (d.sum() / totenergy * 100.0))
        d = np.diag(1. / d ** self.whit)
        self.dvt = np.dot(d, v.T)

    def apply(self, x):
        if self.mean is not None:
            x -= torch.FloatTensor(self.mean)
        return torch.mm(torch.FloatTensor(self.dvt), x.transpose(0, 1)).transpose(0, 1)


def copy_features(model, samples):
    """The body of the official eval_copy_detection.extract_features, for one batch."""
    feats = model.get_intermediate_layers(samples, n=1)[0].clone()
    cls_output_token = feats[:, 0, :]  # [CLS] token
    b, h, w, d = len(samples), int(samples.shape[-2] / model.patch_embed.patch_size), int(
        samples.shape[-1] / model.patch_embed.patch_size), feats.shape[-1]
    feats = feats[:, 1:, :].reshape(b, h, w, d)
    feats = feats.clamp(min=1e-6).permute(0, 3, 1, 2)
    feats = nn.functional.avg_pool2d(feats.pow(4), (h, w)).pow(1. / 4).reshape(b, -1)
    return torch.cat((cls_output_token, feats), dim=1)


def main():
    torch.manual_seed(11)
    model = VisionTransformer(img_size=32, patch_size=8, in_chans=3, embed_dim=24, depth=2, num_heads=3).eval()
    tensors = {f"backbone.{k}": v for k, v in model.state_dict().items()}
    db_sizes = [(40, 56), (48, 48), (33, 50), (64, 40), (56, 72)]
    q_sizes = [(48, 64), (40, 40), (57, 49)]
    db = [torch.randn(1, 3, h, w) for h, w in db_sizes]
    qs = [torch.randn(1, 3, h, w) for h, w in q_sizes]
    for i, x in enumerate(db):
        tensors[f"db.{i}"] = x
    for i, x in enumerate(qs):
        tensors[f"q.{i}"] = x
    with torch.no_grad():
        cls_db = torch.cat([model(x) for x in db])
        cls_q = torch.cat([model(x) for x in qs])
        ms_db = torch.cat([multi_scale(x, model) for x in db])
        ms_q = torch.cat([multi_scale(x, model) for x in qs])
    tensors.update(cls_db=cls_db, cls_q=cls_q, ms_db=ms_db, ms_q=ms_q)
    for name, (a, b) in {"cls": (cls_db, cls_q), "ms": (ms_db, ms_q)}.items():
        a, b = nn.functional.normalize(a, dim=1, p=2), nn.functional.normalize(b, dim=1, p=2)
        sim = torch.mm(a, b.T)
        tensors[f"sim_{name}"] = sim
        if name == "ms":
            ranks = torch.argsort(-sim, dim=0).cpu().numpy()
            db_labels, q_labels = [0, 1, 2, 0, 1], [0, 2, 1]
            gnd = [{"ok": [j for j, l in enumerate(db_labels) if l == ql], "junk": []} for ql in q_labels]
            m, aps, pr, _ = compute_map(ranks, gnd, [1, 2, 3])
            tensors["map_ms"] = torch.tensor(m, dtype=torch.float64)
            tensors["pr_ms"] = torch.tensor(pr, dtype=torch.float64)
            tensors["aps_ms"] = torch.tensor(aps, dtype=torch.float64)

    cd_q, cd_db, cd_wh = torch.randn(4, 3, 32, 32), torch.randn(6, 3, 32, 32), torch.randn(16, 3, 32, 32)
    cd_q[:2] = cd_db[:2] + 0.3 * torch.randn(2, 3, 32, 32)  # two queries are copies of database images
    with torch.no_grad():
        queries, database = copy_features(model, cd_q), copy_features(model, cd_db)
        features_for_whitening = copy_features(model, cd_wh)
    tensors.update(cd_q=cd_q, cd_db=cd_db, cd_wh=cd_wh, cd_feat_q=queries.clone(), cd_feat_db=database.clone())
    mean_feature = torch.mean(features_for_whitening, dim=0)
    database -= mean_feature
    queries -= mean_feature
    pca = PCA(dim=database.shape[-1], whit=0.5)
    cov = torch.mm(features_for_whitening.T, features_for_whitening) / features_for_whitening.shape[0]
    pca.train_pca(cov.double().numpy())
    database = pca.apply(database)
    queries = pca.apply(queries)
    database = nn.functional.normalize(database, dim=1, p=2)
    queries = nn.functional.normalize(queries, dim=1, p=2)
    tensors["cd_mean"] = mean_feature
    tensors["cd_sim"] = torch.mm(queries, database.T)

    path = os.path.join(OUT, "retrieval.safetensors")
    save_safetensors(path, tensors, {"patch_size": 8, "db_labels": "0,1,2,0,1", "q_labels": "0,2,1", "ks": "1,2,3"})
    print(f"wrote {path}: mAP {tensors['map_ms'].item():.4f}, mP@k {np.round(tensors['pr_ms'].numpy(), 4).tolist()}")
    print("copy similarities:", np.round(tensors["cd_sim"].numpy(), 3).tolist())


if __name__ == "__main__":
    main()
