"""Random-weight stand-in models of every family ``course_utils.families`` supports.

No hub here, so to test that the notebooks and ``course_utils.families`` work with models
other than the bundled MiniLM and SmolLM2, this builds small models (2 layers, d_model 64,
4 heads) of each family from its transformers config, with random weights and a real
tokenizer of the right kind, and saves them with ``save_pretrained()``::

    .venv/bin/python -m tests.standins                 # all families
    .venv/bin/python -m tests.standins gpt2 t5 --out /tmp/standins

writes ``~/.cache/inside-transformer/standins/<family>`` (or ``--out``/<family>), loadable
with ``course_utils.models.load_encoder(dir)`` / ``load_decoder(dir)`` and therefore passable
to a notebook as ``-p ENCODER_NAME dir`` / ``-p DECODER_NAME dir``.

Tokenizers: MiniLM's WordPiece files (bert, distilbert); SmolLM2's byte-level BPE (llama,
qwen2, mistral); the same BPE with RoBERTa's special tokens ``<s> <pad> </s> <unk>`` at ids
0–3 and ``<mask>`` at 4 (roberta, gpt2); a SentencePiece-style Unigram tokenizer (``▁``
marks word starts) trained here on the course's own knowledge-base text (t5).

Weights are drawn by ``randomize_`` (not transformers' std-0.02 init, under which every
attention map is nearly uniform and a wrong implementation could pass): matrices
N(0, (1.5/√fan_in)²), biases N(0, 0.1²), norm weights 1 + N(0, 0.1²), T5's relative bias
N(0, 1). Seeded: the same files on every run.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
import transformers as tr

FAMILIES = ("bert", "distilbert", "roberta", "gpt2", "llama", "qwen2", "mistral", "t5")
ENCODERS = ("bert", "distilbert", "roberta")
DEFAULT_DIR = Path.home() / ".cache" / "inside-transformer" / "standins"
MISTRAL_WINDOW = 16  # small enough that notebook sentences exceed it
ROBERTA_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # ids 0..4


def tiny_config(family: str, vocab_size: int, **overrides) -> tr.PretrainedConfig:
    """A small config of ``family``: 2 layers, d_model 64, 4 heads (2 KV heads for Llama-like)."""
    common_enc = dict(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2,
                      num_attention_heads=4, intermediate_size=128)
    llama_like = dict(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                      max_position_embeddings=2048, bos_token_id=1, eos_token_id=2)
    if family == "bert":
        config = tr.BertConfig(**common_enc, max_position_embeddings=512)
    elif family == "distilbert":
        config = tr.DistilBertConfig(vocab_size=vocab_size, dim=64, n_layers=2, n_heads=4,
                                     hidden_dim=128, max_position_embeddings=512)
    elif family == "roberta":
        config = tr.RobertaConfig(**common_enc, max_position_embeddings=514, type_vocab_size=1,
                                  pad_token_id=1, bos_token_id=0, eos_token_id=2)
    elif family == "gpt2":
        config = tr.GPT2Config(vocab_size=vocab_size, n_embd=64, n_layer=2, n_head=4,
                               n_positions=512, bos_token_id=0, eos_token_id=2, pad_token_id=1)
    elif family == "llama":
        config = tr.LlamaConfig(**llama_like, tie_word_embeddings=True)
    elif family == "qwen2":
        config = tr.Qwen2Config(**llama_like)
    elif family == "mistral":
        config = tr.MistralConfig(**llama_like, sliding_window=MISTRAL_WINDOW)
    elif family == "t5":
        config = tr.T5Config(vocab_size=vocab_size, d_model=64, d_kv=16, d_ff=128, num_layers=2,
                             num_heads=4, pad_token_id=0, eos_token_id=1,
                             decoder_start_token_id=0)
    else:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Overwrite every parameter with seeded random values that make attention non-uniform."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if "relative_attention_bias" in name:
                param.copy_(noise)
            elif param.dim() >= 2:
                param.copy_(noise * 1.5 / math.sqrt(min(param.shape)))
            elif name.endswith("bias"):
                param.copy_(0.1 * noise)
            else:  # norm weights
                param.copy_(1.0 + 0.1 * noise)
    return model


def build_model(family: str, vocab_size: int, seed: int = 0, head: bool = True,
                **overrides) -> torch.nn.Module:
    """A random-weight model of ``family`` (eval mode, eager attention).

    ``head=True``: the class a notebook loads (masked-LM / causal-LM / seq2seq head);
    ``head=False``: the bare model (``BertModel``, ``LlamaModel``, ``T5Model`` …).
    """
    config = tiny_config(family, vocab_size, **overrides)
    if not head:
        auto = tr.AutoModel
    elif family in ENCODERS:
        auto = tr.AutoModelForMaskedLM
    elif family == "t5":
        auto = tr.AutoModelForSeq2SeqLM
    else:
        auto = tr.AutoModelForCausalLM
    torch.manual_seed(seed)
    model = auto.from_config(config, attn_implementation="eager")
    randomize_(model, seed)
    if getattr(config, "tie_word_embeddings", False) and hasattr(model, "tie_weights"):
        model.tie_weights()
    return model.eval()


# --------------------------------------------------------------------------- tokenizers
def wordpiece_tokenizer():
    """MiniLM's uncased WordPiece tokenizer (``##`` marks a word's continuation)."""
    from course_utils.models import encoder_dir, quiet

    with quiet():
        return tr.AutoTokenizer.from_pretrained(encoder_dir())


def smollm2_tokenizer():
    """SmolLM2's byte-level BPE (``Ġ`` marks a leading space)."""
    from course_utils.models import prepare_decoder, quiet

    with quiet():
        return tr.AutoTokenizer.from_pretrained(prepare_decoder())


