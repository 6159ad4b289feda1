"""The checks ``ows train`` runs before any work: every TrainingArguments value, the output folder, the
model's config (a causal LM, gamma, weights, the profile) and the profile's model. Each failure is one
``UsageError`` line naming the field, the value and the fix; nothing has been written when it is raised.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from ..config import OWSConfig
from ..memory.estimate import layer_matrix_sizes
from ..methods import get_method
from ..model_facts import cached_hub_config, hub_unreachable, num_layers, position_limit
from .arguments import ScriptArguments
from ..errors import UsageError
from .trackers import TRACKER_MODULES, check_trackers, prepare_trackers, trackers  # noqa: F401 (checks of a run)

logger = logging.getLogger(__name__)

CONV1D_MODELS = ("gpt2", "gpt_bigcode", "imagegpt", "decision_transformer")  # weights stored (in, out)
SEED_LIMIT = 2**32  # numpy's and the Trainer's seeds are 32-bit
BATCH_LIMIT = 2**31
# TrainingArguments fields and their ranges: (lowest, lowest allowed?, highest, highest allowed?).
RANGES: dict[str, tuple[float, bool, float | None, bool]] = {
    "learning_rate": (0, True, None, False), "weight_decay": (0, True, None, False),
    "adam_epsilon": (0, True, None, False), "adam_beta1": (0, True, 1, False), "adam_beta2": (0, True, 1, False),
    "max_grad_norm": (0, True, None, False), "warmup_ratio": (0, True, 1, True), "warmup_steps": (0, True, None, False),
    "num_train_epochs": (0, False, None, False), "per_device_train_batch_size": (1, True, BATCH_LIMIT, False),
    "per_device_eval_batch_size": (1, True, BATCH_LIMIT, False), "gradient_accumulation_steps": (1, True, BATCH_LIMIT, False),
    "logging_steps": (0, False, None, False), "save_steps": (0, False, None, False), "eval_steps": (0, False, None, False),
    "save_total_limit": (1, True, None, False), "dataloader_num_workers": (0, True, None, False),
    "seed": (0, True, SEED_LIMIT, False), "data_seed": (0, True, SEED_LIMIT, False),
}


def _in_range(value: Any, low: float, low_ok: bool, high: float | None, high_ok: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    above = value >= low if low_ok else value > low
    below = high is None or (value <= high if high_ok else value < high)
    return above and below


def check_training_fields(training: dict[str, Any]) -> None:
    """Raise ``UsageError`` for a TrainingArguments value the Trainer would take and fail on later."""
    for name, (low, low_ok, high, high_ok) in RANGES.items():
        value = training.get(name)
        if value is not None and not _in_range(value, low, low_ok, high, high_ok):
            bound = f"{'>=' if low_ok else '>'} {low}" + ("" if high is None else f" and {'<=' if high_ok else '<'} {high}")
            raise UsageError(f"{name}={value!r} is invalid: must be a number {bound}")
    max_steps = training.get("max_steps")
    if max_steps is not None and (max_steps == 0 or max_steps < -1):
        raise UsageError(f"max_steps={max_steps!r} is invalid: give a number of optimizer steps >= 1, or -1 to train "
                         "for num_train_epochs")
    kwargs = training.get("lr_scheduler_kwargs")
    if kwargs is not None and not isinstance(kwargs, dict):
        if not isinstance(kwargs, str) or not isinstance(_json_object(kwargs), dict):
            raise UsageError(f"lr_scheduler_kwargs={kwargs!r} is invalid: give a mapping of the scheduler's keyword "
                             "arguments, e.g. {\"num_cycles\": 2}, or leave it out")


def uses_fsdp(training: dict[str, Any]) -> bool:
    """Whether the run shards with FSDP (``TrainingArguments.fsdp`` or ``accelerate launch`` with FSDP)."""
    return bool(training.get("fsdp")) or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("true", "1")


def method_defaults(method: str, config: OWSConfig, training: dict[str, Any]) -> dict[str, Any]:
    """The values the fields left at None take: the method's defaults, except that under FSDP (which cannot
    shard single weights) ows samples whole layers, and says so."""
    defaults = dict(get_method(method).resolved_defaults())
    if config.sampling_granularity is None and defaults.get("sampling_granularity") == "module" and uses_fsdp(training):
        defaults["sampling_granularity"] = "layer"
        logger.info("FSDP cannot shard single weights: sampling whole decoder layers (set sampling_granularity to "
                    "choose)")
    return defaults


def check_method_options(script: ScriptArguments, config: OWSConfig, training: dict[str, Any]) -> None:
    """Refuse OWS options that the method or the launch cannot serve (before any model loads)."""
    from ..methods import check_options, check_requirements

    try:
        check_requirements(get_method(script.method))
        check_options(get_method(script.method), config)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from None
    if config.frozen_quantization != "none" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError(f"frozen_quantization={config.frozen_quantization!r} is not supported with several processes "
                         "yet: set frozen_quantization none, or train in one process")
    if config.fused_step:
        if uses_fsdp(training):
            raise UsageError("fused_step=true is not supported with FSDP (sharded parameters): set fused_step false, "
                             "or train with DDP or in one process")
        if training.get("deepspeed") or os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() in ("true", "1"):
            raise UsageError("fused_step=true is not supported with DeepSpeed (it runs its own optimizer step): set "
                             "fused_step false")


DPO_ONLY = ("dpo_beta",)  # ScriptArguments fields that only task dpo reads


def check_script_fields(script: ScriptArguments) -> None:
    """``max_memory`` is a size when given (an empty one is not ignored); a dpo-only field is not set for task sft."""
    if script.max_memory is not None:
        from ..memory.size import parse_budget

        try:
            parse_budget(script.max_memory)
        except ValueError as err:
            raise UsageError(str(err)) from None
    if script.task != "dpo":
        for name in DPO_ONLY:
            if name in (script.given or ()):
                raise UsageError(f"{name}={getattr(script, name)!r} is set but task={script.task!r} does not use it: "
                                 f"set task dpo, or leave {name} out")


def check_not_base_folder(out: Path, model_path: str, model: str | None) -> None:
    """Refuse an ``output_dir`` that is the base model's folder by any path, or the folder its files resolve into
    (links included): the run would replace the weights it starts from."""
    base = Path(model_path)
    if not base.is_dir():
        return
    target = out.resolve()
    files = [f for f in base.iterdir() if f.is_file()]
    if base.resolve() == target or any(f.resolve().parent == target for f in files):
        raise UsageError(f"output_dir={str(out)!r} holds the base model (model={model!r}): the run would replace the "
                         "weights it starts from: give another --output_dir")


def check_save_delta(script: ScriptArguments, model_path: str) -> None:
    """``save_delta`` needs a full-weight method and the base's safetensors in a local folder."""
    if not script.save_delta:
        return
    if get_method(script.method).layers == "adapters":
        raise UsageError(f"save_delta=true needs a method that trains the model's own weights; method={script.method!r} "
                         "saves a small output already (an adapter, or a merged model): set save_delta false")
    if not Path(model_path).is_dir() or not any(Path(model_path).glob("*.safetensors")):
        raise UsageError(f"save_delta=true needs the base model's *.safetensors in a local folder and model="
                         f"{script.model!r} is not one: download it to a folder and pass that, or set save_delta false "
                         "and run `ows export delta RUN OUT --base FOLDER` later")


