#!/usr/bin/python3
"""Writes tests/fixtures/propagate.safetensors: label propagation as the official eval_video_segmentation.py
computes it, on given patch features, and the DAVIS 2017 scores J and F as the official davis2017-evaluation
computes them.

Run with Debian's PyTorch: /usr/bin/python3 scripts/gen_propagate_fixtures.py

The functions below are the official ones (restrict_neighborhood, norm_mask, label_propagation, to_one_hot, the
loop of eval_video_tracking_davis; db_eval_iou, f_measure, _seg2bmap), with the model's feature extraction
replaced by precomputed features and .cuda() dropped. OpenCV's dilate and skimage's disk, which f_measure calls,
are written out with numpy (a binary dilation by a disk, outside the image adding nothing), as neither is
installed here.

The file holds:
  features     f32 [T, N, D]   patch features of T = 6 frames on a 5 x 7 grid (N = 35), D = 16: a fixed random
                               feature per "texture", so that the patches of each moving blob look alike
  first_mask   u8 [23, 30]     the first frame's labels at full size (3 labels)
  first_small  u8 [5, 7]       first_mask resized to the grid with PIL's nearest filter (the official read_seg)
  soft         f32 [T-1, 3, 5, 7]  each next frame's soft labels (label_propagation's seg_tar)
  labels       u8 [T-1, 20, 28]    upsampled by the patch (4), norm_mask, argmax
  masks        u8 [T-1, 23, 30]    labels resized to the frame's size with PIL's nearest filter
  davis_pred, davis_true   u8 [4, 40, 50]  predicted and true label maps of 4 frames, 2 objects (255 void in truth)
  davis_J, davis_F         f64 [4, 2]      db_eval_iou and db_eval_boundary of each frame and object
with metadata n_last_frames 2, size_mask_neighborhood 2, topk 5, patch 4.
"""
import os
import queue
import sys
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_fixtures import OUT, save_safetensors  # noqa: E402

args = SimpleNamespace(n_last_frames=2, size_mask_neighborhood=2, topk=5, patch_size=4)


# ---- official eval_video_segmentation.py (feature extraction replaced, .cuda() dropped) ----------------------
def restrict_neighborhood(h, w):
    # We restrict the set of source nodes considered to a spatial neighborhood of the query node (i.e. ``local attention'')
    mask = torch.zeros(h, w, h, w)
    for i in range(h):
        for j in range(w):
            for p in range(2 * args.size_mask_neighborhood + 1):
                for q in range(2 * args.size_mask_neighborhood + 1):
                    if i - args.size_mask_neighborhood + p < 0 or i - args.size_mask_neighborhood + p >= h:
                        continue
                    if j - args.size_mask_neighborhood + q < 0 or j - args.size_mask_neighborhood + q >= w:
                        continue
                    mask[i, j, i - args.size_mask_neighborhood + p, j - args.size_mask_neighborhood + q] = 1

    mask = mask.reshape(h * w, h * w)
    return mask


def norm_mask(mask):
    c, h, w = mask.size()
    for cnt in range(c):
        mask_cnt = mask[cnt, :, :]
        if (mask_cnt.max() > 0):
            mask_cnt = (mask_cnt - mask_cnt.min())
            mask_cnt = mask_cnt / mask_cnt.max()
            mask[cnt, :, :] = mask_cnt
    return mask


def label_propagation(args, feat_tar, h, w, list_frame_feats, list_segs, mask_neighborhood=None):
    """
    propagate segs of frames in list_frames to frame_tar
    """
    return_feat_tar = feat_tar.T  # dim x h*w

    ncontext = len(list_frame_feats)
    feat_sources = torch.stack(list_frame_feats)  # nmb_context x dim x h*w

    feat_tar = F.normalize(feat_tar, dim=1, p=2)
    feat_sources = F.normalize(feat_sources, dim=1, p=2)

    feat_tar = feat_tar.unsqueeze(0).repeat(ncontext, 1, 1)
    aff = torch.exp(torch.bmm(feat_tar, feat_sources) / 0.1)  # nmb_context x h*w (tar: query) x h*w (source: keys)

    if args.size_mask_neighborhood > 0:
        if mask_neighborhood is None:
            mask_neighborhood = restrict_neighborhood(h, w)
            mask_neighborhood = mask_neighborhood.unsqueeze(0).repeat(ncontext, 1, 1)
        aff *= mask_neighborhood

    aff = aff.transpose(2, 1).reshape(-1, h * w)  # nmb_context*h*w (source: keys) x h*w (tar: queries)
    tk_val, _ = torch.topk(aff, dim=0, k=args.topk)
    tk_val_min, _ = torch.min(tk_val, dim=0)
    aff[aff < tk_val_min] = 0

    aff = aff / torch.sum(aff, keepdim=True, axis=0)

    list_segs = [s for s in list_segs]
    segs = torch.cat(list_segs)
    nmb_context, C, h, w = segs.shape
    segs = segs.reshape(nmb_context, C, -1).transpose(2, 1).reshape(-1, C).T  # C x nmb_context*h*w
    seg_tar = torch.mm(segs, aff)
    seg_tar = seg_tar.reshape(1, C, h, w)
    return seg_tar, return_feat_tar, mask_neighborhood


