"""PyTorch ILA: Implicit Learnable Alignment for video recognition (Tu et al., ICCV 2023).

The code follows the numbered steps of the repository's `docs/computation.md`. Notation: B videos, T frames,
P = T - 1 adjacent frame pairs, S x S patch grid, N = S * S patch tokens, L = N + 1 tokens (class token first),
D = vision width, E = projection dim, C = interaction channels (256), K = classes.

This file imports only torch, transformers and `.configuration_ila`, so it travels as Hub remote code.
"""

import copy
import os
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.models.clip.modeling_clip import CLIPVisionEmbeddings, eager_attention_forward
from transformers.utils import ModelOutput, can_return_tuple
from transformers.utils.output_capturing import capture_outputs

from .configuration_ila import ZERO_SHOT_PIPELINE, ZERO_SHOT_TASK, ILAVideoConfig


@dataclass
class ILAVideoModelOutput(ModelOutput):
    r"""
    Output of [`ILAVideoModel`].

    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_frames, sequence_length, hidden_size)`):
        Tokens of the last encoder layer, before `post_layernorm`; the class token comes first. The same tensor as
        `hidden_states[-1]`.
    frame_embeds (`torch.FloatTensor` of shape `(batch_size, num_frames, projection_dim)`):
        Per-frame embeddings: `visual_projection(post_layernorm(class token))`.
    alignment_loss (`torch.FloatTensor` of shape `()`):
        Sum over the encoder layers of each layer's alignment loss, mean over pairs of 1 - cos(s_prev, s_next).
    interactive_points (`torch.FloatTensor` of shape `(batch_size, num_layers, num_frames - 1, 2, 2)`):
        Interactive point of every adjacent frame pair: `[..., 0, :]` in the earlier frame, `[..., 1, :]` in the
        later one, as (x, y) on [-1, 1] where -1 and +1 are the centres of the first and last patch.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned with `output_hidden_states=True`):
        The embedding output (after `pre_layrnorm`) and every encoder layer's output, `num_hidden_layers + 1`
        tensors of shape `(batch_size, num_frames, sequence_length, hidden_size)`: the very tensors the encoder
        passes from layer to layer (the alignment works on frame pairs, so the layers exchange this layout).
    attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions=True`):
        Spatial self-attention weights of every encoder layer, each `(batch_size * num_frames, num_heads,
        sequence_length, sequence_length)`: CLIP's attention sees each frame as one sequence. Only attention
        implementations that compute the weights return them (`attn_implementation="eager"`).
    """

    last_hidden_state: torch.FloatTensor | None = None
    frame_embeds: torch.FloatTensor | None = None
    alignment_loss: torch.FloatTensor | None = None
    interactive_points: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class ILAVideoClassifierOutput(ModelOutput):
    r"""
    Output of [`ILAForVideoClassification`].

    loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given):
        `classification_loss + config.alignment_loss_weight * alignment_loss`.
    logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
        Classification scores (before softmax).
    classification_loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given):
        Cross-entropy with the labels (class indices or soft targets).
    alignment_loss (`torch.FloatTensor` of shape `()`):
        See [`ILAVideoModelOutput`].
    video_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`):
        Output of the multi-frame integration transformer, averaged over frames, before normalisation.
    frame_embeds, interactive_points, hidden_states, attentions:
        See [`ILAVideoModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    classification_loss: torch.FloatTensor | None = None
    alignment_loss: torch.FloatTensor | None = None
    video_embeds: torch.FloatTensor | None = None
    frame_embeds: torch.FloatTensor | None = None
    interactive_points: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class ILADropPath(nn.Module):
    """Stochastic depth per sample; identity when the rate is 0 or outside training."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return hidden_states
        keep_prob = 1.0 - self.drop_prob
        mask_shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
        keep_mask = hidden_states.new_empty(mask_shape).bernoulli_(keep_prob)
        return hidden_states * keep_mask / keep_prob

    def extra_repr(self) -> str:
        return f"p={self.drop_prob}"


