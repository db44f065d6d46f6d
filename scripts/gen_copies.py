#!/usr/bin/python3
"""Writes a small copy-detection benchmark: original images, copies of them under the attacks copy-detection
benchmarks use (Copydays, DISC21), distractors and a whitening set, for `deno task retrieve --copy-detection`.

Run with Debian's Python: /usr/bin/python3 scripts/gen_copies.py [OUT_DIR] [--originals N] [--whitening N] [--seed S]
(default OUT_DIR tests/fixtures/copies, 12 originals, 36 whitening images, seed 0).

The images are random synthetic scenes (no photo set is at hand): a two-colour gradient sky, smooth coloured noise,
and 6 to 12 shapes (ellipses, rectangles, polygons, lines) in random colours; each scene is 160 to 224 pixels wide
and 120 to 176 high. Every image is its own draw from numpy's PCG64 (seeded), so the run is deterministic.

Written:
  OUT_DIR/database/<name>.png, .jpg         the originals (img00.png ...) and as many distractors (dis00.jpg ...)
  OUT_DIR/queries/<attack>/<name>.jpg       a copy of each original per attack, named as its original
  OUT_DIR/whitening/<name>.jpg              other scenes (wh00 ...) to learn the PCA whitening
The attacks (PIL only):
  scale      resized to half its width and height (bicubic)                              mild
  jpeg50     re-encoded as JPEG at quality 50                                              mild
  crop       the central 60% of each side kept
  blur       Gaussian blur of radius 2.5
  color      brightness x1.3, contrast x0.7, saturation x1.6, hue rotated by 20 degrees
  overlay    a caption (PIL's bitmap font, scaled up) and three filled shapes pasted over 20-30% of it
  strong     crop to 75%, rotate 8 degrees, colour change, then JPEG at quality 30
Every copy is then saved as JPEG at quality 90 (jpeg50 and strong keep their own quality).
"""
import argparse
import io
import os

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

HERE = os.path.dirname(os.path.abspath(__file__))


def scene(rng):
    w, h = int(rng.integers(160, 225)), int(rng.integers(120, 177))
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, h)[:, None, None]
    img = (1 - t) * top + t * bottom + np.zeros((h, w, 3))
    coarse = Image.fromarray(rng.integers(0, 256, (h // 16 + 2, w // 16 + 2, 3), dtype=np.uint8))
    noise = np.asarray(coarse.resize(((w // 16 + 2) * 16, (h // 16 + 2) * 16), Image.BICUBIC), dtype=np.float32)
    img = 0.7 * img + 0.3 * noise[:h, :w]
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(6, 13))):
        kind = int(rng.integers(0, 4))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0 = int(rng.integers(-20, w)), int(rng.integers(-20, h))
        x1, y1 = x0 + int(rng.integers(15, w // 2)), y0 + int(rng.integers(15, h // 2))
        if kind == 0:
            d.ellipse([x0, y0, x1, y1], fill=color)
        elif kind == 1:
            d.rectangle([x0, y0, x1, y1], fill=color)
        elif kind == 2:
            pts = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(int(rng.integers(3, 6)))]
            d.polygon(pts, fill=color)
        else:
            d.line([x0, y0, x1, y1], fill=color, width=int(rng.integers(2, 8)))
    return im


def jpeg(im, quality):
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def center_crop(im, share):
    w, h = im.size
    cw, ch = int(w * share), int(h * share)
    x, y = (w - cw) // 2, (h - ch) // 2
    return im.crop((x, y, x + cw, y + ch))


def recolor(im):
    im = ImageEnhance.Brightness(im).enhance(1.3)
    im = ImageEnhance.Contrast(im).enhance(0.7)
    im = ImageEnhance.Color(im).enhance(1.6)
    hsv = np.asarray(im.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int32) + 14) % 256  # 20 degrees of 360
    return Image.fromarray(hsv, "HSV").convert("RGB")


def overlay(im, rng):
    im = im.copy()
    w, h = im.size
    d = ImageDraw.Draw(im)
    for _ in range(3):
        x0, y0 = int(rng.integers(0, w - 30)), int(rng.integers(0, h - 30))
        s = int(rng.integers(18, 34))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            d.ellipse([x0, y0, x0 + s, y0 + s], fill=color)
        else:
            d.rectangle([x0, y0, x0 + s, y0 + s], fill=color)
    text = Image.new("RGBA", (66, 12), (0, 0, 0, 0))
    ImageDraw.Draw(text).text((1, 0), "COPY #%03d" % int(rng.integers(0, 1000)), fill=(255, 255, 255, 255),
                              font=ImageFont.load_default())
    text = text.resize((w * 3 // 4, h // 6), Image.NEAREST)
    im.paste(text, (w // 8, h // 2), text)
    return im


def attacks(im, rng):
    w, h = im.size
    strong = center_crop(im, 0.75).rotate(8, resample=Image.BICUBIC, expand=False)
    return {
        "scale": im.resize((w // 2, h // 2), Image.BICUBIC),
        "jpeg50": jpeg(im, 50),
        "crop": center_crop(im, 0.6),
        "blur": im.filter(ImageFilter.GaussianBlur(2.5)),
        "color": recolor(im),
        "overlay": overlay(im, rng),
        "strong": jpeg(recolor(strong), 30),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?", default=os.path.join(HERE, "..", "tests", "fixtures", "copies"))
    ap.add_argument("--originals", type=int, default=12)
    ap.add_argument("--whitening", type=int, default=36)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    n = args.originals
    db, wh = os.path.join(args.out, "database"), os.path.join(args.out, "whitening")
    os.makedirs(db, exist_ok=True)
    os.makedirs(wh, exist_ok=True)
    for i in range(n):
        im = scene(rng)
        im.save(os.path.join(db, f"img{i:02d}.png"))
        for name, copy in attacks(im, rng).items():
            folder = os.path.join(args.out, "queries", name)
            os.makedirs(folder, exist_ok=True)
            quality = 50 if name == "jpeg50" else 30 if name == "strong" else 90
            copy.save(os.path.join(folder, f"img{i:02d}.jpg"), quality=quality)
    for i in range(n):
        scene(rng).save(os.path.join(db, f"dis{i:02d}.jpg"), quality=90)
    for i in range(args.whitening):
        scene(rng).save(os.path.join(wh, f"wh{i:03d}.jpg"), quality=90)
    print(f"wrote {n} originals, {n} distractors, {7 * n} copies and {args.whitening} whitening images under {args.out}")


if __name__ == "__main__":
    main()
