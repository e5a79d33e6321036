"""The TRL adapter (tsq.compat.trl): version and private-hook checks, and the skipped model hash."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import trl
import trl.trainer.dpo_trainer as dpo_trainer_module
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

from tsq.cache import Cache
from tsq.compat.trl import SKIPPED_HASH, SUPPORTED, FencedDPOTrainer, TrlVersionError, check_trl, model_hash
from tsq.engines.models import model_fingerprint
from tsq.engines.train import RefLogpsStore, TokenSqueezeDPOConfig, TokenSqueezeDPOTrainer
from tsq.errors import UserError


def test_the_installed_trl_passes() -> None:
    check_trl()


@pytest.mark.parametrize("version", ["1.17.0", "1.15.2", "2.0.0.dev0", "not-a-version"])
def test_an_unsupported_version_fails_in_one_line(version: str) -> None:
    with pytest.raises(TrlVersionError) as err:
        check_trl(version=version)
    message = str(err.value)
    assert isinstance(err.value, UserError)  # the CLI prints it as one line, exit 2
    assert "\n" not in message
    assert f"trl {version} is installed" in message and f"trl{SUPPORTED}" in message


def test_a_missing_or_changed_private_hook_fails_in_one_line() -> None:
    version = trl.__version__
    with pytest.raises(TrlVersionError, match=r"DPOTrainer\._prepare_dataset_v2 is missing"):
        check_trl(hooks={"_prepare_dataset_v2": ("self", "dataset")})
    # TRL renamed a parameter tsq passes: the override would break, so the check does
    with pytest.raises(TrlVersionError, match=rf"^trl {version}: DPOTrainer\._precompute_ref_logps\("):
        check_trl(hooks={"_precompute_ref_logps": ("self", "dataset", "split", "batch_size")})
    with pytest.raises(TrlVersionError, match=r"trl\.trainer\.dpo_trainer\.hash_model is missing"):
        check_trl(functions=("hash_model",))


def _trainer_parts(model_dir: Path, tmp_path: Path) -> dict:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "a = 2 , b = a + 3 . what is b ?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    dataset = Dataset.from_list(
        [{"prompt": prompt, "chosen": " b is 5", "rejected": " a is 2 , so b is 2 + 3 , which is 5"}] * 2
    )
    return dict(
        model=AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=2, lora_alpha=4, target_modules="all-linear", task_type="CAUSAL_LM"),
    )


def _args(tmp_path: Path, cls: type = DPOConfig, **kw) -> DPOConfig:
    return cls(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=2,
        bf16=False,
        report_to=[],
        precompute_ref_log_probs=True,
        dataloader_pin_memory=False,
        **kw,
    )


def test_tsq_store_skips_trls_model_hash(tiny_model_dir: Path, tmp_path: Path) -> None:
    original = dpo_trainer_module.hash_module
    store = RefLogpsStore(Cache(tmp_path / "cache"), model_fingerprint(tiny_model_dir))
    trainer = TokenSqueezeDPOTrainer(
        args=_args(tmp_path, TokenSqueezeDPOConfig, loss_variant="dpo-l+sft"),
        ref_logps_store=store,
        **_trainer_parts(tiny_model_dir, tmp_path),
    )
    assert trainer._precompute_model_hash == SKIPPED_HASH  # never hashed
    assert trainer.n_ref_computed == 2 and "ref_chosen_logps" in trainer.train_dataset.column_names
    assert dpo_trainer_module.hash_module is original  # the stub is gone once the trainer is built


def test_trls_own_reference_pass_still_gets_the_real_hash(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Skipping the hash and then falling back to TRL's reference pass hashes after all: TRL names its
    reference cache file by that hash, so a stub there would mix up models."""
    trainer = FencedDPOTrainer(
        args=_args(tmp_path), skip_model_hash=True, **_trainer_parts(tiny_model_dir, tmp_path)
    )
    assert trainer._precompute_model_hash == model_hash(trainer.model)
    plain = DPOTrainer(args=_args(tmp_path), **_trainer_parts(tiny_model_dir, tmp_path))
    assert trainer._precompute_model_hash == plain._precompute_model_hash
    torch.testing.assert_close(
        torch.tensor(trainer.train_dataset["ref_chosen_logps"]),
        torch.tensor(plain.train_dataset["ref_chosen_logps"]),
    )


def test_help_shows_no_type_label_on_flags() -> None:
    from typer.testing import CliRunner

    from tsq.cli.main import app
    from tsq.compat.typer import plain_flags

    assert plain_flags()  # the installed Typer offers the hook (idempotent: main applied it already)
    out = CliRunner().invoke(app, ["sweep", "launch", "--help"], terminal_width=120).output
    assert "--no-early-stop" in out and "--workers" in out
    assert "<bool>" not in out
    assert "<int range>" in out  # options that take a value keep their type
