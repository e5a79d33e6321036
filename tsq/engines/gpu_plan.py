"""GPU memory and time of a decoder model's stages, computed from its `config.json`: arithmetic, no torch.

The library's half of a trial program's GPU plan: what one model needs on one GPU in each kind of stage (a
vLLM engine, an HF forward that scores, a reference pass, LoRA training with checkpointing), and the GPU's
own figures. A program composes its stages from these (objectives/tokensqueeze/plan.py) and says which one
does not fit. Every figure is an estimate from shapes; the assumptions are the constants below, each with
its source, and the closing line of a plan names the log lines that measure them on a real GPU.

Sizes are in bytes; `gib` formats them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsq.engines.gguf_import import imported_dir, is_import_name

GiB = 1 << 30
SHIPPED_CONFIGS = Path(__file__).parents[1] / "assets" / "model-configs"

# -- assumptions (each a constant; docs/real-models.md lists them) -------------------------------------------
# A CUDA context with cuBLAS workspaces, per process that touched the GPU (the main process once it loaded
# an HF model): about 0.5 GiB on an H100 with CUDA 12 (nvidia-smi, a process that ran one matmul).
CUDA_CONTEXT = GiB // 2
# What a vLLM 0.32 engine keeps outside its own accounting: its CUDA context, NCCL and cuBLAS workspaces.
ENGINE_NON_TORCH = 3 * GiB // 4
# CUDA graphs of the decode batch sizes vLLM captures (up to 512 by default): about 1 GiB on 7B-class models
# (vLLM's start-up line "Graph capturing finished in N secs, took X GiB"). Not in the sleep-mode pool, so it
# stays while the engine sleeps, with the non-torch memory.
CUDA_GRAPHS = GiB
# vLLM's offline defaults on a GPU with >= 70 GiB other than an A100 (vllm/engine/arg_utils.py, 0.32).
VLLM_MAX_BATCHED_TOKENS = 16384
VLLM_MAX_NUM_SEQS = 1024
# TRL 1.16's fused LM head: tiles of 4096 tokens x 32768 vocabulary entries (trl/kernels/chunked_logprob.py)
HEAD_TILE_TOKENS, HEAD_TILE_VOCAB = 4096, 32768
# Adam on fp32 LoRA weights: weight, gradient, two moments
LORA_STATE_BYTES = 16
# Efficiencies of the time plan: decoding at 40% of the memory-bandwidth roofline, LoRA training at 25% of
# the bf16 peak (model FLOPs utilisation). Assumed, not measured: calibrate with `tsq baseline` and one trial.
DECODE_EFFICIENCY = 0.4
TRAIN_MFU = 0.25
LORA_DECODE_SLOWDOWN = 1.5  # an adapter applied per request (punica kernels) costs about a third of the speed


@dataclass(frozen=True)
class GPU:
    name: str
    memory: int  # bytes the device reports (torch.cuda.mem_get_info's total)
    bf16_flops: float  # dense peak
    bandwidth: float  # bytes/s, measured device-to-device copy rate


H100_80GB = GPU("H100 80GB", 81559 * (1 << 20), 989e12, 3.0e12)  # 81,559 MiB as nvidia-smi shows it
GPUS = {"h100": H100_80GB, "h200": GPU("H200 141GB", 143771 * (1 << 20), 989e12, 4.0e12)}

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelShape:
    """The shape of a Llama/Qwen2-style decoder (what its config.json says)."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool = False
    qkv_bias: bool = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ModelShape:
        text = config.get("text_config", config)
        hidden, heads = int(text["hidden_size"]), int(text["num_attention_heads"])
        return cls(
            layers=int(text["num_hidden_layers"]),
            hidden=hidden,
            intermediate=int(text["intermediate_size"]),
            heads=heads,
            kv_heads=int(text.get("num_key_value_heads") or heads),
            head_dim=int(text.get("head_dim") or hidden // heads),
            vocab=int(text["vocab_size"]),
            tied=bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
            # Qwen2 has q/k/v biases and no flag for them; Llama-style configs say `attention_bias`
            qkv_bias=bool(text.get("attention_bias", text.get("model_type") == "qwen2")),
        )

    def projections(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear projection of one layer."""
        h, q, kv, i = (
            self.hidden,
            self.heads * self.head_dim,
            self.kv_heads * self.head_dim,
            self.intermediate,
        )
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @property
    def params(self) -> int:
        per_layer = sum(a * b for a, b in self.projections().values()) + 2 * self.hidden  # two norms
        if self.qkv_bias:
            per_layer += (self.heads + 2 * self.kv_heads) * self.head_dim
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.layers * per_layer + embeddings + self.hidden  # + the final norm

    def weight_bytes(self, dtype_bytes: int = 2) -> int:
        return self.params * dtype_bytes

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes

    def targeted(self, target_modules: str | Sequence[str]) -> list[tuple[int, int]]:
        """(in, out) of the projections a LoRA config targets ("all-linear": all of them; PEFT leaves the
        output layer out)."""
        names = PROJECTIONS if target_modules == "all-linear" else [str(m) for m in target_modules]
        return [shape for name, shape in self.projections().items() if name in names]

    def lora_params(self, rank: int, target_modules: str | Sequence[str] = "all-linear") -> int:
        return rank * self.layers * sum(a + b for a, b in self.targeted(target_modules))


def read_config(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def shipped_config(hub_id: str) -> Path | None:
    """tsq's copy of a hub model's config.json (tsq/assets/model-configs/ORG--NAME.json), if it ships one."""
    path = SHIPPED_CONFIGS / f"{hub_id.replace('/', '--')}.json"
    return path if path.is_file() else None


def find_config(model_path: str) -> tuple[Path, str] | None:
    """A model's config.json without downloading anything, and where it came from: a local model folder, the
    local Hugging Face cache, or the copy tsq ships; None when none of them has it."""
    local = Path(model_path).expanduser()
    if not local.exists() and is_import_name(model_path):  # `tsq model import-gguf`'s folder
        local = imported_dir(model_path)
    if (local / "config.json").is_file():
        return local / "config.json", "the model folder"
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model_path, "config.json")
        if isinstance(cached, str):
            return Path(cached), "the local Hugging Face cache"
    except Exception:  # not a hub id: nothing cached under it
        pass
    shipped = shipped_config(model_path)
    return None if shipped is None else (shipped, f"tsq's copy ({shipped.name})")


# -- per-stage memory (bytes, by item) -----------------------------------------------------------------------
def engine_items(
    shape: ModelShape,
    budget: int,
    *,
    max_lora_rank: int,
    max_loras: int = 4,
    dtype_bytes: int = 2,
    batched_tokens: int = VLLM_MAX_BATCHED_TOKENS,
    num_seqs: int = VLLM_MAX_NUM_SEQS,
) -> dict[str, int]:
    """A vLLM engine given `budget` bytes (gpu_memory_utilization x the GPU): what it puts there, the KV cache
    taking the rest (negative: the engine cannot start).

    LoRA slots: vLLM keeps A and B buffers of every LoRA-capable projection for `max_loras` adapters at
    `max_lora_rank`, in the model dtype. Activations: vLLM profiles a forward of `batched_tokens` tokens and a
    sampler pass over `num_seqs` rows; the larger of the two stays reserved.
    """
    h, i = shape.hidden, shape.intermediate
    qkv = (shape.heads + 2 * shape.kv_heads) * shape.head_dim
    forward = batched_tokens * (4 * h + qkv + 3 * i) * dtype_bytes  # residual, qkv, gate/up, activation
    sampler = num_seqs * shape.vocab * 4 * 3  # fp32 logits, probabilities, sorted copy for top-p
    items = {
        "weights": shape.weight_bytes(dtype_bytes),
        "LoRA slots": max_loras * shape.lora_params(max_lora_rank) * dtype_bytes,
        "activations": max(forward, sampler),
        "CUDA graphs": CUDA_GRAPHS,
        "context": ENGINE_NON_TORCH,
    }
    items["KV cache"] = budget - sum(items.values())
    return items


def engine_asleep_bytes() -> int:
    """What a vLLM engine keeps on the GPU at sleep level 1: all but its weights and KV cache."""
    return CUDA_GRAPHS + ENGINE_NON_TORCH


def training_items(
    shape: ModelShape,
    tokens: int,
    rank: int,
    target_modules: str | Sequence[str],
    *,
    checkpointing: bool,
    dtype_bytes: int = 2,
) -> dict[str, int]:
    """LoRA training of one step over `tokens` (rows x padded length), frozen base in `dtype_bytes`.

    With checkpointing each layer's input is kept and one layer at a time is recomputed for backward; without,
    every layer's tensors are kept. A recomputed layer holds its MLP tensors (gate, up, activation, product)
    and about as much again in their gradients, its attention tensors (flash/SDPA: no score matrix), and the
    inputs of its LoRA'd projections cast to the adapters' fp32 (PEFT casts them; counted in full, an upper
    bound). The LM head is TRL's fused one: one fp32 tile and the fp32 gradient of the final hidden states.
    """
    h, i = shape.hidden, shape.intermediate
    attention = (2 * shape.heads + 2 * shape.kv_heads) * shape.head_dim + h
    one_layer = tokens * (8 * i + 2 * attention) * dtype_bytes
    lora_inputs = tokens * sum(a for a, _ in shape.targeted(target_modules)) * 4
    items = {
        "weights": shape.weight_bytes(dtype_bytes),
        "LoRA + Adam": shape.lora_params(rank, target_modules) * LORA_STATE_BYTES,
    }
    if checkpointing:
        items["checkpointed layer inputs"] = tokens * h * dtype_bytes * shape.layers
        items["one layer recomputed"] = one_layer + lora_inputs
    else:
        items["every layer's activations"] = (one_layer // 2 + lora_inputs) * shape.layers
    items["LM head (fused)"] = _head_tile(shape, tokens) + tokens * h * 4
    return items


def _head_tile(shape: ModelShape, tokens: int) -> int:
    return min(tokens, HEAD_TILE_TOKENS) * min(shape.vocab, HEAD_TILE_VOCAB) * 4


def reference_items(shape: ModelShape, tokens: int, *, dtype_bytes: int = 2) -> dict[str, int]:
    """A forward without gradients over `tokens`: one layer's MLP tensors at a time, and the fused head."""
    return {
        "weights": shape.weight_bytes(dtype_bytes),
        "one layer's forward": tokens * (4 * shape.intermediate + 4 * shape.hidden) * dtype_bytes,
        "LM head (fused)": _head_tile(shape, tokens),
    }


def scoring_items(
    shape: ModelShape, rows: int, context: int, row_tokens: int, window: int, *, dtype_bytes: int = 2
) -> dict[str, int]:
    """KL scoring of `rows` rows of `row_tokens` tokens behind a cached `context` (tsq.engines.refine's
    scheme).

    The trace's KV cache is expanded to every row (the cache update materialises one copy per row, context
    and row); the window's logits and the KL's temporaries are fp32 [rows, window, vocab] tensors, four at the
    peak (logits, the logit difference, and two elementwise temporaries of `window_kl`); the output layer is
    copied to fp32 once.
    """
    kv = shape.kv_bytes_per_token(dtype_bytes)
    return {
        "weights": shape.weight_bytes(dtype_bytes),
        "fp32 LM head": shape.vocab * shape.hidden * 4,
        "trace KV cache": context * kv,
        "KV expanded per row": rows * (context + row_tokens) * kv,
        "window logits + KL temporaries": 4 * rows * window * shape.vocab * 4,
        "row activations": rows * row_tokens * 4 * shape.intermediate * dtype_bytes,
    }


# -- time ----------------------------------------------------------------------------------------------------
def decode_tokens_per_s(
    shape: ModelShape, gpu: GPU, concurrency: int, mean_context: int, *, dtype_bytes: int = 2
) -> float:
    """Generated tokens/s of a memory-bound decode: each step reads the weights and every sequence's KV."""
    step_bytes = shape.weight_bytes(dtype_bytes) + concurrency * mean_context * shape.kv_bytes_per_token()
    return DECODE_EFFICIENCY * concurrency * gpu.bandwidth / step_bytes


def train_step_seconds(shape: ModelShape, gpu: GPU, tokens: int, *, checkpointing: bool) -> float:
    """One LoRA step over `tokens` (padded): 2N FLOPs forward, 2N for the activations' backward (the base is
    frozen), and 2N more to recompute each layer under checkpointing."""
    flops = (6 if checkpointing else 4) * shape.params * tokens
    return flops / (TRAIN_MFU * gpu.bf16_flops)


# -- a plan --------------------------------------------------------------------------------------------------
def gib(n: float) -> str:
    return f"{n / GiB:.1f}"


@dataclass(frozen=True)
class Stage:
    """One stage of a plan: this process's items, what else holds the GPU meanwhile, and whether it fits."""

    name: str
    items: dict[str, int]  # what the stage itself puts on the GPU
    beside: dict[str, int]  # what stays on the GPU meanwhile (another process's engine, a CUDA context)
    gpu_memory: int
    remedy: str = ""  # when it does not fit
    note: str = ""  # e.g. the KV cache in tokens and sequences
    shortfall: str = ""  # a reason it cannot run although its bytes add up (an engine without KV room)

    @property
    def total(self) -> int:
        return sum(self.items.values()) + sum(self.beside.values())

    @property
    def fits(self) -> bool:
        return self.total <= self.gpu_memory and not self.shortfall

    def line(self) -> str:
        parts = ", ".join(f"{k} {gib(v)}" for k, v in {**self.items, **self.beside}.items())
        verdict = "fits" if self.fits else f"DOES NOT FIT{f' ({self.shortfall})' if self.shortfall else ''}"
        head = f"{self.name}: {gib(self.total)} of {gib(self.gpu_memory)} GiB, {verdict} ({parts})"
        tail = f"; {self.note}" if self.note else ""
        return head + tail + ("" if self.fits or not self.remedy else f"; remedy: {self.remedy}")

    def to_json(self) -> dict[str, Any]:
        out = {"name": self.name, "fits": self.fits, "total": self.total, "items": self.items}
        return {**out, "beside": self.beside, "note": self.note, "remedy": "" if self.fits else self.remedy}


@dataclass(frozen=True)
class Plan:
    """A trial program's GPU plan: its stages' memory on one GPU and the time of its long stages."""

    title: str
    stages: tuple[Stage, ...]
    times: tuple[tuple[str, float], ...] = ()  # (what, seconds)
    notes: tuple[str, ...] = field(default=())

    @property
    def fits(self) -> bool:
        return all(s.fits for s in self.stages)

    def misfits(self) -> list[Stage]:
        return [s for s in self.stages if not s.fits]

    def lines(self) -> list[str]:
        out = [self.title]
        out += [f"  {s.line()}" for s in self.stages]
        out += [f"  time: {what}: {_duration(seconds)}" for what, seconds in self.times]
        out += [f"  note: {n}" for n in self.notes]
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "fits": self.fits,
            "stages": [s.to_json() for s in self.stages],
            "times_s": dict(self.times),
            "notes": list(self.notes),
        }


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"
