#!/usr/bin/python3
"""Writes tests/fixtures/resize/: PNG images and what torchvision's evaluation transform makes of them, to check that
decodeImages + evalImages prepare images as the official eval_knn.py / eval_linear.py do.

Run with Debian's PyTorch: /usr/bin/python3 scripts/gen_resize_fixtures.py

The official evaluation transform is Resize(256, interpolation=3 (bicubic)), CenterCrop(224), ToTensor, Normalize;
here at a short side of 64 and a crop of 56, the same ratio, to keep the files small. Each image is a smooth
gradient with sharp-edged shapes and fine stripes, so that a crop one pixel off, or a blurrier filter, shows.
Sizes are chosen for torchvision's rounding: the long side of the resized image is int(64 * long / short)
(truncated, where rounding would give one more), and the crop's offset int(round(x)) with Python's round, half to
even (where flooring would give one less).

Written:
  resize/<name>.png           the image (RGB, 8 bits)
  resize.safetensors          <name>.resized: u8 [3, H, W], torchvision's Resize(64, bicubic) of the PNG as PIL
                              reads it (for the test's crops one pixel off); <name>.cropped: CenterCrop(56) of it;
                              <name>.cropped96: Resize(110) + CenterCrop(96), the ratio at another size;
                              fixed28.resized: u8 [1, 24, 24], Resize(24, bicubic) of a 28 x 28 gray image, as
                              evaluating a 21 px network on Fashion-MNIST's 28 px images takes it;
                              <name>.attention: visualize_attention.py's preparation, Resize(40) (its default
                              filter, bilinear) then img[:, :h - h % 8, :w - w % 8] (patch 8), and
                              <name>.attention_hw: the same with Resize((44, 70)) (the official --image_size H W);
                              <name>.copy: eval_copy_detection.py's Resize((48, 48), bicubic) (its 320 x 320);
                              <name>.thumb40, .thumb20: eval_image_retrieval.py's thumbnail((S, S), ANTIALIAS)
                              (also of strip.png, 1001 x 31);
                              <name>.side40: Image.resize to a short side of 40, BICUBIC (decodeImage's side);
                              <name>.davis: eval_video_segmentation.py's read_frame at a short side of 100 (its
                              480, scaled down): cv2.imread, cv2.resize to the long side floored to a multiple of
                              64 (OpenCV's default bilinear), as RGB u8 [3, H, W] (needs python3-opencv)
  resize/<name>-<kind>.jpg    some of the pictures as JPEGs as PIL writes them: 4:2:0, 4:2:2 and 4:4:4 chroma,
                              progressive, gray and CMYK
  resize/<name>-<kind>-cut.jpg  three of them cut at 60% of their bytes (4:2:0, progressive, CMYK)
  resize.safetensors          <file>.whole: u8 [3, H, W], the JPEG as PIL decodes it (libjpeg) and converts it to RGB
                              (a cut one under ImageFile.LOAD_TRUNCATED_IMAGES, as eval_image_retrieval.py sets it);
                              <file>.cropped: Resize(64, bicubic) + CenterCrop(56) of that
"""
import math
import os
import sys

import cv2
import numpy as np
import torch
import torchvision
import torchvision.transforms as T
from PIL import Image, ImageDraw, ImageFile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_fixtures import OUT, save_safetensors  # noqa: E402

SIDE = 64
# (width, height): 185 x 125 and 125 x 185 truncate 94.72 to 94; 155 x 100 gives 99, a crop offset of 21.5 -> 22;
# 141 x 100 gives 90, offset 17; 100 x 100 is square; 40 x 28 is enlarged.
# At 110 and 96 (eval sizes of a 96 px network), 150 x 100 gives 165 and an offset of 34.5 -> 34, where cropping
# 110 first (27.5 -> 28) and then 96 (7) would give 35.
SIZES = {"wide": (185, 125), "tall": (125, 185), "half": (155, 100), "even": (141, 100), "square": (100, 100),
         "small": (40, 28), "odd": (150, 100)}


