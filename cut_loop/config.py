"""Typed run configuration: dataclasses grouped by concern, loaded from YAML, overridden from
the CLI (`--set a.b=value`), validated all at once, saved resolved in the run directory.

Unknown keys are rejected (a typo must not silently fall back to a default), except under
`judge:`, whose extra keys are the chosen judge's own options (`--set judge.model=gpt-4o`).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cut_loop.errors import CutLoopError


@dataclass
class DataConfig:
    instructions: str = "alpaca"
    """Instruction source: `alpaca` (tatsu-lab/alpaca from the Hub), `demo` (the set shipped
    with cut_loop), or a JSON / JSONL / parquet / CSV file with `instruction` [+ `input`]."""
    per_round: int = 1000
    """Fresh instructions sampled each round (never one sampled in an earlier round)."""
    constraints: int = 0
    """IFEval-style verifiable constraints ("answer in fewer than 50 words", "all lowercase")
    attached to every instruction of the source: 0 none, else 1 to this many each, drawn from
    the seed and the instruction (the same run always gets the same ones). The `constraints`
    judge checks them and writes concrete critiques."""


@dataclass
class GenerationConfig:
    backend: str = "auto"
    """`auto` (vLLM where it is installed and its engine starts for the model, else
    transformers), `hf` or `vllm`."""
    template: str = "alpaca"
    """Prompt template: a name in templates/ (`alpaca`, `chat`) or a path to a template YAML."""
    max_new_tokens: int = 512
    """Token limit per response; a response that hits it counts as cut off."""
    temperature: float = 0.7
    """Sampling temperature; 0 means greedy."""
    top_p: float = 0.9
    """Nucleus sampling mass."""
    samples_per_instruction: int = 1
    """Responses sampled per instruction (ranking losses such as RRHF and DPO need >= 2)."""
    include_reference: bool = False
    """Training rounds: the instruction source's own answer (Alpaca's `output`), where it has
    one, joins the sampled responses as one more candidate, judged like them (as the RRHF recipe
    ranks it with the samples; DPO may pair it too). Its id is "<instruction id>-ref"."""
    batch_size: int = 16
    """Prompts per generate call (transformers backend)."""
    shard_size: int = 256
    """Instructions per shard file: a killed run resumes from the last finished shard. With
    vLLM one shard is one engine request, so large shards keep its batches large (vLLM
    schedules up to 256 sequences at once); a resume keeps the shards a stage started with."""
    dtype: str = "auto"
    """Weights dtype for generation: auto (bfloat16 on GPUs, float32 on CPUs: bf16 matmuls are
    slower there without AMX, and vLLM's bf16 CPU kernels die of SIGILL on some CPUs),
    bfloat16, float16 or float32."""
    stop: list[str] = field(default_factory=list)
    """Stop strings: a response ends before the first one it produces (and counts as finished)."""
    vllm_python: str = ""
    """vLLM: the interpreter that runs the engine (a child process). Empty: $CUT_LOOP_VLLM_PYTHON
    (`none` turns vLLM off), else .venv-vllm/bin/python in the checkout (made by
    `scripts/setup.sh --vllm`), else this Python when vLLM is installed in it."""
    tensor_parallel_size: int = 1
    """vLLM: GPUs one engine spreads the model over."""
    gpu_memory_utilization: float = 0.9
    """vLLM on GPUs: fraction of GPU memory the engine may take (weights + KV cache)."""
    cpu_kvcache_gb: int = 2
    """vLLM on CPU: GiB of RAM for the KV cache (VLLM_CPU_KVCACHE_SPACE)."""
    max_model_len: int = 0
    """vLLM: longest prompt + response in tokens (0: the model's own limit)."""
    enforce_eager: bool = False
    """vLLM: no torch.compile / CUDA graphs: the engine starts much sooner, decodes ~15% slower."""


@dataclass
class JudgeConfig:
    name: str = "openai"
    """A built-in (`openai`, `rules`), an entry point of group `cut_loop.judges`,
    `module.path:Name`, or `path/to/file.py:Name`."""
    batch_size: int = 64
    """Items handed to the judge per call; judgments are saved after each call."""
    max_failed_fraction: float = 0.0
    """Failed judgments tolerated per round (they are left out of training); above this the
    round stops, and a re-run retries only the failed items."""
    options: dict[str, Any] = field(default_factory=dict)
    """The judge's own options: any other key under `judge:` (e.g. `model`, `base_url`)."""


@dataclass
class MlflowConfig:
    experiment: str = ""
    """MLflow experiment to log the run to after every round ("": off; needs mlflow)."""
    tracking_uri: str = ""
    """MLflow tracking URI ("": mlflow's own default, e.g. $MLFLOW_TRACKING_URI)."""


@dataclass
class WandbConfig:
    project: str = ""
    """W&B project to log the run to after every round ("": off; needs wandb, $WANDB_API_KEY)."""
    entity: str = ""
    """W&B entity (team or user; "": your default)."""
    mode: str = ""
    """online, offline or disabled ("": $WANDB_MODE, else online)."""


@dataclass
class TrackingConfig:
    """Where a run's curves go besides metrics.jsonl (tracking.py)."""

    tensorboard: bool = True
    """Rebuild RUN/tensorboard/ from the run's files after every round."""
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class EvalConfig:
    """The held-out evaluation: answers of every round's policy to the same instructions,
    scored by judges of its own, separate from the training judge."""

    size: int = 64
    """Held-out instructions, disjoint from all training samples, answered after every round."""
    judges: list[Any] = field(default_factory=list)
    """Eval judges, each a judge name (`constraints`, `rules`, a plugin, a rubric .yaml) or a
    mapping `{name: openai, model: gpt-4o, ...}` with its options. Empty: the training judge.
    The first one is the headline number."""
    temperature: float = 0.0
    """Decoding of the held-out answers: 0 is greedy, so rounds differ only by the policy."""
    top_p: float = 1.0
    max_new_tokens: int = 0
    """Token limit of a held-out answer (0: generation.max_new_tokens)."""
    bootstrap_resamples: int = 10_000
    """Resamples of the paired bootstrap behind each round's difference from round 0."""
    drift: bool = True
    """Also score round 0's held-out answers under each round's policy (one forward pass in
    the controller): `logprob_change_vs_start`, how far the policy moved."""


@dataclass
class LossConfig:
    name: str = "cut"
    """`cut` (Contrastive Unlikelihood Training: learns from critiques), `sft` (likelihood of
    the acceptable responses only), `rrhf` (ranks the responses to each instruction by judge
    score: needs a judge that returns scores), `dpo` (acceptable over criticised, or higher
    score over lower, within each instruction: needs generation.samples_per_instruction >= 2),
    `none` (no training: the policy passes through every round, the control arm)."""
    threshold: float = 1.1
    """CUT Misalign: tokens with p(y|judged)/p(y|plain) above this get the unlikelihood term."""
    weight_unlike: float = 1.0
    """CUT: weight of the unlikelihood term."""
    weight_like: float = 1.0
    """CUT: weight of the ordinary likelihood a criticised response's unflagged tokens keep in
    the Misalign term (1 in the paper). 0: a criticised response is never reinforced under the
    plain prompt, only its flagged tokens are pushed down."""
    downsample: float = 0.25
    """CUT: positives kept per negative (random down-sampling before training)."""
    truncated: str = "keep"
    """CUT and SFT: how a response cut off at the token limit trains. `keep` (the paper: like
    any other, without an end-of-sequence), `judged` (criticised: Align-N only, no Misalign
    term; accepted: left out, so no plain-prompt likelihood ever rewards a cut-off ramble),
    `drop` (left out)."""
    rrhf_weight: float = 1.0
    """RRHF: weight of the ranking loss against the SFT term on the best response (1 as
    published for the Wombat models; the RRHF code's default is 100)."""
    length_penalty: float = 1.0
    """RRHF: a response's log-likelihood is divided by its length ** length_penalty."""
    beta: float = 0.1
    """DPO: strength of the implicit KL penalty toward the reference (the starting policy)."""


@dataclass
class LoraConfig:
    enabled: bool = False
    """Train LoRA adapters (peft) and merge them into the weights at round end."""
    r: int = 16
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["gate_proj", "up_proj", "down_proj"])


@dataclass
class DeepSpeedConfig:
    launcher: str = "deepspeed"
    """How the ranks start: `deepspeed` (its launcher; the only one that reaches other nodes)
    or `torchrun` (this machine only)."""
    num_gpus: int = 0
    """GPUs (ranks) per node; 0: every visible GPU."""
    num_nodes: int = 1
    """Nodes to train on (listed in `hostfile`)."""
    hostfile: str = ""
    """DeepSpeed hostfile (`host slots=N` per line) for multi-node runs; empty: this machine."""
    master_addr: str = ""
    """Address of the rank-0 node for multi-node runs (empty: the launcher's default)."""
    master_port: int = 0
    """Rendezvous port of rank 0 (0: a free port of this machine, picked at launch)."""
    num_procs: int = 2
    """Ranks on a machine without GPUs (CPU training, the tests)."""
    omp_threads: int = 0
    """OpenMP threads per rank on CPU (0: cores / ranks; more oversubscribes the cores)."""
    zero_stage: int = 2
    """ZeRO stage: 0 (data parallel), 1 (optimizer states), 2 (+ gradients) or 3 (+ weights)
    partitioned over the ranks."""
    offload_optimizer: bool = False
    """ZeRO: keep optimizer states in CPU memory (DeepSpeedCPUAdam; JIT-built on first use)."""
    offload_params: bool = False
    """ZeRO-3: keep the weights in CPU memory between uses."""
    config_file: str = ""
    """A DeepSpeed JSON merged over the generated one (its batch sizes must agree with
    train.micro_batch_size and train.grad_accum; "auto" values are filled in)."""


@dataclass
class TrainConfig:
    backend: str = "auto"
    """`auto` (deepspeed when several GPUs are visible or train.deepspeed.hostfile is set,
    else torch), `torch` (one process) or `deepspeed` (ranks launched as a child)."""
    learning_rate: float = 2e-5
    """Peak learning rate (the CUT recipe uses 4e-4 with LoRA)."""
    warmup_steps: int = 100
    """Linear warm-up steps, then cosine decay to zero."""
    epochs: int = 1
    micro_batch_size: int = 4
    """Examples per forward pass."""
    grad_accum: int = 2
    """Micro-batches per optimizer step (effective batch = micro_batch_size * grad_accum)."""
    max_length: int = 2048
    """Token cutoff; the prompt is cut from the left, the response is kept."""
    bf16: bool = True
    """bfloat16 autocast (on CPU too)."""
    gradient_checkpointing: bool = False
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    save_every: int = 50
    """Optimizer steps between resumable training checkpoints."""
    max_steps: int = 0
    """Stop after this many optimizer steps (0: as many as `epochs` make); the warm-up and
    cosine schedule then span the shorter run."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    """The DeepSpeed trainer's launch and ZeRO settings (train.backend=deepspeed)."""


@dataclass
class RunConfig:
    run_dir: str = "runs/default"
    """Where the run lives; re-running on the same directory resumes or extends it."""
    iterations: int = 4
    """Rounds to have finished when the command returns (extends a finished run)."""
    model: str = "smollm2-135m"
    """Starting policy: `smollm2-135m` (the bundled GGUF), a local HF directory or a Hub id."""
    seed: int = 0
    """Seeds sampling, generation and training (per round)."""
    data: DataConfig = field(default_factory=DataConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["judge"] = {
            **{k: v for k, v in d["judge"].items() if k != "options"},
            **self.judge.options,
        }
        return d


# Fields that change how fast or how visibly a run goes, not what it computes: they may differ
# between a run and its resume. Everything else defines the run and must match (or --force).
OPERATIONAL_FIELDS = {
    "run_dir",
    "iterations",
    "generation.batch_size",
    "generation.shard_size",
    "generation.vllm_python",
    "generation.tensor_parallel_size",
    "generation.gpu_memory_utilization",
    "generation.cpu_kvcache_gb",
    "generation.max_model_len",
    "generation.enforce_eager",
    "judge.batch_size",
    "judge.concurrency",
    "judge.timeout",
    "judge.max_retries",
    "judge.cache",
    "judge.backoff_base",
    "judge.backoff_max",
    "judge.max_requests",
    "judge.max_cost_usd",
    "judge.price_prompt",
    "judge.price_completion",
    "train.save_every",
    "train.gradient_checkpointing",
    # Where and on how many processes the ranks run (a resume may change them where DeepSpeed
    # can re-shard the checkpoint: deepspeed_worker.py says where).
    "train.deepspeed.launcher",
    "train.deepspeed.num_gpus",
    "train.deepspeed.num_nodes",
    "train.deepspeed.hostfile",
    "train.deepspeed.master_addr",
    "train.deepspeed.master_port",
    "train.deepspeed.num_procs",
    "train.deepspeed.omp_threads",
    "tracking.tensorboard",
    "tracking.mlflow.experiment",
    "tracking.mlflow.tracking_uri",
    "tracking.wandb.project",
    "tracking.wandb.entity",
    "tracking.wandb.mode",
}

_CHOICES = {
    "generation.backend": {"auto", "hf", "vllm"},
    "tracking.wandb.mode": {"", "online", "offline", "disabled"},
    "generation.dtype": {"auto", "bfloat16", "float16", "float32"},
    "loss.name": {"cut", "sft", "rrhf", "dpo", "none"},
    "loss.truncated": {"keep", "judged", "drop"},
    "train.backend": {"auto", "torch", "deepspeed"},
    "train.deepspeed.launcher": {"deepspeed", "torchrun"},
    "train.deepspeed.zero_stage": {0, 1, 2, 3},
}


# Round folders are round-NN (two digits: they sort, and every reader globs them so).
MAX_ITERATIONS = 99


def _check(cfg: RunConfig) -> list[str]:
    errors = []
    for key, allowed in _CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            errors.append(f"{key}={value!r} is not one of {sorted(allowed)}")
    positive = [
        "iterations",
        "data.per_round",
        "generation.max_new_tokens",
        "generation.samples_per_instruction",
        "generation.batch_size",
        "generation.shard_size",
        "judge.batch_size",
        "train.micro_batch_size",
        "train.grad_accum",
        "train.max_length",
        "train.epochs",
        "train.save_every",
        "train.deepspeed.num_nodes",
        "train.deepspeed.num_procs",
    ]
    for key in positive:
        if _get(cfg, key) < 1:
            errors.append(f"{key} must be >= 1")
    if cfg.iterations > MAX_ITERATIONS:
        errors.append(
            f"iterations={cfg.iterations} is more than {MAX_ITERATIONS} (rounds live in"
            " round-01 .. round-99)"
        )
    for key in ("eval.size", "eval.max_new_tokens", "data.constraints"):
        if _get(cfg, key) < 0:
            errors.append(f"{key} must be >= 0")
    if cfg.eval.temperature < 0:
        errors.append("eval.temperature must be >= 0")
    if not 0 < cfg.eval.top_p <= 1:
        errors.append("eval.top_p must be in (0, 1]")
    if cfg.eval.bootstrap_resamples < 100:
        errors.append("eval.bootstrap_resamples must be >= 100")
    for i, spec in enumerate(cfg.eval.judges):
        if not (isinstance(spec, str) and spec) and not (
            isinstance(spec, dict) and isinstance(spec.get("name"), str)
        ):
            errors.append(f"eval.judges[{i}]: expected a judge name or a mapping with a `name`")
    if cfg.generation.temperature < 0:
        errors.append("generation.temperature must be >= 0")
    if not 0 < cfg.generation.top_p <= 1:
        errors.append("generation.top_p must be in (0, 1]")
    if not 0 <= cfg.judge.max_failed_fraction <= 1:
        errors.append("judge.max_failed_fraction must be in [0, 1]")
    for key in ("loss.downsample", "loss.weight_unlike", "loss.weight_like", "loss.rrhf_weight",
                "train.max_steps"):  # fmt: skip
        if _get(cfg, key) < 0:
            errors.append(f"{key} must be >= 0")
    if cfg.loss.beta <= 0:
        errors.append("loss.beta must be > 0")
    if cfg.train.learning_rate <= 0:
        errors.append("train.learning_rate must be > 0")
    ds = cfg.train.deepspeed
    for key in ("train.deepspeed.num_gpus", "train.deepspeed.omp_threads"):
        if _get(cfg, key) < 0:
            errors.append(f"{key} must be >= 0")
    if not 0 <= ds.master_port <= 65535:
        errors.append("train.deepspeed.master_port must be in [0, 65535]")
    if ds.offload_params and ds.zero_stage != 3:
        errors.append("train.deepspeed.offload_params needs train.deepspeed.zero_stage=3")
    if ds.launcher == "torchrun" and (ds.hostfile or ds.num_nodes > 1):
        errors.append(
            "train.deepspeed.launcher=torchrun runs on this machine only: use launcher deepspeed"
            " with a hostfile for several nodes"
        )
    return errors


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


# Keys that moved: a config written for an older cut_loop is told where, not just "unknown".
_MOVED = {"data.eval_size": "eval.size"}


# --- building from dicts ---------------------------------------------------------------------


def _coerce(value: Any, tp: Any, key: str, errors: list[str]) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            errors.append(f"{key} must be a mapping")
            return tp()
        return _build(tp, value, key, errors)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif origin is list:
        if isinstance(value, list):
            return value
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
    elif origin is dict or tp is dict:
        if isinstance(value, dict):
            return value
    elif origin in (typing.Union, types.UnionType):
        return value
    else:
        return value
    errors.append(f"{key}={value!r} is not a valid {getattr(tp, '__name__', tp)}")
    return None


def _build(cls: type, data: dict[str, Any], prefix: str, errors: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else key
        if key in names and key != "options":
            coerced = _coerce(value, hints[key], full, errors)
            if coerced is not None:
                kwargs[key] = coerced
        elif cls is JudgeConfig:
            extra[key] = value  # the judge's own options
        elif full in _MOVED:
            errors.append(f"{full!r} is now {_MOVED[full]!r}")
        else:
            errors.append(f"unknown key {full!r}")
    if cls is JudgeConfig:
        kwargs["options"] = {**data.get("options", {}), **extra}
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise CutLoopError(f"--set {dotted}: {part!r} is not a section")
    node[parts[-1]] = value


def parse_set(assignment: str) -> tuple[str, Any]:
    """`key=value` with the value read as YAML (so 3 is an int, true a bool, [a,b] a list)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise CutLoopError(f"--set {assignment!r}: expected key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_yaml(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise CutLoopError(f"{path}: a folder, not a YAML config file")
    if not path.exists():
        raise CutLoopError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise CutLoopError(f"{path}{where}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise CutLoopError(f"{path}: a config must be a YAML mapping")
    return data


def resolve_run_config(
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    sets: list[str] | None = None,
) -> RunConfig:
    """The config of this invocation: a YAML file, then the named CLI options (`overrides`,
    dotted keys), then `--set`s; the CLI wins. Without --config, an existing run directory's
    saved config is the base, so `cutloop run --run-dir R --iterations 6` extends run R as it
    was made. All problems are reported in one error."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    tree: dict[str, Any] = load_yaml(config_file) if config_file else {}
    source = str(config_file) if config_file else "config"
    if config_file is None:
        run_dir = overrides.get("run_dir") or RunConfig.run_dir
        saved = Path(run_dir) / "config.yaml"
        if saved.exists():
            tree, source = load_yaml(saved), str(saved)
    given = dict(overrides)
    for assignment in sets or []:
        key, value = parse_set(assignment)
        given[key] = value
    for key, value in given.items():
        _set_dotted(tree, key, value)
    return config_from_dict(tree, source=source, command_line=set(given))


def config_from_dict(
    tree: dict[str, Any], source: str = "config", command_line: Collection[str] = ()
) -> RunConfig:
    """The typed config of `tree`, or one error naming every problem, each blamed on where its
    value came from: the command line (the keys in `command_line`) or `source`."""
    errors: list[str] = []
    cfg = _build(RunConfig, tree, "", errors)
    if isinstance(cfg.model, str) and len(cfg.model) > 1:
        cfg.model = cfg.model.rstrip("/")  # `models/x/` and `models/x` are one model
    errors += _check(cfg)
    if errors:
        ours = [e for e in errors if _error_key(e) in command_line]
        theirs = [e for e in errors if e not in ours]
        parts = [f"command line: {'; '.join(ours)}"] if ours else []
        parts += [f"{source}: {'; '.join(theirs)}"] if theirs else []
        raise CutLoopError("; and ".join(parts))
    return cfg


def _error_key(error: str) -> str:
    """The config key an error message of `_build` / `_check` starts with."""
    match = re.match(r"(?:unknown key )?'?([\w.]+)", error)
    return match.group(1) if match else ""


def save_config(cfg: RunConfig, path: Path) -> None:
    from cut_loop.rundir import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def flat_fields(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict as {"section.field": value} (diffs, trackers' params)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flat_fields(v, key + "."))
        else:
            out[key] = v
    return out


def defining_differences(saved: RunConfig, new: RunConfig) -> list[tuple[str, Any, Any]]:
    """(field, saved value, new value) for each run-defining field that differs."""
    a, b = flat_fields(saved.to_dict()), flat_fields(new.to_dict())
    keys = sorted(k for k in a.keys() | b.keys() if k not in OPERATIONAL_FIELDS)
    return [(k, a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)]
