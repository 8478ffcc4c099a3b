"""The online loop, top to bottom: for each round, sample → generate → judge → train →
checkpoint → evaluate. Every step skips what the run directory says is already done, so the
same call both starts a run and resumes (or extends) one."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from cut_loop.config import (
    RunConfig,
    config_from_dict,
    defining_differences,
    load_yaml,
    save_config,
)
from cut_loop.data.records import Instruction
from cut_loop.data.sampling import choose_eval_set, sample_round, unused
from cut_loop.data.sources import load_instructions
from cut_loop.errors import CutLoopError
from cut_loop.evaluation.drift import mean_token_logprob
from cut_loop.evaluation.heldout import (
    EvalJudge,
    judge_label,
    load_eval_judges,
    score,
    start_verdicts,
    stored_responses,
)
from cut_loop.generation.base import Generator, SamplingParams
from cut_loop.generation.factory import make_generator
from cut_loop.generation.prompts import PromptTemplate, load_template
from cut_loop.generation.shared import SharedGenerator
from cut_loop.generation.vllm import find_vllm_python
from cut_loop.judging.base import DEFAULT_CRITIQUE, Judge, Judgment, close_judge
from cut_loop.judging.registry import load_judge
from cut_loop.manifest import build_manifest, record_invocation
from cut_loop.metrics import format_eval, summary_table, write_metrics
from cut_loop.models import checked_model
from cut_loop.offline import summarise_log
from cut_loop.progress import console, table_console
from cut_loop.rundir import RunDir, RunLock, atomic_write_json, atomic_write_jsonl, read_jsonl
from cut_loop.stages import Response, generate_stage, judge_stage
from cut_loop.tracking import check_trackers, scalars, sync_trackers, write_tensorboard
from cut_loop.training.base import Trainer, Triplet
from cut_loop.training.factory import make_trainer


class Loop:
    """One run: the config, its directory, and the pieces every round uses."""

    def __init__(self, cfg: RunConfig, force: bool = False) -> None:
        self.cfg = cfg
        self.rd = RunDir(Path(cfg.run_dir))
        # Everything that can reject bad input runs before the run directory is touched.
        self.rd.check_usable()
        _check_against_saved(self.rd, cfg, force)
        self.base_model = checked_model(cfg.model)
        check_trackers(cfg)
        self.pool = load_instructions(cfg.data.instructions)
        if cfg.data.constraints:
            from cut_loop.constraints.attach import attach_constraints

            self.pool = attach_constraints(self.pool, cfg.seed, cfg.data.constraints)
        self.template: PromptTemplate = load_template(cfg.generation.template)
        self.judge: Judge = load_judge(
            cfg.judge.name, cfg.judge.options, cache=self.rd.root / "judge-cache.jsonl"
        )
        self.eval_judges = load_eval_judges(
            cfg.eval.judges,
            EvalJudge(judge_label(cfg.judge.name), self.judge),
            self.rd.root / "eval",
        )
        self.trainer: Trainer = make_trainer(cfg, self.template)
        self.engines = SharedGenerator(self._start_generator)

    def run(self) -> list[dict[str, Any]]:
        """Bring the run to `cfg.iterations` finished rounds; returns the metrics rows."""
        cfg, rd = self.cfg, self.rd
        eval_set = self._eval_set()
        self._check_enough_instructions(eval_set)  # before anything is written or paid for
        try:
            with RunLock(rd.root):
                if stale := rd.remove_stale_temp_files():
                    rd.log(f"run: removed {stale} temp files of writes a kill cut short")
                save_config(cfg, rd.config_path)
                self._record_invocation()
                if not rd.eval_instructions_path.exists():
                    atomic_write_jsonl(rd.eval_instructions_path, [x.to_dict() for x in eval_set])
                    self._write_ledger()
                rd.log(f"run: {cfg.iterations} rounds, model {cfg.model}, judge {cfg.judge.name}")
                base_model = self.base_model
                self._evaluate(0, base_model, eval_set)
                for k in range(1, cfg.iterations + 1):
                    if RunDir.is_done(rd.round_dir(k), "round"):
                        continue
                    start = base_model if k == 1 else str(rd.model_dir(k - 1))
                    self._round(k, start)
                    self._evaluate(k, str(rd.model_dir(k)), eval_set)
                    RunDir.mark_done(rd.round_dir(k), "round")
                    rd.log(f"round {k}: done")
                    self._publish()
                rows = self._publish()
        finally:
            self.engines.close()
            for judge in {
                id(j): j for j in [self.judge, *(e.judge for e in self.eval_judges)]
            }.values():
                close_judge(judge)
        table_console().print(summary_table(rows))
        return rows

    def _publish(self) -> list[dict[str, Any]]:
        """metrics.jsonl and the tracking views derived from the run's files."""
        rows = write_metrics(self.rd)
        points = list(scalars(self.rd, rows))  # read once (train logs too), shown by each view
        if self.cfg.tracking.tensorboard:
            write_tensorboard(self.rd, points, self.rd.config_path.read_text())
        for trouble in sync_trackers(self.rd, points, self.cfg):
            console.print(f"warning: {trouble}; the next round sends again")
            self.rd.log(f"tracking: {trouble}")
        return rows

    def _record_invocation(self) -> None:
        """The manifest of this invocation (manifest.py); a resume on other versions of the
        packages that decide the numbers is said at once, and `cutloop status` keeps saying it."""
        gen = self.cfg.generation
        vllm = find_vllm_python(gen.vllm_python) if gen.backend in ("auto", "vllm") else None
        manifest = build_manifest(self.cfg.seed, self.pool, self.judge, vllm)
        if changes := record_invocation(self.rd, manifest):
            console.print(f"warning: this run started on other versions: {'; '.join(changes)}")
            self.rd.log(f"run: versions differ from the run's start: {'; '.join(changes)}")

    def _round(self, k: int, start_model: str) -> None:
        """One round: sample, generate, judge, train; the new policy lands in round-k/model."""
        folder = self.rd.round_dir(k)
        self.rd.log(f"round {k}: starting from {start_model}")
        responses = self._round_responses(k, start_model)
        self.engines.close()  # the judge and the trainer need the memory
        judgments = judge_stage(
            folder, responses, self.judge, self.cfg, f"round {k}",
            need_scores=self.cfg.loss.name == "rrhf",
        )  # fmt: skip
        triplets = build_triplets(responses, judgments)
        if not RunDir.is_done(folder, "train"):
            self.rd.log(f"round {k}: training on {len(triplets)} judged responses")
            started = time.monotonic()
            result = self.trainer.train(
                triplets, Path(start_model), folder / "train", self.rd.model_dir(k)
            )
            RunDir.mark_done(
                folder,
                "train",
                {
                    "steps": result.steps,
                    "examples": result.examples,
                    **result.metrics,
                    **step_means(folder / "train" / "log.jsonl"),
                    **sample_stats(responses),
                    "seconds": round(time.monotonic() - started, 3),
                },
            )
        # The round's policy is saved and marked: the resumable trainer state (weights plus
        # optimizer, 3x the model) has no further use.
        for checkpoint in (folder / "train").glob("checkpoint-*"):
            shutil.rmtree(checkpoint, ignore_errors=True)

    def _start_generator(self, model: str) -> Generator:
        self.rd.log(f"generation: loading {model}")  # one per policy: see SharedGenerator
        return make_generator(self.cfg.generation, model)

    def _round_responses(self, k: int, start_model: str) -> list[Response]:
        """Round k's sample and the policy's answers to it (read back when already made)."""
        instructions = self._sample(k)
        gen = self.cfg.generation
        params = SamplingParams(
            max_new_tokens=gen.max_new_tokens, temperature=gen.temperature, top_p=gen.top_p,
            n=gen.samples_per_instruction, seed=self.cfg.seed, stop=tuple(gen.stop),
        )  # fmt: skip
        return self._generate(
            self.rd.round_dir(k), instructions, start_model, params, f"round {k}",
            f"round-{k}", reference=gen.include_reference,
        )  # fmt: skip

    def _sample(self, k: int) -> list[Instruction]:
        """Round k's instructions: read back if already drawn, else drawn, written, and entered
        in the ledger before anything is generated from them."""
        path = self.rd.round_dir(k) / "instructions.jsonl"
        if path.exists():
            # A kill may land between this file and the ledger: enter it (idempotent).
            self._write_ledger()
            return [Instruction.from_dict(r) for r in read_jsonl(path)]
        sample = sample_round(
            self.pool, self._used_ids(), self.cfg.data.per_round, self.cfg.seed, k
        )
        atomic_write_jsonl(path, [x.to_dict() for x in sample])
        self._write_ledger()
        return sample

    def _used_ids(self) -> set[str]:
        """Ids of the eval set and of every round's sample: none may be sampled again."""
        rows = read_jsonl(self.rd.eval_instructions_path)
        for k in self.rd.iter_round_numbers():
            rows += read_jsonl(self.rd.round_dir(k) / "instructions.jsonl")
        return {r["id"] for r in rows}

    def _write_ledger(self) -> None:
        """ledger.jsonl: every instruction this run has used, and where (rebuilt from the
        per-round files, which are the source of truth, so it can never disagree with them)."""
        rows = [{"id": r["id"], "use": "eval"} for r in read_jsonl(self.rd.eval_instructions_path)]
        for k in self.rd.iter_round_numbers():
            path = self.rd.round_dir(k) / "instructions.jsonl"
            rows += [{"id": r["id"], "use": f"round-{k}"} for r in read_jsonl(path)]
        atomic_write_jsonl(self.rd.ledger_path, rows)

    def _eval_set(self) -> list[Instruction]:
        """The held-out set: read back if the run has one, else chosen (written by `run`)."""
        path = self.rd.eval_instructions_path
        if path.exists():
            return [Instruction.from_dict(r) for r in read_jsonl(path)]
        return choose_eval_set(self.pool, self.cfg.eval.size, self.cfg.seed)

    def _check_enough_instructions(self, eval_set: list[Instruction]) -> None:
        """Refuse up front, before paying for anything, a plan the source cannot feed."""
        cfg, rd = self.cfg, self.rd
        # Arithmetic, not a walk over every round: `--iterations 10**20` must answer at once.
        drawn = sum(
            1 for k in rd.iter_round_numbers()
            if k <= cfg.iterations and (rd.round_dir(k) / "instructions.jsonl").exists()
        )  # fmt: skip
        missing = cfg.iterations - drawn
        left = len(unused(self.pool, self._used_ids() | {x.id for x in eval_set}))
        need = missing * cfg.data.per_round
        if need > left:
            raise CutLoopError(
                f"data.instructions: {left} unused instructions left in {cfg.data.instructions!r},"
                f" but {missing} more rounds x data.per_round={cfg.data.per_round} need {need}"
            )

    def _generate(
        self,
        folder: Path,
        instructions: list[Instruction],
        model: str,
        params: SamplingParams,
        label: str,
        seed_tag: str,
        reference: bool = False,
    ) -> list[Response]:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model) if self.template.chat else None
        return generate_stage(
            folder, instructions, params, self.template, tokenizer,
            self.engines.loader(model), label, seed_tag,
            self.cfg.generation.shard_size, reference,
        )  # fmt: skip

    def _evaluate(self, k: int, model: str, eval_set: list[Instruction]) -> None:
        """The held-out answers of the policy after round k (k = 0: the starting model), scored
        by every eval judge; each judge's row compares round k with round 0 on the same
        instructions. Decoding is `eval:`'s (greedy by default) with the same seed every round,
        so rounds differ only by the policy."""
        if not eval_set:
            return
        folder = self.rd.eval_dir(k)
        if RunDir.is_done(folder, "eval"):
            return
        started = time.monotonic()
        ev, gen = self.cfg.eval, self.cfg.generation
        params = SamplingParams(
            max_new_tokens=ev.max_new_tokens or gen.max_new_tokens, temperature=ev.temperature,
            top_p=ev.top_p, seed=self.cfg.seed, stop=tuple(gen.stop),
        )  # fmt: skip
        responses = self._generate(folder, eval_set, model, params, f"eval {k}", "eval")
        nxt = k + 1
        if nxt <= self.cfg.iterations and not RunDir.is_done(self.rd.round_dir(nxt), "round"):
            # Round k+1 starts from this very policy: its answers come from the same engine
            # (their time is round k+1's generate time, not this evaluation's).
            before = time.monotonic()
            self._round_responses(nxt, model)
            started += time.monotonic() - before
        self.engines.close()
        drift = self._drift(model, folder) if ev.drift else {}
        rows = []
        for ej in self.eval_judges:
            sub = folder / f"judge-{ej.label}"
            start0 = self.rd.eval_dir(0)
            start = start_verdicts(start0, start0 / sub.name) if k else None
            rows.append(score(sub, responses, ej, self.cfg, start, f"eval {k} {ej.label}"))
            rows[-1].update(drift)
            self.rd.log(f"eval after round {k}: {format_eval(rows[-1])}")
        seconds = round(time.monotonic() - started, 3)
        RunDir.mark_done(folder, "eval", {"judges": rows, "seconds": seconds})

    def _drift(self, model: str, folder: Path) -> dict[str, float | None]:
        """The mean token log p of round 0's held-out answers under `model`, and its change
        from the starting policy's (`evaluation/drift.py`)."""
        logp = self._answers_logprob(folder, model)
        start = self._answers_logprob(self.rd.eval_dir(0), self.base_model)
        change = logp - start if logp is not None and start is not None else None
        return {"start_answers_logprob": logp, "logprob_change_vs_start": change}

    def _answers_logprob(self, folder: Path, model: str) -> float | None:
        """Round 0's held-out answers scored by `model`, kept in `folder/drift.json`."""
        path = folder / "drift.json"
        if not path.exists():
            answers = stored_responses(self.rd.eval_dir(0))
            logp = mean_token_logprob(model, answers, self.template, self.cfg.train.max_length)
            atomic_write_json(path, {"start_answers_logprob": logp})
        return json.loads(path.read_text())["start_answers_logprob"]


