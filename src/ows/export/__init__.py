"""Compact outputs of a fine-tune and the full model again: a delta (:mod:`.delta`), the merge that verifies it
(:mod:`.merge`), a PEFT LoRA adapter extracted from it (:mod:`.lora`); tensors read one at a time
(:mod:`.weights`); output folders new, staged and without followed links (:mod:`.folders`)."""

from .delta import DELTA_FORMAT, DELTA_INFO, Delta, check_alpha, compute_delta, read_delta_info, write_delta
from .folders import MODEL_FILES, check_new_folder
from .lora import LoraReport, extract_lora, low_rank
from .merge import SHARD_BYTES, VerifiedDelta, check_base, merge_delta, verify_delta
from .weights import DELTA_FILE, Weights, file_sha256, interpolate, save_tensors, weights_hash

__all__ = ["DELTA_FILE", "DELTA_FORMAT", "DELTA_INFO", "Delta", "LoraReport", "MODEL_FILES", "SHARD_BYTES",
           "VerifiedDelta", "Weights", "check_alpha", "check_base", "check_new_folder", "compute_delta",
           "extract_lora", "file_sha256", "interpolate", "low_rank", "merge_delta", "read_delta_info", "save_tensors",
           "verify_delta", "weights_hash", "write_delta"]
