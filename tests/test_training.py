"""ila_hf.training: the recipe's parameter groups and schedules, and the accelerate loop (train, checkpoint, resume,
evaluate, export, several processes)."""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate.tracking import GeneralTracker

from ila_hf import ILAForVideoClassification
from ila_hf.training import (
    TrainingConfig,
    build_optimizer,
    jitter_delta,
    lr_multiplier,
    top_k_accuracy,
    train,
)
from tests.conftest import TRAINING_CLASSES


REPO_ROOT = Path(__file__).resolve().parents[1]
LABELS = dict(enumerate(TRAINING_CLASSES))


def tiny_model(clip_dir, **kwargs) -> ILAForVideoClassification:
    return ILAForVideoClassification.from_clip(str(clip_dir), num_frames=4, id2label=LABELS, **kwargs)


def recipe_config(**kwargs) -> TrainingConfig:
    return TrainingConfig(train_data="unused", clip_model="unused", **kwargs)


def groups_by_parameter_name(model, optimizer) -> dict[str, dict]:
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    return {names[id(parameter)]: group for group in optimizer.param_groups for parameter in group["params"]}


# ------------------------------------------------------------------------------------------------------ recipe
def test_parameter_groups_follow_the_released_recipe(tiny_clip_dir):
    model = tiny_model(tiny_clip_dir)
    by_name = groups_by_parameter_name(model, build_optimizer(model, recipe_config()))
    expected = {
        "ila.encoder.layers.0.message_fc.weight": ("alignment", 5e-4, 1e-2),
        "ila.encoder.layers.1.message_fc.bias": ("alignment_no_decay", 5e-4, 0.0),
        "ila.encoder.layers.0.message_ln.weight": ("alignment_no_decay", 5e-4, 0.0),
        "ila.encoder.layers.0.alignment.interaction_block.0.conv.weight": ("alignment", 5e-4, 1e-2),
        "ila.encoder.layers.0.alignment.interaction_block.0.norm.weight": ("alignment_no_decay", 5e-4, 0.0),
        "ila.encoder.layers.1.alignment.point_predictor.pair_fc2.weight": ("alignment", 5e-4, 1e-2),
        "ila.encoder.layers.0.alignment.temporal_conv.weight": ("alignment", 5e-4, 1e-2),
        "ila.encoder.layers.0.alignment.interaction_fc.weight": ("alignment", 5e-4, 1e-2),
        "ila.encoder.layers.0.aligned_tokens_proj.weight": ("temporal_skip", 8e-5, 1e-3),
        "ila.encoder.layers.1.interaction_tokens_proj.weight": ("temporal_skip", 8e-5, 1e-3),
        "ila.encoder.layers.1.interaction_tokens_proj.bias": ("temporal_skip_no_decay", 8e-5, 0.0),
        "mit.position_embedding": ("mit_no_decay", 4e-4, 0.0),
        "mit.layers.0.self_attn.q_proj.weight": ("mit", 4e-4, 1e-3),
        "mit.layers.0.layer_norm1.weight": ("mit_no_decay", 4e-4, 0.0),
        "head.classifier.weight": ("head", 4e-4, 1e-3),
        "head.classifier.bias": ("head_no_decay", 4e-4, 0.0),
        "head.norm.weight": ("head_no_decay", 4e-4, 0.0),
    }
    for name, (group, learning_rate, weight_decay) in expected.items():
        assert (by_name[name]["name"], by_name[name]["lr"], by_name[name]["weight_decay"]) == pytest.approx(
            (group, learning_rate, weight_decay)
        ), name


def test_frozen_clip_weights_get_no_group_and_no_optimizer_state(tiny_clip_dir):
    model = tiny_model(tiny_clip_dir)
    optimizer = build_optimizer(model, recipe_config())
    by_name = groups_by_parameter_name(model, optimizer)
    frozen = {f"ila.{name}" for name, _ in model.ila.clip_backbone_parameters()}
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert "ila.encoder.layers.0.self_attn.q_proj.weight" in frozen
    assert set(by_name) == trainable and not frozen & trainable
    assert "backbone" not in {group["name"].removesuffix("_no_decay") for group in optimizer.param_groups}

    pixel_values = torch.randn(2, 4, 3, 64, 64)
    model(pixel_values, labels=torch.tensor([0, 1])).loss.backward()
    optimizer.step()
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    assert {names[id(parameter)] for parameter in optimizer.state} <= trainable


def test_unfrozen_backbone_trains_at_the_base_rate_without_decay_on_embeddings(tiny_clip_dir):
    model = tiny_model(tiny_clip_dir, freeze_backbone=False)
    by_name = groups_by_parameter_name(model, build_optimizer(model, recipe_config()))
    assert by_name["ila.encoder.layers.0.self_attn.q_proj.weight"]["name"] == "backbone"
    assert by_name["ila.encoder.layers.0.self_attn.q_proj.weight"]["lr"] == 8e-6
    assert by_name["ila.embeddings.position_embedding.weight"]["name"] == "backbone_no_decay"
    assert by_name["ila.embeddings.class_embedding"]["name"] == "backbone_no_decay"
    assert by_name["ila.visual_projection.weight"]["weight_decay"] == 1e-3


def test_align_decay_halves_the_jitter_every_epoch_from_epoch_30():
    assert [jitter_delta(epoch) for epoch in (0, 1, 29)] == [0.2, 0.2, 0.2]
    assert [jitter_delta(epoch) for epoch in (30, 31, 32, 49)] == pytest.approx([0.1, 0.05, 0.025, 0.2 / 2**20])
    assert jitter_delta(3, initial=0.4, decay_start_epoch=2) == pytest.approx(0.1)


def test_learning_rate_warms_up_linearly_then_follows_a_cosine_to_the_floor():
    warmup, total = 4, 14
    factors = [lr_multiplier(step, warmup, total, min_lr_ratio=0.01) for step in range(total + 1)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factors[4] == pytest.approx(1.0)
    assert factors[9] == pytest.approx(0.01 + 0.99 * 0.5)  # half-way through the cosine
    assert factors[14] == pytest.approx(0.01)
    assert all(later <= earlier for earlier, later in zip(factors[4:], factors[5:]))


def test_top_k_accuracy_counts_hits_within_the_k_best_scores():
    scores = torch.tensor([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1], [0.3, 0.35, 0.4]])
    labels = torch.tensor([2, 0, 1])
    assert top_k_accuracy(scores, labels, ks=(1, 2, 5)) == pytest.approx({"top1": 1 / 3, "top2": 1.0, "top5": 1.0})
