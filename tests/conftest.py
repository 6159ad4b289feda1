"""Tiny random causal LMs built from configs (no downloads), shared by the tests."""

from __future__ import annotations

import pytest
import torch


TINY = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=6,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)


def tiny_config(arch: str, layers: int = 6):
    """Config of a tiny random model of architecture ``arch``."""
    t = pytest.importorskip("transformers")
    base = dict(TINY, num_hidden_layers=layers)
    if arch == "llama":
        return t.LlamaConfig(**base)
    if arch == "mistral":
        return t.MistralConfig(**base, sliding_window=None)
    if arch == "qwen2":
        return t.Qwen2Config(**base)
    if arch == "qwen3":
        return t.Qwen3Config(**base, head_dim=8)
    if arch == "gemma3":
        return t.Gemma3TextConfig(**base, head_dim=8)
    if arch == "phi3":
        return t.Phi3Config(**base, pad_token_id=0)
    if arch == "gpt2":
        return t.GPT2Config(vocab_size=96, n_embd=32, n_layer=layers, n_head=4, n_positions=128,
                            bos_token_id=0, eos_token_id=0)
    if arch == "gpt_neox":
        return t.GPTNeoXConfig(vocab_size=96, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                               intermediate_size=64, max_position_embeddings=128,
                               bos_token_id=0, eos_token_id=0)
    raise ValueError(arch)


def tiny_model(arch: str = "llama", layers: int = 6, seed: int = 0):
    """A tiny randomly initialised causal LM in fp32."""
    torch.manual_seed(seed)
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_config(tiny_config(arch, layers))
    return model.float()


def random_batch(batch: int = 4, seq: int = 16, vocab: int = 96, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


@pytest.fixture
def llama():
    return tiny_model("llama")


CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog. Question: What is 12 + 7? Answer: 19",
    "Calculate 5 - 3 - 6. State the final answer to the following arithmetic problem: 4 - 1 - 7 = -4",
    "Instruction: add the numbers. Input: 3 and 4. Output: 7. The capital of France is Paris.",
] * 20


def tiny_train_argv(model, data, out, *extra: str) -> list[str]:
    """``ows train`` argv for a 4-step run on a tiny model that checkpoints every 2 steps, plus ``extra``."""
    return ["train", "--model", str(model), "--dataset", str(data), "--output_dir", str(out), "--max_steps", "4",
            "--per_device_train_batch_size", "4", "--num_active_layers", "2", "--rank", "4", "--save_strategy",
            "steps", "--save_steps", "2", "--calibration_samples", "2", "--calibration_seq_len", "32",
            "--report_to", "none", "--heldout_generate", "0", *extra]


def make_tiny_model_dir(path, arch: str = "llama", layers: int = 4):
    """Save a tiny random model with a small byte-level BPE tokenizer (ChatML template) to ``path``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = CHATML
    config = tiny_config(arch, layers)
    config.vocab_size = len(tokenizer)
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    config.bos_token_id = None
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir_64(tmp_path_factory):
    """A tiny Llama folder with hidden size 64: bitsandbytes' 4-bit CPU kernels need rows of at least 64."""
    saved = dict(TINY)
    TINY.update(hidden_size=64, intermediate_size=128)
    try:
        return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama-64"))
    finally:
        TINY.clear()
        TINY.update(saved)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Folder of a tiny Llama with a tokenizer, like a real Hugging Face model folder."""
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"))
