"""Convert the authors' released ILA checkpoints (`.pth` training snapshots) into a Transformers folder.

A released file is a torch pickle of ``{'model', 'optimizer', 'lr_scheduler', 'max_accuracy', 'epoch', 'config'}``
whose ``config`` is a ``yacs.config.CfgNode``. It is read with ``torch.load(weights_only=True)``: the only global
allowed beyond tensors and plain containers is ``yacs.config.CfgNode``, mapped to an inert stand-in, so a file that
wants anything else is refused before any of its code can run. Nothing is materialised before every tensor's shape has
been checked against the model its architecture implies (on the meta device), so a small file whose tensors claim
gigabytes (stride-0 views of a tiny storage, compressed zip entries) is refused at no cost.

The architecture is read off the state dict (see `infer_architecture`), every source tensor is either mapped onto
`ILAForVideoClassification` or dropped on purpose (`ConversionReport` lists which). The K400 checkpoints' text
tower is run once on the class names to fill the text head's class embeddings, and saved with its tokenizer in the
folder's ``text_model/`` for new class names (open vocabulary).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassClassValidationError

from .configuration_ila import ILAVideoConfig
from .data import read_label_names
from .hub import export_model, markdown_table, model_card_context, push_to_hub_in_background
from .modeling_ila import TEXT_MODEL_FOLDER, ILAForVideoClassification


logger = logging.getLogger(__name__)

VARIANTS = ("k400", "ssv2")
# Released recipe -> (interaction block, head) of ILAVideoConfig.
VARIANT_SETTINGS = {"k400": ("depthwise", "text"), "ssv2": ("conv", "linear")}
RELEASED_LABEL_FILES = {"k400": "kinetics_400_labels.csv", "ssv2": "something-something-v2-labels.csv"}
DEFAULT_CLIP_TEXT = "openai/clip-vit-base-patch16"  # every OpenAI CLIP shares this BPE tokenizer
CLASS_NAME_TEMPLATE = "{}"  # the released K400 recipe embeds the bare class names
CLIP_HEAD_DIM = 64  # OpenAI CLIP, the MIT and the prompt generator: width / 64 heads

# The tensors a checkpoint may hold in all, in elements: the largest release (ViT-L/14@336, K400, with its CLIP text
# tower) holds about 0.6e9.
MAX_CHECKPOINT_ELEMENTS = 2 * 10**9

_TEXT_TOWER_ANCHORS = ("token_embedding.weight", "positional_embedding", "transformer.resblocks.0.mlp.c_fc.weight")
_LINEAR = ("weight", "bias")
_BATCH_NORM = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


class CheckpointConversionError(ValueError):
    """A checkpoint that cannot be converted: unreadable, unsafe to unpickle, or not in the released ILA layout."""


class HubUploadError(RuntimeError):
    """The converted folder was written but could not be uploaded to the Hub."""


# ---------------------------------------------------------------------------------------------------------------------
# Safe loading
# ---------------------------------------------------------------------------------------------------------------------


class _YacsConfigNode:
    """
    Stand-in for ``yacs.config.CfgNode`` during weights-only unpickling (yacs need not be installed).

    A CfgNode is a dict subclass pickled as NEWOBJ + SETITEMS + BUILD; the weights-only unpickler fills only exact
    dict types, so each node is rebuilt as an ``OrderedDict`` (yacs' bookkeeping lands in its ``__dict__``).
    No yacs code is imported or run.
    """

    def __new__(cls, *args):
        return OrderedDict()


_SAFE_GLOBALS = [(_YacsConfigNode, "yacs.config.CfgNode")]


def _refusal_detail(message: str) -> str:
    """What the weights-only unpickler objected to, in a few words."""
    for pattern, template in (
        (r"GLOBAL (\S+)", " (it wants the global {})"),
        (r"unrecognized function (\S+)", " (it wants to call {})"),
        (r"Unsupported operand (\d+)", " (pickle opcode {} is refused: a corrupted file or not from torch.save)"),
    ):
        found = re.search(pattern, message)
        if found:
            return template.format(found.group(1))
    return ""


def load_released_checkpoint(checkpoint_path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """
    Read a released ILA checkpoint without executing anything from it.

    Returns:
        `(state_dict, training_entries)`: the ``model`` state dict (a ``module.`` prefix left by DistributedDataParallel
        is stripped) and the file's other top-level entries (optimizer, scheduler, epoch, config, ...), which the
        conversion drops.

    Raises:
        FileNotFoundError: no such file.
        CheckpointConversionError: the file is not a readable torch checkpoint, wants globals a released checkpoint
            never holds (it is refused unexecuted), or holds no ILA state dict.
    """
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}.")
    with open(path, "rb") as file:
        is_pickle = file.read(1) == b"\x80"  # PROTO opcode: legacy torch.save files and raw pickles start with it
    is_zip = zipfile.is_zipfile(path)
    if not is_zip and not is_pickle:
        raise CheckpointConversionError(_not_a_checkpoint_message(path))
    if is_zip:
        _check_zip_entries(path)
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            # mmap: storages stay in the file until a tensor is used (zip format only; stored entries, checked above).
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as error:
        detail = _refusal_detail(str(error))
        raise CheckpointConversionError(
            f"Refused to unpickle {path}: it needs Python objects that a released ILA checkpoint never contains"
            f"{detail}. Nothing from the file was executed. Only tensors, plain containers and a yacs CfgNode config "
            "are accepted; if this is not an authors' release, convert its weights to a plain state dict first."
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, UnicodeDecodeError) as error:
        raise CheckpointConversionError(
            f"Could not read {path} as a torch checkpoint; the file looks truncated or corrupted ({error}). "
            "Download it again and compare its checksum."
        ) from None

    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict):
        state_dict = checkpoint["model"]
        training_entries = {key: value for key, value in checkpoint.items() if key != "model"}
    elif isinstance(checkpoint, dict) and checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        state_dict, training_entries = checkpoint, {}
    else:
        found = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointConversionError(
            f"{path} holds no model state dict: expected a dict with a 'model' entry (the released layout) or a "
            f"state dict of tensors, found {found}."
        )
    if not all(isinstance(value, torch.Tensor) for value in state_dict.values()):
        raise CheckpointConversionError(f"The 'model' entry of {path} holds non-tensor values; it is not a state dict.")
    if state_dict and all(key.startswith("module.") for key in state_dict):
        state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    claimed = sum(value.numel() for value in state_dict.values())  # shapes only: views of one storage cost nothing yet
    if claimed > MAX_CHECKPOINT_ELEMENTS:
        raise CheckpointConversionError(
            f"{path} claims {claimed:.3g} tensor elements in its {len(state_dict)} tensors; a released ILA checkpoint "
            f"holds under {MAX_CHECKPOINT_ELEMENTS:.0e}. Refused before loading any of them."
        )
    return dict(state_dict), training_entries


# Leading bytes of weight formats that people pass by mistake.
_OTHER_FORMATS = (
    (b"\x89HDF", "an HDF5 file (Keras weights?)"),
    (b"GGUF", "a GGUF file"),
    (b"\x93NUMPY", "a NumPy array"),
)
_EXPECTED_INPUT = (
    "convert reads the authors' released training snapshots (.pth files written by torch.save, holding a 'model' state "
    "dict)."
)


def _not_a_checkpoint_message(path: Path) -> str:
    """What the file seems to be instead of a torch checkpoint, and what `convert` expects."""
    with open(path, "rb") as file:
        head = file.read(16)
    # safetensors: an 8-byte little-endian header length, then the JSON header.
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000:
        return (
            f"{path} is a safetensors file, not a torch checkpoint; {_EXPECTED_INPUT} A Transformers folder "
            "(config.json with model.safetensors) needs no conversion: load it with from_pretrained or "
            "`ila-hf predict --model`."
        )
    for magic, description in _OTHER_FORMATS:
        if head.startswith(magic):
            return f"{path} looks like {description}, not a torch checkpoint; {_EXPECTED_INPUT}"
    if not head:
        return f"{path} is empty, not a torch checkpoint; download it again."
    return (
        f"{path} is not a torch checkpoint (neither torch's zip format nor a pickle); the file looks truncated or "
        f"corrupted. Download it again and compare its checksum; {_EXPECTED_INPUT}"
    )


def _check_zip_entries(path: Path) -> None:
    """torch.save stores its zip entries uncompressed; a compressed one could inflate to any size when read."""
    try:
        with zipfile.ZipFile(path) as archive:
            compressed = [info.filename for info in archive.infolist() if info.compress_type != zipfile.ZIP_STORED]
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointConversionError(
            f"Could not read {path} as a torch checkpoint; the zip archive is damaged ({error}). Download it again "
            "and compare its checksum."
        ) from None
    if compressed:
        raise CheckpointConversionError(
            f"{path} is a zip archive with compressed entries ({_preview(compressed, 3)}); torch.save never "
            "compresses, so this is not a checkpoint as saved. Refused before reading it."
        )


# ---------------------------------------------------------------------------------------------------------------------
# Architecture
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class ReleasedArchitecture:
    """Sizes of a released checkpoint, read off its state dict (see `infer_architecture`)."""

    variant: str  # "k400" (depthwise interaction block, text head) or "ssv2" (conv block, linear head)
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_channels: int
    patch_size: int
    image_size: int
    num_frames: int
    projection_dim: int
    interaction_channels: int
    mit_layers: int
    num_labels: int | None = None  # linear head only; the text head's classes come from class names
    prompt_layers: int | None = None
    text_hidden_size: int | None = None
    text_intermediate_size: int | None = None
    text_layers: int | None = None
    text_vocab_size: int | None = None
    text_context_length: int | None = None

    @property
    def interaction_variant(self) -> str:
        return VARIANT_SETTINGS[self.variant][0]

    @property
    def head(self) -> str:
        return VARIANT_SETTINGS[self.variant][1]


def _count_blocks(state_dict, prefix: str) -> int:
    """Number of ``{prefix}{i}.`` blocks; they must be numbered 0..n-1."""
    indices = set()
    for key in state_dict:
        if key.startswith(prefix):
            head = key[len(prefix) :].split(".", 1)[0]
            if head.isdigit():
                indices.add(int(head))
    if indices != set(range(len(indices))):
        raise CheckpointConversionError(f"Blocks under '{prefix}' are not numbered 0..n-1: found {sorted(indices)}.")
    return len(indices)


def _shape(state_dict, key: str, ndim: int) -> tuple[int, ...]:
    if key not in state_dict:
        raise CheckpointConversionError(
            f"The state dict has no '{key}', which every released ILA checkpoint has; this is not a released ILA "
            "checkpoint (or it was saved by different code)."
        )
    shape = tuple(state_dict[key].shape)
    if len(shape) != ndim or 0 in shape:
        raise CheckpointConversionError(
            f"'{key}' has shape {shape}; a released ILA checkpoint has a non-empty {ndim}-dimensional tensor there."
        )
    return shape


def _heads(width: int, what: str) -> int:
    if width % CLIP_HEAD_DIM != 0:
        raise CheckpointConversionError(
            f"The {what} width {width} is not a multiple of {CLIP_HEAD_DIM}; OpenAI CLIP towers use width / 64 heads."
        )
    return width // CLIP_HEAD_DIM


def infer_architecture(state_dict: dict[str, torch.Tensor]) -> ReleasedArchitecture:
    """
    Read every size off a released state dict: vision width (``visual.conv1.weight``), layers, heads (width / 64),
    patch and image size (the patch conv and ``visual.positional_embedding``: S * S + 1 rows), frames
    (``mit.positional_embedding``), projection dim (``visual.proj``), and the variant from the interaction block's
    keys (a depthwise-separable block: K400 recipe; two plain 3x3 convs: SSv2 recipe).
    """
    block = "visual.transformer.resblocks.0.message_attn.interactive_block"
    if f"{block}.0.depthwise_conv.0.weight" in state_dict:
        variant, interaction_channels = "k400", _shape(state_dict, f"{block}.0.pointwise_conv.0.weight", 4)[0]
    elif f"{block}.0.weight" in state_dict:
        variant, interaction_channels = "ssv2", _shape(state_dict, f"{block}.0.weight", 4)[0]
    else:
        raise CheckpointConversionError(
            "The state dict has no ILA interaction block ('visual.transformer.resblocks.0.message_attn."
            "interactive_block.*'); it is not a released ILA checkpoint (a plain CLIP or X-CLIP one?)."
        )

    hidden_size, num_channels, patch_size, patch_width = _shape(state_dict, "visual.conv1.weight", 4)
    if patch_size != patch_width:
        raise CheckpointConversionError(f"Non-square patches {patch_size}x{patch_width} are not supported.")
    num_positions = _shape(state_dict, "visual.positional_embedding", 2)[0]
    grid_size = math.isqrt(num_positions - 1)
    if grid_size * grid_size != num_positions - 1 or grid_size == 0:
        raise CheckpointConversionError(
            f"visual.positional_embedding has {num_positions} rows, not a square patch grid plus a class token."
        )
    architecture = ReleasedArchitecture(
        variant=variant,
        hidden_size=hidden_size,
        intermediate_size=_shape(state_dict, "visual.transformer.resblocks.0.mlp.c_fc.weight", 2)[0],
        num_hidden_layers=_count_blocks(state_dict, "visual.transformer.resblocks."),
        num_attention_heads=_heads(hidden_size, "vision"),
        num_channels=num_channels,
        patch_size=patch_size,
        image_size=grid_size * patch_size,
        num_frames=_shape(state_dict, "mit.positional_embedding", 3)[1],
        projection_dim=_shape(state_dict, "visual.proj", 2)[1],
        interaction_channels=interaction_channels,
        mit_layers=_count_blocks(state_dict, "mit.resblocks."),
    )
    if variant == "ssv2":
        architecture.num_labels = _shape(state_dict, "mit.classify_head.2.weight", 2)[0]
    else:
        architecture.prompt_layers = _count_blocks(state_dict, "prompts_generator.decoder.")
    # K400 checkpoints need their CLIP text tower; SSv2 ones may carry it unused (the authors' model class builds it).
    if variant == "k400" or all(key in state_dict for key in _TEXT_TOWER_ANCHORS):
        architecture.text_vocab_size, architecture.text_hidden_size = _shape(state_dict, "token_embedding.weight", 2)
        architecture.text_context_length = _shape(state_dict, "positional_embedding", 2)[0]
        architecture.text_layers = _count_blocks(state_dict, "transformer.resblocks.")
        architecture.text_intermediate_size = _shape(state_dict, "transformer.resblocks.0.mlp.c_fc.weight", 2)[0]
        _heads(architecture.text_hidden_size, "text")
    return architecture


def check_requested_architecture(architecture: ReleasedArchitecture, variant: str | None, num_frames: int | None):
    """Raise ValueError naming both values when what the caller expects differs from what the checkpoint holds."""
    if variant is not None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")
        if variant != architecture.variant:
            raise ValueError(
                f"Variant {variant!r} was requested (variant / --variant), but the checkpoint is a "
                f"{architecture.variant!r} checkpoint "
                f"(interaction block '{architecture.interaction_variant}', {architecture.head} head)."
            )
    if num_frames is not None and num_frames != architecture.num_frames:
        raise ValueError(
            f"{num_frames} frames were requested (num_frames / --num-frames), but the checkpoint was trained with "
            f"{architecture.num_frames} frames (mit.positional_embedding has {architecture.num_frames} rows); "
            "ILA's frame count is fixed by its weights."
        )


# ---------------------------------------------------------------------------------------------------------------------
# Key mapping
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class ConversionReport:
    """Where every source tensor went: mapped onto the model, or dropped on purpose (with the reason)."""

    architecture: dict
    mapped: dict[str, list[str]] = field(default_factory=dict)  # source key -> target keys ("text_model/..." for K400)
    dropped: dict[str, str] = field(default_factory=dict)  # source key -> reason
    dropped_entries: list[str] = field(default_factory=list)  # top-level entries of the file besides 'model'
    computed: dict[str, str] = field(default_factory=dict)  # target key -> how it was computed
    source: dict = field(default_factory=dict)  # file name, sha256, epoch, max_accuracy

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)


class _StateDictMapper:
    """Collects target tensors while recording which source key each came from."""

    def __init__(self, state_dict: dict[str, torch.Tensor], dtype: torch.dtype):
        self.source = state_dict
        self.dtype = dtype
        self.target: dict[str, torch.Tensor] = {}
        self.mapped: dict[str, list[str]] = {}
        self.missing: list[str] = []

    def _take(self, key: str) -> torch.Tensor | None:
        if key not in self.source:
            self.missing.append(key)
            return None
        value = self.source[key]
        return value.to(self.dtype) if value.is_floating_point() else value.clone()

    def _put(self, source_key: str, target_key: str, value: torch.Tensor) -> None:
        self.target[target_key] = value.contiguous()
        self.mapped.setdefault(source_key, []).append(target_key)

    def discard(self, source_key: str) -> None:
        """Consume a source tensor that the converted model has no use for."""
        if self._take(source_key) is not None:
            self.mapped.setdefault(source_key, [])

    def copy(self, source_key: str, target_key: str) -> None:
        value = self._take(source_key)
        if value is not None:
            self._put(source_key, target_key, value)

    def transpose(self, source_key: str, target_key: str) -> None:
        """OpenAI's ``x @ proj`` matrices (in, out) -> nn.Linear weights (out, in)."""
        value = self._take(source_key)
        if value is not None:
            self._put(source_key, target_key, value.T)

    def module(self, source_prefix: str, target_prefix: str, names: Sequence[str] = _LINEAR) -> None:
        for name in names:
            self.copy(f"{source_prefix}.{name}", f"{target_prefix}.{name}")

    def fused_attention(self, source_prefix: str, target_prefix: str) -> None:
        """nn.MultiheadAttention's in_proj (q, k, v stacked in that order) -> separate q/k/v projections."""
        for suffix, target_name in (("in_proj_weight", "weight"), ("in_proj_bias", "bias")):
            source_key = f"{source_prefix}.{suffix}"
            value = self._take(source_key)
            if value is None:
                continue
            if value.shape[0] % 3 != 0:
                raise CheckpointConversionError(f"{source_key} has {value.shape[0]} rows, not 3 stacked projections.")
            for projection, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                self._put(source_key, f"{target_prefix}.{projection}.{target_name}", part)
        self.module(f"{source_prefix}.out_proj", f"{target_prefix}.out_proj")

    def clip_block(self, source_prefix: str, target_prefix: str) -> None:
        """OpenAI ResidualAttentionBlock -> ILATransformerLayer (CLIP encoder layer names)."""
        self.fused_attention(f"{source_prefix}.attn", f"{target_prefix}.self_attn")
        self.module(f"{source_prefix}.ln_1", f"{target_prefix}.layer_norm1")
        self.module(f"{source_prefix}.mlp.c_fc", f"{target_prefix}.mlp.fc1")
        self.module(f"{source_prefix}.mlp.c_proj", f"{target_prefix}.mlp.fc2")
        self.module(f"{source_prefix}.ln_2", f"{target_prefix}.layer_norm2")

    def conv_block(self, conv: str, norm: str, target_prefix: str) -> None:
        """A conv + BatchNorm pair -> ILAConvBlock (running statistics included)."""
        self.module(conv, f"{target_prefix}.conv")
        self.module(norm, f"{target_prefix}.norm", _BATCH_NORM)


def _map_vision(mapper: _StateDictMapper, architecture: ReleasedArchitecture) -> None:
    mapper.copy("visual.class_embedding", "ila.embeddings.class_embedding")
    mapper.copy("visual.conv1.weight", "ila.embeddings.patch_embedding.weight")
    mapper.copy("visual.positional_embedding", "ila.embeddings.position_embedding.weight")
    mapper.module("visual.ln_pre", "ila.pre_layrnorm")
    mapper.module("visual.ln_post", "ila.post_layernorm")
    mapper.transpose("visual.proj", "ila.visual_projection.weight")
    for i in range(architecture.num_hidden_layers):
        source, target = f"visual.transformer.resblocks.{i}", f"ila.encoder.layers.{i}"
        mapper.clip_block(source, target)
        mapper.module(f"{source}.message_fc", f"{target}.message_fc")
        mapper.module(f"{source}.message_ln", f"{target}.message_ln")
        mapper.module(f"{source}.temporal_skip_align_fc", f"{target}.aligned_tokens_proj")  # Linear_align
        mapper.module(f"{source}.temporal_skip_fc", f"{target}.interaction_tokens_proj")  # Linear_inter
        attn, alignment = f"{source}.message_attn", f"{target}.alignment"
        block, interaction = f"{attn}.interactive_block", f"{alignment}.interaction_block"
        if architecture.variant == "k400":
            mapper.conv_block(f"{block}.0.depthwise_conv.0", f"{block}.0.depthwise_conv.1", f"{interaction}.0")
            mapper.conv_block(f"{block}.0.pointwise_conv.0", f"{block}.0.pointwise_conv.1", f"{interaction}.1")
            mapper.conv_block(f"{block}.1", f"{block}.2", f"{interaction}.2")
        else:
            mapper.conv_block(f"{block}.0", f"{block}.1", f"{interaction}.0")
            mapper.conv_block(f"{block}.3", f"{block}.4", f"{interaction}.1")
        prediction, predictor = f"{attn}.prediction_block", f"{alignment}.point_predictor"
        mapper.conv_block(f"{prediction}.0", f"{prediction}.1", f"{predictor}.spatial.0")
        mapper.conv_block(f"{prediction}.4", f"{prediction}.5", f"{predictor}.spatial.1")
        mapper.module(f"{prediction}.10", f"{predictor}.pair_fc1")
        mapper.module(f"{prediction}.12", f"{predictor}.pair_fc2")
        mapper.module(f"{attn}.conv", f"{alignment}.temporal_conv")
        mapper.module(f"{attn}.fc", f"{alignment}.interaction_fc")


def _map_heads(mapper: _StateDictMapper, architecture: ReleasedArchitecture) -> None:
    mapper.copy("mit.positional_embedding", "mit.position_embedding")
    for j in range(architecture.mit_layers):
        mapper.clip_block(f"mit.resblocks.{j}", f"mit.layers.{j}")
    if architecture.variant == "ssv2":
        mapper.module("mit.classify_head.0", "head.norm")
        mapper.module("mit.classify_head.2", "head.classifier")
        return
    mapper.module("prompts_visual_ln", "head.visual_norm")
    mapper.transpose("prompts_visual_proj", "head.visual_proj.weight")
    mapper.copy("logit_scale", "head.logit_scale")
    mapper.copy("prompts_generator.alpha", "head.prompt_generator.alpha")
    mapper.module("prompts_generator.norm", "head.prompt_generator.norm")
    for j in range(architecture.prompt_layers):
        source, target = f"prompts_generator.decoder.{j}", f"head.prompt_generator.layers.{j}"
        for projection in ("q_proj", "k_proj", "v_proj"):  # no bias in the release
            mapper.copy(f"{source}.cross_attn.{projection}.weight", f"{target}.cross_attn.{projection}.weight")
        mapper.module(f"{source}.cross_attn.proj", f"{target}.cross_attn.out_proj")
        mapper.module(f"{source}.norm1", f"{target}.norm1")
        mapper.module(f"{source}.norm3", f"{target}.norm3")
        mapper.module(f"{source}.mlp.0", f"{target}.mlp.fc1")
        mapper.module(f"{source}.mlp.3", f"{target}.mlp.fc2")


def _map_text_tower(mapper: _StateDictMapper, architecture: ReleasedArchitecture) -> None:
    """The K400 checkpoints' frozen CLIP text tower -> transformers' CLIPTextModelWithProjection names."""
    mapper.copy("token_embedding.weight", "text_model.embeddings.token_embedding.weight")
    mapper.copy("positional_embedding", "text_model.embeddings.position_embedding.weight")
    for i in range(architecture.text_layers):
        mapper.clip_block(f"transformer.resblocks.{i}", f"text_model.encoder.layers.{i}")
    mapper.module("ln_final", "text_model.final_layer_norm")
    mapper.transpose("text_projection", "text_projection.weight")


def _raise_on_missing_or_unexpected(state_dict, mappers: Sequence[_StateDictMapper]) -> None:
    missing = [key for mapper in mappers for key in mapper.missing]
    consumed = {key for mapper in mappers for key in mapper.mapped}
    unexpected = sorted(set(state_dict) - consumed)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {_preview(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {_preview(unexpected)}")
        raise CheckpointConversionError(
            "The state dict does not match the released ILA layout for its architecture: "
            + "; ".join(parts)
            + ". A released checkpoint has exactly these keys; was it saved by modified training code?"
        )


def _preview(keys: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(key) for key in keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


# ---------------------------------------------------------------------------------------------------------------------
# Class names and text embeddings
# ---------------------------------------------------------------------------------------------------------------------


def released_class_names(variant: str) -> list[str]:
    """The released label list of a recipe: Kinetics-400 (400 names) or Something-Something-v2 (174)."""
    if variant not in RELEASED_LABEL_FILES:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")
    with resources.as_file(resources.files("ila_hf") / "labels" / RELEASED_LABEL_FILES[variant]) as path:
        return read_label_names(path)


def _resolve_class_names(class_names, architecture: ReleasedArchitecture) -> list[str]:
    if class_names is None:
        names = released_class_names(architecture.variant)
    elif isinstance(class_names, (str, os.PathLike)):
        names = read_label_names(class_names)
    else:
        names = [str(name) for name in class_names]
    if len(set(names)) != len(names):
        raise ValueError("Class names must be unique (they become config.label2id).")
    if architecture.num_labels is not None and len(names) != architecture.num_labels:
        raise ValueError(
            f"The checkpoint's classifier has {architecture.num_labels} classes but {len(names)} class names were "
            "given; give one name per classifier row, in label-id order (class_names / --class-names)."
        )
    return names


def _clip_text_config(architecture: ReleasedArchitecture, tokenizer=None):
    """The `CLIPTextConfig` of a checkpoint's text tower; the tokenizer's special tokens set pooling (not shapes)."""
    from transformers import CLIPTextConfig

    special_tokens = {}
    if tokenizer is not None:
        special_tokens = dict(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,  # pooling reads the first end-of-text token
            pad_token_id=tokenizer.pad_token_id,
        )
    return CLIPTextConfig(
        vocab_size=architecture.text_vocab_size,
        hidden_size=architecture.text_hidden_size,
        intermediate_size=architecture.text_intermediate_size,
        num_hidden_layers=architecture.text_layers,
        num_attention_heads=architecture.text_hidden_size // CLIP_HEAD_DIM,
        max_position_embeddings=architecture.text_context_length,
        projection_dim=architecture.projection_dim,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        **special_tokens,
    )


def build_clip_text_model(text_state_dict: dict[str, torch.Tensor], architecture: ReleasedArchitecture, tokenizer):
    """A transformers `CLIPTextModelWithProjection` holding a K400 checkpoint's own (frozen) text tower."""
    from transformers import CLIPTextModelWithProjection

    text_model = CLIPTextModelWithProjection(_clip_text_config(architecture, tokenizer))
    text_model.load_state_dict(text_state_dict, strict=True)
    return text_model.float().eval()


def _load_tokenizer(clip_text, architecture: ReleasedArchitecture):
    from transformers import AutoTokenizer

    if isinstance(clip_text, (str, os.PathLike)):
        try:
            tokenizer = AutoTokenizer.from_pretrained(clip_text)
        except (OSError, ValueError) as error:  # offline, no such folder or repo, not a tokenizer
            raise CheckpointConversionError(
                f"Could not load the CLIP tokenizer {str(clip_text)!r} that embeds the K400 class names "
                f"({str(error).splitlines()[0]}). Pass a local tokenizer folder (clip_text / --clip-text): any OpenAI "
                f"CLIP folder, or one saved on a connected machine with "
                f"CLIPTokenizer.from_pretrained({DEFAULT_CLIP_TEXT!r}).save_pretrained(FOLDER)."
            ) from None
    else:
        tokenizer = clip_text
    if len(tokenizer) != architecture.text_vocab_size:
        raise ValueError(
            f"The tokenizer from {clip_text!r} has {len(tokenizer)} tokens but the checkpoint's text tower embeds "
            f"{architecture.text_vocab_size}; use OpenAI CLIP's tokenizer (e.g. {DEFAULT_CLIP_TEXT!r})."
        )
    tokenizer.model_max_length = min(tokenizer.model_max_length, architecture.text_context_length)
    return tokenizer


# ---------------------------------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------------------------------


def build_config(architecture: ReleasedArchitecture, class_names: Sequence[str], **overrides) -> ILAVideoConfig:
    """The `ILAVideoConfig` of a released checkpoint (OpenAI CLIP: QuickGELU, LayerNorm eps 1e-5)."""
    settings = dict(
        hidden_size=architecture.hidden_size,
        intermediate_size=architecture.intermediate_size,
        num_hidden_layers=architecture.num_hidden_layers,
        num_attention_heads=architecture.num_attention_heads,
        num_channels=architecture.num_channels,
        image_size=architecture.image_size,
        patch_size=architecture.patch_size,
        projection_dim=architecture.projection_dim,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        num_frames=architecture.num_frames,
        interaction_variant=architecture.interaction_variant,
        interaction_channels=architecture.interaction_channels,
        mit_layers=architecture.mit_layers,
        head=architecture.head,
        id2label=dict(enumerate(class_names)),
        label2id={name: index for index, name in enumerate(class_names)},
    )
    if architecture.prompt_layers is not None:
        settings["prompt_layers"] = architecture.prompt_layers
    settings.update(overrides)
    return ILAVideoConfig(**settings)


TEXT_TOWER_UNUSED = "CLIP text tower saved along by the authors' model class; the SSv2 linear head does not use it"


@dataclass
class ConvertedTensors:
    model_state_dict: dict[str, torch.Tensor]  # ILAForVideoClassification names; all but head.class_embeddings
    text_state_dict: dict[str, torch.Tensor]  # CLIPTextModelWithProjection names (K400); empty for SSv2
    model_sources: dict[str, list[str]]  # source key -> model keys
    text_sources: dict[str, list[str]]  # source key -> text model keys (K400), saved in the folder's text_model/
    dropped: dict[str, str]  # source key -> why the converted folder does not hold it


def convert_state_dict(
    state_dict: dict[str, torch.Tensor], architecture: ReleasedArchitecture, dtype: torch.dtype = torch.float32
) -> ConvertedTensors:
    """
    Map a released state dict onto `ILAForVideoClassification`'s names (and, for K400, the text tower onto
    `CLIPTextModelWithProjection`'s). Every source key must be used exactly as the released layout uses it.

    Raises:
        CheckpointConversionError: a key the layout needs is missing, or a key is left over.
    """
    model_mapper = _StateDictMapper(state_dict, dtype)
    _map_vision(model_mapper, architecture)
    _map_heads(model_mapper, architecture)
    text_mapper = _StateDictMapper(state_dict, torch.float32)
    if architecture.text_vocab_size is not None:
        _map_text_tower(text_mapper, architecture)  # all of it, or a missing-key error
        if architecture.variant == "ssv2":
            text_mapper.discard("logit_scale")
    _raise_on_missing_or_unexpected(state_dict, [model_mapper, text_mapper])
    keeps_text = architecture.variant == "k400"
    return ConvertedTensors(
        model_state_dict=model_mapper.target,
        text_state_dict=text_mapper.target if keeps_text else {},
        model_sources=model_mapper.mapped,
        text_sources=text_mapper.mapped if keeps_text else {},
        dropped={} if keeps_text else {key: TEXT_TOWER_UNUSED for key in text_mapper.mapped},
    )


def _check_shapes(state_dict, architecture: ReleasedArchitecture, config: ILAVideoConfig, path: Path) -> None:
    """
    Check every tensor against the model its architecture implies, on the meta device: the mapping runs on shapes
    alone and the models own no memory, so a file whose tensors claim any size (stride-0 views of a small storage)
    costs nothing until it is refused.

    Raises:
        CheckpointConversionError: a tensor whose shape the inferred architecture does not have (naming the source
            key), a missing or unexpected key, or a converted tensor the model lacks (a converter bug).
    """
    from transformers import CLIPTextModelWithProjection

    meta_state = {key: torch.empty(value.shape, dtype=value.dtype, device="meta") for key, value in state_dict.items()}
    tensors = convert_state_dict(meta_state, architecture)
    with torch.device("meta"):
        expected = ILAForVideoClassification(config).state_dict()
        if tensors.text_state_dict:
            text_model = CLIPTextModelWithProjection(_clip_text_config(architecture))
            expected.update({f"text:{key}": value for key, value in text_model.state_dict().items()})
    converted = {**tensors.model_state_dict, **{f"text:{key}": value for key, value in tensors.text_state_dict.items()}}
    sources = {
        **tensors.model_sources,
        **{source: [f"text:{key}" for key in keys] for source, keys in tensors.text_sources.items()},
    }
    mismatches = []
    for source, targets in sources.items():
        wrong = [key for key in targets if key in expected and converted[key].shape != expected[key].shape]
        if wrong:
            model_key = wrong[0].removeprefix("text:")
            mismatches.append(
                f"'{source}' {tuple(state_dict[source].shape)} (the model's {model_key} is "
                f"{tuple(expected[wrong[0]].shape)})"
            )
    if mismatches:
        raise CheckpointConversionError(
            f"{path}: {len(mismatches)} tensor(s) do not have the shape that its architecture (width "
            f"{architecture.hidden_size}, {architecture.num_hidden_layers} layers, {architecture.num_frames} frames, "
            f"read off its other tensors) implies: {'; '.join(mismatches[:4])}. A released checkpoint is "
            "consistent; this file is damaged or was not written by the authors' code. Refused before loading it."
        )
    computed = {"head.class_embeddings"}
    missing = sorted(set(expected) - set(converted) - computed)
    unknown = sorted(set(converted) - set(expected))
    if missing or unknown:
        raise CheckpointConversionError(
            f"The converted tensors do not fit ILAForVideoClassification: model tensors left unfilled {missing[:8]}, "
            f"converted tensors the model lacks {unknown[:8]}. This is a converter bug or a model change; please "
            "report it."
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _number(value):
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value if isinstance(value, (int, float, str)) or value is None else str(value)


def _config_overrides_from_training_config(training_config) -> dict:
    """Carry the recipe's drop-path rate over, so that fine-tuning a converted model continues the recipe."""
    model_settings = training_config.get("MODEL") if isinstance(training_config, dict) else None
    rate = model_settings.get("DROP_PATH_RATE") if isinstance(model_settings, dict) else None
    return {"drop_path_rate": float(rate)} if isinstance(rate, (int, float)) else {}


@dataclass
class ConversionResult:
    output_dir: Path
    model: ILAForVideoClassification
    report: ConversionReport
    commit_url: str | None = None  # set when pushed to the Hub


def convert_checkpoint(
    checkpoint_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    variant: str | None = None,
    num_frames: int | None = None,
    class_names: Sequence[str] | str | os.PathLike | None = None,
    clip_text=None,
    push_to_hub: str | None = None,
    *,
    private: bool = False,
    token: str | None = None,
    dtype: torch.dtype = torch.float32,
    released_eval: bool = False,
) -> ConversionResult:
    """
    Convert an authors' released ILA checkpoint into a `save_pretrained` folder.

    Args:
        checkpoint_path: the released ``.pth`` file.
        output_dir: folder to write (weights as safetensors, config with id2label, video processor, model card,
            ``conversion_report.json``, and the model code for ``trust_remote_code``).
        variant: ``"k400"`` or ``"ssv2"``; checked against the checkpoint (ValueError on mismatch). None: inferred.
        num_frames: frames the checkpoint was trained with; checked against ``mit.positional_embedding``. None:
            inferred.
        class_names: class names in label-id order, or the path of an ``id,name`` CSV. None: the released list of
            the variant (Kinetics-400 or Something-Something-v2, shipped in ``ila_hf/labels``). For K400 they are
            embedded with the checkpoint's own text tower, template ``"{}"``.
        clip_text: CLIP tokenizer for the class names (a local folder, a Hub id, or a tokenizer object); K400 only.
            None: ``openai/clip-vit-base-patch16``'s (all OpenAI CLIPs share it).
        push_to_hub: a Hub repo id to create (if needed) and upload the folder to; None: no upload.
        private: create the Hub repo private.
        token: Hub token (else the logged-in one).
        dtype: dtype of the saved weights (float32 by default, whatever the checkpoint's).
        released_eval: save ``batchnorm_eval_statistics="batch"``, so that evaluation mode reproduces the authors'
            released K400 evaluation exactly (BatchNorm on each batch's statistics; outputs then depend on the batch).
            Default: standard evaluation with the running statistics.

    Returns:
        A `ConversionResult` with the output folder, the converted model (eval mode) and the `ConversionReport`.
    """
    checkpoint_path = Path(checkpoint_path)
    output_dir = Path(output_dir)
    state_dict, training_entries = load_released_checkpoint(checkpoint_path)
    architecture = infer_architecture(state_dict)
    check_requested_architecture(architecture, variant, num_frames)
    names = _resolve_class_names(class_names, architecture)
    if architecture.variant == "k400":  # before any work: offline, the default Hub tokenizer may be unavailable
        tokenizer = _load_tokenizer(clip_text if clip_text is not None else DEFAULT_CLIP_TEXT, architecture)
    try:
        config = build_config(
            architecture,
            names,
            **_config_overrides_from_training_config(training_entries.get("config")),
            batchnorm_eval_statistics="batch" if released_eval else "running",
        )
    except StrictDataclassClassValidationError as error:
        raise CheckpointConversionError(
            f"{checkpoint_path}: the architecture read off its tensors is not a valid ILA model: "
            f"{str(error).splitlines()[-1].strip().removeprefix('ValueError: ')}"
        ) from None
    _check_shapes(state_dict, architecture, config, checkpoint_path)

    tensors = convert_state_dict(state_dict, architecture, dtype=dtype)
    model = ILAForVideoClassification(config).eval()
    model.load_state_dict(tensors.model_state_dict, strict=False)  # all but the computed class embeddings

    report = ConversionReport(
        architecture=asdict(architecture),
        mapped={
            **tensors.model_sources,
            **{source: [f"{TEXT_MODEL_FOLDER}/{key}" for key in keys] for source, keys in tensors.text_sources.items()},
        },
        dropped=tensors.dropped,
        dropped_entries=sorted(training_entries),
        source={
            "file": checkpoint_path.name,
            "sha256": _sha256(checkpoint_path),
            "epoch": _number(training_entries.get("epoch")),
            "max_accuracy": _number(training_entries.get("max_accuracy")),
        },
    )
    if architecture.variant == "k400":
        text_model = build_clip_text_model(tensors.text_state_dict, architecture, tokenizer)
        model.set_class_names(names, text_model, tokenizer=tokenizer, template=CLASS_NAME_TEMPLATE)
        report.computed["head.class_embeddings"] = (
            f"checkpoint's text tower on {len(names)} class names, template {CLASS_NAME_TEMPLATE!r}"
        )
    model = model.to(dtype).eval()

    card_context = _model_card_context(
        model, architecture, report, training_entries.get("config"), model_id=push_to_hub or output_dir.name
    )
    export_model(
        model,
        output_dir,
        video_processor=_released_video_processor(architecture),
        card_context=card_context,
        card_template=CONVERTED_MODEL_CARD_TEMPLATE,
    )
    (output_dir / "conversion_report.json").write_text(report.to_json() + "\n", encoding="utf-8")

    commit_url = _upload(output_dir, push_to_hub, private=private, token=token) if push_to_hub else None
    return ConversionResult(output_dir=output_dir, model=model, report=report, commit_url=commit_url)


# ---------------------------------------------------------------------------------------------------------------------
# Folder extras: video processor, model card, upload
# ---------------------------------------------------------------------------------------------------------------------

CONVERTED_MODEL_CARD_TEMPLATE = Path(__file__).resolve().parent / "model_card_converted.md"
DATASET_NAMES = {"k400": "Kinetics-400", "ssv2": "Something-Something-v2"}
# Top-1 the paper reports (4 x 3 views), by (variant, OpenAI CLIP model, frames).
PUBLISHED_TOP1 = {
    ("k400", "openai/clip-vit-base-patch32", 8): 81.3,
    ("k400", "openai/clip-vit-base-patch32", 16): 82.4,
    ("k400", "openai/clip-vit-base-patch16", 8): 84.0,
    ("k400", "openai/clip-vit-base-patch16", 16): 85.7,
    ("k400", "openai/clip-vit-large-patch14", 8): 88.0,
    ("k400", "openai/clip-vit-large-patch14-336", 16): 88.7,
    ("ssv2", "openai/clip-vit-base-patch16", 8): 65.0,
    ("ssv2", "openai/clip-vit-base-patch16", 16): 66.8,
    ("ssv2", "openai/clip-vit-large-patch14", 8): 67.8,
    ("ssv2", "openai/clip-vit-large-patch14-336", 16): 70.2,
}
# Training-config entries that describe the run rather than the machine it ran on.
_RECIPE_SECTIONS = ("MODEL", "DATA", "TRAIN", "AUG")
_NOT_RECIPE = {"DATA.ROOT", "DATA.TRAIN_FILE", "DATA.VAL_FILE", "DATA.LABEL_LIST", "MODEL.PRETRAINED", "MODEL.RESUME"}


def _released_video_processor(architecture: ReleasedArchitecture):
    """The released evaluation preprocessing (segment sampling, short side 256/224 * size, centre crop, ImageNet
    statistics), or None when the video processor module is unavailable."""
    try:
        from .video_processing_ila import ILAVideoProcessor
    except ImportError as error:
        logger.warning("No video processor saved: ila_hf.video_processing_ila cannot be imported (%s).", error)
        return None
    return ILAVideoProcessor.for_config(architecture)


def openai_clip_name(architecture: ReleasedArchitecture) -> str:
    """The OpenAI CLIP a released checkpoint starts from, by vision width, patch and image size."""
    family = {768: "base", 1024: "large"}.get(architecture.hidden_size)
    name = f"openai/clip-vit-{family}-patch{architecture.patch_size}"
    if family is None:
        return f"a CLIP ViT (width {architecture.hidden_size}, patch {architecture.patch_size})"
    return name + ("-336" if architecture.image_size == 336 else "")


def _recipe_hyperparameters(training_config) -> dict:
    """Scalar settings of the checkpoint's yacs training config, as "SECTION.KEY" -> value."""
    if not isinstance(training_config, dict):
        return {}
    settings = {}
    for section in _RECIPE_SECTIONS:
        for key, value in (training_config.get(section) or {}).items():
            name = f"{section}.{key}"
            if isinstance(value, (bool, int, float, str)) and name not in _NOT_RECIPE:
                settings[name] = value
    return settings


def _model_card_context(model, architecture: ReleasedArchitecture, report: ConversionReport, training_config, model_id):
    base_model = openai_clip_name(architecture)
    context = model_card_context(
        model,
        model_id=model_id,
        base_model=base_model,
        hyperparameters=_recipe_hyperparameters(training_config),
        license=None,  # the authors' weights: their terms, not this package's licence
    )
    metrics = {}
    if report.source.get("max_accuracy") is not None:
        metrics["top-1 stored in the checkpoint (authors' validation)"] = report.source["max_accuracy"]
    published = PUBLISHED_TOP1.get((architecture.variant, base_model, architecture.num_frames))
    if published is not None:
        metrics["top-1 reported in the paper (4 x 3 views)"] = published
    head_note = (
        f"The text head's class embeddings were computed once by the checkpoint's own CLIP text tower on the "
        f"{model.config.num_labels} class names (template `\"{CLASS_NAME_TEMPLATE}\"`). That text tower and its "
        f"tokenizer are saved in `{TEXT_MODEL_FOLDER}/`, so the model also classifies into new classes given by name "
        "(`model.set_class_names([...])`, or the `zero-shot-video-classification` pipeline)."
        if architecture.head == "text"
        else f"The linear head's {model.config.num_labels} classes follow the released label list's order."
    )
    context.update(
        dataset=DATASET_NAMES[architecture.variant],
        source_file=report.source.get("file"),
        source_sha256=report.source.get("sha256"),
        epoch=report.source.get("epoch"),
        head_note=head_note,
        batchnorm_setting=(
            "This folder was converted with `--released-eval`: its BatchNorms use batch statistics in evaluation."
            if model.config.batchnorm_eval_statistics == "batch"
            else "This folder evaluates with the running statistics (standard evaluation)."
        ),
        metrics=markdown_table(metrics, ("metric", "value")) if metrics else "No accuracy is stored in the checkpoint.",
    )
    return context


def _upload(folder: Path, repo_id: str, private: bool, token: str | None) -> str | None:
    """Create the Hub repo if needed and upload the folder (with retries); raise HubUploadError if it fails."""
    upload = push_to_hub_in_background(
        folder,
        repo_id,
        token=token,
        private=private,
        commit_message="Convert the authors' released ILA checkpoint with ila-hf convert",
    )
    status = upload.result()
    if not status.ok:
        raise HubUploadError(
            f"Uploading {folder} to {repo_id} failed after {status.attempts} attempt(s): {status.error}. The converted "
            f"folder is complete; upload it again with `hf upload {repo_id} {folder}`."
        )
    return status.commit_url


__all__ = [
    "CheckpointConversionError",
    "HubUploadError",
    "ConversionReport",
    "ConversionResult",
    "ConvertedTensors",
    "ReleasedArchitecture",
    "convert_checkpoint",
    "convert_state_dict",
    "infer_architecture",
    "load_released_checkpoint",
    "released_class_names",
]