def to_one_hot(y_tensor, n_dims=None):
    if (n_dims is None):
        n_dims = int(y_tensor.max() + 1)
    _, h, w = y_tensor.size()
    y_tensor = y_tensor.type(torch.LongTensor).view(-1, 1)
    n_dims = n_dims if n_dims is not None else int(torch.max(y_tensor)) + 1
    y_one_hot = torch.zeros(y_tensor.size()[0], n_dims).scatter_(1, y_tensor, 1)
    y_one_hot = y_one_hot.view(h, w, n_dims)
    return y_one_hot.permute(2, 0, 1).unsqueeze(0)


def eval_video(features, h, w, first_seg, ori_h, ori_w):
    """The loop of eval_video_tracking_davis, on precomputed features [T, N, D]."""
    que = queue.Queue(args.n_last_frames)
    frame1_feat = features[0].T  # dim x h*w
    mask_neighborhood = None
    softs, labels, masks = [], [], []
    for cnt in range(1, features.shape[0]):
        used_frame_feats = [frame1_feat] + [pair[0] for pair in list(que.queue)]
        used_segs = [first_seg] + [pair[1] for pair in list(que.queue)]
        frame_tar_avg, feat_tar, mask_neighborhood = label_propagation(
            args, features[cnt], h, w, used_frame_feats, used_segs, mask_neighborhood)
        if que.qsize() == args.n_last_frames:
            que.get()
        seg = frame_tar_avg.clone()
        que.put([feat_tar, seg])
        softs.append(frame_tar_avg[0].clone())
        frame_tar_avg = F.interpolate(frame_tar_avg, scale_factor=args.patch_size, mode='bilinear',
                                      align_corners=False, recompute_scale_factor=False)[0]
        frame_tar_avg = norm_mask(frame_tar_avg)
        _, frame_tar_seg = torch.max(frame_tar_avg, dim=0)
        frame_tar_seg = np.array(frame_tar_seg.squeeze().cpu(), dtype=np.uint8)
        labels.append(frame_tar_seg)
        masks.append(np.array(Image.fromarray(frame_tar_seg).resize((ori_w, ori_h), 0)))
    return torch.stack(softs), np.stack(labels), np.stack(masks)


# ---- official davis2017-evaluation metrics -------------------------------------------------------------------
def disk(radius):
    L = np.arange(-radius, radius + 1)
    X, Y = np.meshgrid(L, L)
    return (X ** 2 + Y ** 2 <= radius ** 2).astype(np.uint8)


def dilate(img, kernel):
    """cv2.dilate with the default anchor and border: the maximum over the kernel's support."""
    h, w = img.shape
    r = kernel.shape[0] // 2
    padded = np.zeros((h + 2 * r, w + 2 * r), dtype=img.dtype)
    padded[r:r + h, r:r + w] = img
    out = np.zeros_like(img)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if kernel[dy + r, dx + r]:
                out = np.maximum(out, padded[r + dy:r + dy + h, r + dx:r + dx + w])
    return out


def db_eval_iou(annotation, segmentation, void_pixels=None):
    assert annotation.shape == segmentation.shape
    if void_pixels is not None:
        assert annotation.shape == void_pixels.shape
        void_pixels = void_pixels.astype(bool)
    else:
        void_pixels = np.zeros_like(segmentation)
    inters = np.sum((segmentation & annotation) & np.logical_not(void_pixels), axis=(-2, -1))
    union = np.sum((segmentation | annotation) & np.logical_not(void_pixels), axis=(-2, -1))
    j = inters / union
    if j.ndim == 0:
        j = 1 if np.isclose(union, 0) else j
    else:
        j[np.isclose(union, 0)] = 1
    return j


def f_measure(foreground_mask, gt_mask, void_pixels=None, bound_th=0.008):
    assert np.atleast_3d(foreground_mask).shape[2] == 1
    if void_pixels is not None:
        void_pixels = void_pixels.astype(bool)
    else:
        void_pixels = np.zeros_like(foreground_mask).astype(bool)

    bound_pix = bound_th if bound_th >= 1 else \
        np.ceil(bound_th * np.linalg.norm(foreground_mask.shape))

    fg_boundary = _seg2bmap(foreground_mask * np.logical_not(void_pixels))
    gt_boundary = _seg2bmap(gt_mask * np.logical_not(void_pixels))

    fg_dil = dilate(fg_boundary.astype(np.uint8), disk(int(bound_pix)).astype(np.uint8))
    gt_dil = dilate(gt_boundary.astype(np.uint8), disk(int(bound_pix)).astype(np.uint8))

    gt_match = gt_boundary * fg_dil
    fg_match = fg_boundary * gt_dil

    n_fg = np.sum(fg_boundary)
    n_gt = np.sum(gt_boundary)

    if n_fg == 0 and n_gt > 0:
        precision = 1
        recall = 0
    elif n_fg > 0 and n_gt == 0:
        precision = 0
        recall = 1
    elif n_fg == 0 and n_gt == 0:
        precision = 1
        recall = 1
    else:
        precision = np.sum(fg_match) / float(n_fg)
        recall = np.sum(gt_match) / float(n_gt)

    if precision + recall == 0:
        F = 0
    else:
        F = 2 * precision * recall / (precision + recall)
    return F


def _seg2bmap(seg, width=None, height=None):
    seg = seg.astype(bool)
    seg[seg > 0] = 1
    assert np.atleast_3d(seg).shape[2] == 1
    width = seg.shape[1] if width is None else width
    height = seg.shape[0] if height is None else height
    h, w = seg.shape[:2]
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def blob(h, w, cy, cx, ry, rx):
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def main():
    torch.manual_seed(3)
    rng = np.random.default_rng(3)
    T, h, w, D, P = 6, 5, 7, 16, args.patch_size
    ori_h, ori_w = 23, 30
    # The first mask at full size: two blobs; its grid labels as the official read_seg makes them.
    first_mask = np.zeros((ori_h, ori_w), dtype=np.uint8)
    first_mask[blob(ori_h, ori_w, 8, 8, 5, 6)] = 1
    first_mask[blob(ori_h, ori_w, 15, 20, 6, 7)] = 2
    first_small = np.array(Image.fromarray(first_mask).resize((w, h), 0))
    # Features: each label has a texture vector, each patch adds noise; the blobs move one patch right each
    # frame or two (the grid wraps), so the labels have somewhere to go.
    textures = torch.randn(3, D)
    feats = []
    for t in range(T):
        lab = np.roll(first_small, t // 2, axis=1)
        f = textures[torch.from_numpy(lab.astype(np.int64)).reshape(-1)] + 0.6 * torch.randn(h * w, D)
        feats.append(f)
    features = torch.stack(feats).float()
    first_seg = to_one_hot(torch.from_numpy(first_small.copy()).contiguous().float().unsqueeze(0))
    with torch.no_grad():
        soft, labels, masks = eval_video(features, h, w, first_seg, ori_h, ori_w)

    # DAVIS scores of 4 frames of 40 x 50 with two objects; void (255) in the truth at one corner.
    Hd, Wd = 40, 50
    preds, trues, Js, Fs = [], [], [], []
    for t in range(4):
        tr = np.zeros((Hd, Wd), dtype=np.uint8)
        tr[blob(Hd, Wd, 12 + t, 14 + 2 * t, 7, 9)] = 1
        tr[blob(Hd, Wd, 28, 34 - t, 8, 6)] = 2
        tr[0:4, 44:50] = 255
        pr = np.zeros((Hd, Wd), dtype=np.uint8)
        pr[blob(Hd, Wd, 13 + t, 15 + 3 * t, 6 + t % 2, 9)] = 1
        if t != 2:  # object 2 lost in frame 2
            pr[blob(Hd, Wd, 27, 33, 8, 7)] = 2
        noise = rng.random((Hd, Wd)) < 0.01
        pr[noise] = 1
        void = tr == 255
        Js.append([db_eval_iou(tr == k, pr == k, void) for k in (1, 2)])
        Fs.append([f_measure(pr == k, tr == k, void) for k in (1, 2)])
        preds.append(pr)
        trues.append(tr)

    tensors = {
        "features": features,
        "first_mask": torch.from_numpy(first_mask),
        "first_small": torch.from_numpy(first_small.copy()),
        "soft": soft.float(),
        "labels": torch.from_numpy(labels),
        "masks": torch.from_numpy(masks),
        "davis_pred": torch.from_numpy(np.stack(preds)),
        "davis_true": torch.from_numpy(np.stack(trues)),
        "davis_J": torch.tensor(Js, dtype=torch.float64),
        "davis_F": torch.tensor(Fs, dtype=torch.float64),
    }
    meta = dict(n_last_frames=args.n_last_frames, size_mask_neighborhood=args.size_mask_neighborhood,
                topk=args.topk, patch=P, h=h, w=w)
    path = os.path.join(OUT, "propagate.safetensors")
    save_safetensors(path, tensors, meta)
    print(f"wrote {path}: soft {list(soft.shape)}, J {np.round(np.array(Js), 3).tolist()}, "
          f"F {np.round(np.array(Fs), 3).tolist()}")


if __name__ == "__main__":
    main()
