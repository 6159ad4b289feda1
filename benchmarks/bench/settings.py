"""What the method comparison runs: methods, their labels and learning rates, metrics and presets."""

from __future__ import annotations

METHODS = ("full", "lora", "galore", "lisa", "ows-fullrank", "ows")
LABELS = {"full": "full FT (AdamW)", "lora": "LoRA r16", "galore": "GaLore (all layers)",
          "lisa": "LISA (uniform, plain AdamW)", "ows-fullrank": "OWS full-rank (weighted, AdamW)",
          "ows": "OWS (weighted + GaLore)"}
# Learning rates per method. NOT tuned on a validation split: common choices for each family at this
# model size (full FT lower, LoRA higher, layer-sampling and GaLore methods at the paper's 3e-4).
LEARNING_RATES = {"full": 1e-4, "lora": 5e-4, "galore": 3e-4, "lisa": 3e-4, "ows-fullrank": 3e-4, "ows": 3e-4}
SAMPLING = ("lisa", "ows-fullrank", "ows")
GALORE = ("galore", "ows")
PROFILED = ("ows-fullrank", "ows")

# Metrics: key, header, format. Lower is better for all but exact match.
METRICS = [
    ("heldout_answer_loss", "held-out answer loss", "{:.3f}"),
    ("heldout_exact_match", "exact match", "{:.1%}"),
    ("forgetting_ppl", "forgetting ppl", "{:.2f}"),
    ("peak_rss_gib", "peak RSS GiB", "{:.2f}"),
    ("peak_tracked_gib", "peak tracked GiB", "{:.3f}"),
    ("sec_per_step", "s/step", "{:.2f}"),
    ("svd_share", "SVD share", "{:.1%}"),
]
QUICK = dict(seeds=[0], steps=30, batch_size=8, num_heldout=300, heldout_generate=50,
             forgetting_samples=8, forgetting_seq_len=256)
FULL = dict(seeds=[0, 1, 2], steps=200, batch_size=16, num_heldout=300, heldout_generate=300,
            forgetting_samples=16, forgetting_seq_len=256)
