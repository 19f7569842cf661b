"""Build checkpoints in the layout of the authors' released ILA files, at tiny sizes.

The released files are torch pickles of
``{'model': state_dict, 'optimizer', 'lr_scheduler', 'max_accuracy', 'epoch', 'config'}``
where ``config`` is a ``yacs.config.CfgNode``. The key names and shapes produced here are exactly
those of ``tests/data/released_layout_tiny_{k400,ssv2}.json`` when called with that file's sizes
(``LAYOUT_JSON_SIZES``); tests check this.

Weights are random but shaped to behave like trained ones: BatchNorm running statistics are
non-trivial (positive variances, ``num_batches_tracked`` set) and every tensor the authors
initialise to zero (the temporal skip Linears, the last point-prediction Conv1d) is non-zero, so a
converter that drops or misroutes one of them changes the logits.

yacs is not a dependency: while pickling, a faithful stand-in module ``yacs.config`` with a
``CfgNode(dict)`` class is placed in ``sys.modules`` so the file references the global
``yacs.config.CfgNode`` exactly as the real files do; it is removed afterwards, so whoever loads
the file has to cope without yacs.
"""

from __future__ import annotations

import math
import sys
import types
from collections import OrderedDict
from pathlib import Path

import torch

VARIANTS = ("k400", "ssv2")

# The sizes the published layout JSONs were dumped at.
LAYOUT_JSON_SIZES = dict(
    width=128,
    layers=2,
    patch_size=16,
    image_size=64,
    num_frames=4,
    embed_dim=64,
    text_width=64,
    text_layers=1,
    vocab_size=500,
    context_length=77,
    num_classes=400,
)

CLIP_VOCAB_SIZE = 49408  # the real CLIP BPE vocabulary: ids from tests/data/clip_tokenizer index it
INTERACTION_CHANNELS = 256  # F in the spec (steps 3-5)
POINT_CHANNELS = 128  # point-prediction / interaction-token channels (steps 4-5)


# --------------------------------------------------------------------------------------------
# Layout: key -> shape, in the order of the released files
# --------------------------------------------------------------------------------------------


def _clip_block(prefix: str, width: int) -> list[tuple[str, tuple[int, ...]]]:
    """OpenAI CLIP ResidualAttentionBlock (nn.MultiheadAttention with fused in_proj)."""
    return [
        (f"{prefix}.attn.in_proj_weight", (3 * width, width)),
        (f"{prefix}.attn.in_proj_bias", (3 * width,)),
        (f"{prefix}.attn.out_proj.weight", (width, width)),
        (f"{prefix}.attn.out_proj.bias", (width,)),
        (f"{prefix}.ln_1.weight", (width,)),
        (f"{prefix}.ln_1.bias", (width,)),
        (f"{prefix}.mlp.c_fc.weight", (4 * width, width)),
        (f"{prefix}.mlp.c_fc.bias", (4 * width,)),
        (f"{prefix}.mlp.c_proj.weight", (width, 4 * width)),
        (f"{prefix}.mlp.c_proj.bias", (width,)),
        (f"{prefix}.ln_2.weight", (width,)),
        (f"{prefix}.ln_2.bias", (width,)),
    ]


def _conv(prefix: str, out_channels: int, in_per_group: int, *kernel: int):
    return [(f"{prefix}.weight", (out_channels, in_per_group, *kernel)), (f"{prefix}.bias", (out_channels,))]


def _batch_norm(prefix: str, channels: int):
    return [
        (f"{prefix}.weight", (channels,)),
        (f"{prefix}.bias", (channels,)),
        (f"{prefix}.running_mean", (channels,)),
        (f"{prefix}.running_var", (channels,)),
        (f"{prefix}.num_batches_tracked", ()),
    ]