def picture(w, h, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([x / w * 200 + 20, y / h * 180 + 30, (x + y) / (w + h) * 150 + 50], -1)
    base += 25 * np.sin(x / 3.0)[..., None] * (y > h / 2)[..., None]  # fine stripes in the lower half
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, w - 4)), int(rng.integers(0, h - 4))
        x1, y1 = x0 + int(rng.integers(3, max(4, w // 3))), y0 + int(rng.integers(3, max(4, h // 3)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)((x0, y0, x1, y1), fill=colour)
    return img


DAVIS_SIDE = 100


def read_frame_u8(path, side):
    """eval_video_segmentation.py's read_frame up to its float conversion: the u8 RGB frame it resizes."""
    img = cv2.imread(path)
    ori_h, ori_w, _ = img.shape
    if ori_h > ori_w:
        tw = side
        th = int(((side * ori_h) / ori_w // 64) * 64)
    else:
        th = side
        tw = int(((side * ori_w) / ori_h // 64) * 64)
    return np.ascontiguousarray(cv2.resize(img, (tw, th))[:, :, ::-1])


def main():
    folder = os.path.join(OUT, "resize")
    os.makedirs(folder, exist_ok=True)
    resize = T.Resize(SIDE, interpolation=T.InterpolationMode.BICUBIC)
    u8 = lambda im: torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)  # noqa: E731
    tensors = {}
    for i, (name, (w, h)) in enumerate(SIZES.items()):
        path = os.path.join(folder, f"{name}.png")
        picture(w, h, i).save(path, optimize=True)
        image = Image.open(path).convert("RGB")
        resized = resize(image)
        tensors[f"{name}.resized"] = u8(resized)
        tensors[f"{name}.cropped"] = u8(T.CenterCrop(SIDE * 224 // 256)(resized))
        tensors[f"{name}.cropped96"] = u8(T.CenterCrop(96)(T.Resize(110, interpolation=T.InterpolationMode.BICUBIC)(image)))
        for key, size in (("attention", 40), ("attention_hw", (44, 70))):
            resized = u8(T.Resize(size)(image))  # visualize_attention.py: Resize(args.image_size), bilinear
            h, w = resized.shape[1] - resized.shape[1] % 8, resized.shape[2] - resized.shape[2] % 8
            tensors[f"{name}.{key}"] = resized[:, :h, :w].contiguous()
        # eval_image_retrieval.py: img.thumbnail((imsize, imsize), Image.ANTIALIAS) on the RGB image (LANCZOS, reducing
        # gap 2: Image.reduce by 2 x 2, 3 x 3 or 4 x 4 first for some here)
        for side in (40, 20):
            thumb = image.copy()
            thumb.thumbnail((side, side), Image.LANCZOS)
            tensors[f"{name}.thumb{side}"] = u8(thumb)
        # eval_copy_detection.py: Resize((imsize, imsize), interpolation=3), the image squashed to a square
        tensors[f"{name}.copy"] = u8(T.Resize((48, 48), interpolation=T.InterpolationMode.BICUBIC)(image))
        tensors[f"{name}.davis"] = torch.from_numpy(read_frame_u8(path, DAVIS_SIDE)).permute(2, 0, 1).contiguous()
        # decodeImage(path, { side: 40 }) (the pages' thumbnails): Image.resize to a short side of 40, BICUBIC, each
        # side rounded half up as C's round
        W, H = image.size
        scale = 40 / min(W, H)
        tensors[f"{name}.side40"] = u8(image.resize((math.floor(W * scale + 0.5), math.floor(H * scale + 0.5)),
                                                     Image.BICUBIC))
    # A strip whose thumbnails reduce by blocks of other widths than heights, larger than 5, with a remainder on both
    # axes (25 x 15 at 20, 12 x 15 at 40: Reduce.c's general case and its corners).
    path = os.path.join(folder, "strip.png")
    picture(1001, 31, 77).save(path, optimize=True)
    for side in (40, 20):
        thumb = Image.open(path).convert("RGB")
        thumb.thumbnail((side, side), Image.LANCZOS)
        tensors[f"strip.thumb{side}"] = u8(thumb)
    # JPEGs: torchvision's ImageFolder decodes them with PIL, that is libjpeg at its defaults.
    jpegs = {"wide-420.jpg": ("wide", dict(quality=85)), "tall-444.jpg": ("tall", dict(quality=90, subsampling=0)),
             "small-422.jpg": ("small", dict(quality=75, subsampling=1)),
             "odd-progressive.jpg": ("odd", dict(quality=80, progressive=True)),
             "half-gray.jpg": ("half", dict(quality=85)), "even-cmyk.jpg": ("even", dict(quality=90))}
    for file, (name, options) in jpegs.items():
        image = Image.open(os.path.join(folder, f"{name}.png"))
        image = image.convert("L") if "gray" in file else image.convert("CMYK") if "cmyk" in file else image
        path = os.path.join(folder, file)
        image.save(path, **options)
        decoded = Image.open(path).convert("RGB")
        tensors[f"{file}.whole"] = u8(decoded)
        tensors[f"{file}.cropped"] = u8(T.CenterCrop(SIDE * 224 // 256)(resize(decoded)))
    # Truncated JPEGs, as the official retrieval loader reads them: PIL refuses them unless LOAD_TRUNCATED_IMAGES is
    # set, and then gives libjpeg an end-of-image marker where the data ends.
    for file in ("wide-420.jpg", "odd-progressive.jpg", "even-cmyk.jpg"):
        with open(os.path.join(folder, file), "rb") as f:
            data = f.read()
        cut = file.replace(".jpg", "-cut.jpg")
        with open(os.path.join(folder, cut), "wb") as f:
            f.write(data[: len(data) * 3 // 5])
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            tensors[f"{cut}.whole"] = u8(Image.open(os.path.join(folder, cut)).convert("RGB"))
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = False
    # Data of a fixed size (Fashion-MNIST's 28 px, gray) for a 21 px network: Resize(24) before CenterCrop(21).
    path = os.path.join(folder, "fixed28.png")
    picture(28, 28, 99).convert("L").save(path, optimize=True)
    resized = T.Resize(24, interpolation=T.InterpolationMode.BICUBIC)(Image.open(path))
    tensors["fixed28.resized"] = torch.from_numpy(np.asarray(resized).copy()).unsqueeze(0)
    save_safetensors(os.path.join(OUT, "resize.safetensors"), tensors,
                     {"side": SIDE, "torch": torch.__version__, "torchvision": torchvision.__version__})
    print(f"wrote {folder}/ and resize.safetensors ({len(SIZES)} images)")


if __name__ == "__main__":
    main()
