#!/usr/bin/python3
"""Writes a dataset of objects with known masks on real photos, for the unsupervised-segmentation comparison
(`deno task masks`, the DINO paper's Table 8 at small scale).

Run with Debian's Python: /usr/bin/python3 scripts/gen_objects.py OUT_DIR [--train N] [--val N] [--size S] [--seed S]
[--photos textures|all|NAME,...] (defaults: 12,000 training images, 1,000 held-out images, 64 px, seed 0, the
texture photos). Needs numpy, PIL and scipy, the Fashion-MNIST IDX files (apt-get install dataset-fashion-mnist) and
the photos scikit-image ships (apt-get install python3-skimage).

Each image is a crop of one of scikit-image's photos (a random square of 96 px to the photo's short side, resized
to SIZE) with one Fashion-MNIST item pasted on it: the item's 28 px picture scaled to 40-75% of SIZE, coloured with a
random tint (its grey levels scale the tint, from 35% to 100%), at a random place wholly inside the image. The item's
mask is its silhouette: grey level above 20 after scaling, holes filled. Training images come from Fashion-MNIST's
training items, held-out ones from its test items; the backgrounds are drawn from the same photos (other crops).
Every draw comes from numpy's PCG64 with the seed, so a run is deterministic.

The photos: by default scikit-image's three textures (grass, gravel, brick), each the same texture throughout; `--photos all`
takes its eighteen photos of scenes and textures (astronaut, cat, coffee, coins, ...). On those, DINO learns to tell
the photos apart, which any crop of an image shows, and its attention goes to the background (see the README's
masks section): the backgrounds must not identify an image for its attention to find the item. The other flags
(--object-min/--object-max: the item's side as a fraction of SIZE; --background-min: the least crop side in px,
--background-max: the largest as a fraction of the photo's short side; --background-turn: turn and flip each crop)
reproduce the variants that were tried.

Written:
  OUT_DIR/train/<class>/<n>.png       training images (RGB), one folder per Fashion-MNIST class
  OUT_DIR/val/<class>/<n>.png         held-out images
  OUT_DIR/val_masks/<class>/<n>.png   their masks: indexed PNGs (index 1 on the object, 0 elsewhere)
  OUT_DIR/backgrounds.csv             split,class,file,photo: the photo each image's background was cut from
  OUT_DIR/README.txt                  what this is and the command that made it
"""
import argparse
import gzip
import os
import sys

import numpy as np
from PIL import Image

PHOTO_DIR = "/usr/lib/python3/dist-packages/skimage/data"
ALL_PHOTOS = [
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png", "coffee.png",
    "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png",
    "page.png", "retina.jpg", "rocket.jpg", "text.png",
]
TEXTURES = ["grass.png", "gravel.png", "brick.png"]
FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]


def fail(message):
    print(f"gen_objects.py: {message}", file=sys.stderr)
    sys.exit(1)


def read_idx(path):
    for candidate in (path, path + ".gz"):
        if os.path.exists(candidate):
            opener = gzip.open if candidate.endswith(".gz") else open
            with opener(candidate, "rb") as f:
                data = f.read()
            dims = data[3]
            shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
            return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)
    fail(f"{path}(.gz) not found: apt-get install dataset-fashion-mnist")


def load_photos(names):
    """The photos, as (file name, RGB image) pairs."""
    photos = []
    for name in names:
        path = os.path.join(PHOTO_DIR, name)
        if not os.path.exists(path):
            fail(f"{path} not found: apt-get install python3-skimage (its photos are the backgrounds)")
        photos.append((name, Image.open(path).convert("RGB")))
    return photos


def fill_holes(mask):
    from scipy.ndimage import binary_fill_holes
    return binary_fill_holes(mask)