def _json_object(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def read_model_config(model_path: str, script: ScriptArguments) -> Any:
    """The model's transformers config; an unreadable config.json or a model that is not a causal LM is refused."""
    from transformers import AutoConfig

    hub_fix = "check the id and your connection (HF_TOKEN for gated models), or pass a local model folder"
    if not Path(model_path).expanduser().exists() and cached_hub_config(model_path) is None:
        problem = hub_unreachable()  # at once, instead of the Hub client's half minute of retries
        if problem is not None:
            raise UsageError(f"model={script.model!r} is not a local path and its config could not be fetched "
                             f"({problem}): {hub_fix}")
    try:
        model_config = AutoConfig.from_pretrained(model_path, trust_remote_code=script.trust_remote_code)
    except Exception as err:  # a truncated or foreign config.json raises several types
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        if not Path(model_path).expanduser().exists():  # a hub id: the Hub could not be reached or has no such model
            raise UsageError(f"model={script.model!r} is not a local path and its config could not be fetched ({first}): "
                             f"{hub_fix}") from None
        raise UsageError(f"model={script.model!r}: its config.json cannot be read ({first}): fix the file or save the "
                         "model folder again") from None
    auto_map = getattr(model_config, "auto_map", None) or {}
    if not _is_causal_lm(model_config) and not (script.trust_remote_code and "AutoModelForCausalLM" in auto_map):
        raise UsageError(f"model={script.model!r} is a {model_config.model_type!r} model, which has no causal-LM head: "
                         "use a decoder-only model (Llama, Mistral, Qwen, Gemma, Phi, GPT-2, ...)")
    return model_config


def _is_causal_lm(model_config: Any) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return getattr(model_config, "model_type", None) in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES


def check_model_config(model_path: str, script: ScriptArguments, config: OWSConfig,
                       ratios: list[float] | None) -> tuple[int | None, dict]:
    """Decoder-layer count and config dict; checks the model kind, gamma, weights, profile ratios and length."""
    model_config = read_model_config(model_path, script)
    text = getattr(model_config, "get_text_config", lambda: model_config)()
    facts = text.to_dict()
    layers = num_layers(facts)
    method = get_method(script.method)
    if layers is not None and method.samples_layers:
        try:
            resolved = method.config_for(config)
            sizes = layer_matrix_sizes(facts) if resolved.sampling_granularity == "module" else None
            resolved.check_for(layers, ratios, sizes)
        except ValueError as err:
            raise UsageError(str(err)) from None
    if config.frozen_quantization != "none" and text.model_type in CONV1D_MODELS:
        raise UsageError(f"frozen_quantization={config.frozen_quantization!r} needs nn.Linear decoder layers and "
                         f"model={script.model!r} ({text.model_type}) uses Conv1D: set frozen_quantization none")
    limit = position_limit(facts)
    if limit is not None and script.max_seq_length > limit:
        raise UsageError(f"max_seq_length={script.max_seq_length} is longer than the model's {limit} positions: "
                         f"use max_seq_length <= {limit}")
    return layers, facts


def same_model(a: str | None, b: str | None) -> bool:
    """Whether two model names (a hub id, a folder path, the demo alias) name the same model: their last parts agree."""
    from ..loading import DEMO_ALIASES, DEMO_FOLDER

    def last(name: str) -> str:
        return DEMO_FOLDER if name in DEMO_ALIASES else Path(name.rstrip("/")).name
    return a is None or b is None or last(a) == last(b)


def check_profile_model(profile: Any, source: str, identity: str, allow_other: bool) -> None:
    """Refuse a profile measured on another model (same layer count or not), unless ``allow_other``."""
    if allow_other or same_model(profile.model_name, identity):
        return
    raise UsageError(f"profile={source!r} was measured on {profile.model_name!r}, not on this model {identity!r}: run "
                     "`ows analyze` on this model, or pass --allow_other_profile true to use it anyway")
