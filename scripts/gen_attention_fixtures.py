#!/usr/bin/python3
"""Writes tests/fixtures/attention.safetensors: the attention maps and masks of the official
visualize_attention.py, computed with the official-layout modules of gen_fixtures.py.

Run with Debian's PyTorch: /usr/bin/python3 scripts/gen_attention_fixtures.py

A small ViT (3 heads, as vit_tiny, so that the weights load with --arch vit_tiny) with a fixed seed, its
position embeddings made for 32 x 32 images (4 x 4 patches of 8), looks at a u8 image of 40 x 56 pixels: a
5 x 7 patch grid, so the position embeddings are interpolated. The image is made a tensor as the official
script does (ToTensor, then Normalize with ImageNet's mean and std); its sides are already multiples of the
patch size, so the official crop keeps it whole.

The file holds:
  backbone.<key>   the ViT's state_dict, official key names (strip "backbone." for the bare weights)
  image            u8 [3, 40, 56], the image
  attentions       f32 [3, 40, 56], attentions[0, :, 0, 1:] of the last block, nearest-upsampled by 8
  masks            u8 [3, 40, 56], the official th_attn at threshold 0.6, nearest-upsampled by 8
  grid             f32 [3, 5, 7], the attentions on the patch grid (before upsampling)
The weights are also written alone, bare keys and no metadata (as the released dino_vit*.pth), to
tests/fixtures/attention_weights.safetensors.
"""
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_fixtures import OUT, VisionTransformer, save_safetensors  # noqa: E402

PATCH = 8
THRESHOLD = 0.6
CFG = dict(img_size=32, patch_size=PATCH, in_chans=3, embed_dim=24, depth=2, num_heads=3)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def official_attention(model, img, patch_size, threshold):
    """The computation of the official visualize_attention.py, from its normalised image on."""
    # make the image divisible by the patch size
    w, h = img.shape[1] - img.shape[1] % patch_size, img.shape[2] - img.shape[2] % patch_size
    img = img[:, :w, :h].unsqueeze(0)
    w_featmap = img.shape[-2] // patch_size
    h_featmap = img.shape[-1] // patch_size
    attentions = model.get_last_selfattention(img)
    nh = attentions.shape[1]  # number of head
    # we keep only the output patch attention
    attentions = attentions[0, :, 0, 1:].reshape(nh, -1)
    # we keep only a certain percentage of the mass
    val, idx = torch.sort(attentions)
    val /= torch.sum(val, dim=1, keepdim=True)
    cumval = torch.cumsum(val, dim=1)
    th_attn = cumval > (1 - threshold)
    idx2 = torch.argsort(idx)
    for head in range(nh):
        th_attn[head] = th_attn[head][idx2[head]]
    th_attn = th_attn.reshape(nh, w_featmap, h_featmap).float()
    # interpolate
    th_attn = nn.functional.interpolate(th_attn.unsqueeze(0), scale_factor=patch_size, mode="nearest")[0]
    grid = attentions.reshape(nh, w_featmap, h_featmap)
    attentions = nn.functional.interpolate(grid.unsqueeze(0), scale_factor=patch_size, mode="nearest")[0]
    return attentions, th_attn, grid


def main():
    torch.manual_seed(7)
    model = VisionTransformer(**CFG).eval()
    # The official init leaves the qkv biases at 0 and the weights small: the attention would be nearly
    # uniform. Larger random weights give peaked, varied maps, so that the masks are a real test.
    with torch.no_grad():
        for blk in model.blocks:
            blk.attn.qkv.weight.normal_(0, 0.2)
            blk.attn.qkv.bias.normal_(0, 0.3)
    image = torch.randint(0, 256, (3, 40, 56), dtype=torch.uint8)
    # ToTensor then Normalize, as the official transform
    x = image.float() / 255
    x = (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    with torch.no_grad():
        attentions, masks, grid = official_attention(model, x, PATCH, THRESHOLD)
    state = model.state_dict()
    tensors = {f"backbone.{k}": v for k, v in state.items()}
    tensors.update(image=image, attentions=attentions, masks=masks.to(torch.uint8), grid=grid)
    meta = dict(patch_size=PATCH, threshold=THRESHOLD, arch="vit_tiny", torch=torch.__version__,
                mean=list(MEAN), std=list(STD))
    save_safetensors(os.path.join(OUT, "attention.safetensors"), tensors, meta)
    save_safetensors(os.path.join(OUT, "attention_weights.safetensors"), state, {})
    kept = masks.mean(dim=(1, 2)).tolist()
    print(f"wrote tests/fixtures/attention.safetensors and attention_weights.safetensors "
          f"(share of pixels in each head's mask: {', '.join(f'{k:.2f}' for k in kept)})")


if __name__ == "__main__":
    main()
