"""What transformers' common model tests expect of a model, checked for ILA's two interaction variants and two heads.

Written for ILA (not copied from transformers' ModelTesterMixin): save/load, determinism, batching, hidden states and
attentions, attention backends, training, activation checkpointing, dtype and device-map loading, and re-initialising
a head of another size.
"""

import pytest
import torch
from transformers import AutoModel, AutoModelForVideoClassification

from ila_hf import ILAForVideoClassification, ILAVideoConfig, ILAVideoModel

from .helpers import CASE_FRAMES, case_config, case_model, case_video


TOKENS = 1 + 4 * 4  # class token + a 4x4 patch grid
CASES = [(variant, head) for variant in ("depthwise", "conv") for head in ("linear", "text")]


def logits_of(model, pixel_values) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=pixel_values).logits


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: a thread pool only adds overhead


parametrize_cases = pytest.mark.parametrize("variant, head", CASES, ids=[f"{v}-{h}" for v, h in CASES])


@parametrize_cases
def test_save_and_load_round_trip_keeps_config_weights_and_outputs(tmp_path, variant, head):
    model = case_model(variant, head).eval()
    expected = logits_of(model, case_video())
    model.save_pretrained(tmp_path)

    reloaded = ILAForVideoClassification.from_pretrained(tmp_path).eval()
    auto_loaded = AutoModelForVideoClassification.from_pretrained(tmp_path).eval()
    encoder = AutoModel.from_pretrained(tmp_path).eval()

    assert type(auto_loaded) is ILAForVideoClassification and type(encoder) is ILAVideoModel
    saved_settings = {key: value for key, value in model.config.to_dict().items() if key != "_name_or_path"}
    assert saved_settings.items() <= reloaded.config.to_dict().items()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    torch.testing.assert_close(logits_of(reloaded, case_video()), expected, rtol=0, atol=0)
    torch.testing.assert_close(logits_of(auto_loaded, case_video()), expected, rtol=0, atol=0)
    with torch.no_grad():
        expected_frames = model.ila(case_video()).frame_embeds
        torch.testing.assert_close(encoder(case_video()).frame_embeds, expected_frames, rtol=0, atol=0)


@parametrize_cases
def test_eval_is_deterministic_and_each_video_is_independent_of_its_batch(variant, head):
    model = case_model(variant, head).eval()
    videos = case_video(batch_size=3)
    with torch.no_grad():
        batched, again = model(pixel_values=videos), model(pixel_values=videos)
        single = model(pixel_values=videos[1:2])

    for field in ("logits", "video_embeds", "frame_embeds", "interactive_points", "alignment_loss"):
        torch.testing.assert_close(again[field], batched[field], rtol=0, atol=0, msg=field)
    torch.testing.assert_close(single.logits, batched.logits[1:2], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(single.interactive_points, batched.interactive_points[1:2], rtol=1e-5, atol=1e-6)
    assert batched.interactive_points.shape == (3, 2, CASE_FRAMES - 1, 2, 2)


@parametrize_cases
def test_hidden_states_and_attentions_are_the_tensors_the_forward_uses(variant, head):
    model = case_model(variant, head, attn_implementation="eager", freeze_backbone=False).eval()
    outputs = model(pixel_values=case_video(), output_hidden_states=True, output_attentions=True)
    layers, width, heads = model.config.num_hidden_layers, model.config.hidden_size, model.config.num_attention_heads

    assert len(outputs.hidden_states) == layers + 1 and len(outputs.attentions) == layers
    assert all(state.shape == (2, CASE_FRAMES, TOKENS, width) for state in outputs.hidden_states)
    assert all(weights.shape == (2 * CASE_FRAMES, heads, TOKENS, TOKENS) for weights in outputs.attentions)
    torch.testing.assert_close(outputs.attentions[0].sum(-1), torch.ones(2 * CASE_FRAMES, heads, TOKENS))
    with torch.no_grad():
        embeddings = model.ila.pre_layrnorm(model.ila.embeddings(case_video().flatten(0, 1)))
    torch.testing.assert_close(outputs.hidden_states[0], embeddings.view(2, CASE_FRAMES, TOKENS, width))

    for tensor in (*outputs.hidden_states, *outputs.attentions):
        tensor.retain_grad()
    outputs.logits.flatten()[0].backward()
    assert all(state.grad is not None and state.grad.abs().sum() > 0 for state in outputs.hidden_states)
    assert all(weights.grad is not None and weights.grad.abs().sum() > 0 for weights in outputs.attentions)


@parametrize_cases
def test_output_flags_come_from_the_config_and_tuples_follow_return_dict(variant, head):
    model = case_model(variant, head, output_hidden_states=True).eval()
    with torch.no_grad():
        outputs = model(pixel_values=case_video())
        as_tuple = model(pixel_values=case_video(), return_dict=False)
        silenced = model(pixel_values=case_video(), output_hidden_states=False)

    assert len(outputs.hidden_states) == model.config.num_hidden_layers + 1 and silenced.hidden_states is None
    assert outputs.attentions is None  # not requested
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(outputs.to_tuple())
    torch.testing.assert_close(as_tuple[0], outputs.logits, rtol=0, atol=0)


@parametrize_cases
def test_sdpa_and_eager_attention_agree(variant, head):
    sdpa = case_model(variant, head).eval()
    eager = ILAForVideoClassification(case_config(variant, head, attn_implementation="eager")).eval()
    eager.load_state_dict(sdpa.state_dict())
    assert sdpa.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    with torch.no_grad():
        sdpa_outputs = sdpa(pixel_values=case_video(), output_attentions=True)
        eager_outputs = eager(pixel_values=case_video(), output_attentions=True)

    torch.testing.assert_close(sdpa_outputs.logits, eager_outputs.logits, rtol=1e-5, atol=1e-5)
    assert sdpa_outputs.attentions == ()  # SDPA computes no attention weights to return
    assert len(eager_outputs.attentions) == eager.config.num_hidden_layers


@parametrize_cases
def test_a_training_step_updates_exactly_the_trainable_weights_and_lowers_the_loss(variant, head):
    model = case_model(variant, head).train()
    frozen = {name: p.detach().clone() for name, p in model.named_parameters() if not p.requires_grad}
    trainable = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4)
    videos, labels = case_video(), torch.tensor([0, 2])

    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        loss = model(pixel_values=videos, labels=labels).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    assert frozen and all(torch.equal(p, frozen[name]) for name, p in model.named_parameters() if name in frozen)
    changed = {
        name for name, p in model.named_parameters() if name in trainable and not torch.equal(p, trainable[name])
    }
    assert {"ila.encoder.layers.0.message_fc.weight", "mit.position_embedding"} <= changed
    assert losses[-1] < losses[0]


