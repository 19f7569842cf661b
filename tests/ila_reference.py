"""An independent reference implementation of ILA's forward pass (eval mode).

Written straight from ``docs/computation.md`` on the RAW released state dict (OpenAI CLIP / authors'
key names) with ``torch.nn.functional`` only. It does not import ``ila_hf`` and shares no code with
it: its only job is to be obviously right, so that a converted model can be compared against it.
Plain loops over layers, frames and pairs are fine here; readability over speed.

Step numbers ("step 3") refer to "One ILA encoder layer" in the spec.

Entry points:
- ``reference_forward(state_dict, pixel_values, class_token_ids=None)`` -> ``ReferenceOutput``
- ``tokenize_class_names(names, tokenizer)`` -> (K, 77) ids padded with zeros, as OpenAI's
  ``clip.tokenize`` does (the text head, K400 recipe, template "{}")
- ``encode_text(state_dict, token_ids)`` -> (K, E) class embeddings
- ``clip_image_embeddings(state_dict, images)`` -> (N, E): the plain frozen CLIP ViT, no ILA
- ``alignment_mask(points, grid_size)`` (step 6)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

LAYER_NORM_EPS = 1e-5  # OpenAI CLIP's nn.LayerNorm default
BATCH_NORM_EPS = 1e-5  # nn.BatchNorm2d default
HEAD_DIM = 64  # CLIP, the MIT and the prompt generator all use width / 64 heads
POINT_CHANNELS = 128
POINT_SCALE = 0.75  # step 4
MASK_FLAT_RADIUS = 0.25  # step 6
MASK_SLOPE = 1.5  # step 6


@dataclass
class ReferenceOutput:
    logits: torch.Tensor  # (B, K)
    interactive_points: list[torch.Tensor]  # one (B, T-1, 4) per layer
    alignment_loss: torch.Tensor  # scalar: sum over layers (step 8)
    layer_alignment_losses: list[torch.Tensor]
    frame_embeddings: torch.Tensor  # (B, T, E): visual_projection(post_layernorm(class token))
    video_embedding: torch.Tensor  # (B, E): mean over frames of the MIT output
    last_hidden_state: torch.Tensor  # (B*T, L, D) after the last encoder layer (before ln_post)
    class_embeddings: torch.Tensor | None = None  # (K, E) text tower output (K400 head)
    extras: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Small functional building blocks
# --------------------------------------------------------------------------------------------


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def layer_norm(x, sd, prefix):
    return F.layer_norm(x, (x.shape[-1],), sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], LAYER_NORM_EPS)


def linear(x, sd, prefix, bias=True):
    return F.linear(x, sd[f"{prefix}.weight"], sd[f"{prefix}.bias"] if bias else None)


def batch_norm(x, sd, prefix, batch_statistics=False):
    """Eval-mode BatchNorm: normalise with the stored running statistics, or (``batch_statistics``, as the authors'
    K400 evaluation did after its first batch) with the statistics of ``x`` itself."""
    if batch_statistics:
        return F.batch_norm(x, None, None, sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], True, 0.0, BATCH_NORM_EPS)
    return F.batch_norm(
        x,
        sd[f"{prefix}.running_mean"],
        sd[f"{prefix}.running_var"],
        sd[f"{prefix}.weight"],
        sd[f"{prefix}.bias"],
        training=False,
        eps=BATCH_NORM_EPS,
    )


def attention(query, key, value, num_heads, mask=None):
    """Scaled dot-product attention on already projected (N, Lq, C) / (N, Lk, C) tensors."""
    n, lq, c = query.shape
    lk = key.shape[1]
    head_dim = c // num_heads
    q = query.reshape(n, lq, num_heads, head_dim).transpose(1, 2)
    k = key.reshape(n, lk, num_heads, head_dim).transpose(1, 2)
    v = value.reshape(n, lk, num_heads, head_dim).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim)
    if mask is not None:
        scores = scores + mask
    weights = scores.softmax(dim=-1)
    return (weights @ v).transpose(1, 2).reshape(n, lq, c)


def fused_self_attention(x, sd, prefix, mask=None):
    """nn.MultiheadAttention with the fused in_proj (q, k, v stacked in that order)."""
    width = x.shape[-1]
    qkv = F.linear(x, sd[f"{prefix}.in_proj_weight"], sd[f"{prefix}.in_proj_bias"])
    q, k, v = qkv[..., :width], qkv[..., width : 2 * width], qkv[..., 2 * width :]
    out = attention(q, k, v, width // HEAD_DIM, mask)
    return linear(out, sd, f"{prefix}.out_proj")


def clip_block(x, sd, prefix, mask=None):
    """OpenAI CLIP ResidualAttentionBlock: pre-LN attention and QuickGELU MLP, both residual."""
    x = x + fused_self_attention(layer_norm(x, sd, f"{prefix}.ln_1"), sd, f"{prefix}.attn", mask)
    hidden = quick_gelu(linear(layer_norm(x, sd, f"{prefix}.ln_2"), sd, f"{prefix}.mlp.c_fc"))
    return x + linear(hidden, sd, f"{prefix}.mlp.c_proj")


def count_blocks(sd, prefix):
    indices = {int(key[len(prefix) :].split(".")[0]) for key in sd if key.startswith(prefix)}
    return len(indices)


# --------------------------------------------------------------------------------------------
# Vision: CLIP embeddings
# --------------------------------------------------------------------------------------------


def patch_embeddings(images, sd):
    """(N, 3, H, W) -> (N, L, D): patch conv, class token first, positions, ln_pre."""
    weight = sd["visual.conv1.weight"]
    patch = weight.shape[-1]
    patches = F.conv2d(images, weight, stride=patch)  # (N, D, S, S)
    patches = patches.flatten(2).transpose(1, 2)  # (N, S*S, D), row-major
    class_token = sd["visual.class_embedding"].expand(images.shape[0], 1, -1)
    tokens = torch.cat([class_token, patches], dim=1) + sd["visual.positional_embedding"]
    return layer_norm(tokens, sd, "visual.ln_pre")


def clip_image_embeddings(sd, images):
    """The plain (frozen) CLIP ViT on single images: (N, 3, H, W) -> (N, E). No ILA at all."""
    x = patch_embeddings(images, sd)
    for i in range(count_blocks(sd, "visual.transformer.resblocks.")):
        x = clip_block(x, sd, f"visual.transformer.resblocks.{i}")
    return layer_norm(x[:, 0], sd, "visual.ln_post") @ sd["visual.proj"]


# --------------------------------------------------------------------------------------------
# One ILA layer
# --------------------------------------------------------------------------------------------


def alignment_mask(points, grid_size):
    """Step 6. points (..., 2) as (x, y) in [-1, 1] -> masks (..., S, S), M[row, col] = w_y * w_x."""
    grid = torch.tensor([-1 + 2 * i / (grid_size - 1) for i in range(grid_size)], dtype=points.dtype)

    def axis_weight(coordinate):  # (...,) -> (..., S)
        distance = (grid - coordinate.unsqueeze(-1)).abs()
        ramp = (1 - MASK_SLOPE * (distance - MASK_FLAT_RADIUS)).clamp(min=0)
        return torch.where(distance <= MASK_FLAT_RADIUS, torch.ones_like(distance), ramp)

    weight_x = axis_weight(points[..., 0])  # picks columns
    weight_y = axis_weight(points[..., 1])  # picks rows
    return weight_y.unsqueeze(-1) * weight_x.unsqueeze(-2)


def interaction_block(pair_maps, sd, prefix, variant, batch_statistics=False):
    """Step 3: (B*P, 2D, S, S) -> F (B*P, 256, S, S)."""
    x = pair_maps
    if variant == "k400":
        block = f"{prefix}.interactive_block.0"
        channels = x.shape[1]
        depthwise = f"{block}.depthwise_conv.0"
        x = F.conv2d(x, sd[f"{depthwise}.weight"], sd[f"{depthwise}.bias"], padding=1, groups=channels)
        x = F.relu(batch_norm(x, sd, f"{block}.depthwise_conv.1", batch_statistics))
        x = F.conv2d(x, sd[f"{block}.pointwise_conv.0.weight"], sd[f"{block}.pointwise_conv.0.bias"])
        x = F.relu(batch_norm(x, sd, f"{block}.pointwise_conv.1", batch_statistics))
        x = F.conv2d(x, sd[f"{prefix}.interactive_block.1.weight"], sd[f"{prefix}.interactive_block.1.bias"], padding=1)
        x = F.relu(batch_norm(x, sd, f"{prefix}.interactive_block.2", batch_statistics))
    elif variant == "ssv2":
        x = F.conv2d(x, sd[f"{prefix}.interactive_block.0.weight"], sd[f"{prefix}.interactive_block.0.bias"], padding=1)
        x = F.relu(batch_norm(x, sd, f"{prefix}.interactive_block.1", batch_statistics))
        x = F.conv2d(x, sd[f"{prefix}.interactive_block.3.weight"], sd[f"{prefix}.interactive_block.3.bias"], padding=1)
        x = F.relu(batch_norm(x, sd, f"{prefix}.interactive_block.4", batch_statistics))
    else:
        raise ValueError(variant)
    return x


def predict_points(features, sd, prefix, batch_size, num_pairs, batch_statistics=False):
    """Step 4: F (B*P, 256, S, S) -> interactive points (B, P, 4) in [-0.75, 0.75]."""
    block = f"{prefix}.prediction_block"
    x = F.conv2d(features, sd[f"{block}.0.weight"], sd[f"{block}.0.bias"], padding=1)
    x = F.relu(F.max_pool2d(batch_norm(x, sd, f"{block}.1", batch_statistics), 2))  # conv, BN, 2x2 max-pool, ReLU
    x = F.conv2d(x, sd[f"{block}.4.weight"], sd[f"{block}.4.bias"], padding=1)
    x = F.relu(F.max_pool2d(batch_norm(x, sd, f"{block}.5", batch_statistics), 2))
    x = x.amax(dim=(2, 3))  # global max-pool -> (B*P, 128)
    x = x.reshape(batch_size, num_pairs, POINT_CHANNELS).permute(0, 2, 1)  # (B, 128, P)
    x = F.relu(F.conv1d(x, sd[f"{block}.10.weight"], sd[f"{block}.10.bias"], groups=2))
    x = F.conv1d(x, sd[f"{block}.12.weight"], sd[f"{block}.12.bias"], groups=2)  # (B, 4, P)
    return torch.tanh(x).permute(0, 2, 1) * POINT_SCALE  # (B, P, 4)


def merge_pairs_into_frames(from_prev, from_next):
    """Steps 5 and 7: per-pair maps (B, P, C, ...) -> per-frame (B, T, C, ...).

    Frame 0 takes the earlier-frame half of pair 0, frame T-1 the later-frame half of pair P-1,
    a middle frame t the mean of pair t's earlier half and pair t-1's later half.
    """
    num_pairs = from_prev.shape[1]
    frames = []
    for t in range(num_pairs + 1):
        if t == 0:
            frames.append(from_prev[:, 0])
        elif t == num_pairs:
            frames.append(from_next[:, num_pairs - 1])
        else:
            frames.append((from_prev[:, t] + from_next[:, t - 1]) / 2)
    return torch.stack(frames, dim=1)


def ila_layer(x, sd, prefix, num_frames, variant, batch_statistics=False):
    """Steps 1-9 for one encoder layer. x (B*T, L, D) -> (x, points (B, P, 4), alignment loss)."""
    bt, length, width = x.shape
    batch_size, T = bt // num_frames, num_frames
    P = T - 1
    S = math.isqrt(length - 1)

    # Step 1: message tokens
    message = layer_norm(linear(x, sd, f"{prefix}.message_fc"), sd, f"{prefix}.message_ln")
    message = message.reshape(batch_size, T, length, width)

    # Step 2: adjacent pairs as (B*P, D, S, S) maps, token index = row * S + col
    def to_maps(tokens):  # (B, P, L, D) -> (B*P, D, S, S)
        return tokens[:, :, 1:].reshape(batch_size * P, S, S, width).permute(0, 3, 1, 2)

    prev_maps = to_maps(message[:, :-1])
    next_maps = to_maps(message[:, 1:])

    # Step 3: interaction block on [prev, next] stacked along channels
    features = interaction_block(
        torch.cat([prev_maps, next_maps], dim=1), sd, f"{prefix}.message_attn", variant, batch_statistics
    )

    # Step 4: interactive points
    points = predict_points(features, sd, f"{prefix}.message_attn", batch_size, P, batch_statistics)

    # Step 5: interaction tokens I
    hidden = POINT_CHANNELS  # F_prev = F[:, :128], F_next = F[:, 128:]
    features_prev = features[:, :hidden].reshape(batch_size, P, hidden, S, S)
    features_next = features[:, hidden:].reshape(batch_size, P, hidden, S, S)
    per_frame = merge_pairs_into_frames(features_prev, features_next)  # (B, T, 128, S, S)
    per_frame = per_frame.permute(0, 2, 1, 3, 4)  # (B, 128, T, S, S)
    temporal_conv = f"{prefix}.message_attn.conv"  # Conv3d, kernel (3, 1, 1): mixes neighbouring frames only
    per_frame = F.conv3d(per_frame, sd[f"{temporal_conv}.weight"], sd[f"{temporal_conv}.bias"], padding=(1, 0, 0))
    per_frame = per_frame.permute(0, 2, 3, 4, 1).reshape(batch_size, T, S * S, hidden)
    interaction_tokens = linear(per_frame, sd, f"{prefix}.message_attn.fc")  # (B, T, N, D)
    interaction_tokens = torch.cat([message[:, :, :1], interaction_tokens], dim=2).reshape(bt, length, width)

    # Step 6: alignment masks at the points (eval: no jitter)
    masks_prev = alignment_mask(points[..., 0:2], S).reshape(batch_size * P, 1, S, S)
    masks_next = alignment_mask(points[..., 2:4], S).reshape(batch_size * P, 1, S, S)

    # Step 7: aligned tokens A and pooled tokens
    aligned_prev = masks_prev * prev_maps  # (B*P, D, S, S)
    aligned_next = masks_next * next_maps
    aligned = merge_pairs_into_frames(
        aligned_prev.reshape(batch_size, P, width, S, S), aligned_next.reshape(batch_size, P, width, S, S)
    )  # (B, T, D, S, S)
    aligned = aligned.flatten(3).transpose(2, 3)  # (B, T, N, D)
    aligned = torch.cat([message[:, :, :1], aligned], dim=2).reshape(bt, length, width)
    pooled_prev = aligned_prev.sum(dim=(2, 3))  # (B*P, D)
    pooled_next = aligned_next.sum(dim=(2, 3))

    # Step 8: alignment loss of this layer
    loss = (1 - F.cosine_similarity(pooled_prev, pooled_next, dim=-1)).mean()

    # Step 9: inject A and I, then the CLIP block
    x = x + linear(aligned, sd, f"{prefix}.temporal_skip_align_fc")
    x = x + linear(interaction_tokens, sd, f"{prefix}.temporal_skip_fc")
    x = clip_block(x, sd, prefix)
    return x, points, loss


# --------------------------------------------------------------------------------------------
# Text tower (K400 head's class embeddings)
# --------------------------------------------------------------------------------------------


def tokenize_class_names(names, tokenizer, context_length=77):
    """Template "{}": the bare class names, OpenAI-style zero padding to ``context_length``."""
    token_ids = torch.zeros(len(names), context_length, dtype=torch.long)
    for row, name in enumerate(names):
        ids = tokenizer(name)["input_ids"][:context_length]
        token_ids[row, : len(ids)] = torch.tensor(ids)
    return token_ids


def encode_text(sd, token_ids):
    """OpenAI CLIP encode_text: (K, 77) ids -> (K, E), pooled at the end-of-text (highest) id."""
    context_length = token_ids.shape[1]
    x = sd["token_embedding.weight"][token_ids] + sd["positional_embedding"][:context_length]
    causal_mask = torch.full((context_length, context_length), float("-inf")).triu(1)
    for i in range(count_blocks(sd, "transformer.resblocks.")):
        x = clip_block(x, sd, f"transformer.resblocks.{i}", mask=causal_mask)
    x = layer_norm(x, sd, "ln_final")
    end_of_text = token_ids.argmax(dim=-1)
    return x[torch.arange(x.shape[0]), end_of_text] @ sd["text_projection"]


# --------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------


def multiframe_integration(frame_embeddings, sd):
    """MIT: z = e + pos; k CLIP blocks; z = z + e; mean over frames -> (B, E)."""
    z = frame_embeddings + sd["mit.positional_embedding"]
    for j in range(count_blocks(sd, "mit.resblocks.")):
        z = clip_block(z, sd, f"mit.resblocks.{j}")
    z = z + frame_embeddings
    return z.mean(dim=1)


def linear_head(video_embedding, sd):
    """SSv2 recipe: normalise, LayerNorm, (Dropout), Linear."""
    v = video_embedding / video_embedding.norm(dim=-1, keepdim=True)
    return linear(layer_norm(v, sd, "mit.classify_head.0"), sd, "mit.classify_head.2")


def prompts_generator(class_embeddings, visual_context, sd):
    """Video-specific prompts: (B, K, E) text, (B, N, E) visual context -> (B, K, E) prompts."""
    context = layer_norm(visual_context, sd, "prompts_generator.norm")
    c = class_embeddings
    num_heads = c.shape[-1] // HEAD_DIM
    for j in range(count_blocks(sd, "prompts_generator.decoder.")):
        layer = f"prompts_generator.decoder.{j}"
        query = layer_norm(c, sd, f"{layer}.norm1")
        attended = attention(
            linear(query, sd, f"{layer}.cross_attn.q_proj", bias=False),
            linear(context, sd, f"{layer}.cross_attn.k_proj", bias=False),
            linear(context, sd, f"{layer}.cross_attn.v_proj", bias=False),
            num_heads,
        )
        c = c + linear(attended, sd, f"{layer}.cross_attn.proj")
        hidden = quick_gelu(linear(layer_norm(c, sd, f"{layer}.norm3"), sd, f"{layer}.mlp.0"))
        c = c + linear(hidden, sd, f"{layer}.mlp.3")
    return sd["prompts_generator.alpha"] * c


def text_head(video_embedding, last_hidden_state, class_embeddings, sd, num_frames):
    """K400 recipe (X-CLIP style): cosine similarity to prompted class embeddings."""
    batch_size = video_embedding.shape[0]
    patch_tokens = last_hidden_state[:, 1:]  # (B*T, N, D), before ln_post
    context = layer_norm(patch_tokens, sd, "prompts_visual_ln") @ sd["prompts_visual_proj"]
    context = context.reshape(batch_size, num_frames, -1, context.shape[-1]).mean(dim=1)  # (B, N, E)
    text = class_embeddings.unsqueeze(0).expand(batch_size, -1, -1)
    text = text + prompts_generator(text, context, sd)
    v = video_embedding / video_embedding.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    return sd["logit_scale"].exp() * torch.einsum("be,bke->bk", v, text)


# --------------------------------------------------------------------------------------------
# Whole model
# --------------------------------------------------------------------------------------------


def detect_variant(sd):
    if "visual.transformer.resblocks.0.message_attn.interactive_block.0.depthwise_conv.0.weight" in sd:
        return "k400"
    if "visual.transformer.resblocks.0.message_attn.interactive_block.0.weight" in sd:
        return "ssv2"
    raise ValueError("not an ILA state dict")


@torch.no_grad()
def reference_forward(sd, pixel_values, class_token_ids=None, class_embeddings=None, batch_statistics=False):
    """Eval-mode ILA forward on the raw released state dict.

    Args:
        sd: the released ``model`` state dict (fp32 tensors).
        pixel_values: (B, T, 3, H, W), already normalised.
        class_token_ids: (K, 77) token ids of the class names (K400 head), e.g. from
            ``tokenize_class_names``; or give ``class_embeddings`` (K, E) directly.
        batch_statistics: BatchNorm on the current batch's statistics instead of the running ones.
    """
    sd = {key: value.float() if value.is_floating_point() else value for key, value in sd.items()}
    variant = detect_variant(sd)
    batch_size, num_frames = pixel_values.shape[:2]
    if sd["mit.positional_embedding"].shape[1] != num_frames:
        raise ValueError("the checkpoint was trained for a different number of frames")

    # Frames are folded into the batch: (B*T, L, D)
    x = patch_embeddings(pixel_values.flatten(0, 1), sd)
    points, losses = [], []
    for i in range(count_blocks(sd, "visual.transformer.resblocks.")):
        x, layer_points, layer_loss = ila_layer(
            x, sd, f"visual.transformer.resblocks.{i}", num_frames, variant, batch_statistics
        )
        points.append(layer_points)
        losses.append(layer_loss)

    frame_embeddings = layer_norm(x[:, 0], sd, "visual.ln_post") @ sd["visual.proj"]
    frame_embeddings = frame_embeddings.reshape(batch_size, num_frames, -1)
    video_embedding = multiframe_integration(frame_embeddings, sd)

    if variant == "ssv2":
        logits = linear_head(video_embedding, sd)
    else:
        if class_embeddings is None:
            if class_token_ids is None:
                raise ValueError("the K400 text head needs class_token_ids or class_embeddings")
            class_embeddings = encode_text(sd, class_token_ids)
        logits = text_head(video_embedding, x, class_embeddings.float(), sd, num_frames)

    return ReferenceOutput(
        logits=logits,
        interactive_points=points,
        alignment_loss=torch.stack(losses).sum(),
        layer_alignment_losses=losses,
        frame_embeddings=frame_embeddings,
        video_embedding=video_embedding,
        last_hidden_state=x,
        class_embeddings=class_embeddings,
    )
