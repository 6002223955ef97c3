"""Building, saving and loading models; attention implementation choice."""

from __future__ import annotations

import pytest
import torch

from qwen25_rl.models import build_model, choose_attn_implementation, load_model, load_tokenizer, padded_vocab_size, save_pretrained


def test_auto_attention_is_sdpa_without_gpu():
    assert choose_attn_implementation("auto", device="cpu") == "sdpa"


def test_flash_attention_without_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="flash_attention_2 requested but no GPU"):
        choose_attn_implementation("flash_attention_2", device="cpu")


def test_explicit_eager_is_honoured():
    assert choose_attn_implementation("eager", device="cpu") == "eager"


def test_build_is_deterministic_in_seed():
    a, b, c = build_model("tiny", seed=1), build_model("tiny", seed=1), build_model("tiny", seed=2)
    assert torch.equal(a.model.layers[0].mlp.up_proj.weight, b.model.layers[0].mlp.up_proj.weight)
    assert not torch.equal(a.model.layers[0].mlp.up_proj.weight, c.model.layers[0].mlp.up_proj.weight)


def test_vocab_is_padded_to_multiple_of_64():
    assert padded_vocab_size(4118) == 4160 and padded_vocab_size(4160) == 4160


def test_save_then_load_gives_identical_logits(tiny_tokenizer, tmp_path):
    model = build_model("tiny", tokenizer=tiny_tokenizer, seed=3).eval()
    out = save_pretrained(model, tiny_tokenizer, tmp_path / "ckpt")
    loaded = load_model(out).eval()
    ids = torch.tensor([tiny_tokenizer.encode("def f(x): return x + 1")])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, loaded(ids).logits, atol=1e-6)
    assert loaded.config.eos_token_id == tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert load_tokenizer(out).get_vocab() == tiny_tokenizer.get_vocab()


def test_save_leaves_no_temp_folders_and_replaces_existing(tiny_tokenizer, tmp_path):
    model = build_model("tiny", tokenizer=tiny_tokenizer)
    save_pretrained(model, tiny_tokenizer, tmp_path / "ckpt")
    save_pretrained(model, tiny_tokenizer, tmp_path / "ckpt")
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_failed_save_keeps_previous_checkpoint(tiny_tokenizer, tmp_path):
    model = build_model("tiny", tokenizer=tiny_tokenizer)
    save_pretrained(model, tiny_tokenizer, tmp_path / "ckpt")

    class Broken:
        def save_pretrained(self, *a, **k):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_pretrained(model, Broken(), tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_load_model_from_non_model_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a Hugging Face model folder"):
        load_model(tmp_path)


def _model_config(path):
    from qwen25_rl.config.schema import ModelConfig

    return ModelConfig(path=str(path))


def test_a_published_model_folder_is_verified_before_a_stage_starts_from_it(tiny_tokenizer, tmp_path):
    from qwen25_rl.checkpointing import CheckpointError
    from qwen25_rl.models import initial_model_folder

    final = tmp_path / "final"
    save_pretrained(build_model("tiny", tokenizer=tiny_tokenizer, seed=0), tiny_tokenizer, final)  # with its manifest
    assert initial_model_folder(_model_config(final), "", tmp_path / "run") == final.resolve()
    weights = final / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model.path .*final does not match the manifest.*model.safetensors: sha256"):
        initial_model_folder(_model_config(final), "", tmp_path / "run")


def test_a_model_folder_from_elsewhere_has_no_manifest_to_check(tiny_tokenizer, tmp_path):
    from qwen25_rl.models import initial_model_folder

    folder = tmp_path / "hf"
    build_model("tiny", tokenizer=tiny_tokenizer, seed=0).save_pretrained(folder)  # a plain Hugging Face folder
    assert initial_model_folder(_model_config(folder), "", tmp_path / "run") == folder.resolve()
