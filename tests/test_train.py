"""LoRA DPO-L + η·SFT training through TRL, on the real tiny model (fixture `tiny_model_dir`)."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel
from tokenizers import processors
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast
from trl import DPOConfig, DPOTrainer

from tsq.cache import Cache
from tsq.config.pipeline import TrainingSpec
from tsq.data.tiny_world import TraceStyle, generate_trace, random_problem
from tsq.engines import train as train_module
from tsq.engines.models import model_fingerprint
from tsq.engines.train import (
    REF_LOGPS_STAGE,
    RefLogpsStore,
    TokenSqueezeDPOConfig,
    TokenSqueezeDPOTrainer,
    TrainerSetup,
    Truncation,
    cache_reference_logps,
    check_max_length,
    reference_pass,
    strip_duplicate_bos,
    tokenize_pairs,
    train_lora,
)
from tsq.errors import TrialFailed, UserError
from tsq.method.losses import DEFAULT_LOSS, LOSSES, dpo_l_loss
from tsq.method.select import Pair

TERSE = TraceStyle(p_long=0.0, p_check=0.0, restate=False)
VERBOSE = TraceStyle(p_long=1.0, p_check=1.0, restate=True)


@pytest.fixture(autouse=True)
def _private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TSQ_HOME", str(tmp_path / "home"))


def make_pairs(model_dir: Path, n: int, seed: int = 0) -> list[Pair]:
    """Tiny-world pairs: a terse trace (chosen) against a verbose one (rejected), chat-formatted prompts."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        problem = random_problem(rng, steps=1 + i % 3)
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": problem.question()}], tokenize=False, add_generation_prompt=True
        )
        chosen = generate_trace(problem, rng, slip_rate=0.0, style=TERSE)
        rejected = generate_trace(problem, rng, slip_rate=1.0, style=VERBOSE)
        pairs.append(
            Pair(
                problem_id=f"p{i}",
                prompt=prompt,
                chosen=" " + chosen,
                rejected=" " + rejected,
            )
        )
    return pairs


def as_dataset(pairs: list[Pair]) -> Dataset:
    return Dataset.from_list(
        [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs]
    )