def build_triplets(responses: list[Response], judgments: dict[str, Judgment]) -> list[Triplet]:
    """(instruction, response, judgment) for every response with a verdict; failed judgments
    are left out (never counted as either verdict)."""
    triplets = []
    for r in responses:
        j = judgments.get(r["id"])
        if j is None or j.failed:
            continue
        critique = None if j.acceptable else (j.critique or DEFAULT_CRITIQUE)
        triplets.append(
            Triplet(
                r["id"],
                r["instruction"],
                r["input"],
                r["response"],
                critique,
                j.score,
                truncated=not r["finished"],
                prompt_id=r.get("prompt_id", r["id"]),
            )
        )
    return triplets


def step_means(log: Path) -> dict[str, float]:
    """Means over the round's optimizer steps of the loss and each component the objective
    logs (CUT: align_loss, misalign_loss, flagged_token_fraction), as `mean_<name>`, and
    `loss`, the last step's. Read from the log, not the trainer's memory: a run killed after
    its last checkpoint resumes with no step left to run, and its loss is still in the log."""
    summary = summarise_log(log)
    out = {f"mean_{k}": v["mean"] for k, v in summary["components"].items()}
    if (last := summary["last_step"]) is not None and last.get("loss") is not None:
        out["loss"] = last["loss"]
    return out


