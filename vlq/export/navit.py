"""Vision path of kind "navit": BAGEL's NaViT SigLIP over packed patches of images of any size.

BAGEL's `embed_vit_tokens(images)` patchifies each image (`[3, H, W]`, sides multiples of the
patch), indexes SigLIP's position table by `row * max_side + col`, runs the ViT with attention
inside each image only (upstream: flash-attention varlen over `cu_seqlens`; a per-image Python
loop elsewhere), then adds the connector output and a 2D sin-cos table (`vit_pos_embed`) at the
same positions. The exported graph takes what that needs, `packed_pixel_values` [patches, 3*p*p]
and `patch_grid` [images, 2] (patch rows, cols per image), computes positions and a
block-diagonal attention mask from the grid inside the graph, and calls the tower's own modules
(embeddings, each layer's norms, q/k/v/out projections and MLP, post norm). Patches and images
stay dynamic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlq.errors import InputError, UsageError
from vlq.export.parity import synthetic_image
from vlq.export.paths import Case, Inputs, VisionPath, split_by_grid
from vlq.export.profile import InputRange, Profile

_LAYER_PARTS = (
    "layer_norm1",
    "layer_norm2",
    "mlp",
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.out_proj",
)


def patchify(image: Tensor, patch: int) -> Tensor:
    """`[C, H, W]` -> `[(H/p) * (W/p), p * p * C]`, row-major patches, channels last in a patch."""
    c, h, w = image.shape
    image = image.reshape(c, h // patch, patch, w // patch, patch)
    return torch.einsum("chpwq->hwpqc", image).reshape(-1, patch * patch * c)


def unpatchify(patches: Tensor, rows: int, cols: int, patch: int) -> Tensor:
    """Inverse of `patchify`."""
    c = patches.shape[-1] // (patch * patch)
    image = patches.reshape(rows, cols, patch, patch, c)
    return torch.einsum("hwpqc->chpwq", image).reshape(c, rows * patch, cols * patch)


def packed_layout(grid: Tensor, num_patches: int, max_side: int) -> tuple[Tensor, Tensor]:
    """Flattened position ids (`row * max_side + col`) and image index of every packed patch."""
    grid = grid.to(torch.int64)
    rows, cols = grid[:, 0], grid[:, 1]
    sizes = rows * cols
    ends = torch.cumsum(sizes, 0)
    index = torch.arange(num_patches, device=grid.device)
    image = (index[:, None] >= ends[None, :]).sum(-1)
    local = index - (ends - sizes)[image]
    width = cols[image]
    row = torch.div(local, width, rounding_mode="floor")
    return row * max_side + (local - row * width), image


def masked_layer(layer: nn.Module, x: Tensor, mask: Tensor) -> Tensor:
    """One pre-norm SigLIP block over all packed patches, attention restricted by `mask` [N, N]."""
    attn = layer.self_attn
    h = layer.layer_norm1(x)
    n, width = h.shape
    heads = attn.num_heads

    def split(t: Tensor) -> Tensor:
        return t.reshape(n, heads, width // heads).transpose(0, 1)[None]

    q, k, v = split(attn.q_proj(h)), split(attn.k_proj(h)), split(attn.v_proj(h))
    out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask).to(h.dtype)
    x = x + attn.out_proj(out[0].transpose(0, 1).reshape(n, width))
    return x + layer.mlp(layer.layer_norm2(x))


class NavitEncoder(nn.Module):
    """`packed_pixel_values` + `patch_grid` -> packed LLM embeddings [patches, hidden]."""

    def __init__(self, tower: nn.Module, projector: nn.Module, positions: nn.Module, max_side: int) -> None:
        super().__init__()
        self.tower, self.projector, self.positions = tower, projector, positions
        self.max_side = max_side

    def forward(self, packed_pixel_values: Tensor, patch_grid: Tensor) -> Tensor:
        vision = self.tower.vision_model
        position_ids, image = packed_layout(patch_grid, packed_pixel_values.shape[0], self.max_side)
        x = vision.embeddings(packed_pixel_values, position_ids)
        mask = image[:, None] == image[None, :]
        for layer in vision.encoder.layers:
            x = masked_layer(layer, x, mask)
        x = vision.post_layernorm(x)
        return self.projector(x) + self.positions(position_ids).to(x.dtype)


class NavitProcessor:
    """BAGEL's image transform, as data: longest side scaled to at most `max_size` and shortest to
    at least `min_size` (aspect kept), both rounded to multiples of the patch, then normalized."""

    def __init__(self, patch: int, min_size: int, max_size: int, mean, std) -> None:
        self.patch, self.min_size, self.max_size = patch, min_size, max_size
        self.mean, self.std = list(mean), list(std)

    def size_of(self, width: int, height: int) -> tuple[int, int]:
        longest, shortest = max(width, height), min(width, height)
        scale = min(1.0, self.max_size / longest)
        scale = min(max(scale, self.min_size / shortest), self.max_size / longest)  # the max wins
        p = self.patch
        return (max(p, round(width * scale / p) * p), max(p, round(height * scale / p) * p))

    def __call__(self, image) -> Tensor:
        from PIL import Image

        width, height = self.size_of(*image.size)
        picture = image.convert("RGB").resize((width, height), Image.BICUBIC)
        pixels = torch.frombuffer(bytearray(picture.tobytes()), dtype=torch.uint8)
        pixels = pixels.view(height, width, 3).permute(2, 0, 1).float() / 255
        return (pixels - torch.tensor(self.mean)[:, None, None]) / torch.tensor(self.std)[:, None, None]

    def to_dict(self) -> dict:
        return {
            "patch_size": self.patch,
            "min_size": self.min_size,
            "max_size": self.max_size,
            "resample": "bicubic",
            "image_mean": self.mean,
            "image_std": self.std,
        }


class NavitPath(VisionPath):
    kind = "navit"
    input_names = ("packed_pixel_values", "patch_grid")

    def __init__(self, loaded) -> None:
        super().__init__(loaded)
        config = self.model.config
        vit = getattr(config, "vit_config", None)
        self.max_side = getattr(config, "vit_max_num_patch_per_side", None)
        vision = getattr(self.tower, "vision_model", None)
        layers = getattr(getattr(vision, "encoder", None), "layers", None)
        missing = [p for p in ("embeddings", "encoder", "post_layernorm") if not hasattr(vision, p)]
        missing += [
            f"encoder.layers.0.{p}" for p in _LAYER_PARTS if layers and not _has(layers[0], p)
        ]
        if vit is None or self.max_side is None or missing:
            raise InputError(
                f"{self._where()}: needs vit_config and vit_max_num_patch_per_side in the config and a NaViT "
                f"SigLIP tower ({', '.join(missing) or 'config keys missing'})"
            )
        self.patch = int(vit.patch_size)
        self.positions = self._module(self.spec.parts[0], "2D position table") if self.spec.parts else None
        if self.positions is None:
            raise InputError(f"{self._where()}: VisionSpec.parts must name the position table (vit_pos_embed)")
        self.image_processor = self._derived_image_processor()

    def _derived_image_processor(self):
        return NavitProcessor(
            self.patch, self.patch, self.patch * self.max_side, self.spec.image_mean, self.spec.image_std
        )

    def _image_processor(self):
        # BAGEL ships no transformers processor: its transform is a plain function upstream.
        # (built in __init__, once the patch size is known)
        return None, "derived: BAGEL's transform (resize to patch multiples, normalize)"

    # --- inputs ----------------------------------------------------------------------------------

    def pack(self, images: list[Tensor]) -> Inputs:
        """Preprocessed `[3, H, W]` images -> encoder inputs."""
        p = self.patch
        for image in images:
            if image.shape[-1] % p or image.shape[-2] % p:
                raise UsageError(f"image sides {list(image.shape[-2:])} are not multiples of the patch {p}")
            if max(image.shape[-2:]) > p * self.max_side:
                raise UsageError(
                    f"image sides {list(image.shape[-2:])} exceed the position table ({self.max_side} patches of {p})"
                )
        packed = torch.cat([patchify(image, p) for image in images])
        grid = torch.tensor([[image.shape[-2] // p, image.shape[-1] // p] for image in images])
        return {
            "packed_pixel_values": packed.to(self.device, self.dtype),
            "patch_grid": grid.to(self.device),
        }

    def unpack(self, inputs: Inputs) -> list[Tensor]:
        grid = inputs["patch_grid"].tolist()
        chunks = torch.split(inputs["packed_pixel_values"], [r * c for r, c in grid])
        return [unpatchify(chunk, r, c, self.patch) for chunk, (r, c) in zip(chunks, grid)]

    def preprocess(self, images) -> Inputs:
        return self.pack([self.image_processor(image) for image in images])

    @torch.no_grad()
    def reference(self, inputs: Inputs) -> Tensor:
        """BAGEL's own `embed_vit_tokens` on the images the packed inputs hold."""
        return getattr(type(self.owner), self.method)(self.owner, self.unpack(inputs))

    # --- export ------------------------------------------------------------------------------------

    def encoder(self) -> nn.Module:
        return NavitEncoder(self.tower, self.projector, self.positions, int(self.max_side)).eval()

    def dynamic_shapes(self) -> dict:
        return {
            "packed_pixel_values": {0: torch.export.Dim("patches")},
            "patch_grid": {0: torch.export.Dim("images")},
        }

    def _patches(self, side: int) -> int:
        width, height = self.image_processor.size_of(side, side)
        return (width // self.patch) * (height // self.patch)

    def profile(self, max_batch: int, opt_batch: int, image_sizes) -> Profile:
        largest = self.patch * self.max_side
        sides = image_sizes or (self.patch, largest // 2 or self.patch, largest)
        if sides[2] > largest:
            raise UsageError(
                f"--image-sizes {','.join(map(str, sides))}: the position table covers {self.max_side} patches of "
                f"{self.patch} px, images up to {largest} px a side"
            )
        lo, mid, hi = (self._patches(s) for s in sides)
        dim = 3 * self.patch * self.patch
        return Profile(
            (
                InputRange("packed_pixel_values", (lo, dim), (mid * opt_batch, dim), (hi * max_batch, dim)),
                InputRange("patch_grid", (1, 2), (opt_batch, 2), (max_batch, 2)),
            ),
            max_batch,
            opt_batch,
            tuple(sides),
        )

    def parity_cases(self, profile: Profile) -> list[Case]:
        lo, mid, hi = profile.image_sizes
        n = profile.max_batch
        cases = [Case.synthetic([(lo, lo)], seed=1), Case.synthetic([(hi, hi)], seed=2)]
        if n > 1:
            cases.append(Case.synthetic([(mid, hi), (hi, mid), (lo, mid)][:n], seed=3))
        if n > 3:
            cases.append(Case.synthetic([(hi, lo)] * n, seed=10))
        return cases

    def trace_images(self, profile: Profile) -> list:
        lo, mid, hi = profile.image_sizes
        return [synthetic_image(hi, mid, seed=1), synthetic_image(mid, hi, seed=2)]

    # --- runtime -------------------------------------------------------------------------------------

    def _sizes(self, grid: Tensor) -> list[int]:
        return grid.prod(-1).tolist()

    def split(self, inputs: Inputs, max_batch: int) -> list[Inputs]:
        return split_by_grid(inputs, max_batch, "packed_pixel_values", "patch_grid")

    def per_image(self, embeds: Tensor, inputs: Inputs) -> tuple[Tensor, ...]:
        return torch.split(embeds, self._sizes(inputs["patch_grid"]))

    def bind(self, args: tuple, kwargs: dict) -> Inputs:
        images = args[0] if args else kwargs.get("images")
        if images is None:
            raise UsageError("the exported BAGEL encoder needs the images ([3, H, W] tensors)")
        return self.pack(list(images))

    def result(self, embeds: Tensor, inputs: Inputs, kwargs: dict) -> Tensor:
        return embeds  # embed_vit_tokens returns the packed tokens

    def images_in(self, inputs: Inputs) -> int:
        return int(inputs["patch_grid"].shape[0])


def _has(module: nn.Module, path: str) -> bool:
    head, _, attr = path.rpartition(".")
    try:
        owner = module.get_submodule(head) if head else module
    except AttributeError:
        return False
    return hasattr(owner, attr)