class ILAAttention(nn.Module):
    """
    Multi-head attention through transformers' attention-function registry. Serves CLIP's self-attention
    (`key_value_states=None`), the MIT's self-attention and the prompt generator's cross-attention.
    """

    def __init__(self, config: ILAVideoConfig, embed_dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads}).")
        self.config = config
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scale = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.is_causal = False

        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=qkv_bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(
        self, hidden_states: torch.Tensor, key_value_states: torch.Tensor | None = None, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden_states: (batch, queries, embed_dim); key_value_states: (batch, keys, embed_dim) or None."""
        key_value_states = hidden_states if key_value_states is None else key_value_states
        batch_size, query_length, _ = hidden_states.shape
        key_length = key_value_states.shape[1]

        queries = self.q_proj(hidden_states).view(batch_size, query_length, -1, self.head_dim).transpose(1, 2)
        keys = self.k_proj(key_value_states).view(batch_size, key_length, -1, self.head_dim).transpose(1, 2)
        values = self.v_proj(key_value_states).view(batch_size, key_length, -1, self.head_dim).transpose(1, 2)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            queries,
            keys,
            values,
            None,
            scaling=self.scale,
            dropout=0.0 if not self.training else self.dropout,
            **kwargs,
        )
        attn_output = attn_output.reshape(batch_size, query_length, self.embed_dim).contiguous()
        return self.out_proj(attn_output), attn_weights


class ILAMLP(nn.Module):
    def __init__(self, config: ILAVideoConfig, embed_dim: int, intermediate_size: int):
        super().__init__()
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc1 = nn.Linear(embed_dim, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, embed_dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.hidden(hidden_states))

    def hidden(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(..., D) -> activation(fc1(x)): (..., intermediate_size)."""
        return self.activation_fn(self.fc1(hidden_states))


class ILATransformerLayer(GradientCheckpointingLayer):
    """CLIP's pre-LN residual block: x = x + Attn(LN1(x)); x = x + MLP(LN2(x)), with optional drop-path."""

    def __init__(
        self,
        config: ILAVideoConfig,
        embed_dim: int,
        num_heads: int,
        intermediate_size: int,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        self.self_attn = ILAAttention(config, embed_dim, num_heads)
        self.layer_norm1 = nn.LayerNorm(embed_dim, eps=config.layer_norm_eps)
        self.mlp = ILAMLP(config, embed_dim, intermediate_size)
        self.layer_norm2 = nn.LayerNorm(embed_dim, eps=config.layer_norm_eps)
        self.drop_path = ILADropPath(drop_path_rate)
        self.recompute_frozen_mlp = config.recompute_frozen_mlp

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_output, attn_weights = self.self_attn(self.layer_norm1(hidden_states), **kwargs)
        hidden_states = hidden_states + self.drop_path(attn_output)
        if self._recomputes_mlp_hidden():
            # No randomness inside (LN, Linear, activation): no RNG state to save and restore.
            mlp_hidden = checkpoint(self._mlp_hidden, hidden_states, use_reentrant=False, preserve_rng_state=False)
        else:
            mlp_hidden = self._mlp_hidden(hidden_states)
        hidden_states = hidden_states + self.drop_path(self.mlp.fc2(mlp_hidden))
        return hidden_states, attn_weights

    def _mlp_hidden(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.mlp.hidden(self.layer_norm2(hidden_states))

    def _recomputes_mlp_hidden(self) -> bool:
        """
        With a frozen MLP, the backward only needs the activation's inputs (a frozen fc2 keeps nothing for its input
        gradient), 2 x intermediate_size values per token; recomputing LN2 -> fc1 -> activation from x keeps D
        instead, for one more fc1 per token. Not when the whole layer is checkpointed already.
        """
        return (
            self.recompute_frozen_mlp
            and self.training
            and torch.is_grad_enabled()
            and not self.gradient_checkpointing
            and not self.mlp.fc1.weight.requires_grad
        )


class ILAPointwiseConv(nn.Conv2d):
    """
    A 1x1 Conv2d, stored as one, run as a matmul over the channels of every position: on the interaction block's
    channels-last maps that needs no copy, and it avoids the slow kernel PyTorch picks for 1x1 convs on small CPU
    batches. (batch, C_in, S, S) -> (batch, C_out, S, S), channels-last.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, kernel_size=1)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return F.linear(maps.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias).permute(0, 3, 1, 2)


class ILABatchNorm2d(nn.BatchNorm2d):
    """
    BatchNorm2d whose evaluation mode can normalise with the current batch's statistics, updating no running
    statistics (`eval_statistics="batch"`, the released K400 evaluation); `"running"` is plain BatchNorm2d.
    """

    def __init__(self, num_features: int, eval_statistics: str = "running"):
        super().__init__(num_features)
        self.eval_statistics = eval_statistics

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        if self.training or self.eval_statistics == "running":
            return super().forward(maps)
        return F.batch_norm(maps, None, None, self.weight, self.bias, training=True, momentum=0.0, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eval_statistics={self.eval_statistics}"


class ILAConvBlock(nn.Sequential):
    """conv -> BatchNorm -> [2x2 max-pool] -> ReLU, the unit of the interaction block and the point predictor."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        groups: int = 1,
        max_pool: bool = False,
        eval_statistics: str = "running",
    ):
        super().__init__()
        if kernel_size == 1 and groups == 1:
            self.conv = ILAPointwiseConv(in_channels, out_channels)
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, groups=groups)
        self.norm = ILABatchNorm2d(out_channels, eval_statistics)
        if max_pool:
            self.pool = nn.MaxPool2d(2)
        self.act = nn.ReLU()

    @torch.no_grad()
    def fold_batch_norm(self) -> None:
        """
        Inference only: fold BatchNorm's running statistics and affine into the conv (conv -> [pool] -> ReLU). The
        folded weight is stored channels-last, like the maps, so that the conv does not reorder it on every call.
        """
        conv, norm = self.conv, self.norm
        scale = norm.weight.double() / torch.sqrt(norm.running_var.double() + norm.eps)
        weight = conv.weight.double() * scale[:, None, None, None]
        bias = (conv.bias.double() - norm.running_mean) * scale + norm.bias.double()
        conv.weight = nn.Parameter(weight.to(conv.weight.dtype).contiguous(memory_format=torch.channels_last))
        conv.bias = nn.Parameter(bias.to(conv.bias.dtype))
        self.norm = nn.Identity()


def build_interaction_block(config: ILAVideoConfig) -> nn.Sequential:
    """Step 3: (B*P, 2D, S, S) -> F: (B*P, C, S, S), in the released K400 ("depthwise") or SSv2 ("conv") form."""
    pair_channels, channels = 2 * config.hidden_size, config.interaction_channels
    statistics = config.batchnorm_eval_statistics
    if config.interaction_variant == "depthwise":
        return nn.Sequential(
            ILAConvBlock(pair_channels, pair_channels, 3, groups=pair_channels, eval_statistics=statistics),
            ILAConvBlock(pair_channels, channels, 1, eval_statistics=statistics),
            ILAConvBlock(channels, channels, 3, eval_statistics=statistics),
        )
    return nn.Sequential(
        ILAConvBlock(pair_channels, channels, 3, eval_statistics=statistics),
        ILAConvBlock(channels, channels, 3, eval_statistics=statistics),
    )


class ILAPointPredictor(nn.Module):
    """Step 4: interaction features F of every pair -> one interactive point per frame of the pair."""

    def __init__(self, config: ILAVideoConfig):
        super().__init__()
        channels, statistics = config.interaction_channels, config.batchnorm_eval_statistics
        self.spatial = nn.Sequential(
            ILAConvBlock(channels, channels // 2, 3, max_pool=True, eval_statistics=statistics),
            ILAConvBlock(channels // 2, channels // 2, 3, max_pool=True, eval_statistics=statistics),
        )
        # Kernel-1 grouped convolutions over the pair axis: each half of the features predicts one frame's point.
        self.pair_fc1 = nn.Conv1d(channels // 2, channels // 4, 1, groups=2)
        self.pair_fc2 = nn.Conv1d(channels // 4, 4, 1, groups=2)
        self.point_scale = config.point_scale

    def forward(self, features: torch.Tensor, batch_size: int) -> torch.Tensor:
        """features: (B*P, C, S, S) -> points (B, P, 2, 2): [pair, earlier/later frame, (x, y)]."""
        pooled = self.spatial(features).amax(dim=(-2, -1))  # (B*P, C/2)
        pooled = pooled.view(batch_size, -1, pooled.shape[-1]).transpose(1, 2)  # (B, C/2, P)
        points = torch.tanh(self.pair_fc2(F.relu(self.pair_fc1(pooled))))  # (B, 4, P)
        return self.point_scale * points.transpose(1, 2).unflatten(-1, (2, 2))


def merge_pairs_into_frames(earlier: torch.Tensor, later: torch.Tensor) -> torch.Tensor:
    """
    (B, P, ...) per-pair features of each pair's earlier and later frame -> (B, T, ...) per-frame features: frame 0
    from pair 0's earlier side, frame T-1 from pair P-1's later side, frame t between the mean of pair t's earlier
    and pair t-1's later side.
    """
    middle = (earlier[:, 1:] + later[:, :-1]) / 2
    return torch.cat([earlier[:, :1], middle, later[:, -1:]], dim=1)


class ILATemporalConv(nn.Conv3d):
    """
    The Conv3d of step 5, kernel (3, 1, 1) over (channels, frames, rows, cols), stored as a Conv3d, applied to tokens
    (B, T, N, C_in) -> (B, T, N, C_out). It runs as one matmul over each position's 3-frame window: the same sum,
    several times faster than a CPU Conv3d kernel, and the tokens need no transposing.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, kernel_size=(3, 1, 1), padding=(1, 0, 0))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        windows = F.pad(tokens, (0, 0, 0, 0, 1, 1)).unfold(1, 3, 1)  # (B, T, N, C_in, 3), zero frames at both ends
        return F.linear(windows.flatten(-2), self.weight.flatten(1), self.bias)


class ILAAlignment(nn.Module):
    """
    Implicit learnable alignment between adjacent frames (steps 2-8 of the spec), applied to one layer's message
    tokens. Returns the aligned tokens A, the interaction tokens I, the layer's alignment loss and its points.
    """

    def __init__(self, config: ILAVideoConfig):
        super().__init__()
        self.grid_size = config.grid_size
        self.alignment_window = config.alignment_window
        self.alignment_slope = config.alignment_slope

        self.interaction_block = build_interaction_block(config)
        self.point_predictor = ILAPointPredictor(config)
        frame_channels = config.interaction_channels // 2
        self.temporal_conv = ILATemporalConv(frame_channels, frame_channels)
        self.interaction_fc = nn.Linear(frame_channels, config.hidden_size)

        # Patch-centre coordinates g_i on [-1, 1] and the 9 unit jitter directions; constants, not weights.
        self.register_buffer("grid", torch.linspace(-1.0, 1.0, config.grid_size), persistent=False)
        self.register_buffer("jitter_directions", self._unit_jitter_directions(), persistent=False)
        # Training-time jitter size, decayed by the training loop ("align decay"); not saved, as in the release.
        self.register_buffer("jitter_delta", torch.tensor(config.jitter_delta), persistent=False)

    @staticmethod
    def _unit_jitter_directions() -> torch.Tensor:
        return torch.tensor(
            [[0, 0], [0, 1], [1, 0], [0, -1], [-1, 0], [1, 1], [-1, -1], [1, -1], [-1, 1]], dtype=torch.float32
        )

    def alignment_masks(self, points: torch.Tensor) -> torch.Tensor:
        """Step 6: points (..., 2) as (x, y) -> masks (..., S, S), averaged over the 9 jittered points in training."""
        points = points.unsqueeze(-2)  # (..., 1, 2)
        if self.training:
            points = points + self.jitter_delta * self.jitter_directions  # (..., 9, 2)
        distance = (self.grid - points.unsqueeze(-1)).abs()  # (..., J, 2, S)
        weights = torch.where(
            distance <= self.alignment_window,
            1.0,
            (1 - self.alignment_slope * (distance - self.alignment_window)).clamp(min=0),
        )
        masks = weights[..., 1, :, None] * weights[..., 0, None, :]  # y picks rows, x picks columns: (..., J, S, S)
        return masks.mean(dim=-3)

    def forward(self, messages: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """messages a: (B, T, L, D) -> A: (B, T, L, D), I: (B, T, L, D), loss: (), points: (B, P, 2, 2)."""
        batch_size, grid_size = messages.shape[0], self.grid_size
        class_tokens = messages[:, :, :1]  # (B, T, 1, D)

        # Step 2: patch tokens of each frame beside the next frame's, seen as row-major maps. The maps are
        # channels-last views of the tokens, the layout the convolutions run fastest in; nothing is transposed.
        patch_tokens = messages[:, :, 1:]  # (B, T, N, D)
        earlier_tokens, later_tokens = patch_tokens[:, :-1], patch_tokens[:, 1:]  # (B, P, N, D)
        pair_tokens = torch.cat([earlier_tokens, later_tokens], dim=-1).flatten(0, 1)  # (B*P, N, 2D)
        pair_maps = pair_tokens.unflatten(1, (grid_size, grid_size)).permute(0, 3, 1, 2)  # (B*P, 2D, S, S)

        # Step 3: interaction features F of every pair.
        features = self.interaction_block(pair_maps)  # (B*P, C, S, S)

        # Step 4: interactive points.
        points = self.point_predictor(features, batch_size)  # (B, P, 2, 2)

        # Step 5: interaction tokens I.
        feature_tokens = features.flatten(-2).transpose(-1, -2).unflatten(0, (batch_size, -1))  # (B, P, N, C)
        earlier_features, later_features = feature_tokens.chunk(2, dim=-1)  # (B, P, N, C/2)
        interaction_tokens = self.temporal_conv(merge_pairs_into_frames(earlier_features, later_features))
        interaction_tokens = self.interaction_fc(interaction_tokens)  # (B, T, N, D)
        interaction_tokens = torch.cat([class_tokens, interaction_tokens], dim=2)

        # Steps 6-7: both aligned maps of a frame mask that frame's own message map, so the merged aligned tokens
        # are the message tokens scaled per position by the merged masks (the class token unscaled).
        masks = self.alignment_masks(points).flatten(-2)  # (B, P, 2, N)
        earlier_masks, later_masks = masks[:, :, 0], masks[:, :, 1]  # (B, P, N)
        token_scales = F.pad(merge_pairs_into_frames(earlier_masks, later_masks), (1, 0), value=1.0)  # (B, T, L)
        aligned_tokens = messages * token_scales.unsqueeze(-1)

        # Step 8: pooled aligned tokens (mask-weighted sums over the grid) of a pair should agree.
        earlier_pooled = torch.einsum("bpn,bpnd->bpd", earlier_masks, earlier_tokens)
        later_pooled = torch.einsum("bpn,bpnd->bpd", later_masks, later_tokens)
        alignment_loss = (1 - F.cosine_similarity(earlier_pooled, later_pooled, dim=-1)).mean()

        return aligned_tokens, interaction_tokens, alignment_loss, points


class ILAClassTokenLinear(nn.Module):
    """A Linear on the first (class) token of (..., tokens, features); the other tokens pass through unchanged."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.linear(tokens[..., :1, :]), tokens[..., 1:, :]], dim=-2)


class ILAEncoderLayer(ILATransformerLayer):
    """A CLIP encoder layer preceded by the alignment update of step 9 (module names match CLIP's)."""

    def __init__(self, config: ILAVideoConfig, drop_path_rate: float = 0.0):
        super().__init__(
            config, config.hidden_size, config.num_attention_heads, config.intermediate_size, drop_path_rate
        )
        self.message_fc = nn.Linear(config.hidden_size, config.hidden_size)
        self.message_ln = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.alignment = ILAAlignment(config)
        # Linear_align and Linear_inter, zero-initialised so that a fresh layer is exactly the CLIP layer.
        self.aligned_tokens_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.interaction_tokens_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> tuple[torch.Tensor, ...]:
        """
        hidden_states: (B, T, L, D) -> (hidden_states (B, T, L, D), attn_weights (B*T, heads, L, L) or None,
        alignment_loss (), points (B, P, 2, 2)).
        """
        messages = self.message_ln(self.message_fc(hidden_states))  # step 1
        aligned_tokens, interaction_tokens, alignment_loss, points = self.alignment(messages)
        hidden_states = hidden_states + self.drop_path(self.aligned_tokens_proj(aligned_tokens))
        hidden_states = hidden_states + self.drop_path(self.interaction_tokens_proj(interaction_tokens))
        # CLIP's layer sees every frame as one sequence: (B*T, L, D), a view.
        frame_tokens, attn_weights = super().forward(hidden_states.flatten(0, 1), **kwargs)
        return frame_tokens.view_as(hidden_states), attn_weights, alignment_loss, points

    @torch.no_grad()
    def fuse_for_inference(self) -> None:
        """
        Fold what exact algebra allows, for inference (see [`ILAVideoModel.fuse_for_inference`]): BatchNorm into the
        preceding convs, and Linear_inter(interaction_fc(temporal_conv(z))) on the patch tokens into one temporal
        conv C/2 -> D. Linear_inter then acts on the interaction class token only.
        """
        alignment = self.alignment
        for conv_block in (*alignment.interaction_block, *alignment.point_predictor.spatial):
            conv_block.fold_batch_norm()

        temporal_conv, interaction_fc = alignment.temporal_conv, alignment.interaction_fc
        projection = self.interaction_tokens_proj
        frame_weights = temporal_conv.weight.double()[..., 0, 0]  # (C/2 out, C/2 in, 3)
        projected_fc = projection.weight.double() @ interaction_fc.weight.double()  # (D, C/2)
        fused_conv = ILATemporalConv(temporal_conv.in_channels, projection.out_features)
        fused_conv.to(device=temporal_conv.weight.device, dtype=temporal_conv.weight.dtype)
        fused_conv.weight.copy_(torch.einsum("dc,cik->dik", projected_fc, frame_weights)[..., None, None])
        fused_conv.bias.copy_(
            projected_fc @ temporal_conv.bias.double()
            + projection.weight.double() @ interaction_fc.bias.double()
            + projection.bias.double()
        )
        alignment.temporal_conv, alignment.interaction_fc = fused_conv, nn.Identity()
        self.interaction_tokens_proj = ILAClassTokenLinear(projection)


class ILAEncoder(nn.Module):
    """The ILA encoder layers, with drop-path rates rising linearly from 0 to `config.drop_path_rate`."""

    def __init__(self, config: ILAVideoConfig):
        super().__init__()
        # On the CPU explicitly, so that the model also builds under `torch.device("meta")` (cost counting).
        drop_path_rates = torch.linspace(0, config.drop_path_rate, config.num_hidden_layers, device="cpu").tolist()
        self.layers = nn.ModuleList([ILAEncoderLayer(config, rate) for rate in drop_path_rates])

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        hidden_states: (B, T, L, D) -> last layer's tokens (B, T, L, D), summed alignment loss (), interactive points
        of every layer (B, layers, P, 2, 2).
        """
        alignment_losses, layer_points = [], []
        for layer in self.layers:
            hidden_states, _, alignment_loss, points = layer(hidden_states, **kwargs)
            alignment_losses.append(alignment_loss)
            layer_points.append(points)
        return hidden_states, torch.stack(alignment_losses).sum(), torch.stack(layer_points, dim=1)


class ILAPreTrainedModel(PreTrainedModel):
    config: ILAVideoConfig
    base_model_prefix = "ila"
    main_input_name = "pixel_values"
    input_modalities = ("video",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["CLIPVisionEmbeddings", "ILAEncoderLayer", "ILATransformerLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # `capture_outputs` (on ILAVideoModel.forward) records these by forward hooks: every encoder layer's output (and
    # the first layer's input) as hidden states, the attention weights of the attention modules inside the encoder.
    _can_record_outputs = {"hidden_states": ILAEncoderLayer, "attentions": ILAAttention}
    is_fused = False  # set by `fuse_for_inference`

    def train(self, mode: bool = True):
        if mode and self.is_fused:
            raise RuntimeError(
                "This model was fused for inference (fuse_for_inference), which folded BatchNorm statistics and merged "
                "layers, so it cannot train. Load the unfused weights again to train."
            )
        return super().train(mode)

    def _initialize_weights(self, module, is_custom_code: bool = False):
        # transformers treats Hub code as "custom" and then skips modules that own no tensors directly (ILAAttention,
        # ILAEncoderLayer, ...), whose branches below initialise their children. Every write below goes through
        # `transformers.initialization`, which leaves loaded tensors alone, so the skip is not needed here.
        super()._initialize_weights(module, is_custom_code=False)

    def _init_weights(self, module):
        """CLIP's initialisation for the CLIP parts; zero skip Linears and point head as in the release."""
        super()._init_weights(module)
        factor = self.config.initializer_factor
        num_layers = self.config.num_hidden_layers
        if isinstance(module, CLIPVisionEmbeddings):
            init.normal_(module.class_embedding, std=module.embed_dim**-0.5 * factor)
            init.normal_(module.patch_embedding.weight, std=self.config.initializer_range * factor)
            init.normal_(module.position_embedding.weight, std=self.config.initializer_range * factor)
            init.copy_(module.position_ids, torch.arange(module.num_positions).expand((1, -1)))
        elif isinstance(module, ILAAttention):
            in_proj_std = module.embed_dim**-0.5 * (2 * num_layers) ** -0.5 * factor
            for projection in (module.q_proj, module.k_proj, module.v_proj):
                init.normal_(projection.weight, std=in_proj_std)
            init.normal_(module.out_proj.weight, std=module.embed_dim**-0.5 * factor)
        elif isinstance(module, ILAMLP):
            embed_dim = module.fc1.in_features
            init.normal_(module.fc1.weight, std=(2 * embed_dim) ** -0.5 * factor)
            init.normal_(module.fc2.weight, std=embed_dim**-0.5 * (2 * num_layers) ** -0.5 * factor)
        elif isinstance(module, ILAEncoderLayer):
            for projection in (module.aligned_tokens_proj, module.interaction_tokens_proj):
                init.zeros_(projection.weight)
                init.zeros_(projection.bias)
        elif isinstance(module, ILAAlignment):
            init.copy_(module.grid, torch.linspace(-1.0, 1.0, module.grid_size))
            init.copy_(module.jitter_directions, module._unit_jitter_directions())
            init.constant_(module.jitter_delta, self.config.jitter_delta)
        elif isinstance(module, ILAPointPredictor):
            init.zeros_(module.pair_fc2.weight)
            init.zeros_(module.pair_fc2.bias)
        elif isinstance(module, ILAMultiFrameIntegrationTransformer):
            init.trunc_normal_(module.position_embedding, std=0.02)
        elif isinstance(module, ILAPromptGenerator):
            init.constant_(module.alpha, self.config.prompt_alpha)
        elif isinstance(module, ILATextHead):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)
            init.zeros_(module.class_embeddings)
        elif isinstance(module, ILAVideoModel):
            init.normal_(module.visual_projection.weight, std=self.config.hidden_size**-0.5 * factor)


class ILAVideoModel(ILAPreTrainedModel):
    """
    The ILA video encoder: CLIP embeddings, ILA encoder layers over frames folded into the batch, `post_layernorm`
    on each frame's class token and the visual projection. Module names match transformers'
    `CLIPVisionModelWithProjection`, so CLIP vision weights load by name.
    """

    def __init__(self, config: ILAVideoConfig):
        super().__init__(config)
        self.embeddings = CLIPVisionEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.encoder = ILAEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.visual_projection = nn.Linear(config.hidden_size, config.projection_dim, bias=False)
        self.post_init()
        if config.freeze_backbone:
            self.freeze_clip_backbone()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embedding

    def fuse_for_inference(self) -> "ILAVideoModel":
        """
        Opt-in, inference only: fold what exact algebra allows into fewer operations, in place. In every layer,
        BatchNorm's running statistics go into the preceding convs, and Linear_inter(interaction_fc(temporal_conv(z)))
        on the patch tokens becomes one temporal conv C/2 -> D (about 8 G multiply-adds less per B/16 8x224 view).
        Outputs stay equal up to float rounding. The fused model cannot train, and its state dict no longer matches
        the checkpoint layout: save or train the unfused model. Call `model.eval()` first.
        """
        if self.training:
            raise RuntimeError(
                "fuse_for_inference() folds BatchNorm's running statistics, so it is for evaluation only; call "
                "model.eval() first."
            )
        if self.config.batchnorm_eval_statistics != "running":
            raise ValueError(
                "fuse_for_inference() folds BatchNorm's running statistics into the convs, but this model evaluates "
                f"with batchnorm_eval_statistics={self.config.batchnorm_eval_statistics!r} (the released K400 "
                "evaluation); load it with batchnorm_eval_statistics='running' to fuse."
            )
        if not self.is_fused:
            for layer in self.encoder.layers:
                layer.fuse_for_inference()
            self.is_fused = True
        return self

    def clip_backbone_parameters(self):
        """Yield (name, parameter) for every CLIP weight: the part that `freeze_backbone` freezes."""
        clip_modules = [self.embeddings, self.pre_layrnorm, self.post_layernorm, self.visual_projection]
        for layer in self.encoder.layers:
            clip_modules += [layer.self_attn, layer.layer_norm1, layer.mlp, layer.layer_norm2]
        clip_parameters = {id(p) for module in clip_modules for p in module.parameters()}
        for name, parameter in self.named_parameters():
            if id(parameter) in clip_parameters:
                yield name, parameter

    def freeze_clip_backbone(self, frozen: bool = True) -> None:
        """Stop (or restart) gradients into the CLIP weights, as in the released recipe."""
        for _, parameter in self.clip_backbone_parameters():
            parameter.requires_grad_(not frozen)

    def set_jitter_delta(self, delta: float) -> None:
        """Set the training-time jitter size of every layer's alignment masks ("align decay" halves it)."""
        for layer in self.encoder.layers:
            layer.alignment.jitter_delta.fill_(delta)

    def check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        config = self.config
        expected = (config.num_frames, config.num_channels, config.image_size, config.image_size)
        if pixel_values.ndim != 5 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"Expected pixel_values of shape (batch_size, num_frames={expected[0]}, num_channels={expected[1]}, "
                f"height={expected[2]}, width={expected[3]}), got {tuple(pixel_values.shape)}. The model was built "
                f"for {config.num_frames} frames of {config.image_size}x{config.image_size}; sample and resize "
                "videos to match (ILAVideoProcessor does)."
            )

    @capture_outputs(tie_last_hidden_states=False)
    def forward(self, pixel_values: torch.Tensor, **kwargs) -> ILAVideoModelOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_frames, num_channels, height, width)`):
            Normalised video frames, e.g. from [`ILAVideoProcessor`].
        output_hidden_states, output_attentions, return_dict (`bool`, *optional*):
            As in every transformers model; see [`ILAVideoModelOutput`] for the shapes.
        """
        self.check_pixel_values(pixel_values)
        batch_size, num_frames = pixel_values.shape[:2]
        hidden_states = self.pre_layrnorm(self.embeddings(pixel_values.flatten(0, 1)))  # (B*T, L, D)
        last_hidden_state, alignment_loss, interactive_points = self.encoder(
            hidden_states.unflatten(0, (batch_size, num_frames)), **kwargs
        )
        frame_embeds = self.visual_projection(self.post_layernorm(last_hidden_state[:, :, 0]))  # (B, T, E)
        return ILAVideoModelOutput(
            last_hidden_state=last_hidden_state,
            frame_embeds=frame_embeds,
            alignment_loss=alignment_loss,
            interactive_points=interactive_points,
        )


class ILAMultiFrameIntegrationTransformer(nn.Module):
    """MIT: z = e + pos; k pre-LN residual attention blocks; z = z + e. (B, T, E) -> (B, T, E)."""

    def __init__(self, config: ILAVideoConfig):
        super().__init__()
        embed_dim = config.projection_dim
        self.position_embedding = nn.Parameter(torch.zeros(1, config.num_frames, embed_dim))
        self.layers = nn.ModuleList(
            [ILATransformerLayer(config, embed_dim, embed_dim // 64, 4 * embed_dim) for _ in range(config.mit_layers)]
        )

    def forward(self, frame_embeds: torch.Tensor) -> torch.Tensor:
        hidden_states = frame_embeds + self.position_embedding
        for layer in self.layers:
            hidden_states, _ = layer(hidden_states)
        return hidden_states + frame_embeds


class ILALinearHead(nn.Module):
    """Released SSv2 head: logits = Linear(Dropout(LN(v / ||v||)))."""

    def __init__(self, config: ILAVideoConfig):
        super().__init__()
        self.norm = nn.LayerNorm(config.projection_dim, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.projection_dim, config.num_labels)

    def forward(
        self, video_embeds: torch.Tensor, patch_tokens: torch.Tensor, class_embeddings: torch.Tensor | None = None
    ) -> torch.Tensor:
        """video_embeds (B, E); patch_tokens and class_embeddings unused (the text head's) -> logits (B, K)."""
        return self.classifier(self.dropout(self.norm(F.normalize(video_embeds, dim=-1))))


class ILAPromptGeneratorLayer(nn.Module):
    """c = c + CrossAttn(LN(c), context); c = c + MLP(LN(c))."""

    def __init__(self, config: ILAVideoConfig):
        super().__init__()
        embed_dim = config.projection_dim
        self.norm1 = nn.LayerNorm(embed_dim, eps=config.layer_norm_eps)
        self.cross_attn = ILAAttention(config, embed_dim, embed_dim // 64, qkv_bias=False)
        self.norm3 = nn.LayerNorm(embed_dim, eps=config.layer_norm_eps)
        self.mlp = ILAMLP(config, embed_dim, 4 * embed_dim)

    def forward(self, class_embeds: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        class_embeds = class_embeds + self.cross_attn(self.norm1(class_embeds), context)[0]
        return class_embeds + self.mlp(self.norm3(class_embeds))


class ILAPromptGenerator(nn.Module):
    """Video-specific prompts: class embeddings (B, K, E) attend to the visual context (B, N, E)."""

    def __init__(self, config: ILAVideoConfig):
        super().__init__()
        embed_dim = config.projection_dim
        self.norm = nn.LayerNorm(embed_dim, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList([ILAPromptGeneratorLayer(config) for _ in range(config.prompt_layers)])
        self.alpha = nn.Parameter(torch.full((embed_dim,), config.prompt_alpha))

    def forward(self, class_embeds: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        context = self.norm(context)
        for layer in self.layers:
            class_embeds = layer(class_embeds, context)
        return self.alpha * class_embeds


class ILATextHead(nn.Module):
    """
    Released K400 head (X-CLIP style): cosine similarity between the video embedding and the class text embeddings,
    each refined by prompts generated from the video's last-layer patch tokens. The class text embeddings are a
    persistent buffer, filled once by [`ILAForVideoClassification.set_class_names`].
    """

    def __init__(self, config: ILAVideoConfig):
        super().__init__()
        self.visual_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.visual_proj = nn.Linear(config.hidden_size, config.projection_dim, bias=False)
        self.prompt_generator = ILAPromptGenerator(config)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        self.register_buffer("class_embeddings", torch.zeros(config.num_labels, config.projection_dim))
        self._checked_embeddings = None  # (address, version) of the class embeddings last found non-zero

    def check_class_embeddings(self) -> None:
        """
        Raise if the class embeddings are all zero (never set). The check needs a device sync, so it runs once per
        state of the buffer: loading copies into it (a new version), `set_class_names` and `.to()` replace it (a new
        address). Skipped while compiling (a graph break) and for meta tensors (no values); inference tensors keep
        no version, so those are checked every time.
        """
        embeddings = self.class_embeddings
        if torch.compiler.is_compiling() or embeddings.is_meta:
            return
        state = None if embeddings.is_inference() else (embeddings.data_ptr(), embeddings._version)
        if state is not None and state == self._checked_embeddings:
            return
        if not embeddings.any():
            raise ValueError(
                "The text head has no class embeddings (all zero), so every class would get the same score. Embed "
                "the class names first: model.set_class_names(class_names) (with the model folder's text_model/, "
                "else give a CLIP text tower: model.set_class_names(class_names, clip_text)), or "
                "ILAForVideoClassification.from_clip(..., class_names=...)."
            )
        self._checked_embeddings = state

    def forward(
        self, video_embeds: torch.Tensor, patch_tokens: torch.Tensor, class_embeddings: torch.Tensor | None = None
    ) -> torch.Tensor:
        """video_embeds (B, E), patch_tokens (B, T, N, D), class_embeddings (K, E) or None: the stored ones
        -> logits (B, K)."""
        if class_embeddings is None:
            self.check_class_embeddings()
            class_embeddings = self.class_embeddings
        # Averaging over frames before the (linear) projection: the same context with T times fewer multiply-adds.
        context = self.visual_proj(self.visual_norm(patch_tokens).mean(dim=1))  # (B, N, E)
        class_embeds = class_embeddings.to(context.dtype).expand(video_embeds.shape[0], -1, -1)  # (B, K, E)
        class_embeds = class_embeds + self.prompt_generator(class_embeds, context)
        similarity = torch.einsum(
            "be,bke->bk", F.normalize(video_embeds, dim=-1), F.normalize(class_embeds, dim=-1)
        )
        return self.logit_scale.exp() * similarity


def load_clip_tower(tower: str, name_or_path, config=None, dtype=None, **hub_kwargs) -> PreTrainedModel:
    """
    CLIP's `"vision"` or `"text"` tower with its projection (`CLIP{Vision,Text}ModelWithProjection`), from a
    `CLIPModel` checkpoint or a single-tower one. A `CLIPModel` keeps `projection_dim` at its top level (its
    sub-configs may hold the default 512), so the tower's config takes it from there; the other tower's weights are
    expected leftovers and stay out of transformers' load report.
    """
    from transformers import AutoConfig, CLIPTextModelWithProjection, CLIPVisionModelWithProjection

    tower_class = {"vision": CLIPVisionModelWithProjection, "text": CLIPTextModelWithProjection}[tower]
    config = config if config is not None else AutoConfig.from_pretrained(name_or_path, **hub_kwargs)
    tower_config = getattr(config, f"{tower}_config", None)
    if tower_config is None:  # a single-tower checkpoint
        tower_config = config
    else:
        tower_config = copy.deepcopy(tower_config)
        tower_config.projection_dim = config.projection_dim
    other, other_projection = ("text", "text_projection") if tower == "vision" else ("vision", "visual_projection")
    leftovers = [rf"^{other}_model\.", rf"^{other_projection}\.", r"^logit_scale$"]
    loader = type(tower_class.__name__, (tower_class,), {"_keys_to_ignore_on_load_unexpected": leftovers})
    return loader.from_pretrained(name_or_path, config=tower_config, dtype=dtype, **hub_kwargs)


TEXT_MODEL_FOLDER = "text_model"  # the model folder's subfolder holding the text side
# What `from_pretrained` passes on when it finds the text side (the folder's location is given separately).
_TEXT_SIDE_LOADING_KWARGS = ("revision", "token", "cache_dir", "local_files_only", "force_download", "proxies")


def _text_tower(text_model: PreTrainedModel) -> PreTrainedModel:
    """A `CLIPModel`'s text tower and projection as a `CLIPTextModelWithProjection` sharing its modules; any other
    model as it is."""
    from transformers import CLIPModel, CLIPTextModelWithProjection

    if not isinstance(text_model, CLIPModel):
        return text_model
    text_config = copy.deepcopy(text_model.config.text_config)
    text_config.projection_dim = text_model.config.projection_dim
    with torch.device("meta"):  # every module is replaced by the CLIPModel's below
        tower = CLIPTextModelWithProjection(text_config)
    tower.text_model, tower.text_projection = text_model.text_model, text_model.text_projection
    return tower


class ILAClassNameEncoder:
    """
    The text side of the text head: a CLIP text tower with its projection (`CLIPTextModelWithProjection`) and its
    tokenizer, which embed class names. It is not a submodule of the model (not in its state dict, not moved by
    `.to()`): `save_pretrained` writes it to the folder's `text_model/` subfolder, and a model or tokenizer given as a
    location is loaded only when names are embedded or saved, then kept.
    """

    def __init__(self, text_model, tokenizer=None, **loading_kwargs):
        """
        Args:
            text_model: a `CLIPTextModelWithProjection` / `CLIPModel`, or the folder / Hub id of one (a `CLIPModel`'s
                top-level `projection_dim` is used).
            tokenizer: a CLIP tokenizer; None: loaded from `text_model`'s location.
            loading_kwargs: `subfolder`, `revision`, `token`, `cache_dir`, ... for loading from that location.
        """
        self.location = text_model if isinstance(text_model, (str, os.PathLike)) else None
        if self.location is None and tokenizer is None:
            raise ValueError("A tokenizer is needed when the text model is given as a model object.")
        self.text_model = None if self.location is not None else _text_tower(text_model)
        self.tokenizer = tokenizer
        self.loading_kwargs = loading_kwargs

    @classmethod
    def find(cls, name_or_path, **loading_kwargs) -> "ILAClassNameEncoder | None":
        """The text side saved in a model folder or Hub repo (its `subfolder`), or None when it has none."""
        from transformers.utils import cached_file

        found = cached_file(
            name_or_path,
            "config.json",
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
            **loading_kwargs,
        )
        return None if found is None else cls(name_or_path, **loading_kwargs)

    def load(self) -> tuple[PreTrainedModel, object]:
        """(text model, tokenizer), loaded from their location on first use."""
        from transformers import AutoTokenizer

        if self.text_model is None:
            self.text_model = load_clip_tower("text", self.location, **self.loading_kwargs)
        if self.tokenizer is None:
            self.tokenizer = AutoTokenizer.from_pretrained(self.location, **self.loading_kwargs)
        return self.text_model, self.tokenizer

    @torch.no_grad()
    def embed(self, class_names: list[str], template: str = "{}", device=None) -> torch.Tensor:
        """K names -> (K, E) text embeddings of `template.format(name)`, computed on `device`."""
        text_model, tokenizer = self.load()
        prompts = [template.format(name) for name in class_names]
        # Truncated to the tower's context (77 tokens for CLIP): a longer name cannot index past its positions.
        tokens = tokenizer(prompts, padding=True, truncation=True, return_tensors="pt").to(device)
        return text_model.to(device).eval()(**tokens).text_embeds

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write the text model (safetensors) and the tokenizer to `directory`; nothing when that is where they
        would be loaded from."""
        if self.location is not None and os.path.isdir(self.location):
            source = Path(self.location, self.loading_kwargs.get("subfolder", ""))
            if source.resolve() == Path(directory).resolve():
                return
        text_model, tokenizer = self.load()
        text_model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)


class ILAForVideoClassification(ILAPreTrainedModel):
    """ILA video encoder + multi-frame integration transformer + a linear or text head."""

    # The loss is a per-batch mean; `Trainer` must scale it for gradient accumulation itself.
    accepts_loss_kwargs = False

    def __init__(self, config: ILAVideoConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.ila = ILAVideoModel(config)
        self.mit = ILAMultiFrameIntegrationTransformer(config)
        self.head = ILATextHead(config) if config.head == "text" else ILALinearHead(config)
        # The text side that embeds new class names (text head only), saved in the folder's text_model/; see
        # `set_class_names`.
        self.class_name_encoder: ILAClassNameEncoder | None = None
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """
        As `PreTrainedModel.from_pretrained`. A text-head model also remembers the folder's `text_model/` (CLIP text
        tower and tokenizer) when it has one, so that `set_class_names(names)` needs nothing more; the text side is
        loaded only then.
        """
        loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # (model, loading info) with output_loading_info
        if model.config.head == "text" and pretrained_model_name_or_path is not None:
            loading_kwargs = {key: kwargs[key] for key in _TEXT_SIDE_LOADING_KWARGS if kwargs.get(key) is not None}
            subfolder = os.path.join(kwargs.get("subfolder") or "", TEXT_MODEL_FOLDER)
            model.class_name_encoder = ILAClassNameEncoder.find(
                pretrained_model_name_or_path, subfolder=subfolder, **loading_kwargs
            )
        return loaded

    @classmethod
    def from_clip(
        cls, clip_name_or_path: str, class_names=None, clip_text=None, tokenizer=None, **config_kwargs
    ) -> "ILAForVideoClassification":
        """
        Initialise ILA from any transformers CLIP checkpoint (a `CLIPModel` or `CLIPVisionModel[WithProjection]`,
        local folder or Hub id): CLIP's vision weights load by name, every ILA module gets its release
        initialisation, so the fresh model's per-frame embeddings equal CLIP's image embeddings. The ILA config is
        built and validated before any weight is read.

        Args:
            clip_name_or_path: the CLIP checkpoint. A `CLIPModel`'s top-level `projection_dim` is used even when its
                `vision_config` does not repeat it.
            class_names: K class names in label-id order; they set `id2label` / `label2id` and, with `head="text"`,
                are embedded by CLIP's text tower (see `set_class_names`), so the model is ready in one call.
            clip_text: where the text tower comes from for `head="text"`: a `CLIPModel` / `CLIPTextModelWithProjection`
                folder or Hub id, or such a model object. Default: `clip_name_or_path` (a full `CLIPModel`).
            tokenizer: CLIP tokenizer for the class names; default: loaded from `clip_text` (or `clip_name_or_path`).
            config_kwargs: `ILAVideoConfig` settings (`num_frames`, `head`, `id2label`, ...), and `dtype`,
                `revision`, `token`, `cache_dir` for loading.

        Example:
            `ILAForVideoClassification.from_clip("openai/clip-vit-base-patch16", num_frames=8, head="text",
            class_names=["archery", "bowling"])`
        """
        from transformers import AutoConfig

        hub_kwargs = {key: config_kwargs.pop(key) for key in ("revision", "token", "cache_dir") if key in config_kwargs}
        dtype = config_kwargs.pop("dtype", None)
        if class_names is not None:
            if {"id2label", "label2id", "num_labels"} & set(config_kwargs):
                raise ValueError("Pass either class_names or id2label / num_labels to from_clip, not both.")
            config_kwargs["id2label"] = dict(enumerate(class_names))
            config_kwargs["label2id"] = {name: index for index, name in enumerate(class_names)}
        clip_config = AutoConfig.from_pretrained(clip_name_or_path, **hub_kwargs)
        config = ILAVideoConfig.from_clip_vision_config(clip_config, **config_kwargs)  # validated: before the weights
        clip = load_clip_tower("vision", clip_name_or_path, config=clip_config, dtype=dtype, **hub_kwargs)
        model = cls(config)
        clip_state = {name.removeprefix("vision_model."): tensor for name, tensor in clip.state_dict().items()}
        missing, unexpected = model.ila.load_state_dict(clip_state, strict=False)
        clip_names = {name for name, _ in model.ila.clip_backbone_parameters()}
        if unexpected or clip_names & set(missing):
            raise ValueError(
                f"{clip_name_or_path} does not match ILA's CLIP backbone: missing {sorted(clip_names & set(missing))}, "
                f"unexpected {sorted(unexpected)}."
            )
        model = model.to(clip.dtype)
        if class_names is not None and config.head == "text":
            text_tower = clip_text if clip_text is not None else clip_name_or_path
            model.set_class_names(list(class_names), text_tower, tokenizer)
        return model

    def set_jitter_delta(self, delta: float) -> None:
        self.ila.set_jitter_delta(delta)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """
        As `PreTrainedModel.save_pretrained`, plus the text side in `text_model/` when the model has one. A
        remote-code folder also maps `AutoModel` to the video encoder and, with the text head, declares the
        zero-shot pipeline (`custom_pipelines` in its config.json) and holds its code.
        """
        save_directory = Path(save_directory)
        pipeline_file = Path(__file__).with_name(ZERO_SHOT_PIPELINE.split(".")[0] + ".py")
        declares_pipeline = self._auto_class is not None and self.config.head == "text" and pipeline_file.is_file()
        if self._auto_class is not None:
            module = type(self.ila).__module__.rsplit(".", 1)[-1]
            auto_map = getattr(self.config, "auto_map", None) or {}
            self.config.auto_map = {**auto_map, "AutoModel": f"{module}.{type(self.ila).__name__}"}
        # Before the model itself: `save_pretrained(..., push_to_hub=True)` uploads the folder at its end.
        if kwargs.get("is_main_process", True):
            save_directory.mkdir(parents=True, exist_ok=True)
            if declares_pipeline:
                shutil.copy(pipeline_file, save_directory / pipeline_file.name)
            if self.class_name_encoder is not None:
                self.class_name_encoder.save_pretrained(save_directory / TEXT_MODEL_FOLDER)
        if not declares_pipeline:
            return super().save_pretrained(save_directory, *args, **kwargs)
        # In the saved config only: on the live one, `pipeline(task, model=self)` would ask for trust_remote_code.
        declared = getattr(self.config, "custom_pipelines", None)
        zero_shot = {"impl": ZERO_SHOT_PIPELINE, "pt": ["AutoModelForVideoClassification"], "type": "multimodal"}
        self.config.custom_pipelines = {**(declared or {}), ZERO_SHOT_TASK: zero_shot}
        try:
            return super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            if declared is None:
                del self.config.custom_pipelines
            else:
                self.config.custom_pipelines = declared

    @property
    def is_fused(self) -> bool:
        return self.ila.is_fused

    def fuse_for_inference(self) -> "ILAForVideoClassification":
        """Fuse the video encoder for inference, in place; see [`ILAVideoModel.fuse_for_inference`]."""
        self.ila.fuse_for_inference()
        return self

    def set_class_names(
        self, class_names: list[str], clip_text_model_or_path=None, tokenizer=None, template: str = "{}"
    ) -> None:
        """
        Fill the text head's class embeddings by running a CLIP text tower once on the class names, and set
        `config.id2label` / `label2id`. Inference afterwards needs no text tower.

        Args:
            class_names: K names, in label-id order; any names, also ones never seen in training (open vocabulary).
            clip_text_model_or_path: a `CLIPTextModelWithProjection` / `CLIPModel`, or a folder / Hub id of one (a
                `CLIPModel`'s top-level `projection_dim` is used); it becomes the model's text side, saved with it
                in `text_model/`. None: the model's own text side, e.g. the `text_model/` of the folder it was loaded
                from.
            tokenizer: a CLIP tokenizer for `clip_text_model_or_path`; loaded from it when it is a location.
            template: format string applied to each name ("{}" in the released K400 recipe).

        Example:
            `model = ILAForVideoClassification.from_pretrained(folder); model.set_class_names(["surfing", "kayaking"])`
        """
        if isinstance(class_names, str) or not class_names:
            raise ValueError(f"class_names must be a non-empty list of names, got {class_names!r}.")
        duplicates = sorted(name for name, count in Counter(class_names).items() if count > 1)
        if duplicates:
            raise ValueError(f"class_names must be distinct (each names one label); repeated: {duplicates[:5]}.")
        if clip_text_model_or_path is None and tokenizer is not None:
            raise ValueError("A tokenizer goes with its text tower: give clip_text_model_or_path too.")
        encoder = self.class_name_encoder
        if clip_text_model_or_path is not None:
            encoder = ILAClassNameEncoder(clip_text_model_or_path, tokenizer)
        class_embeddings = self._embed_class_names(encoder, list(class_names), template)
        self.class_name_encoder = encoder
        self.head.class_embeddings = class_embeddings.to(self.head.class_embeddings.dtype)
        self.config.id2label = dict(enumerate(class_names))
        self.config.label2id = {name: index for index, name in enumerate(class_names)}
        self.num_labels = len(class_names)

    def embed_class_names(self, class_names: list[str], template: str = "{}") -> torch.Tensor:
        """
        (K, E) text embeddings of the names by the model's text side, on the model's device: what `set_class_names`
        stores, here for one call, `forward(pixel_values, class_embeddings=...)` (the zero-shot pipeline's use).
        """
        return self._embed_class_names(self.class_name_encoder, list(class_names), template)

    def _embed_class_names(self, encoder: ILAClassNameEncoder | None, class_names: list[str], template: str):
        if self.config.head != "text":
            raise ValueError(
                f"Embedding class names needs the text head, but this model has head={self.config.head!r}."
            )
        if encoder is None:
            raise ValueError(
                f"This model has no text side to embed class names with (none was given, and no {TEXT_MODEL_FOLDER}/ "
                "subfolder where it was loaded from): give the CLIP text tower of its backbone (its tokenizer loads "
                "from the same place), e.g. model.set_class_names(names, 'openai/clip-vit-base-patch16')."
            )
        class_embeddings = encoder.embed(class_names, template, self.device)  # (K, E)
        if class_embeddings.shape[-1] != self.config.projection_dim:
            raise ValueError(
                f"The text tower embeds into {class_embeddings.shape[-1]} dims, the video model into "
                f"{self.config.projection_dim}; use the CLIP text tower that matches the vision backbone."
            )
        return class_embeddings

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        class_embeddings: torch.Tensor | None = None,
        **kwargs,
    ) -> ILAVideoClassifierOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_frames, num_channels, height, width)`):
            Normalised video frames, e.g. from [`ILAVideoProcessor`].
        labels (`torch.LongTensor` of shape `(batch_size,)` or `torch.FloatTensor` of shape `(batch_size, num_labels)`):
            Class indices, or soft targets (mixup / cutmix / label smoothing) summing to 1 per row.
        class_embeddings (`torch.FloatTensor` of shape `(num_classes, projection_dim)`, *optional*):
            Text head only: score against these classes (e.g. from [`~ILAForVideoClassification.embed_class_names`])
            instead of the stored ones; the logits then have `num_classes` columns.
        output_hidden_states, output_attentions, return_dict (`bool`, *optional*):
            As in every transformers model; the video encoder's, see [`ILAVideoModelOutput`] for the shapes.
        """
        if class_embeddings is not None and self.config.head != "text":
            raise ValueError(f"class_embeddings need the text head, but this model has head={self.config.head!r}.")
        outputs = self.ila(pixel_values, return_dict=True, **kwargs)
        video_embeds = self.mit(outputs.frame_embeds).mean(dim=1)  # (B, E)
        logits = self.head(video_embeds, outputs.last_hidden_state[:, :, 1:], class_embeddings)

        loss = classification_loss = None
        if labels is not None:
            classification_loss = F.cross_entropy(logits.float(), labels.to(logits.device))
            loss = classification_loss + self.config.alignment_loss_weight * outputs.alignment_loss

        return ILAVideoClassifierOutput(
            loss=loss,
            logits=logits,
            classification_loss=classification_loss,
            alignment_loss=outputs.alignment_loss,
            video_embeds=video_embeds,
            frame_embeds=outputs.frame_embeds,
            interactive_points=outputs.interactive_points,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


__all__ = [
    "ILAClassNameEncoder",
    "ILAForVideoClassification",
    "ILAPreTrainedModel",
    "ILAVideoClassifierOutput",
    "ILAVideoModel",
    "ILAVideoModelOutput",
]