def roberta_style_bpe(roberta: bool):
    """SmolLM2's byte-level BPE with RoBERTa's special tokens at ids 0–4.

    ``roberta=True`` wraps every sequence as ``<s> … </s>`` (RoBERTa's post-processor);
    ``False`` adds nothing (GPT-2 style).
    """
    from tokenizers import Tokenizer, processors

    from course_utils.models import prepare_decoder

    state = json.loads((prepare_decoder() / "tokenizer.json").read_text())
    vocab = state["model"]["vocab"]
    renamed = {}
    for new_id, new in enumerate(ROBERTA_SPECIALS):
        old = next(t for t in state["added_tokens"] if t["id"] == new_id)
        renamed[old["content"]] = new
        old["content"] = new
    state["model"]["vocab"] = {renamed.get(token, token): index for token, index in vocab.items()}
    if roberta:
        state["post_processor"] = None
    tokenizer = Tokenizer.from_str(json.dumps(state))
    if roberta:
        tokenizer.post_processor = processors.RobertaProcessing(
            ("</s>", 2), ("<s>", 0), trim_offsets=True, add_prefix_space=False)
    return tr.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", mask_token="<mask>" if roberta else None,
        model_max_length=512,
    )


def _t5_training_text() -> list[str]:
    repo = Path(__file__).resolve().parents[1]
    lines = []
    for path in sorted((repo / "data").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            lines.extend(str(v) for v in record.values() if isinstance(v, str))
    lines += ["The animal didn't cross the street because it was too tired.",
              "The bank of the river was steep; the bank raised its rates."] * 20
    return lines


def unigram_tokenizer(vocab_size: int = 2000):
    """A SentencePiece-style Unigram tokenizer (``▁`` marks a word start; T5's specials
    ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2; every sequence ends with ``</s>``), trained here."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import UnigramTrainer

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = UnigramTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"],
                             unk_token="<unk>", show_progress=False)
    tokenizer.train_from_iterator(_t5_training_text(), trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    return tr.PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="</s>",
                                      unk_token="<unk>", pad_token="<pad>", model_max_length=512)


def tokenizer_for(family: str):
    """The stand-in tokenizer of ``family`` (see the module docstring)."""
    if family in ("bert", "distilbert"):
        return wordpiece_tokenizer()
    if family in ("llama", "qwen2", "mistral"):
        return smollm2_tokenizer()
    if family in ("roberta", "gpt2"):
        return roberta_style_bpe(roberta=family == "roberta")
    if family == "t5":
        return unigram_tokenizer()
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")


def make_standin(family: str, out_dir: Path | str = DEFAULT_DIR, seed: int = 0) -> Path:
    """Build and save the ``family`` stand-in under ``out_dir/family``; returns that path."""
    from course_utils.models import quiet

    target = Path(out_dir).expanduser() / family
    tokenizer = tokenizer_for(family)
    model = build_model(family, len(tokenizer), seed=seed)
    target.mkdir(parents=True, exist_ok=True)
    with quiet():
        model.save_pretrained(target)
        tokenizer.save_pretrained(target)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("families", nargs="*", metavar="FAMILY",
                        help=f"some of {', '.join(FAMILIES)} (default all)")
    parser.add_argument("--out", default=str(DEFAULT_DIR), help=f"default {DEFAULT_DIR}")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.families) - set(FAMILIES))
    if unknown:
        parser.error(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}")
    for family in args.families or FAMILIES:
        print(f"{family:10s} -> {make_standin(family, args.out)}")


if __name__ == "__main__":
    main()
