"""ILA model configuration."""

import math

from huggingface_hub.dataclasses import strict
from transformers import CLIPVisionConfig


INTERACTION_VARIANTS = ("depthwise", "conv")
HEADS = ("linear", "text")
BATCHNORM_EVAL_STATISTICS = ("running", "batch")
# The architecture settings of a CLIP vision tower, copied by `from_clip_vision_config`.
CLIP_VISION_SETTINGS = (
    "hidden_size",
    "intermediate_size",
    "projection_dim",
    "num_hidden_layers",
    "num_attention_heads",
    "num_channels",
    "image_size",
    "patch_size",
    "hidden_act",
    "layer_norm_eps",
    "attention_dropout",
    "initializer_range",
    "initializer_factor",
)
# Inclusive upper bounds on what a config may ask for, checked when it is built or loaded, before any weight is
# allocated: far above every released CLIP / ILA model (ViT-bigG/14: width 1664, 48 layers; ViT-L/14@336: a 24x24
# patch grid; 32 frames), yet a hostile config.json cannot make `from_pretrained` build for minutes or allocate
# without bound. The README's reliability section states them.
SIZE_LIMITS = {
    "hidden_size": 8192,
    "intermediate_size": 32768,
    "num_hidden_layers": 128,
    "num_attention_heads": 256,
    "num_channels": 16,
    "image_size": 4096,
    "patch_size": 256,
    "projection_dim": 8192,
    "num_frames": 1024,
    "interaction_channels": 8192,
    "mit_layers": 64,
    "prompt_layers": 64,
}
CLIP_SIZES = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels", "image_size",
    "patch_size", "projection_dim",
)
# The pipeline that a remote-code folder with the text head declares in `config.custom_pipelines`, so that
# `pipeline("zero-shot-video-classification", model=folder, trust_remote_code=True)` finds it without ila_hf. Its file
# sits next to the modelling file (which does not import it) and is copied into the folder with the model's code.
ZERO_SHOT_TASK = "zero-shot-video-classification"
ZERO_SHOT_PIPELINE = "zero_shot_video_classification.ZeroShotVideoClassificationPipeline"
MAX_GRID_SIZE = 64  # patches per side: 4096 patch tokens per frame (ViT-L/14@336 has 24 x 24)
MAX_PARAMETERS = 4 * 10**9  # weights of the whole model (16 GB in float32); ILA on ViT-bigG/14 has 2.4e9 to 2.7e9


