#!/usr/bin/python3
"""Writes the PyTorch parity fixtures under tests/fixtures/.

Run with Debian's PyTorch: /usr/bin/python3 scripts/gen_fixtures.py

The modules below follow the official facebookresearch/dino layout and
state_dict key names (VisionTransformer, DINOHead, MultiCropWrapper, DINOLoss,
cosine_scheduler, clip_gradients, cancel_gradients_last_layer,
get_params_groups), so that the fixtures are what the official training loop
computes. Drop path is 0 here: its random stream is PyTorch's global one, which
a parity test cannot share; it is tested on its own in TypeScript.
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(1)
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures")


# ---- official-layout modules -------------------------------------------------
def trunc_normal_(t, std=0.02):
    # The official helper draws from a normal truncated at +-2 (absolute).
    with torch.no_grad():
        return nn.init.trunc_normal_(t, std=std, a=-2.0, b=2.0)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x), attn


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, return_attention=False):
        y, attn = self.attn(self.norm1(x))
        if return_attention:
            return attn
        x = x + y
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, img_size, patch_size, in_chans, embed_dim):
        super().__init__()
        self.patch_size = patch_size
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=384, depth=12, num_heads=6):
        super().__init__()
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        trunc_normal_(self.pos_embed)
        trunc_normal_(self.cls_token)
        self.apply(self._init_weights)

    def _init_weights(self, m):
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def interpolate_pos_encoding(self, x, w, h):
        npatch = x.shape[1] - 1
        N = self.pos_embed.shape[1] - 1
        if npatch == N and w == h:
            return self.pos_embed
        class_pos_embed = self.pos_embed[:, 0]
        patch_pos_embed = self.pos_embed[:, 1:]
        dim = x.shape[-1]
        w0 = w // self.patch_embed.patch_size + 0.1
        h0 = h // self.patch_embed.patch_size + 0.1
        patch_pos_embed = F.interpolate(
            patch_pos_embed.reshape(1, int(math.sqrt(N)), int(math.sqrt(N)), dim).permute(0, 3, 1, 2),
            scale_factor=(w0 / math.sqrt(N), h0 / math.sqrt(N)),
            mode="bicubic",
        )
        patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
        return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1)

    def prepare_tokens(self, x):
        B, nc, w, h = x.shape
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
        return x + self.interpolate_pos_encoding(x, w, h)

    def forward(self, x):
        x = self.prepare_tokens(x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)[:, 0]

    def get_last_selfattention(self, x):
        x = self.prepare_tokens(x)
        for i, blk in enumerate(self.blocks):
            if i < len(self.blocks) - 1:
                x = blk(x)
            else:
                return blk(x, return_attention=True)

    def get_intermediate_layers(self, x, n=1):
        x = self.prepare_tokens(x)
        output = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if len(self.blocks) - i <= n:
                output.append(self.norm(x))
        return output


class DINOHead(nn.Module):
    def __init__(self, in_dim, out_dim, use_bn=False, norm_last_layer=True, nlayers=3, hidden_dim=2048, bottleneck_dim=256):
        super().__init__()
        nlayers = max(nlayers, 1)
        if nlayers == 1:
            self.mlp = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers = [nn.Linear(in_dim, hidden_dim)]
            if use_bn:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.GELU())
            for _ in range(nlayers - 2):
                layers.append(nn.Linear(hidden_dim, hidden_dim))
                if use_bn:
                    layers.append(nn.BatchNorm1d(hidden_dim))
                layers.append(nn.GELU())
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        self.apply(self._init_weights)
        self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last_layer.weight_g.data.fill_(1)
        if norm_last_layer:
            self.last_layer.weight_g.requires_grad = False

    def _init_weights(self, m):
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        x = self.mlp(x)
        x = F.normalize(x, dim=-1, p=2)
        return self.last_layer(x)


class MultiCropWrapper(nn.Module):
    def __init__(self, backbone, head):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x):
        idx_crops = torch.cumsum(torch.unique_consecutive(torch.tensor([inp.shape[-1] for inp in x]), return_counts=True)[1], 0)
        start_idx, output = 0, torch.empty(0).to(x[0].device)
        for end_idx in idx_crops:
            output = torch.cat((output, self.backbone(torch.cat(x[start_idx:end_idx]))))
            start_idx = end_idx
        return self.head(output)


class DINOLoss(nn.Module):
    def __init__(self, out_dim, ncrops, warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs, nepochs, student_temp=0.1, center_momentum=0.9):
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.ncrops = ncrops
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.teacher_temp_schedule = np.concatenate((
            np.linspace(warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs),
            np.ones(nepochs - warmup_teacher_temp_epochs) * teacher_temp,
        ))

    def forward(self, student_output, teacher_output, epoch):
        student_out = (student_output / self.student_temp).chunk(self.ncrops)
        temp = self.teacher_temp_schedule[epoch]
        teacher_out = F.softmax((teacher_output - self.center) / temp, dim=-1).detach().chunk(2)
        total_loss, n_loss_terms = 0, 0
        for iq, q in enumerate(teacher_out):
            for v in range(len(student_out)):
                if v == iq:
                    continue
                loss = torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1)
                total_loss += loss.mean()
                n_loss_terms += 1
        total_loss /= n_loss_terms
        self.update_center(teacher_output)
        return total_loss

    @torch.no_grad()
    def update_center(self, teacher_output):
        batch_center = torch.sum(teacher_output, dim=0, keepdim=True) / len(teacher_output)
        self.center = self.center * self.center_momentum + batch_center * (1 - self.center_momentum)


def cosine_scheduler(base_value, final_value, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0):
    warmup_schedule = np.array([])
    warmup_iters = warmup_epochs * niter_per_ep
    if warmup_epochs > 0:
        warmup_schedule = np.linspace(start_warmup_value, base_value, warmup_iters)
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / len(iters)))
    return np.concatenate((warmup_schedule, schedule))


def clip_gradients(model, clip):
    for _, p in model.named_parameters():
        if p.grad is not None:
            clip_coef = clip / (p.grad.data.norm(2) + 1e-6)
            if clip_coef < 1:
                p.grad.data.mul_(clip_coef)


def cancel_gradients_last_layer(epoch, model, freeze_last_layer):
    if epoch >= freeze_last_layer:
        return
    for n, p in model.named_parameters():
        if "last_layer" in n:
            p.grad = None


def get_params_groups(model):
    regularized, not_regularized = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.endswith(".bias") or len(param.shape) == 1:
            not_regularized.append(param)
        else:
            regularized.append(param)
    return [{"params": regularized}, {"params": not_regularized, "weight_decay": 0.0}]


# ---- safetensors, written by hand (the format is a JSON header and raw bytes) ----
DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8"}


def save_safetensors(path, tensors, metadata):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        data = t.numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)


def load_safetensors(path):
    codes = {v: k for k, v in DTYPES.items()}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    out = {}
    for name, e in header.items():
        a, b = e["data_offsets"]
        dtype = codes[e["dtype"]]
        out[name] = torch.frombuffer(bytearray(data[a:b]), dtype=dtype).reshape(e["shape"]) if b > a else torch.zeros(e["shape"], dtype=dtype)
    return out, meta


# ---- the parity scenario ------------------------------------------------------
CFG = dict(img_size=16, patch_size=4, in_chans=3, embed_dim=32, depth=2, num_heads=2)
HEAD = dict(out_dim=64, hidden_dim=48, bottleneck_dim=16, nlayers=3, use_bn=False, norm_last_layer=True)
HYPER = dict(
    batch=3, local_crops=2, global_size=16, local_size=8, epochs=3, iters_per_epoch=2, warmup_epochs=1,
    lr=0.5, min_lr=1e-6, weight_decay=0.04, weight_decay_end=0.4, momentum_teacher=0.9, clip_grad=0.05,
    freeze_last_layer=1, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=2,
    first_iteration=1, steps=3,
)


def build():
    backbone = VisionTransformer(**CFG)
    head = DINOHead(CFG["embed_dim"], **HEAD)
    return MultiCropWrapper(backbone, head)


class Snapshots(dict):
    """Stores copies: state_dict() and optimizer state share storage that later steps change in place."""

    def __setitem__(self, key, value):
        super().__setitem__(key, value.detach().clone())


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    h = HYPER
    student, teacher = build(), build()
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    ncrops = 2 + h["local_crops"]
    loss_fn = DINOLoss(HEAD["out_dim"], ncrops, h["warmup_teacher_temp"], h["teacher_temp"], h["warmup_teacher_temp_epochs"], h["epochs"])
    opt = torch.optim.AdamW(get_params_groups(student))
    ipe = h["iters_per_epoch"]
    lr_s = cosine_scheduler(h["lr"] * h["batch"] / 256.0, h["min_lr"], h["epochs"], ipe, warmup_epochs=h["warmup_epochs"])
    wd_s = cosine_scheduler(h["weight_decay"], h["weight_decay_end"], h["epochs"], ipe)
    mom_s = cosine_scheduler(h["momentum_teacher"], 1, h["epochs"], ipe)

    g = torch.Generator().manual_seed(1)
    crops = [[torch.randn(h["batch"], CFG["in_chans"], s, s, generator=g) for s in [h["global_size"]] * 2 + [h["local_size"]] * h["local_crops"]] for _ in range(h["steps"])]

    out = Snapshots()
    for k, v in student.state_dict().items():
        out[f"init.{k}"] = v
    for s in range(h["steps"]):
        for i, c in enumerate(crops[s]):
            out[f"input.{s}.{i}"] = c

    # Forward-pass fixtures on the initial weights.
    with torch.no_grad():
        out["forward.backbone_global"] = student.backbone(torch.cat(crops[0][:2]))
        out["forward.backbone_local"] = student.backbone(torch.cat(crops[0][2:]))
        out["forward.attention"] = student.backbone.get_last_selfattention(crops[0][0])
        for i, t in enumerate(student.backbone.get_intermediate_layers(crops[0][2], n=2)):
            out[f"forward.intermediate.{i}"] = t

    names = [n for n, p in student.named_parameters() if p.requires_grad]
    for s in range(h["steps"]):
        it = h["first_iteration"] + s
        epoch = it // ipe
        for i, group in enumerate(opt.param_groups):
            group["lr"] = lr_s[it]
            if i == 0:
                group["weight_decay"] = wd_s[it]
        images = crops[s]
        teacher_output = teacher(images[:2])
        student_output = student(images)
        loss = loss_fn(student_output, teacher_output, epoch)
        opt.zero_grad()
        loss.backward()
        if s == 0:
            out["step0.teacher_output"] = teacher_output
            out["step0.student_output"] = student_output
            out["step0.loss"] = loss.detach().reshape([])
            for n, p in student.named_parameters():
                if p.grad is not None:
                    out[f"step0.grad.{n}"] = p.grad.clone()
        clip_gradients(student, h["clip_grad"])
        cancel_gradients_last_layer(epoch, student, h["freeze_last_layer"])
        opt.step()
        with torch.no_grad():
            m = mom_s[it]
            for pq, pk in zip(student.parameters(), teacher.parameters()):
                pk.data.mul_(m).add_((1 - m) * pq.detach().data)
        # Every step's state, so that each step can be checked from PyTorch's state before it.
        tag = f"after{s + 1}"
        out[f"{tag}.loss"] = loss.detach().reshape([])
        out[f"{tag}.center"] = loss_fn.center
        for k, v in student.state_dict().items():
            out[f"{tag}.student.{k}"] = v
        for k, v in teacher.state_dict().items():
            out[f"{tag}.teacher.{k}"] = v
        params = dict(student.named_parameters())
        for n in names:
            st = opt.state.get(params[n], {})
            if "exp_avg" in st:
                out[f"{tag}.exp_avg.{n}"] = st["exp_avg"]
                out[f"{tag}.exp_avg_sq.{n}"] = st["exp_avg_sq"]
                out[f"{tag}.step.{n}"] = st["step"].reshape([]).to(torch.float32)

    meta = {"cfg": json.dumps(CFG), "head": json.dumps(HEAD), "hyper": json.dumps(HYPER), "torch": torch.__version__}
    save_safetensors(os.path.join(OUT, "parity.safetensors"), out, meta)
    print(f"wrote {len(out)} tensors to tests/fixtures/parity.safetensors")


def color_fixtures():
    """torchvision's tensor colour transforms on random images, with per-image factors."""
    import torchvision.transforms.functional as TF

    g = torch.Generator().manual_seed(2)
    x = torch.rand(4, 3, 12, 12, generator=g)
    x[0, :, :3, :3] = 0.5  # gray pixels
    x[1, 0, :2, :] = 1.0  # saturated red rows
    x[2, :, 6:] = torch.round(x[2, :, 6:] * 2) / 2  # three levels: ties between the max channels everywhere
    out = {"x": x}
    factors = {"brightness": [0.6, 1.4, 1.0, 1.2], "contrast": [0.6, 1.4, 1.0, 0.8], "saturation": [0.8, 1.2, 0.0, 1.1],
               "hue": [0.07, -0.1, 0.5, -0.33]}
    fns = {"brightness": TF.adjust_brightness, "contrast": TF.adjust_contrast, "saturation": TF.adjust_saturation,
           "hue": TF.adjust_hue}
    for name, fs in factors.items():
        out[name] = torch.stack([fns[name](x[i], f) for i, f in enumerate(fs)])
        out[f"{name}_factors"] = torch.tensor(fs, dtype=torch.float64)
    out["grayscale"] = TF.rgb_to_grayscale(x)
    save_safetensors(os.path.join(OUT, "color.safetensors"), out, {"torchvision": __import__("torchvision").__version__})
    print("wrote tests/fixtures/color.safetensors")


def check_load(path, arch_json, backbone_only=False):
    """Loads weights this project wrote into the official modules with strict=True."""
    tensors, meta = load_safetensors(path)
    cfg = json.loads(arch_json)
    backbone = VisionTransformer(**cfg["vit"])
    if backbone_only:
        backbone.load_state_dict(tensors, strict=True)
        print(f"VisionTransformer.load_state_dict: {len(tensors)} tensors, strict=True")
        return
    model = MultiCropWrapper(backbone, DINOHead(cfg["vit"]["embed_dim"], **cfg["head"]))
    teacher = {k[len("teacher."):]: v for k, v in tensors.items() if k.startswith("teacher.")} or tensors
    model.load_state_dict(teacher, strict=True)
    print(f"MultiCropWrapper(VisionTransformer, DINOHead).load_state_dict: {len(teacher)} tensors, strict=True")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("check-load"):
        check_load(sys.argv[2], sys.argv[3], backbone_only=sys.argv[1] == "check-load-backbone")
    else:
        main()
        color_fixtures()
