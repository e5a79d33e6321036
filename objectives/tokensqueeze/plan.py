"""The TokenSqueeze program's GPU plan: its stages on one GPU, from the model's config.json and the spec.

Part of the recipe's check (`TokenSqueeze.check`, printed by `tsq sweep check` for vLLM specs and logged
by `tsq sweep launch`): every trial of the study must fit, so knobs that change memory are taken at their
largest across the study (LoRA rank) and a stage any trial can run is planned (refinement on in some trial).

The stages take turns on the GPU (docs/real-models.md, "GPU memory plan"):
- the vLLM engine: self-samples, the baseline, step rewrites and every evaluation, at
  `sampling.gpu_memory_utilization` of the GPU;
- with the engine asleep (`sampling.sleep_mode`) or beside it awake: refinement scoring, the covering
  reference pass, and LoRA training, each in this process, each freeing what it loaded before the engine
  wakes.
Lengths are upper bounds: every sequence at its cap, padded to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from objectives.tokensqueeze.config import TokenSqueezeSpec as Spec
from tsq.engines.generation import lora_rank_bound, study_values
from tsq.engines.generation.vllm import vllm_lora_rank
from tsq.engines.gpu_plan import (
    CUDA_CONTEXT,
    GPU,
    GPUS,
    H100_80GB,
    LORA_DECODE_SLOWDOWN,
    VLLM_MAX_NUM_SEQS,
    ModelShape,
    Plan,
    Stage,
    decode_tokens_per_s,
    engine_asleep_bytes,
    engine_items,
    find_config,
    gib,
    read_config,
    reference_items,
    scoring_items,
    train_step_seconds,
    training_items,
)

PROMPT_ALLOWANCE = 512  # tokens for the prompt where `training.max_length` is unset (MATH-500: < 400)
DTYPE_BYTES = {"auto": 2, "bfloat16": 2, "float16": 2, "float32": 4}


def check_gpu_plan(spec: Spec, gpu: str = "h100") -> Plan | None:
    """The program's GPU plan for a vLLM spec on one `gpu` (a key of `tsq.engines.gpu_plan.GPUS`); None for a
    spec
    that samples with the HF backend or on the tiny model (CPU-sized). A model whose config.json cannot be
    read without downloading gets a plan without stages that says so."""
    if spec.sampling.backend != "vllm" or spec.model.path == "tiny":
        return None
    found = find_config(spec.model.path)
    if found is None:
        return Plan(
            f"GPU plan: no config.json for {spec.model.path} (not a local folder, not in the local Hugging "
            "Face cache, and tsq ships no copy): `hf download ID config.json` gives the plan",
            (),
        )
    path, source = found
    config = read_config(path)
    return gpu_plan(spec, ModelShape.from_config(config), GPUS[gpu], source, config)


def gpu_plan(
    spec: Spec, shape: ModelShape, gpu: GPU = H100_80GB, source: str = "", config: dict | None = None
) -> Plan:
    """The plan of `spec` for a model of `shape` on one `gpu` (pure: the tests check it by hand)."""
    total = gpu.memory
    dtype = DTYPE_BYTES.get(spec.model.dtype, 2)
    sampling, training, refinement = spec.sampling, spec.training, spec.refinement
    max_model_len = sampling.max_model_len or int((config or {}).get("max_position_embeddings", 0)) or 32768
    length = training.max_length or PROMPT_ALLOWANCE + sampling.max_new_tokens
    rank = lora_rank_bound(spec)
    kv_token = shape.kv_bytes_per_token(dtype)

    def engine(u: float) -> Stage:
        items = engine_items(shape, int(u * total), max_lora_rank=vllm_lora_rank(rank), dtype_bytes=dtype)
        kv = items["KV cache"]
        seqs = kv // (max_model_len * kv_token) if kv > 0 else 0
        short = (
            "" if seqs >= 1 else f"its KV cache holds no sequence of sampling.max_model_len {max_model_len}"
        )
        return Stage(
            "vLLM engine (self-samples, step rewrites, evaluation)",
            items,
            {"this process": CUDA_CONTEXT},
            total,
            note=f"KV cache {max(kv, 0) // kv_token:,} tokens = {seqs} sequences of {max_model_len}",
            shortfall=short,
        )

    def beside(u: float, sleep: bool) -> dict[str, int]:
        engine_bytes = engine_asleep_bytes() if sleep else int(u * total)
        return {"engine " + ("asleep" if sleep else "awake"): engine_bytes, "this process": CUDA_CONTEXT}

    middle: list[tuple[str, Callable[[int], dict[str, int]], str, int]] = []
    if any(study_values(spec, ("refinement", "enabled"))):
        row_tokens = refinement.max_step_tokens + refinement.window
        middle.append((
            "refinement scoring",
            lambda b: scoring_items(shape, b, length, row_tokens, refinement.window, dtype_bytes=dtype),
            "refinement.batch_size",
            refinement.batch_size,
        ))  # fmt: skip
    middle.append((
        "reference pass",
        lambda b: reference_items(shape, 2 * b * length, dtype_bytes=dtype),
        "training.batch_size",
        training.batch_size,
    ))  # fmt: skip
    middle.append((
        "LoRA training",
        lambda b: training_items(shape, 2 * b * length, rank, training.lora.target_modules,
                                 checkpointing=training.gradient_checkpointing, dtype_bytes=dtype),
        "training.batch_size",
        training.batch_size,
    ))  # fmt: skip

    u, sleep = sampling.gpu_memory_utilization, sampling.sleep_mode
    stages = [engine(u)]
    for name, items_at, knob, size in middle:
        stage = Stage(name, items_at(size), beside(u, sleep), total)
        if not stage.fits:
            stage = replace(stage, remedy=_remedy(stage, items_at, knob, size, u, sleep, total, engine))
        stages.append(stage)
    if not stages[0].fits:
        stages[0] = replace(stages[0], remedy=_engine_remedy(stages[0], u, total, kv_token, engine))

    title = (
        f"GPU plan on one {gpu.name} ({gib(total)} GiB), {shape.params / 1e9:.2f}B parameters"
        f" (config.json from {source or 'the caller'}), sleep_mode {'on' if sleep else 'off'},"
        f" gpu_memory_utilization {u:g}, LoRA rank up to {rank}, sequences up to {length} tokens"
    )
    return Plan(title, tuple(stages), _times(spec, shape, gpu, stages[0], length, dtype), _NOTES)


_NOTES = (
    "estimates from shapes (tsq/engines/gpu_plan.py lists each assumption); on the GPU, vLLM's start-up "
    "lines 'Available KV cache memory' and 'Sleep mode freed ... still in use' and "
    "benchmarks/gpu_trial_check.py --plan measure them",
    "times are upper bounds (every response at its cap) at assumed efficiencies; step rewrites and their "
    "scoring depend on the positives and are not timed",
)


def _largest(fits: Callable[[int], bool], below: int) -> int | None:
    for value in range(below - 1, 0, -1):
        if fits(value):
            return value
    return None


def _remedy(
    stage: Stage,
    items_at: Callable[[int], dict[str, int]],
    knob: str,
    size: int,
    u: float,
    sleep: bool,
    total: int,
    engine: Callable[[float], Stage],
) -> str:
    own = sum(stage.items.values())
    options, why = [], ""
    if not sleep:
        if own + engine_asleep_bytes() + CUDA_CONTEXT <= total:
            options.append("set sampling.sleep_mode: true")
        room = int((total - CUDA_CONTEXT - own) / total * 100) / 100
        if room > 0 and engine(room).fits:
            options.append(f"lower sampling.gpu_memory_utilization to <= {room:g}")
        else:
            why = (
                f" (beside an awake engine it needs gpu_memory_utilization <= {max(room, 0):g}, where the "
                "engine has no room for its KV cache)"
            )
    rest = sum(stage.beside.values())
    smaller = _largest(lambda b: sum(items_at(b).values()) + rest <= total, size)
    if smaller is not None:
        options.append(f"lower {knob} to <= {smaller}")
    return (" or ".join(options) or "a GPU with more memory") + why


def _engine_remedy(
    stage: Stage, u: float, total: int, kv_token: int, engine: Callable[[float], Stage]
) -> str:
    if stage.total > total:
        return (
            f"lower sampling.gpu_memory_utilization to <= {int((total - CUDA_CONTEXT) / total * 100) / 100:g}"
        )
    options = []
    higher = next((x / 100 for x in range(int(u * 100) + 1, 100) if engine(x / 100).fits), None)
    if higher is not None:
        options.append(f"raise sampling.gpu_memory_utilization to >= {higher:g}")
    if stage.items["KV cache"] >= kv_token:
        options.append(f"lower sampling.max_model_len to <= {stage.items['KV cache'] // kv_token}")
    return " or ".join(options) or "a GPU with more memory"


def _times(spec: Spec, shape: ModelShape, gpu: GPU, engine: Stage, length: int, dtype: int) -> tuple:
    kv_tokens = max(engine.items["KV cache"], 0) // shape.kv_bytes_per_token(dtype)

    def decode_s(n_tokens: int, cap: int, lora: bool = False) -> float:
        mean_context = PROMPT_ALLOWANCE + cap // 2
        concurrency = max(1, min(VLLM_MAX_NUM_SEQS, kv_tokens // mean_context))
        rate = decode_tokens_per_s(shape, gpu, concurrency, mean_context, dtype_bytes=dtype)
        return n_tokens / rate * (LORA_DECODE_SLOWDOWN if lora else 1.0)

    data, sampling, evaluation, training = spec.data, spec.sampling, spec.evaluation, spec.training
    samples = decode_s(_n(data.train) * sampling.n * sampling.max_new_tokens, sampling.max_new_tokens)
    base = decode_s(_n(data.eval) * evaluation.n * evaluation.max_new_tokens, evaluation.max_new_tokens)
    steps = training.max_steps * train_step_seconds(
        shape, gpu, 2 * training.batch_size * length, checkpointing=training.gradient_checkpointing
    )
    trial_eval = base * LORA_DECODE_SLOWDOWN
    per_trial = steps + trial_eval
    n_trials = spec.study.n_trials or 1
    return (
        ("self-samples, once", samples),
        ("baseline evaluation, once", base),
        ("LoRA training, per trial", steps),
        ("evaluation with the adapter, per trial", trial_eval),
        (f"sweep of {n_trials} trials (once + trials; the engine starts once per worker)",
         samples + base + n_trials * per_trial),
    )  # fmt: skip


def _n(split) -> int:
    return split.n if split.n is not None else len(split.ids or ()) or 100