@strict
class ILAVideoConfig(CLIPVisionConfig):
    r"""
    Configuration of an ILA video model: a CLIP ViT vision tower whose every encoder layer carries an implicit
    learnable alignment module, a multi-frame integration transformer (MIT) and a classification head.

    It subclasses [`CLIPVisionConfig`], so every CLIP vision setting (`hidden_size`, `num_hidden_layers`,
    `patch_size`, `image_size`, `projection_dim`, ...) keeps its meaning and a CLIP checkpoint's vision weights load
    by name. Build one from an existing CLIP config with [`ILAVideoConfig.from_clip_vision_config`].

    Args:
        num_frames (`int`, *optional*, defaults to 8):
            Frames per clip, T. Fixed by the MIT's learned position embedding.
        interaction_variant (`str`, *optional*, defaults to `"depthwise"`):
            Interaction block of the alignment module: `"depthwise"` (released Kinetics-400 recipe: depthwise 3x3,
            pointwise 1x1, 3x3 conv) or `"conv"` (released Something-Something-v2 recipe: two 3x3 convs).
        interaction_channels (`int`, *optional*, defaults to 256):
            Channels of the interaction features F; the first half describes the earlier frame of a pair, the second
            half the later one.
        point_scale (`float`, *optional*, defaults to 0.75):
            Multiplier of the tanh-bounded interactive points.
        alignment_window (`float`, *optional*, defaults to 0.25):
            Half-width (in [-1, 1] grid units) of the flat top of the alignment mask.
        alignment_slope (`float`, *optional*, defaults to 1.5):
            Slope of the alignment mask's linear fall-off outside the window.
        jitter_delta (`float`, *optional*, defaults to 0.2):
            Initial size of the 9-point jitter averaged into training masks (halved by "align decay").
        alignment_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the summed per-layer alignment losses in the training loss.
        drop_path_rate (`float`, *optional*, defaults to 0.0):
            Stochastic-depth rate of the last encoder layer; it rises linearly from 0 over the layers.
        freeze_backbone (`bool`, *optional*, defaults to `True`):
            Freeze the CLIP weights (embeddings, layer norms, projection, attention and MLP of every layer), as in
            the released recipe; only the alignment modules, MIT and head train.
        recompute_frozen_mlp (`bool`, *optional*, defaults to `True`):
            When training with frozen CLIP MLPs, recompute each layer's MLP hidden activations in the backward pass
            instead of keeping them: a third less activation memory for one more fc1 matmul per token and layer
            (about 10% more multiply-adds in a frozen-backbone training step). No effect on the outputs.
        mit_layers (`int`, *optional*, defaults to 1):
            Residual attention blocks in the multi-frame integration transformer.
        head (`str`, *optional*, defaults to `"linear"`):
            `"linear"` (released SSv2 recipe) or `"text"` (released K400 recipe: cosine similarity with class text
            embeddings refined by video-specific prompts).
        classifier_dropout (`float`, *optional*, defaults to 0.5):
            Dropout before the linear head's classifier.
        prompt_layers (`int`, *optional*, defaults to 2):
            Cross-attention layers of the text head's prompt generator.
        prompt_alpha (`float`, *optional*, defaults to 0.1):
            Initial per-channel scale of the generated prompts.
        logit_scale_init_value (`float`, *optional*, defaults to ln(1/0.07)):
            Initial log temperature of the text head.
        batchnorm_eval_statistics (`str`, *optional*, defaults to `"running"`):
            What the alignment modules' BatchNorms normalise with in evaluation mode. `"running"`: the running
            statistics (standard evaluation). `"batch"`: the statistics of the current batch, updating nothing, which
            is how the authors' released Kinetics-400 evaluation ran (their model returned to training mode on every
            forward); it reproduces their published numbers exactly, but then an output depends on the other videos of
            its batch and on the batch size. Training mode is the same for both.

    Bounds, checked whenever a config is built or loaded (a `StrictDataclassClassValidationError` naming the
    setting, the value given and what is allowed): sizes are >= 1 and at most `hidden_size` 8192,
    `intermediate_size` 32768, `num_hidden_layers` 128, `num_attention_heads` 256, `num_channels` 16, `image_size`
    4096, `patch_size` 256, `projection_dim` 8192, `num_frames` 1024, `interaction_channels` 8192, `mit_layers` and
    `prompt_layers` 64 (`SIZE_LIMITS`); the patch grid has 4 to 64 patches per side; the whole model at most 4e9
    weights (`MAX_PARAMETERS`, see `parameter_count_bound`). ILA on ViT-bigG/14 with 32 frames fits.
    """

    model_type = "ila"
    base_config_key = "vision_config"

    num_frames: int = 8
    interaction_variant: str = "depthwise"
    interaction_channels: int = 256
    point_scale: float = 0.75
    alignment_window: float = 0.25
    alignment_slope: float = 1.5
    jitter_delta: float = 0.2
    alignment_loss_weight: float = 1.0
    drop_path_rate: float = 0.0
    freeze_backbone: bool = True
    recompute_frozen_mlp: bool = True
    mit_layers: int = 1
    head: str = "linear"
    classifier_dropout: float = 0.5
    prompt_layers: int = 2
    prompt_alpha: float = 0.1
    logit_scale_init_value: float = math.log(1 / 0.07)
    batchnorm_eval_statistics: str = "running"

    @property
    def parameter_count_bound(self) -> int:
        """
        An upper bound on the number of weights of the model this config describes, read off the sizes alone (within
        about 10% for real configs), so that an oversized config is refused before anything is built.
        """
        width, embed_dim, channels = self.hidden_size, self.projection_dim, self.interaction_channels
        grid_tokens = self.grid_size**2 + 1
        pair_input = 2 * width * channels if self.interaction_variant == "depthwise" else 18 * width * channels
        layer = (
            4 * width**2 + 2 * width * self.intermediate_size  # CLIP attention and MLP
            + 3 * width**2  # message_fc, Linear_align, Linear_inter
            + 18 * width + pair_input + 9 * channels**2  # interaction block
            + 7 * channels**2  # point predictor and temporal conv
            + channels * width  # interaction_fc
            + 16 * width  # biases and layer norms
        )
        embeddings = grid_tokens * width + self.num_channels * self.patch_size**2 * width + width * embed_dim
        transformer_layers = (self.mit_layers + self.prompt_layers) * (12 * embed_dim**2 + 16 * embed_dim)
        head = (self.num_labels + self.num_frames + 4) * embed_dim + width * embed_dim
        return self.num_hidden_layers * layer + embeddings + transformer_layers + head

    @property
    def grid_size(self) -> int:
        """Patches per side, S = image_size / patch_size."""
        return self.image_size // self.patch_size

    # Pipeline tasks this process has registered itself (ila_hf's registration fills it; a copy loaded as remote code
    # keeps it empty). A saved folder declares its pipeline in `custom_pipelines` for trust_remote_code, and
    # transformers' `pipeline()` demands trust_remote_code for any task a config declares, so this class drops the
    # declarations of the tasks the process already has when it loads a config.
    locally_registered_pipelines = ()

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        declared = config_dict.get("custom_pipelines") or {}
        local = cls.locally_registered_pipelines
        if any(task in local for task in declared):
            remote_only = {task: info for task, info in declared.items() if task not in local}
            config_dict = {key: value for key, value in config_dict.items() if key != "custom_pipelines"}
            if remote_only:
                config_dict["custom_pipelines"] = remote_only
        return super().from_dict(config_dict, **kwargs)

    @classmethod
    def from_clip_vision_config(cls, clip_config, **kwargs) -> "ILAVideoConfig":
        """Build an ILA config from a `CLIPVisionConfig` or a `CLIPConfig` (its vision part), overriding with kwargs."""
        vision_config = getattr(clip_config, "vision_config", clip_config)
        if not isinstance(vision_config, CLIPVisionConfig):
            raise TypeError(
                f"Expected a CLIPVisionConfig or CLIPConfig, got {type(clip_config).__name__}."
            )
        clip_settings = {name: getattr(vision_config, name) for name in CLIP_VISION_SETTINGS}
        projection_dim = getattr(clip_config, "projection_dim", None) or vision_config.projection_dim
        return cls(**{**clip_settings, "projection_dim": projection_dim, **kwargs})

    def validate_architecture(self):
        """
        Part of `@strict` validation, run when a config is built or loaded: every check says what was given and what
        is allowed. Sizes are bounded by `SIZE_LIMITS`, the patch grid by `MAX_GRID_SIZE` per side and the whole
        model by `MAX_PARAMETERS` weights (see `parameter_count_bound`).
        """
        if not isinstance(self.image_size, int) or not isinstance(self.patch_size, int):
            raise ValueError(
                f"ILA needs square images and patches given as ints, got image_size={self.image_size!r} and "
                f"patch_size={self.patch_size!r}."
            )
        for name in CLIP_SIZES:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} is a size, so it must be >= 1, got {getattr(self, name)}.")
        for name, limit in SIZE_LIMITS.items():
            if getattr(self, name) > limit:
                raise ValueError(f"{name} may be at most {limit}, got {getattr(self, name)}.")
        super().validate_architecture()  # hidden_size divisible by num_attention_heads
        if self.image_size % self.patch_size != 0:
            raise ValueError(
                f"image_size ({self.image_size}) must be divisible by patch_size ({self.patch_size})."
            )
        if self.grid_size < 4:
            raise ValueError(
                f"The point predictor's two 2x2 max-pools need a patch grid of at least 4x4, got "
                f"{self.grid_size}x{self.grid_size} (image_size {self.image_size} / patch_size {self.patch_size}); "
                "use a larger image_size or a smaller patch_size."
            )
        if self.grid_size > MAX_GRID_SIZE:
            raise ValueError(
                f"The patch grid may have at most {MAX_GRID_SIZE} patches per side, got {self.grid_size} (image_size "
                f"{self.image_size} / patch_size {self.patch_size}); use a smaller image_size or a larger patch_size."
            )
        if self.num_frames < 2:
            raise ValueError(f"ILA aligns adjacent frames, so num_frames must be >= 2, got {self.num_frames}.")
        if self.interaction_variant not in INTERACTION_VARIANTS:
            raise ValueError(
                f"interaction_variant must be one of {INTERACTION_VARIANTS}, got {self.interaction_variant!r}."
            )
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}.")
        for name in ("mit_layers", "prompt_layers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} counts layers, so it must be >= 0, got {getattr(self, name)}.")
        if self.batchnorm_eval_statistics not in BATCHNORM_EVAL_STATISTICS:
            raise ValueError(
                f"batchnorm_eval_statistics must be one of {BATCHNORM_EVAL_STATISTICS} ('running': standard evaluation, "
                f"'batch': the released K400 evaluation), got {self.batchnorm_eval_statistics!r}."
            )
        if self.interaction_channels < 4 or self.interaction_channels % 4 != 0:
            raise ValueError(
                f"interaction_channels must be a positive multiple of 4 (halves per frame, grouped point layers), "
                f"got {self.interaction_channels}."
            )
        for name in ("point_scale", "alignment_window", "alignment_slope"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):  # also refuses NaN, which compares false
                raise ValueError(f"{name} shapes the alignment masks and must be a positive number, got {value}.")
        for name in ("jitter_delta", "alignment_loss_weight", "initializer_range", "initializer_factor"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}.")
        for name in ("drop_path_rate", "classifier_dropout"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"{name} is a probability in [0, 1), got {value}.")
        if not (math.isfinite(self.layer_norm_eps) and self.layer_norm_eps > 0):
            raise ValueError(f"layer_norm_eps must be a positive number, got {self.layer_norm_eps}.")
        if not 0 <= self.attention_dropout < 1:
            raise ValueError(f"attention_dropout is a probability in [0, 1), got {self.attention_dropout}.")
        if self.projection_dim % 64 != 0:
            raise ValueError(
                f"The MIT and prompt generator use projection_dim / 64 attention heads, so projection_dim must be a "
                f"multiple of 64, got {self.projection_dim}."
            )
        if self.parameter_count_bound > MAX_PARAMETERS:
            raise ValueError(
                f"This config describes a model of about {self.parameter_count_bound:.3g} weights "
                f"(num_hidden_layers {self.num_hidden_layers}, hidden_size {self.hidden_size}, intermediate_size "
                f"{self.intermediate_size}, interaction_channels {self.interaction_channels}, {self.num_labels} "
                "labels); at most "
                f"{MAX_PARAMETERS:.0e} are allowed."
            )


__all__ = ["ILAVideoConfig"]
