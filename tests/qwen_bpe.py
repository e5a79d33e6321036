"""A Qwen-like world built offline: a byte-level BPE with Qwen2's pre-tokenizer, and a random Qwen2 model.

Qwen's own ranks are not installed, so the vocabulary is trained here, on a corpus of math-style reasoning
steps, with the pieces that matter for step boundaries: Qwen2's pre-tokenizer regex (punctuation keeps the
newlines after it: ".\\n\\n" is one pre-token) and byte-level BPE, so ".\\n\\n", ":\\n\\n" and ".\\n"
become single tokens as in Qwen's ranks. `<think>`/`</think>` are added (non-special) tokens, as in
R1-distilled models, and the chat template ends inside an open think block.

    from qwen_bpe import build_qwen_like      # tests (tests/ is on sys.path), benchmarks add it
    path = build_qwen_like(tmp_path / "qwen", hidden=64, layers=2)
"""

from __future__ import annotations

import random
from pathlib import Path

# Qwen2's pre-tokenizer (transformers' Qwen2Tokenizer PRETOKENIZE_REGEX)
QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
SPECIAL = ["<|endoftext|>", "<|begin|>", "<|User|>", "<|Assistant|>"]
CHAT_TEMPLATE = (
    "<|begin|>{% for m in messages %}<|User|>{{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}<|Assistant|><think>\n{% endif %}"
)
_TEXT = "so we need the value of x then let me check again the sum is wait that gives first compute next"
WORDS = (*_TEXT.split(), "the", "answer", "therefore", "multiply", "both", "sides", "by", "and", "divide")


def reasoning_step(rng: random.Random) -> str:
    """One math-style step ending in punctuation (as nearly every step of a real trace does)."""
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    body = rng.choice(
        [
            f"{words.capitalize()} {a} + {b} = {a + b}",
            f"{words.capitalize()}, x = {a} * {b}",
            f"{words.capitalize()}: {a} - {b}",
            f"{words.capitalize()} (x + {a})^2",
        ]
    )
    return body + rng.choice([".", ".", ":", "?", ")."])


def reasoning_trace(rng: random.Random, n_steps: int) -> str:
    """A completion of an R1-style prompt: steps, then `</think>` and a boxed answer."""
    steps = "\n\n".join(reasoning_step(rng) for _ in range(n_steps))
    return f"{steps}\n</think>\n\nThe answer is $\\boxed{{{rng.randint(1, 99)}}}$."


def build_tokenizer(vocab_size: int = 800, seed: int = 0, family: str = "qwen2"):
    """A transformers fast tokenizer: byte-level BPE with Qwen2's pre-tokenizer, trained on generated text.

    family "gpt2": GPT-2's pre-tokenizer instead (SmolLM2's, as in other GPT-2-style byte-level BPEs):
    punctuation stays apart from the newlines after it, and a run of whitespace gives its last character to
    what follows, so "\n\n" before a word is two tokens while "\n\n" at the end of a text is one (some
    corpus texts end in it, so that the merge is learnt).
    """
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(seed)
    corpus = [reasoning_trace(rng, rng.randint(2, 8)) for _ in range(400)]
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    if family == "gpt2":
        corpus += [reasoning_step(rng) + "\n\n" for _ in range(100)]
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    tok.add_tokens([AddedToken("<think>", special=False), AddedToken("</think>", special=False)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|begin|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_qwen_like(
    path: Path,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    init_range: float = 0.1,
    seed: int = 0,
    family: str = "qwen2",
) -> Path:
    """Save a random-weight Qwen2ForCausalLM (GQA: kv_heads < heads) with the BPE tokenizer in `path`.

    `family` "gpt2": the tokenizer's pre-tokenizer is GPT-2's (`build_tokenizer`) and the model a Llama, as
    SmolLM2 is: transformers gives a "qwen2" folder Qwen2's tokenizer class, whose pre-tokenizer would
    replace the saved one.

    `init_range` above transformers' 0.02 gives peaked next-token distributions, closer to a trained model's
    than the near-uniform ones of a default random init.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    path = Path(path)
    if (path / "config.json").is_file():
        return path
    tokenizer = build_tokenizer(seed=seed, family=family)
    config_class, model_class = (
        (LlamaConfig, LlamaForCausalLM) if family == "gpt2" else (Qwen2Config, Qwen2ForCausalLM)
    )
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=8192,
        initializer_range=init_range,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = model_class(config).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