@parametrize_cases
def test_activation_checkpointing_recomputes_the_layers_and_gives_the_same_gradients(variant, head):
    model = case_model(variant, head, freeze_backbone=False).train()
    model.set_jitter_delta(0.0)  # BatchNorm still uses batch statistics: the recomputation must see the same batch
    videos, labels = case_video(), torch.tensor([1, 0])
    calls = []
    model.ila.encoder.layers[0].message_fc.register_forward_hook(lambda *_: calls.append(torch.is_grad_enabled()))

    def gradients():
        calls.clear()
        model.zero_grad()
        model(pixel_values=videos, labels=labels).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    plain = gradients()
    assert len(calls) == 1
    model.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.ila.encoder.layers)
    checkpointed = gradients()

    assert len(calls) == 2  # the forward, and its recomputation in the backward
    for name, gradient in plain.items():
        torch.testing.assert_close(checkpointed[name], gradient, rtol=1e-4, atol=1e-6, msg=name)


@parametrize_cases
def test_loading_in_bfloat16_converts_weights_and_buffers(tmp_path, variant, head):
    case_model(variant, head).save_pretrained(tmp_path)
    model = ILAForVideoClassification.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        outputs = model(pixel_values=case_video().to(torch.bfloat16))

    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.ila.encoder.layers[0].alignment.grid.dtype == torch.bfloat16
    assert outputs.logits.dtype == torch.bfloat16 and torch.isfinite(outputs.logits).all()
    model.save_pretrained(tmp_path / "bf16")
    assert AutoModelForVideoClassification.from_pretrained(tmp_path / "bf16", dtype="auto").dtype == torch.bfloat16


@parametrize_cases
def test_device_map_loading_rebuilds_the_non_persistent_buffers(tmp_path, variant, head):
    """Loading builds the model on the meta device first: the constants that are not saved must come back right."""
    model = case_model(variant, head).eval()
    model.save_pretrained(tmp_path)
    expected = logits_of(model, case_video())

    for kwargs in ({"device_map": "auto"}, {"low_cpu_mem_usage": True}):
        loaded = ILAForVideoClassification.from_pretrained(tmp_path, **kwargs).eval()
        assert all(t.device.type == "cpu" for t in (*loaded.parameters(), *loaded.buffers())), kwargs
        for name, buffer in model.named_buffers():
            torch.testing.assert_close(loaded.get_buffer(name), buffer, rtol=0, atol=0, msg=f"{name} {kwargs}")
        torch.testing.assert_close(logits_of(loaded, case_video()), expected, rtol=0, atol=0)


@parametrize_cases
def test_ignore_mismatched_sizes_reinitialises_only_the_head_of_another_size(tmp_path, variant, head):
    model = case_model(variant, head)
    model.save_pretrained(tmp_path)
    labels = {index: f"class {index}" for index in range(5)}

    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        ILAForVideoClassification.from_pretrained(tmp_path, id2label=labels)
    loaded, info = ILAForVideoClassification.from_pretrained(
        tmp_path, id2label=labels, ignore_mismatched_sizes=True, output_loading_info=True
    )

    resized = {"linear": {"head.classifier.weight", "head.classifier.bias"}, "text": {"head.class_embeddings"}}[head]
    assert {key for key, *_ in info["mismatched_keys"]} == resized
    assert loaded.config.num_labels == 5 and not info["missing_keys"] and not info["unexpected_keys"]
    for name, tensor in model.state_dict().items():
        if name not in resized:
            torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    if head == "linear":  # CLIP's initialisation of a new Linear, not leftover memory
        assert loaded.head.classifier.weight.shape == (5, 64)
        assert torch.equal(loaded.head.classifier.bias, torch.zeros(5))
        assert 0 < loaded.head.classifier.weight.std() < 0.1
    else:  # filled by set_class_names for the new classes
        assert torch.equal(loaded.head.class_embeddings, torch.zeros(5, 64))


def test_common_model_attributes():
    model = ILAForVideoClassification(case_config("depthwise", "linear"))
    assert model.main_input_name == "pixel_values" and model.base_model is model.ila
    assert model.get_input_embeddings() is model.ila.embeddings.patch_embedding
    assert set(model._no_split_modules) <= {type(module).__name__ for module in model.modules()}
    config = ILAVideoConfig.from_dict(model.config.to_dict())
    assert config.to_dict() == model.config.to_dict()