def _ila_block(prefix: str, width: int, variant: str):
    """One MultiAxisAttentionBlock: ILA modules (spec steps 1-9) + the CLIP block."""
    hidden = INTERACTION_CHANNELS
    entries = [
        (f"{prefix}.message_fc.weight", (width, width)),
        (f"{prefix}.message_fc.bias", (width,)),
        (f"{prefix}.message_ln.weight", (width,)),
        (f"{prefix}.message_ln.bias", (width,)),
    ]
    block = f"{prefix}.message_attn.interactive_block"
    if variant == "k400":
        entries += _conv(f"{block}.0.depthwise_conv.0", 2 * width, 1, 3, 3)
        entries += _batch_norm(f"{block}.0.depthwise_conv.1", 2 * width)
        entries += _conv(f"{block}.0.pointwise_conv.0", hidden, 2 * width, 1, 1)
        entries += _batch_norm(f"{block}.0.pointwise_conv.1", hidden)
        entries += _conv(f"{block}.1", hidden, hidden, 3, 3)
        entries += _batch_norm(f"{block}.2", hidden)
        entries += [
            (f"{prefix}.message_attn.fc.weight", (width, POINT_CHANNELS)),
            (f"{prefix}.message_attn.fc.bias", (width,)),
        ]
        entries += _conv(f"{prefix}.message_attn.conv", POINT_CHANNELS, POINT_CHANNELS, 3, 1, 1)
    else:
        entries += _conv(f"{block}.0", hidden, 2 * width, 3, 3)
        entries += _batch_norm(f"{block}.1", hidden)
        entries += _conv(f"{block}.3", hidden, hidden, 3, 3)
        entries += _batch_norm(f"{block}.4", hidden)
        entries += _conv(f"{prefix}.message_attn.conv", POINT_CHANNELS, POINT_CHANNELS, 3, 1, 1)
        entries += [
            (f"{prefix}.message_attn.fc.weight", (width, POINT_CHANNELS)),
            (f"{prefix}.message_attn.fc.bias", (width,)),
        ]
    prediction = f"{prefix}.message_attn.prediction_block"
    entries += _conv(f"{prediction}.0", POINT_CHANNELS, hidden, 3, 3)
    entries += _batch_norm(f"{prediction}.1", POINT_CHANNELS)
    entries += _conv(f"{prediction}.4", POINT_CHANNELS, POINT_CHANNELS, 3, 3)
    entries += _batch_norm(f"{prediction}.5", POINT_CHANNELS)
    entries += _conv(f"{prediction}.10", 64, POINT_CHANNELS // 2, 1)  # Conv1d 128->64, groups 2
    entries += _conv(f"{prediction}.12", 4, 64 // 2, 1)  # Conv1d 64->4, groups 2
    entries += [
        (f"{prefix}.temporal_skip_fc.weight", (width, width)),
        (f"{prefix}.temporal_skip_fc.bias", (width,)),
        (f"{prefix}.temporal_skip_align_fc.weight", (width, width)),
        (f"{prefix}.temporal_skip_align_fc.bias", (width,)),
    ]
    entries += _clip_block(prefix, width)
    return entries


def released_layout(
    variant: str,
    *,
    width: int = 128,
    layers: int = 2,
    patch_size: int = 16,
    image_size: int = 64,
    num_frames: int = 4,
    embed_dim: int = 64,
    text_width: int = 64,
    text_layers: int = 1,
    vocab_size: int = CLIP_VOCAB_SIZE,
    context_length: int = 77,
    num_classes: int = 174,
    mit_layers: int = 1,
    prompt_layers: int = 2,
    ssv2_text_tower: bool = False,
) -> "OrderedDict[str, tuple[int, ...]]":
    """Key -> shape of a released checkpoint's ``model`` state dict, in the released order.

    ``num_classes`` only matters for ``ssv2`` (the linear head); the K400 text head's classes come
    from class names. ``text_*``, ``vocab_size``, ``context_length`` and ``prompt_layers`` only
    matter for ``k400``, or for ``ssv2`` with ``ssv2_text_tower=True``: the published SSv2 layout
    has no text tower, but the authors' SSv2 model class inherits CLIP's, so a file carrying an
    unused one (plus ``logit_scale``) is plausible; the converter must accept and drop it.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    grid = image_size // patch_size
    entries: list[tuple[str, tuple[int, ...]]] = []
    with_text_tower = variant == "k400" or ssv2_text_tower
    if with_text_tower:
        entries += [
            ("positional_embedding", (context_length, text_width)),
            ("text_projection", (text_width, embed_dim)),
            ("logit_scale", ()),
        ]
    if variant == "k400":
        entries += [
            ("prompts_visual_proj", (width, embed_dim)),
            ("prompts_generator.alpha", (embed_dim,)),
            ("prompts_generator.norm.weight", (embed_dim,)),
            ("prompts_generator.norm.bias", (embed_dim,)),
        ]
        for j in range(prompt_layers):
            layer = f"prompts_generator.decoder.{j}"
            entries += [
                (f"{layer}.cross_attn.q_proj.weight", (embed_dim, embed_dim)),
                (f"{layer}.cross_attn.k_proj.weight", (embed_dim, embed_dim)),
                (f"{layer}.cross_attn.v_proj.weight", (embed_dim, embed_dim)),
                (f"{layer}.cross_attn.proj.weight", (embed_dim, embed_dim)),
                (f"{layer}.cross_attn.proj.bias", (embed_dim,)),
                (f"{layer}.norm1.weight", (embed_dim,)),
                (f"{layer}.norm1.bias", (embed_dim,)),
                (f"{layer}.norm3.weight", (embed_dim,)),
                (f"{layer}.norm3.bias", (embed_dim,)),
                (f"{layer}.mlp.0.weight", (4 * embed_dim, embed_dim)),
                (f"{layer}.mlp.0.bias", (4 * embed_dim,)),
                (f"{layer}.mlp.3.weight", (embed_dim, 4 * embed_dim)),
                (f"{layer}.mlp.3.bias", (embed_dim,)),
            ]
    entries.append(("mit.positional_embedding", (1, num_frames, embed_dim)))
    for j in range(mit_layers):
        entries += _clip_block(f"mit.resblocks.{j}", embed_dim)
    if variant == "ssv2":
        entries += [
            ("mit.classify_head.0.weight", (embed_dim,)),
            ("mit.classify_head.0.bias", (embed_dim,)),
            ("mit.classify_head.2.weight", (num_classes, embed_dim)),
            ("mit.classify_head.2.bias", (num_classes,)),
        ]
    entries += [
        ("visual.class_embedding", (width,)),
        ("visual.positional_embedding", (grid * grid + 1, width)),
        ("visual.proj", (width, embed_dim)),
        ("visual.conv1.weight", (width, 3, patch_size, patch_size)),
        ("visual.ln_pre.weight", (width,)),
        ("visual.ln_pre.bias", (width,)),
    ]
    for i in range(layers):
        entries += _ila_block(f"visual.transformer.resblocks.{i}", width, variant)
    entries += [("visual.ln_post.weight", (width,)), ("visual.ln_post.bias", (width,))]
    if with_text_tower:
        for i in range(text_layers):
            entries += _clip_block(f"transformer.resblocks.{i}", text_width)
        entries += [
            ("token_embedding.weight", (vocab_size, text_width)),
            ("ln_final.weight", (text_width,)),
            ("ln_final.bias", (text_width,)),
        ]
    if variant == "k400":
        entries += [
            ("prompts_visual_ln.weight", (width,)),
            ("prompts_visual_ln.bias", (width,)),
        ]
    return OrderedDict(entries)


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------

# Matrices used as ``x @ W`` (in x out), so their fan-in is the first dimension.
_RIGHT_MULTIPLIED = ("visual.proj", "text_projection", "prompts_visual_proj")
_NORM_MARKERS = ("ln_", "_ln", "norm", "classify_head.0")


def _is_norm_affine(key: str, shape: tuple[int, ...], layout) -> bool:
    """LayerNorm / BatchNorm weight or bias (BatchNorm: a sibling running_mean exists)."""
    module = key.rsplit(".", 1)[0]
    if f"{module}.running_mean" in layout:
        return True
    leaf = module.rsplit(".", 1)[-1]
    return any(marker in leaf for marker in _NORM_MARKERS) or module.endswith("classify_head.0")


def _random_value(key: str, shape: tuple[int, ...], layout, generator: torch.Generator) -> torch.Tensor:
    def normal(std: float) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * std

    name = key.rsplit(".", 1)[-1]
    if name == "num_batches_tracked":
        return torch.tensor(123456, dtype=torch.long)
    if name == "running_var":
        return torch.rand(shape, generator=generator) + 0.5
    if name == "running_mean":
        return normal(0.2)
    if key == "logit_scale":
        return torch.tensor(math.log(1 / 0.07)) + normal(0.3)
    if key == "prompts_generator.alpha":
        return 0.1 + normal(0.05)
    if _is_norm_affine(key, shape, layout):
        return 1.0 + normal(0.1) if name == "weight" else normal(0.1)
    if name in ("bias", "in_proj_bias"):
        return normal(0.05)
    if key.endswith("class_embedding") or key.endswith("positional_embedding"):
        return normal(0.2)
    if key == "token_embedding.weight":
        return normal(0.1)
    if key in _RIGHT_MULTIPLIED:
        return normal(shape[0] ** -0.5)
    # Weights of Linear / Conv: unit-variance outputs for unit-variance inputs.
    fan_in = math.prod(shape[1:])
    return normal(fan_in**-0.5)


def released_state_dict(variant: str, *, seed: int = 0, dtype: torch.dtype = torch.float32, **sizes):
    """A random ``model`` state dict in the released layout (see ``released_layout``)."""
    layout = released_layout(variant, **sizes)
    generator = torch.Generator().manual_seed(seed)
    state_dict = OrderedDict()
    for key, shape in layout.items():
        value = _random_value(key, shape, layout, generator)
        if value.is_floating_point():
            value = value.to(dtype)
        state_dict[key] = value
    return state_dict


# --------------------------------------------------------------------------------------------
# A faithful stand-in for yacs.config.CfgNode (only while pickling)
# --------------------------------------------------------------------------------------------


class CfgNode(dict):
    """Mirrors yacs' CfgNode where pickling is concerned: a dict subclass whose instance
    ``__dict__`` carries yacs' four bookkeeping entries, nested nodes being CfgNodes too."""

    IMMUTABLE = "__immutable__"
    DEPRECATED_KEYS = "__deprecated_keys__"
    RENAMED_KEYS = "__renamed_keys__"
    NEW_ALLOWED = "__new_allowed__"

    def __init__(self, init_dict=None, key_list=None, new_allowed=False):
        init_dict = {} if init_dict is None else dict(init_dict)
        for key, value in init_dict.items():
            if type(value) is dict:
                init_dict[key] = CfgNode(value, new_allowed=new_allowed)
        super().__init__(init_dict)
        self.__dict__[CfgNode.IMMUTABLE] = False
        self.__dict__[CfgNode.DEPRECATED_KEYS] = set()
        self.__dict__[CfgNode.RENAMED_KEYS] = {}
        self.__dict__[CfgNode.NEW_ALLOWED] = new_allowed

    def __getattr__(self, name):
        if name in self:
            return self[name]
        raise AttributeError(name)

    def freeze(self):
        self.__dict__[CfgNode.IMMUTABLE] = True
        for value in self.values():
            if isinstance(value, CfgNode):
                value.freeze()


CfgNode.__module__ = "yacs.config"
CfgNode.__qualname__ = "CfgNode"


def released_config(variant: str, *, image_size: int, num_frames: int, num_classes: int) -> CfgNode:
    """The training config the authors pickle with their checkpoints (a representative subset)."""
    config = CfgNode(
        {
            "BASE": [""],
            "DATA": {
                "ROOT": "",
                "TRAIN_FILE": "",
                "VAL_FILE": "",
                "DATASET": "kinetics400" if variant == "k400" else "ssv2",
                "INPUT_SIZE": image_size,
                "NUM_FRAMES": num_frames,
                "NUM_CLASSES": num_classes,
                "LABEL_LIST": "labels/kinetics_400_labels.csv" if variant == "k400" else "labels/ssv2_labels.csv",
            },
            "MODEL": {
                "ARCH": "ViT-B/16",
                "DROP_PATH_RATE": 0.0,
                "PRETRAINED": None,
                "RESUME": None,
                "FIX_TEXT": True,
            },
            "TRAIN": {
                "EPOCHS": 30,
                "WARMUP_EPOCHS": 5,
                "WEIGHT_DECAY": 0.001,
                "LR": 8.0e-06,
                "BATCH_SIZE": 8,
                "ACCUMULATION_STEPS": 4,
                "LR_SCHEDULER": "cosine",
                "OPTIMIZER": "adamw",
                "OPT_LEVEL": "O1",
                "AUTO_RESUME": False,
                "USE_CHECKPOINT": False,
            },
            "AUG": {
                "LABEL_SMOOTH": 0.1,
                "COLOR_JITTER": 0.8,
                "GRAY_SCALE": 0.2,
                "MIXUP": 0.8,
                "CUTMIX": 1.0,
                "MIXUP_SWITCH_PROB": 0.5,
            },
            "TEST": {"NUM_CLIP": 4, "NUM_CROP": 3, "ONLY_TEST": False},
            "OUTPUT": "output/",
            "SAVE_FREQ": 1,
            "PRINT_FREQ": 20,
            "SEED": 1024,
        }
    )
    config.freeze()
    return config


class _FakeYacsModules:
    """Context manager: ``yacs`` and ``yacs.config`` exist in ``sys.modules`` only inside."""

    def __enter__(self):
        if "yacs" in sys.modules or "yacs.config" in sys.modules:
            raise RuntimeError("a real yacs is imported; refusing to shadow it")
        package = types.ModuleType("yacs")
        package.__path__ = []
        config_module = types.ModuleType("yacs.config")
        config_module.CfgNode = CfgNode
        package.config = config_module
        sys.modules["yacs"] = package
        sys.modules["yacs.config"] = config_module
        return self

    def __exit__(self, *exc_info):
        sys.modules.pop("yacs.config", None)
        sys.modules.pop("yacs", None)
        return False


def _optimizer_state(state_dict, generator: torch.Generator) -> dict:
    """An AdamW ``state_dict()`` over a few parameters (what the released files carry)."""
    float_keys = [key for key, value in state_dict.items() if value.is_floating_point()][:3]
    state = {}
    for index, key in enumerate(float_keys):
        shape = state_dict[key].shape
        state[index] = {
            "step": torch.tensor(29000.0),
            "exp_avg": torch.randn(shape, generator=generator) * 1e-3,
            "exp_avg_sq": torch.rand(shape, generator=generator) * 1e-6,
        }
    return {
        "state": state,
        "param_groups": [
            {
                "lr": 8.0e-07,
                "betas": (0.9, 0.98),
                "eps": 1e-08,
                "weight_decay": 0.001,
                "amsgrad": False,
                "foreach": None,
                "maximize": False,
                "capturable": False,
                "differentiable": False,
                "fused": None,
                "params": list(range(len(float_keys))),
            }
        ],
    }


def _scheduler_state() -> dict:
    """timm CosineLRScheduler.state_dict(): its ``__dict__`` without the optimizer."""
    return {
        "param_group_field": "lr",
        "base_values": [8.0e-06],
        "metric": None,
        "t_in_epochs": False,
        "noise_range_t": None,
        "noise_pct": 0.67,
        "noise_type": "normal",
        "noise_std": 1.0,
        "noise_seed": 42,
        "initialize": True,
        "t_initial": 29000,
        "lr_min": 8.0e-08,
        "cycle_mul": 1.0,
        "cycle_decay": 0.1,
        "cycle_limit": 1,
        "warmup_t": 5000,
        "warmup_lr_init": 0,
        "warmup_prefix": False,
        "k_decay": 1.0,
        "warmup_steps": [1.6e-09],
    }


def save_released_checkpoint(path, state_dict, *, variant: str, image_size: int, num_frames: int, num_classes: int):
    """``torch.save`` ``state_dict`` wrapped exactly as the authors' training script saves it."""
    generator = torch.Generator().manual_seed(1)
    with _FakeYacsModules():
        checkpoint = {
            "model": state_dict,
            "optimizer": _optimizer_state(state_dict, generator),
            "lr_scheduler": _scheduler_state(),
            "max_accuracy": 0.8,
            "epoch": 29,
            "config": released_config(
                variant, image_size=image_size, num_frames=num_frames, num_classes=num_classes
            ),
        }
        torch.save(checkpoint, path)
    return Path(path)


def write_released_checkpoint(path, variant: str, *, seed: int = 0, dtype: torch.dtype = torch.float32, **sizes):
    """Build a random released-layout checkpoint and save it; returns its ``model`` state dict."""
    state_dict = released_state_dict(variant, seed=seed, dtype=dtype, **sizes)
    layout_sizes = {**_defaults(), **sizes}
    save_released_checkpoint(
        path,
        state_dict,
        variant=variant,
        image_size=layout_sizes["image_size"],
        num_frames=layout_sizes["num_frames"],
        num_classes=layout_sizes["num_classes"] if variant == "ssv2" else 400,
    )
    return state_dict


def _defaults() -> dict:
    import inspect

    return {
        name: parameter.default
        for name, parameter in inspect.signature(released_layout).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }
