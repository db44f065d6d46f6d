#!/usr/bin/python3
"""Writes a small synthetic video with its true masks, in the DAVIS layout, for `deno task propagate`.

Run with Debian's Python: /usr/bin/python3 scripts/gen_video.py [OUT_DIR] [--frames N] [--size WxH] [--seed S]
(default OUT_DIR tests/fixtures/video, 16 frames of 160 x 120, seed 0).

Two textured objects move over a textured, slowly panning background:
  object 1  a disk of radius 18 covered in a red and yellow checkerboard, left to right along the top half,
            bobbing up and down;
  object 2  a 30 x 30 square of violet and white diagonal stripes, right to left along the bottom half.
Their textures move with them. Each moves about 6 pixels a frame, so that by the last frame neither overlaps
where it started: copying the first mask to every frame scores poorly, and following the objects is needed.
The background is smooth coloured noise (blue-green) with fine grain, shifted one pixel a frame.

Written:
  OUT_DIR/JPEGImages/00000.jpg ...    the frames (JPEG, quality 90), as DAVIS's JPEGImages/480p/<video>/
  OUT_DIR/Annotations/00000.png ...   the true masks as indexed PNGs (0 background, 1 and 2 the objects,
                                      255 never used), with the DAVIS palette, as PIL's putpalette writes them
The run is deterministic for a seed (numpy's PCG64 and PIL only).
"""
import argparse
import os

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))


def davis_palette():
    """The DAVIS (and PASCAL VOC) palette: 256 colours from the bits of each index."""
    pal = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


def smooth_noise(rng, h, w, scale):
    """Noise smoothed by bilinear upsampling of a coarse grid (values in [0, 1])."""
    gh, gw = h // scale + 2, w // scale + 2
    coarse = Image.fromarray((rng.random((gh, gw)) * 255).astype(np.uint8))
    return np.asarray(coarse.resize((gw * scale, gh * scale), Image.BILINEAR), dtype=np.float32)[:h, :w] / 255


def background(rng, h, w):
    """A blue-green texture, wider than the frame by the pan."""
    a, b = smooth_noise(rng, h, w, 12), smooth_noise(rng, h, w, 5)
    grain = rng.random((h, w)).astype(np.float32)
    img = np.stack([0.10 + 0.15 * b, 0.35 + 0.35 * a, 0.45 + 0.30 * (1 - a) + 0.1 * b], -1)
    img += 0.08 * (grain[..., None] - 0.5)
    return np.clip(img * 255, 0, 255)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?", default=os.path.join(HERE, "..", "tests", "fixtures", "video"))
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", default="160x120")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    W, H = (int(v) for v in args.size.split("x"))
    T = args.frames
    rng = np.random.default_rng(args.seed)
    pan = T + 1
    bg = background(rng, H, W + pan)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    os.makedirs(os.path.join(args.out, "JPEGImages"), exist_ok=True)
    os.makedirs(os.path.join(args.out, "Annotations"), exist_ok=True)
    palette = davis_palette()
    r1, s2 = 0.15 * min(W, H), 0.25 * min(W, H)  # the disk's radius, the square's side
    for t in range(T):
        f = t / max(T - 1, 1)
        frame = bg[:, t:t + W].copy()
        labels = np.zeros((H, W), dtype=np.uint8)
        # object 1: a disk with a checkerboard that moves with it
        cx, cy = (0.2 + 0.6 * f) * W, (0.33 + 0.06 * np.sin(2 * np.pi * f)) * H
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= r1 ** 2
        check = ((np.floor((xx - cx) / 4) + np.floor((yy - cy) / 4)) % 2).astype(bool)
        tex = np.where(check[..., None], [230, 40, 30], [250, 210, 40])
        frame[inside] = tex[inside]
        labels[inside] = 1
        # object 2: a square of diagonal stripes that move with it
        sx, sy = (0.8 - 0.6 * f) * W, 0.72 * H
        inside = (np.abs(xx - sx) <= s2 / 2) & (np.abs(yy - sy) <= s2 / 2)
        stripe = (np.floor(((xx - sx) + (yy - sy)) / 3) % 2).astype(bool)
        tex = np.where(stripe[..., None], [150, 60, 200], [245, 245, 245])
        frame[inside] = tex[inside]
        labels[inside] = 2
        Image.fromarray(frame.astype(np.uint8)).save(os.path.join(args.out, "JPEGImages", f"{t:05d}.jpg"), quality=90)
        mask = Image.fromarray(labels, mode="P")
        mask.putpalette(palette.ravel().tolist())
        mask.save(os.path.join(args.out, "Annotations", f"{t:05d}.png"))
    print(f"wrote {T} frames of {W} x {H} and their masks under {args.out}")


if __name__ == "__main__":
    main()
