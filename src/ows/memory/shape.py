"""Sizes of a decoder-only transformer read from its ``config.json`` dict (no torch, no transformers).

Llama, Mistral, Qwen2/Qwen3, Gemma/Gemma2/Gemma3, Phi-3 (fused qkv / gate_up), GPT-2 (Conv1D stores
(in, out)) and GPT-NeoX configs; tied embeddings, grouped-query attention (``num_key_value_heads``),
an explicit ``head_dim`` and attention / MLP biases are taken into account.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelShape:
    """Sizes of a decoder-only transformer read from its config.

    ``layer_matrices`` are the 2-D weights of one decoder layer as stored (rows, cols);
    ``layer_vectors`` counts its 1-D parameters (norms, biases); ``position_params`` learned positions (GPT-2).
    """

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    gated_mlp: bool
    rms_norm: bool
    layer_matrices: tuple[tuple[int, int], ...]
    layer_vectors: int
    embedding_params: int
    position_params: int
    final_norm_params: int
    stored_in_out: bool = False

    @property
    def out_in(self) -> list[tuple[int, int]]:
        """(out features, in features) of each layer matrix (GPT-2's Conv1D stores (in, out))."""
        return [(c, r) for r, c in self.layer_matrices] if self.stored_in_out else list(self.layer_matrices)

    @property
    def layer_params(self) -> int:
        """Parameters of one decoder layer."""
        return sum(r * c for r, c in self.layer_matrices) + self.layer_vectors

    @property
    def head_params(self) -> int:
        """Parameters of the output head (0 when tied to the input embeddings)."""
        return 0 if self.tied else self.vocab * self.hidden

    @property
    def total_params(self) -> int:
        """All parameters of the model, a tied embedding counted once."""
        return (self.layers * self.layer_params + self.embedding_params + self.position_params + self.head_params
                + self.final_norm_params)


def _get(config: dict[str, Any], *names: str, default: Any = None) -> Any:
    for name in names:
        if config.get(name) is not None:
            return config[name]
    if default is None:
        raise ValueError(f"model config has no {names[0]!r}: give the config.json of a decoder-only transformer "
                         "(Llama, Mistral, Qwen2/3, Gemma, Phi-3, GPT-2, GPT-NeoX)")
    return default


def model_shape(config: dict[str, Any]) -> ModelShape:
    """The :class:`ModelShape` of a Hugging Face ``config.json`` dict (``text_config`` used when nested)."""
    config = config.get("text_config") or config
    kind = str(config.get("model_type", ""))
    h = int(_get(config, "hidden_size", "n_embd", "d_model"))
    layers = int(_get(config, "num_hidden_layers", "n_layer"))
    heads = int(_get(config, "num_attention_heads", "n_head"))
    kv = int(config.get("num_key_value_heads") or heads)
    hd = int(config.get("head_dim") or h // heads)
    vocab = int(_get(config, "vocab_size"))
    inter = int(config.get("intermediate_size") or config.get("n_inner") or 4 * h)
    tied = bool(config.get("tie_word_embeddings", kind == "gpt2" or kind.startswith("gemma")))
    q, k = heads * hd, kv * hd
    if kind == "gpt2":
        mats = ((h, 3 * h), (h, h), (h, inter), (inter, h))  # Conv1D stores (in, out)
        return ModelShape(h, inter, layers, heads, heads, hd, vocab, tied, False, False, mats,
                          3 * h + h + inter + h + 4 * h, vocab * h, int(_get(config, "n_positions")) * h, 2 * h, True)
    if kind == "gpt_neox":
        mats = ((3 * h, h), (h, h), (inter, h), (h, inter))
        bias = 3 * h + h if config.get("attention_bias", True) else 0
        return ModelShape(h, inter, layers, heads, heads, hd, vocab, tied, False, False, mats,
                          bias + inter + h + 4 * h, vocab * h, 0, 2 * h)
    if kind == "phi3":
        mats = ((q + 2 * k, h), (h, q), (2 * inter, h), (h, inter))
    else:
        mats = ((q, h), (k, h), (k, h), (h, q), (inter, h), (inter, h), (h, inter))
    vectors = 2 * h
    if kind.startswith("gemma2") or kind.startswith("gemma3"):
        vectors += 2 * h
    if kind.startswith(("qwen3", "gemma3")):
        vectors += 2 * hd  # q_norm, k_norm
    if kind == "qwen2":
        vectors += q + 2 * k
    elif config.get("attention_bias"):
        vectors += q + 2 * k + h
    if config.get("mlp_bias"):
        vectors += 2 * inter + h
    return ModelShape(h, inter, layers, heads, kv, hd, vocab, tied, True, True, mats, vectors, vocab * h, 0, h)
