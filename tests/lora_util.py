"""A real PEFT LoRA adapter on a model directory, perturbed so it changes the model's outputs.

Import in a test module: `from lora_util import perturbed_lora`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM


def perturbed_lora(model_dir: Path, out: Path, seed: int = 0, scale: float = 0.5, r: int = 8) -> Path:
    """Save a LoRA adapter (PEFT format) whose B matrices are random, so its delta is non-zero."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear"))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # PEFT initialises B to zero: the adapter would be the identity
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    peft_model.save_pretrained(out)
    return out