def sample_stats(responses: list[Response]) -> dict[str, float | None]:
    """What the round's policy wrote, whatever the judge thought: its length in tokens (mean,
    median, 90th percentile: a few runaway answers move the mean, not the median) and the share
    of answers that ended before the token limit."""
    policy = [r for r in responses if r.get("source", "policy") == "policy"]
    tokens = sorted(r["num_tokens"] for r in policy if r.get("num_tokens") is not None)

    def quantile(q: float) -> float | None:
        return float(tokens[min(len(tokens) - 1, int(q * len(tokens)))]) if tokens else None

    return {
        "sample_mean_tokens": sum(tokens) / len(tokens) if tokens else None,
        "sample_median_tokens": quantile(0.5),
        "sample_p90_tokens": quantile(0.9),
        "sample_finished_fraction": (
            sum(bool(r["finished"]) for r in policy) / len(policy) if policy else None
        ),
    }


def _check_against_saved(rd: RunDir, cfg: RunConfig, force: bool) -> None:
    """A run directory belongs to one experiment: refuse to continue it with a changed
    run-defining field (model, seed, loss, source ...) unless forced."""
    if not rd.config_path.exists():
        return
    saved = config_from_dict(load_yaml(rd.config_path), source=str(rd.config_path))
    changed = defining_differences(saved, cfg)
    if changed and not force:
        key, was, now = changed[0]
        more = f" (and {len(changed) - 1} more fields)" if len(changed) > 1 else ""
        raise CutLoopError(
            f"{rd.config_path}: this run was made with {key}={was!r}, not {now!r}{more};"
            " use another --run-dir, or --force to continue it anyway"
        )
