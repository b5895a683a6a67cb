"""LLaVA family (``LlavaForConditionalGeneration``: LLaVA-1.5, interleave-style, the embedded model).

Layout: ``model.vision_tower`` and ``model.multi_modal_projector`` beside ``model.language_model``.
"""

from __future__ import annotations

import re

import torch

from nscvf.models.base import VisionLanguageModel
from nscvf.models.registry import register


@register
class LlavaModel(VisionLanguageModel):
    family = "llava"
    model_types = ("llava",)

    def vision_tower(self) -> torch.nn.Module:
        return self.base.model.vision_tower

    def projector(self) -> torch.nn.Module:
        return self.base.model.multi_modal_projector

    def language_model(self) -> torch.nn.Module:
        return self.base.model.language_model

    def project_images(self, inputs: dict) -> list[torch.Tensor]:
        out = self.base.model.get_image_features(pixel_values=inputs["pixel_values"])
        feats = out.pooler_output if hasattr(out, "pooler_output") else out
        return list(feats)

    def visual_linear_names(self) -> list[str]:
        """The tower and projector linears that can change the projected features. LLaVA reads the tower's
        hidden state at ``vision_feature_layer`` (-2 in LLaVA-1.5), so encoder layers after it, and a pooling
        head (SigLIP's ``head``), never reach the LLM: LoRA there would train nothing and get no gradient."""
        tower_names = getattr(self.vision_tower(), "tunable_module_names", None)
        if tower_names is not None:  # a convolutional tower names its own targets (the photo model's last 1x1 convs)
            return self._tower_targets(tower_names())
        cfg = self.base.config
        layers = cfg.vision_feature_layer
        layers = [layers] if isinstance(layers, int) else list(layers)
        n = cfg.vision_config.num_hidden_layers
        # hidden_states[0] is the patch embedding and hidden_states[k] the output of encoder layer k - 1.
        first_unused = max(k % (n + 1) for k in layers)
        tower = next(n for n, m in self.visual_modules().items() if m is self.vision_tower()) + "."

        def unused(name: str) -> bool:
            if not name.startswith(tower):
                return False  # the projector
            rel = name[len(tower) :]
            layer = re.search(r"(?:^|\.)encoder\.layers\.(\d+)\.", rel)
            return bool(re.search(r"(?:^|\.)head\.", rel)) or (layer is not None and int(layer.group(1)) >= first_unused)

        return [name for name in super().visual_linear_names() if not unused(name)]

    def _tower_targets(self, tower_names: list[str]) -> list[str]:
        """The tower's own LoRA targets (its full names in ``base``) and the projector's linears."""
        tower, projector = self.visual_modules()
        return [f"{tower}.{n}" for n in tower_names] + self._linear_names({projector: self.projector()})
