"""Sanity checks of tests/ila_reference.py, the oracle the converter is tested against.

The reference is checked against transformers' own CLIP implementation (for the frozen towers)
and against hand-computed values from the spec (for the alignment mask and the merge rules).
"""

import pytest
import torch
from transformers import (
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from tests.ila_reference import (
    alignment_mask,
    clip_image_embeddings,
    encode_text,
    merge_pairs_into_frames,
    reference_forward,
    tokenize_class_names,
)
from tests.released_checkpoint import released_state_dict

SIZES = dict(width=128, layers=2, patch_size=16, image_size=64, num_frames=4, embed_dim=64)


def _split_in_proj(sd, source, target):
    weight, bias = sd[f"{source}.in_proj_weight"], sd[f"{source}.in_proj_bias"]
    out = {}
    for index, name in enumerate(("q_proj", "k_proj", "v_proj")):
        width = weight.shape[1]
        out[f"{target}.{name}.weight"] = weight[index * width : (index + 1) * width]
        out[f"{target}.{name}.bias"] = bias[index * width : (index + 1) * width]
    out[f"{target}.out_proj.weight"] = sd[f"{source}.out_proj.weight"]
    out[f"{target}.out_proj.bias"] = sd[f"{source}.out_proj.bias"]
    return out


def _clip_layer(sd, source, target):
    out = _split_in_proj(sd, f"{source}.attn", f"{target}.self_attn")
    renames = (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2"))
    for old, new in renames:
        out[f"{target}.{new}.weight"] = sd[f"{source}.{old}.weight"]
        out[f"{target}.{new}.bias"] = sd[f"{source}.{old}.bias"]
    return out


def _hf_clip_vision(sd, layers, width, patch_size, image_size, embed_dim):
    config = CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=width // 64,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=embed_dim,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    model = CLIPVisionModelWithProjection(config).eval()
    weights = {
        "vision_model.embeddings.class_embedding": sd["visual.class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": sd["visual.conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": sd["visual.positional_embedding"],
        "vision_model.pre_layrnorm.weight": sd["visual.ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": sd["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": sd["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": sd["visual.ln_post.bias"],
        "visual_projection.weight": sd["visual.proj"].T,
    }
    for i in range(layers):
        weights.update(_clip_layer(sd, f"visual.transformer.resblocks.{i}", f"vision_model.encoder.layers.{i}"))
    model.load_state_dict(weights, strict=True)
    return model


def _zero_skip_linears(sd):
    sd = dict(sd)
    for key in sd:
        if ".temporal_skip_fc." in key or ".temporal_skip_align_fc." in key:
            sd[key] = torch.zeros_like(sd[key])
    return sd


def test_zero_skip_linears_give_plain_clip_frame_embeddings():
    sd = _zero_skip_linears(released_state_dict("ssv2", **SIZES))
    pixel_values = torch.randn(2, 4, 3, 64, 64)
    output = reference_forward(sd, pixel_values)
    per_frame = clip_image_embeddings(sd, pixel_values.flatten(0, 1)).reshape(2, 4, -1)
    torch.testing.assert_close(output.frame_embeddings, per_frame, atol=1e-5, rtol=1e-5)


def test_plain_clip_vision_matches_transformers_clip():
    sd = released_state_dict("k400", **SIZES)
    images = torch.randn(3, 3, 64, 64)
    model = _hf_clip_vision(sd, layers=2, width=128, patch_size=16, image_size=64, embed_dim=64)
    with torch.no_grad():
        expected = model(pixel_values=images).image_embeds
    torch.testing.assert_close(clip_image_embeddings(sd, images), expected, atol=1e-5, rtol=1e-5)


def test_text_tower_matches_transformers_clip_text_model(clip_tokenizer_dir):
    sd = released_state_dict("k400", **SIZES)
    tokenizer = CLIPTokenizer.from_pretrained(clip_tokenizer_dir)
    names = ["abseiling", "playing guitar", "riding a bike"]
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=1,
        num_attention_heads=1,
        max_position_embeddings=77,
        projection_dim=64,
        hidden_act="quick_gelu",
        eos_token_id=tokenizer.eos_token_id,
    )
    model = CLIPTextModelWithProjection(config).eval()
    weights = {
        "text_model.embeddings.token_embedding.weight": sd["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": sd["positional_embedding"],
        "text_model.final_layer_norm.weight": sd["ln_final.weight"],
        "text_model.final_layer_norm.bias": sd["ln_final.bias"],
        "text_projection.weight": sd["text_projection"].T,
        **_clip_layer(sd, "transformer.resblocks.0", "text_model.encoder.layers.0"),
    }
    model.load_state_dict(weights, strict=True)
    encoded = tokenizer(names, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**encoded).text_embeds
    token_ids = tokenize_class_names(names, tokenizer)
    assert token_ids[1, :4].tolist() == [49406, 1629, 5084, 49407]
    torch.testing.assert_close(encode_text(sd, token_ids), expected, atol=1e-5, rtol=1e-5)


def test_alignment_mask_values_from_the_spec():
    # S = 4: grid -1, -1/3, 1/3, 1. A point at (x=-1, y=1/3):
    # w_x = [1, 1 - 1.5 * (2/3 - 1/4), 0, 0] = [1, 0.375, 0, 0]; w_y = [0, 0.375, 1, 0.375]
    mask = alignment_mask(torch.tensor([[-1.0, 1 / 3]]), 4)[0]
    w_x = torch.tensor([1.0, 0.375, 0.0, 0.0])
    w_y = torch.tensor([0.0, 0.375, 1.0, 0.375])
    torch.testing.assert_close(mask, w_y[:, None] * w_x[None, :])
    # flat top: within 0.25 of a grid point the weight is exactly 1
    assert alignment_mask(torch.tensor([[0.2, -0.2]]), 3)[0, 1, 1] == 1.0


def test_merge_rule_first_last_and_mean_of_neighbours():
    from_prev = torch.arange(3.0).reshape(1, 3, 1)  # pairs 0, 1, 2 (T = 4)
    from_next = 10 + torch.arange(3.0).reshape(1, 3, 1)
    merged = merge_pairs_into_frames(from_prev, from_next)[0, :, 0]
    assert merged.tolist() == [0.0, (1 + 10) / 2, (2 + 11) / 2, 12.0]


def test_points_lie_in_the_scaled_range_and_loss_is_summed_over_layers(clip_tokenizer_dir):
    sd = released_state_dict("k400", **SIZES)
    tokenizer = CLIPTokenizer.from_pretrained(clip_tokenizer_dir)
    output = reference_forward(sd, torch.randn(2, 4, 3, 64, 64), tokenize_class_names(["a", "b"], tokenizer))
    assert output.logits.shape == (2, 2)
    assert len(output.interactive_points) == 2
    for points in output.interactive_points:
        assert points.shape == (2, 3, 4)
        assert points.abs().max() <= 0.75
        assert points.std() > 0.05  # the random checkpoint gives spread-out points
    torch.testing.assert_close(output.alignment_loss, sum(output.layer_alignment_losses))


@pytest.mark.parametrize("variant", ["k400", "ssv2"])
def test_reference_depends_on_every_ila_tensor_family(variant, clip_tokenizer_dir):
    """Perturbing any ILA module changes the logits: none is silently unused."""
    sd = released_state_dict(variant, **{**SIZES, "layers": 1})
    tokenizer = CLIPTokenizer.from_pretrained(clip_tokenizer_dir)
    ids = tokenize_class_names(["a", "b", "c"], tokenizer)
    pixel_values = torch.randn(1, 4, 3, 64, 64)
    base = reference_forward(sd, pixel_values, ids).logits
    families = [
        "message_fc", "message_ln", "interactive_block", "prediction_block.12", "prediction_block.1.running_var",
        "message_attn.conv", "message_attn.fc", "temporal_skip_fc", "temporal_skip_align_fc",
    ]
    for family in families:
        changed = dict(sd)
        for key in sd:
            if key.startswith("visual.transformer.resblocks.0.") and f".{family}" in key:
                # additive: a pure rescale would be undone by the LayerNorm after message_fc
                noise = 0.2 * torch.randn(sd[key].shape, generator=torch.Generator().manual_seed(0))
                changed[key] = sd[key] * 1.5 if key.endswith("running_var") else sd[key] + noise
        assert not torch.allclose(reference_forward(changed, pixel_values, ids).logits, base, atol=1e-6), family