def perturb_lora(model: torch.nn.Module) -> None:
    """LoRA B starts at zero (policy = reference); give it seeded values so the log-ratios are not zero."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if "lora_B" in name:
                param.copy_(0.2 * torch.randn(param.shape, generator=g))


def common_args(tmp_path: Path, **kw) -> dict:
    return dict(
        output_dir=str(tmp_path / "out"),
        beta=0.1,
        max_length=256,
        per_device_train_batch_size=4,
        bf16=False,
        report_to=[],
        precompute_ref_log_probs=True,
        dataloader_pin_memory=False,
        **kw,
    )


LORA = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")


def build(trainer_cls, args, model_dir: Path, pairs: list[Pair], **kw):
    trainer = trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
        args=args,
        train_dataset=as_dataset(pairs),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        peft_config=LORA,
        **kw,
    )
    perturb_lora(trainer.model)
    return trainer


def batch_of(trainer, n: int) -> dict[str, torch.Tensor]:
    return trainer.data_collator([trainer.train_dataset[i] for i in range(n)])


def loss_on(trainer, batch) -> float:
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, batch).item()


def manual_terms(trainer, batch) -> dict[str, torch.Tensor]:
    """Per-pair policy log-probs, lengths and chosen-token NLL from a plain forward (no fused head)."""
    with torch.no_grad():
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    token_logps = logp.gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    mask = batch["completion_mask"][:, 1:].float()
    seq = (token_logps * mask).sum(1)
    lengths = mask.sum(1)
    chosen_mask, _ = mask.chunk(2)
    chosen_tokens, _ = token_logps.chunk(2)
    return {
        "chosen": seq.chunk(2)[0],
        "rejected": seq.chunk(2)[1],
        "chosen_len": lengths.chunk(2)[0],
        "rejected_len": lengths.chunk(2)[1],
        "nll": -(chosen_tokens * chosen_mask).sum() / chosen_mask.sum(),
    }


@pytest.fixture(scope="module")
def pairs(tiny_model_dir: Path) -> list[Pair]:
    return make_pairs(tiny_model_dir, 8)


def test_config_rejects_settings_the_length_term_would_ignore(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="precompute_ref_log_probs"):
        TokenSqueezeDPOConfig(output_dir=str(tmp_path), bf16=False, loss_variant="dpo-l+sft")
    with pytest.raises(ValueError, match="ld_alpha"):
        TokenSqueezeDPOConfig(**common_args(tmp_path, loss_variant="dpo-l+sft", ld_alpha=0.5))
    # tsq computes the loss from loss_variant: a TRL loss_type would be silently ignored, so it is refused
    with pytest.raises(ValueError, match="loss_type"):
        TokenSqueezeDPOConfig(**common_args(tmp_path, loss_variant="dpo", loss_type=["ipo"]))
    with pytest.raises(ValueError, match=r"training\.loss: unknown loss 'ipo'"):
        TokenSqueezeDPOConfig(**common_args(tmp_path, loss_variant="ipo"))


def test_lambda_zero_eta_zero_equals_trl_sigmoid_dpo(
    tiny_model_dir: Path, pairs: list[Pair], tmp_path: Path
) -> None:
    """Same batch, same LoRA weights: our trainer (DPO-L, λ=0, η=0, our cached reference pass) against
    TRL's own sigmoid DPO (its own reference pass)."""
    ours = build(
        TokenSqueezeDPOTrainer,
        TokenSqueezeDPOConfig(**common_args(tmp_path, loss_variant="dpo-l+sft", lam=0.0)),
        tiny_model_dir,
        pairs,
        ref_logps_store=RefLogpsStore(Cache(tmp_path / "cache"), model_fingerprint(tiny_model_dir)),
    )
    trl = build(DPOTrainer, DPOConfig(**common_args(tmp_path, loss_type="sigmoid")), tiny_model_dir, pairs)
    ours_batch, trl_batch = batch_of(ours, 6), batch_of(trl, 6)
    torch.testing.assert_close(ours_batch["input_ids"], trl_batch["input_ids"])
    torch.testing.assert_close(ours_batch["ref_chosen_logps"], trl_batch["ref_chosen_logps"])
    torch.testing.assert_close(ours_batch["ref_rejected_logps"], trl_batch["ref_rejected_logps"])
    ours_loss, trl_loss = loss_on(ours, ours_batch), loss_on(trl, trl_batch)
    assert abs(ours_loss - 0.6931) > 1e-3  # the perturbed policy is not the reference
    assert ours_loss == pytest.approx(trl_loss, rel=1e-5)


@pytest.mark.parametrize(
    "variant",
    # the default variant always; the ablation variants are slower checks of the same wiring
    [pytest.param(name, marks=() if name == DEFAULT_LOSS else pytest.mark.slow) for name in LOSSES],
)
def test_variant_losses_against_a_manual_forward(
    tiny_model_dir: Path, pairs: list[Pair], tmp_path: Path, variant: str
) -> None:
    """The trainer's loss equals the docs/method.md formula evaluated from an independent plain forward:
    DPO-L with margin λ·log(ℓ_r/ℓ_c) (ℓ = completion tokens incl. EOS), plus η·mean NLL of chosen tokens."""
    lam, eta = 0.7, 0.5
    trainer = build(
        TokenSqueezeDPOTrainer,
        TokenSqueezeDPOConfig(**common_args(tmp_path, loss_variant=variant, lam=lam, sft_weight=eta)),
        tiny_model_dir,
        pairs,
        ref_logps_store=RefLogpsStore(Cache(tmp_path / "cache"), model_fingerprint(tiny_model_dir)),
    )
    batch = batch_of(trainer, 6)
    t = manual_terms(trainer, batch)
    refs = (batch["ref_chosen_logps"], batch["ref_rejected_logps"])
    lengths = (t["chosen_len"], t["rejected_len"])
    # verbose rejected traces are longer, so the length margin is positive
    assert bool((t["rejected_len"] > t["chosen_len"]).all())
    dpo_l = dpo_l_loss(t["chosen"], t["rejected"], *refs, *lengths, beta=0.1, lam=lam).mean()
    dpo = dpo_l_loss(t["chosen"], t["rejected"], *refs, *lengths, beta=0.1, lam=0.0).mean()
    # written out by hand per variant, not derived from the registry; every registry entry needs one
    by_hand = {
        "dpo-l+sft": dpo_l + eta * t["nll"],
        "dpo+sft": dpo + eta * t["nll"],
        "dpo": dpo,
        "sft": t["nll"],
    }
    assert set(by_hand) == set(LOSSES)
    expected = by_hand[variant]
    assert loss_on(trainer, batch) == pytest.approx(expected.item(), rel=1e-4)
    if variant == "dpo-l+sft":
        # the length margin changes the loss: λ > 0 with longer rejected responses raises it
        assert dpo_l.item() > dpo.item() + 1e-3


