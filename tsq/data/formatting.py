"""Prompt formatting: a problem becomes the model's chat-templated prompt string.

Every backend receives prompts formatted here, so sampling, refinement, training and evaluation all condition
on exactly the same text.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from tsq.data.problems import Problem


def format_prompt(tokenizer: PreTrainedTokenizerBase, problem: Problem) -> str:
    """The chat-templated prompt for one problem, ending where the assistant's reply begins."""
    if tokenizer.chat_template is None:
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no chat template")
    messages = [{"role": "user", "content": problem.question}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return prompt
