"""The `zero-shot-video-classification` pipeline: classify a video into classes given by name at call time.

Called like transformers' `zero-shot-image-classification`:

    classifier = pipeline("zero-shot-video-classification", model=folder)   # after `import ila_hf`
    classifier("video.mp4", candidate_labels=["surfing", "kayaking", "sailing"])
    # [{"label": "kayaking", "score": 0.71}, ...]

It needs an ILA model with the text head and its text side (the folder's `text_model/`). This file imports only
torch and transformers, so it travels as Hub remote code: a folder saved for `trust_remote_code` declares it in
`config.custom_pipelines`, and `pipeline("zero-shot-video-classification", model=folder, trust_remote_code=True)`
works without ila_hf.
"""

from typing import Any

import torch
from transformers import Pipeline


class ZeroShotVideoClassificationPipeline(Pipeline):
    """
    Zero-shot video classification with an ILA model's text head: the candidate labels are embedded by the model's
    CLIP text tower, refined by the prompts the video generates, and compared with the video embedding; the scores
    are the softmax of those logits over the candidates.
    """

    _load_processor = False
    _load_image_processor = False
    _load_video_processor = None  # loaded when the model has one; checked below
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if getattr(self.model.config, "head", None) != "text":
            raise ValueError(
                f"zero-shot-video-classification needs an ILA model with the text head; {self.model.name_or_path!r} "
                f"has head={getattr(self.model.config, 'head', None)!r}."
            )
        if self.video_processor is None:
            raise ValueError(
                f"zero-shot-video-classification needs the model's video processor; none was found for "
                f"{self.model.name_or_path!r} (pass video_processor=...)."
            )
        self._cached_labels: tuple | None = None  # (candidate labels, template) of `_cached_embeddings`
        self._cached_embeddings: torch.Tensor | None = None

    def __call__(self, videos, candidate_labels: list[str] | None = None, **kwargs: Any):
        """
        Score each video against the candidate labels.

        Args:
            videos: a video (path, URL, bytes, file object: whatever the model's video processor reads) or a list.
            candidate_labels: the class names to choose from, or one comma-separated string.
            hypothesis_template: format string turning a label into the text that is embedded; default `"{}"`, the
                bare name, because ILA's text head was trained on embeddings of bare class names (the released K400
                recipe), so other prompts move the embeddings away from what its prompt generator saw.

        Returns:
            For one video, a list of `{"label", "score"}` over all candidates, best first, the scores summing to 1;
            for a list of videos, one such list per video.
        """
        return super().__call__(videos, candidate_labels=candidate_labels, **kwargs)

    def _sanitize_parameters(self, candidate_labels=None, hypothesis_template=None, **kwargs):
        preprocess_params = {}
        if candidate_labels is not None:
            if isinstance(candidate_labels, str):
                candidate_labels = [label.strip() for label in candidate_labels.split(",") if label.strip()]
            preprocess_params["candidate_labels"] = list(candidate_labels)
        if hypothesis_template is not None:
            preprocess_params["hypothesis_template"] = hypothesis_template
        return preprocess_params, {}, {}

    def preprocess(self, video, candidate_labels=None, hypothesis_template="{}"):
        if not candidate_labels:
            raise ValueError(
                "zero-shot-video-classification needs candidate_labels, e.g. candidate_labels=['surfing', 'kayaking']."
            )
        pixel_values = self.video_processor(video, return_tensors="pt")["pixel_values"].to(self.dtype)
        return {"pixel_values": pixel_values, "labels": (tuple(candidate_labels), hypothesis_template)}

    def _forward(self, model_inputs):
        labels = model_inputs.pop("labels")
        if labels != self._cached_labels:  # the text tower runs once per set of labels, not once per video
            self._cached_embeddings = self.model.embed_class_names(list(labels[0]), template=labels[1])
            self._cached_labels = labels
        logits = self.model(pixel_values=model_inputs["pixel_values"], class_embeddings=self._cached_embeddings).logits
        return {"logits": logits, "candidate_labels": labels[0]}

    def postprocess(self, model_outputs):
        scores = model_outputs["logits"][0].float().softmax(dim=-1).tolist()  # over the candidates
        ranked = sorted(zip(scores, model_outputs["candidate_labels"]), key=lambda pair: -pair[0])
        return [{"label": label, "score": score} for score, label in ranked]


__all__ = ["ZeroShotVideoClassificationPipeline"]