def test_tokenize_pairs_gives_eos_only_to_finished_responses(tiny_model_dir: Path, pairs: list[Pair]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    p = pairs[0]
    ids, cut = tokenize_pairs(
        tokenizer,
        [p.prompt],
        {"chosen": [p.chosen], "rejected": [p.rejected]},
        {"chosen": [True], "rejected": [False]},
        max_length=None,
    )
    eos = tokenizer.eos_token_id
    assert ids["chosen_ids"][0][-1] == eos  # generated its EOS: trained on it, as TRL does
    assert eos not in ids["rejected_ids"][0]  # ran into max_new_tokens: no EOS it never generated
    assert (
        ids["rejected_ids"][0] == tokenizer(p.prompt + p.rejected)["input_ids"][len(ids["prompt_ids"][0]) :]
    )
    assert cut == Truncation(max_length=None, without_eos=1)


def test_tokenize_pairs_counts_what_max_length_cuts(tiny_model_dir: Path, pairs: list[Pair]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = [p.prompt for p in pairs[:3]]
    sides = {"chosen": [p.chosen for p in pairs[:3]], "rejected": [p.rejected for p in pairs[:3]]}
    eos = {side: [True] * 3 for side in sides}
    full, none_cut = tokenize_pairs(tokenizer, prompts, sides, eos, max_length=None)
    assert none_cut == Truncation(max_length=None)
    lengths = [
        (len(full["prompt_ids"][i]), len(full["chosen_ids"][i]), len(full["rejected_ids"][i]))
        for i in range(3)
    ]
    # the verbose rejected trace is longer than the terse chosen one in every pair
    assert all(c < r for _, c, r in lengths)
    # max_length: exactly pair 0's prompt + chosen, so pair 0 loses only rejected tokens
    p0, c0, _ = lengths[0]
    limit = p0 + c0
    ids, cut = tokenize_pairs(tokenizer, prompts, sides, eos, max_length=limit)
    expected_cut = {"dropped": 0, "chosen": 0, "rejected": 0, "tokens": 0}
    for p, c, r in lengths:
        if p >= limit:
            expected_cut["dropped"] += 1
            continue
        for side, n in (("chosen", c), ("rejected", r)):
            if p + n > limit:
                expected_cut[side] += 1
                expected_cut["tokens"] += p + n - limit
    assert cut == Truncation(limit, *expected_cut.values(), 0)
    assert cut.rejected_cut >= 1 and ids["chosen_ids"][0] == full["chosen_ids"][0]
    assert all(
        len(pr) + len(r) <= limit for pr, r in zip(ids["prompt_ids"], ids["rejected_ids"], strict=True)
    )
    # a cut completion loses its end, so its EOS too
    assert ids["rejected_ids"][0] == full["rejected_ids"][0][: limit - p0]
    assert ids["rejected_ids"][0][-1] != tokenizer.eos_token_id
    # a max_length the shortest prompt fills drops every pair, counted
    shortest = min(p for p, _, _ in lengths)
    ids, cut = tokenize_pairs(tokenizer, prompts, sides, eos, max_length=shortest)
    assert ids["prompt_ids"] == [] and cut.pairs_dropped == 3


def test_check_max_length_refuses_a_value_too_small(tiny_model_dir: Path, pairs: list[Pair]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = [p.prompt for p in pairs]
    longest = max(len(tokenizer(p)["input_ids"]) for p in prompts)
    needed = longest + 96 + 1
    assert check_max_length(None, prompts, tokenizer, 96) == needed  # unset: derived
    assert check_max_length(needed, prompts, tokenizer, 96) == needed
    assert check_max_length(4096, prompts, tokenizer, 96) == 4096
    with pytest.raises(UserError) as err:
        check_max_length(needed - 1, prompts, tokenizer, 96)
    message = str(err.value)
    assert "\n" not in message and message.startswith("training.max_length: ")
    assert f"need {needed}" in message and f"({longest} tokens)" in message


def test_every_prompt_filling_max_length_fails_the_trial(
    tiny_model_dir: Path, pairs: list[Pair], tmp_path: Path
) -> None:
    spec = TrainingSpec(max_steps=1, batch_size=4, max_length=8, lora={"r": 4, "alpha": 8})
    with pytest.raises(TrialFailed, match=r"training\.max_length=8"):
        train_lora(tiny_model_dir, pairs, spec, 1.0, 0.5, tmp_path / "out", Cache(tmp_path / "c"))


def test_loss_registry_says_which_knob_is_moot() -> None:
    assert LOSSES["dpo-l+sft"].moot_knobs() == ()
    assert LOSSES["dpo+sft"].moot_knobs() == ("lambda",)
    assert LOSSES["dpo"].moot_knobs() == ("lambda", "eta")
    assert LOSSES["sft"].moot_knobs() == ("lambda", "eta")  # SFT alone has weight 1, whatever η is
    assert [LOSSES[n].sft_weight(0.3) for n in ("dpo", "sft", "dpo+sft", "dpo-l+sft")] == [0.0, 1.0, 0.3, 0.3]
    assert TrainingSpec(loss="dpo").loss == "dpo"
    with pytest.raises(ValueError, match="'dpo', 'sft', 'dpo\\+sft' or 'dpo-l\\+sft'"):
        TrainingSpec(loss="ipo")


def test_single_bos_in_training_inputs(tiny_model_dir: Path, pairs: list[Pair]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt = pairs[0].prompt
    assert prompt.startswith(tokenizer.bos_token)  # the chat template writes BOS into the text
    # The tiny tokenizer adds no BOS itself, so the prompt is kept and its ids hold exactly one BOS
    assert strip_duplicate_bos(prompt, tokenizer) == prompt
    ids = tokenizer(prompt)["input_ids"]
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
    # A tokenizer that adds BOS itself: the text's BOS is dropped, so the ids again hold one BOS
    backend = tokenizer.backend_tokenizer
    backend.post_processor = processors.TemplateProcessing(
        single=f"{tokenizer.bos_token} $A", special_tokens=[(tokenizer.bos_token, tokenizer.bos_token_id)]
    )
    adding = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=tokenizer.bos_token)
    assert adding("x")["input_ids"][0] == tokenizer.bos_token_id
    stripped = strip_duplicate_bos(prompt, adding)
    assert stripped == prompt[len(tokenizer.bos_token) :]
    assert adding(stripped)["input_ids"].count(tokenizer.bos_token_id) == 1


def test_empty_pairs_fail_the_trial(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(TrialFailed, match="no preference pairs"):
        train_lora(tiny_model_dir, [], TrainingSpec(), 1.0, 0.5, tmp_path / "out", Cache(tmp_path / "c"))


SHORT = TrainingSpec(max_steps=3, batch_size=4, learning_rate=5e-3, lora={"r": 4, "alpha": 8})


def test_reference_pass_computes_each_sequence_once(
    tiny_model_dir: Path, pairs: list[Pair], tmp_path: Path
) -> None:
    cache = Cache(tmp_path / "cache")
    setup = TrainerSetup(training=SHORT, out_dir=tmp_path / "ref")
    assert reference_pass(tiny_model_dir, pairs[:3], setup, cache) == 3
    # the first three are cached: only the pairs they do not hold are computed
    assert reference_pass(tiny_model_dir, pairs[:5], setup, cache) == 2
    assert len(list(cache.entries(REF_LOGPS_STAGE))) == len(
        {(p.prompt, t) for p in pairs[:5] for t in (p.chosen, p.rejected)}
    )


@pytest.mark.slow
def test_train_lora_writes_an_adapter_and_caches_reference_logps(
    tiny_model_dir: Path, pairs: list[Pair], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref_batches: list[int] = []
    original = TokenSqueezeDPOTrainer.compute_ref_log_probs

    def counting(self, model, inputs):
        ref_batches.append(inputs["input_ids"].shape[0] // 2)
        return original(self, model, inputs)

    monkeypatch.setattr(TokenSqueezeDPOTrainer, "compute_ref_log_probs", counting)
    cache = Cache(tmp_path / "cache")
    logs: list[dict] = []

    # Trial 1: all but the last pair; every reference log-prob is computed
    first = train_lora(
        tiny_model_dir, pairs[:-1], SHORT, 1.0, 0.5, tmp_path / "t1", cache, on_log=logs.append
    )
    assert first.n_pairs == 7 and first.n_steps == 3 and first.n_ref_computed == 7
    assert sum(ref_batches) == 7
    assert [h["step"] for h in first.history] == [1, 2, 3]
    assert all("loss" in h and "rewards/margins" in h and "dpo_l_loss" in h for h in first.history)
    assert logs[: len(first.history)] == first.history
    assert first.final_loss == first.history[-1]["loss"]
    sequences = {(p.prompt, text) for p in pairs[:-1] for text in (p.chosen, p.rejected)}
    assert len(list(cache.entries(REF_LOGPS_STAGE))) == len(sequences)  # one entry per sequence

    # The adapter is PEFT format, loads onto the base model and changes its outputs
    assert (first.adapter_dir / "adapter_config.json").is_file()
    assert (first.adapter_dir / "adapter_model.safetensors").is_file()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tokenizer(pairs[0].prompt + pairs[0].chosen, return_tensors="pt")["input_ids"]
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        before = base(ids).logits
        tuned = PeftModel.from_pretrained(base, first.adapter_dir).eval()
        after = tuned(ids).logits
    assert (after - before).abs().max().item() > 1e-3

    # Trial 2 (other λ, η): one new pair; only its reference log-probs are computed
    ref_batches.clear()
    second = train_lora(tiny_model_dir, pairs, SHORT, 0.0, 0.0, tmp_path / "t2", cache)
    assert second.n_ref_computed == 1 and sum(ref_batches) == 1

    # Trial 3: nothing new, so no reference forward at all
    ref_batches.clear()
    third = train_lora(tiny_model_dir, pairs, SHORT, 2.0, 1.0, tmp_path / "t3", cache)
    assert third.n_ref_computed == 0 and ref_batches == []


@pytest.mark.slow
def test_reference_pass_ahead_serves_any_pairing_of_its_sequences(
    tiny_model_dir: Path, pairs: list[Pair], tmp_path: Path
) -> None:
    cache = Cache(tmp_path / "cache")
    assert cache_reference_logps(tiny_model_dir, pairs, SHORT, cache, tmp_path / "ahead") == len(pairs)
    # the same cover again is recognised by its content: no model is even loaded
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_module, "_trainer", lambda *a, **k: pytest.fail("built a trainer for a done cover"))
        assert cache_reference_logps(tiny_model_dir, pairs, SHORT, cache, tmp_path / "ahead") == 0
    # a cover with one pair less is another cover, but every sequence of it is cached
    assert cache_reference_logps(tiny_model_dir, pairs[:-1], SHORT, cache, tmp_path / "ahead") == 0
    # the same sequences on the other side of their pairs: cached per sequence, so no reference pass
    swapped = [replace(p, chosen=p.rejected, rejected=p.chosen) for p in pairs]
    trained = train_lora(tiny_model_dir, swapped, SHORT, 1.0, 0.5, tmp_path / "t", cache)
    assert trained.n_ref_computed == 0


@pytest.mark.slow
def test_absurd_learning_rate_fails_the_trial_with_nan(
    tiny_model_dir: Path, pairs: list[Pair], tmp_path: Path
) -> None:
    # lr 1e8 only saturates the tiny model (RMSNorm keeps it finite); at 1e20 Adam's first two steps put
    # LoRA A and B near 1e20, their product overflows float32 and the second step's loss is NaN.
    spec = TrainingSpec(max_steps=4, batch_size=4, learning_rate=1e20, lora={"r": 4, "alpha": 8})
    with pytest.raises(TrialFailed, match=r"^training loss became NaN at step 2$"):
        train_lora(tiny_model_dir, pairs, spec, 1.0, 0.5, tmp_path / "out", Cache(tmp_path / "c"))