def compose(rng, photos, item, size, a):
    name, photo = photos[int(rng.integers(len(photos)))]
    w, h = photo.size
    short = min(w, h)
    least = min(short, a.background_min)
    side = int(rng.integers(least, max(least, int(short * a.background_max)) + 1))
    x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    background = np.asarray(photo.crop((x, y, x + side, y + side)).resize((size, size), Image.BICUBIC), np.float32)
    if a.background_turn:
        background = np.rot90(background, int(rng.integers(4)))
        if rng.integers(2):
            background = background[:, ::-1]

    s = int(round(size * rng.uniform(a.object_min, a.object_max)))
    grey = np.asarray(Image.fromarray(item).resize((s, s), Image.BILINEAR), np.float32)
    mask = fill_holes(grey > 20)
    tint = rng.uniform(0, 255, 3).astype(np.float32)
    tint[int(rng.integers(3))] = rng.uniform(200, 255)  # one bright channel, so the item is never near black
    colour = tint * (0.35 + 0.65 * grey[..., None] / 255)

    ox, oy = int(rng.integers(0, size - s + 1)), int(rng.integers(0, size - s + 1))
    full_mask = np.zeros((size, size), bool)
    full_mask[oy:oy + s, ox:ox + s] = mask
    image = background.copy()
    region = image[oy:oy + s, ox:ox + s]
    region[mask] = colour[mask]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), full_mask, name


def write_split(rng, photos, images, labels, count, size, out, split, with_masks, a, backgrounds):
    order = rng.permutation(len(images))[:count]
    for n, i in enumerate(order):
        name = CLASSES[int(labels[i])]
        image, mask, photo = compose(rng, photos, images[i], size, a)
        backgrounds.append(f"{split},{name},{n:05d}.png,{photo}")
        os.makedirs(os.path.join(out, split, name), exist_ok=True)
        Image.fromarray(image).save(os.path.join(out, split, name, f"{n:05d}.png"))
        if with_masks:
            os.makedirs(os.path.join(out, "val_masks", name), exist_ok=True)
            indexed = Image.fromarray(mask.astype(np.uint8), mode="P")
            indexed.putpalette([0, 0, 0, 255, 255, 255])
            indexed.save(os.path.join(out, "val_masks", name, f"{n:05d}.png"))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--train", type=int, default=12000)
    p.add_argument("--val", type=int, default=1000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--photos", default="textures", help="textures (the default), all, or file names, comma-separated")
    p.add_argument("--object-min", type=float, default=0.4)
    p.add_argument("--object-max", type=float, default=0.75)
    p.add_argument("--background-min", type=int, default=96)
    p.add_argument("--background-max", type=float, default=1.0)
    p.add_argument("--background-turn", action="store_true")
    a = p.parse_args()
    if not 0 < a.object_min <= a.object_max <= 1 or a.background_min < 1 or not 0 < a.background_max <= 1:
        fail("need 0 < --object-min <= --object-max <= 1, --background-min >= 1 and 0 < --background-max <= 1")
    if a.size < 16:
        fail(f"--size must be at least 16, got {a.size}")
    photos = load_photos({"textures": TEXTURES, "all": ALL_PHOTOS}.get(a.photos, a.photos.split(",")))
    train_x, train_y = read_idx(f"{FMNIST_DIR}/train-images-idx3-ubyte"), read_idx(f"{FMNIST_DIR}/train-labels-idx1-ubyte")
    test_x, test_y = read_idx(f"{FMNIST_DIR}/t10k-images-idx3-ubyte"), read_idx(f"{FMNIST_DIR}/t10k-labels-idx1-ubyte")
    if not (0 < a.train <= len(train_x) and 0 < a.val <= len(test_x)):
        fail(f"--train must be in 1..{len(train_x)} and --val in 1..{len(test_x)}")
    rng = np.random.Generator(np.random.PCG64(a.seed))
    backgrounds = ["split,class,file,photo"]
    write_split(rng, photos, train_x, train_y, a.train, a.size, a.out, "train", False, a, backgrounds)
    write_split(rng, photos, test_x, test_y, a.val, a.size, a.out, "val", True, a, backgrounds)
    with open(os.path.join(a.out, "backgrounds.csv"), "w") as f:
        f.write("\n".join(backgrounds) + "\n")
    with open(os.path.join(a.out, "README.txt"), "w") as f:
        f.write(
            "Fashion-MNIST items pasted on crops of scikit-image's photos, with their masks (val_masks: index 1 on\n"
            f"the object). Made by: /usr/bin/python3 scripts/gen_objects.py {a.out} --train {a.train} "
            f"--val {a.val} --size {a.size} --seed {a.seed} --photos {a.photos} --object-min {a.object_min} "
            f"--object-max {a.object_max} --background-min {a.background_min} --background-max {a.background_max}"
            + (" --background-turn" if a.background_turn else "") + "\n")
    print(f"wrote {a.train} training and {a.val} held-out {a.size} px images with masks to {a.out}")


if __name__ == "__main__":
    main()
