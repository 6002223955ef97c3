"""Stage drivers: `run_pretrain(cfg)`, `run_sft(cfg)` and `run_rm(cfg)` (reward model).

Each reads top to bottom like the recipe:

    run folder (resume policy) -> synthetic data if asked -> tokenizer (trained or given)
    -> initial model -> Ray -> tokenise + pack + order the data -> Ray Train TorchTrainer
    -> final/ (HF model + tokenizer + chat template)

The training itself happens in `pretrain.worker.train_loop_per_worker` on the Ray Train
workers; this module only prepares what they read and exports what they wrote.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qwen25_rl.checkpointing import COMPLETE, atomic_write, resolve_resume, staging, verify
from qwen25_rl.errors import UserValueError
from qwen25_rl.models.factory import initial_model_folder, rope_theta_of
from qwen25_rl.pretrain.config import PretrainConfig, RMConfig, SFTConfig, SyntheticDataConfig
from qwen25_rl.pretrain.corpus import read_conversations, read_source
from qwen25_rl.pretrain.data_order import build_order
from qwen25_rl.pretrain.packing import PackedRows, pack_documents, pack_samples
from qwen25_rl.pretrain.prepare import fingerprint, read_meta, save_rows, tokenize_conversations, tokenize_documents
from qwen25_rl.pretrain.sft_data import build_samples
from qwen25_rl.runs import RunDir, run_name_for, stage_run

SNAPSHOT = "checkpoint_manager_snapshot.json"
# Files of a checkpoint that are trainer state, not part of the HF export.
TRAINER_ONLY = ("deepspeed", "optimizer.pt", "rng_rank*.pt", "trainer_state.json", COMPLETE)


@dataclass
class StageResult:
    run_dir: Path
    final: Path | None
    steps: int
    metrics: dict[str, Any]
    # Times Ray Train restarted the worker group in this invocation (trainer.max_failures).
    worker_failures: int = 0


class TrainingStoppedError(RuntimeError):
    """The Ray Train workers failed more often than `trainer.max_failures` allows (or Ray Train's
    controller failed): the message names the worker, the step it was on and the cause."""


def _abs(path: str | Path) -> str:
    return str(Path(path).expanduser().resolve())


def _say(cfg, msg: str) -> None:
    if cfg.logging.console:
        print(msg, flush=True)


# ---------------------------------------------------------------------------------------------
# run folder, synthetic data, tokenizer, initial model


@contextlib.contextmanager
def open_run(cfg, stage: str) -> Iterator[tuple[RunDir, str | None]]:
    """The run folder (created or reopened; removed again if the stage fails on its input, see
    qwen25_rl.runs.stage_run) and the verified checkpoint to resume from.

    resume "auto": a folder that already has checkpoints continues from its newest one that
    verifies (qwen25_rl.checkpointing.resolve_resume: checked against its manifest, sizes and
    sha256; ones that fail are set aside with a message, and forgotten by Ray Train's snapshot;
    none verifying is an error); "never": such a folder is an error; any other value is a
    complete, verifying checkpoint folder to start from.
    """
    name = run_name_for(cfg.logging.run_name, stage)
    path = Path(cfg.logging.output_dir) / name
    checkpoints = path / "checkpoints"
    has_checkpoints = (checkpoints / SNAPSHOT).is_file()
    resume = cfg.checkpoint.resume
    chosen = None
    if resume == "never" and has_checkpoints:
        raise UserValueError(
            f"{path} already holds checkpoints and checkpoint.resume is 'never': "
            "choose another logging.run_name, or set checkpoint.resume: auto to continue it"
        )
    if resume not in ("auto", "never"):
        ck = resolve_resume(resume, checkpoints)
        if has_checkpoints:
            raise UserValueError(f"checkpoint.resume names {ck}, but {path} has checkpoints of its own; use a new logging.run_name")
        chosen = str(ck)
    elif resume == "auto" and checkpoints.is_dir():
        ck = resolve_resume("auto", checkpoints)
        forget_missing_checkpoints(checkpoints)
        if ck is not None:
            _say(cfg, f"resuming from {ck} (verified against its manifest)")
            chosen = str(ck.resolve())
    with stage_run(cfg, cfg.logging.output_dir, name, stage=stage) as run:
        yield run, chosen


def forget_missing_checkpoints(checkpoints: Path) -> list[str]:
    """Drop from Ray Train's checkpoint snapshot (`checkpoint_manager_snapshot.json`: the
    checkpoints Ray hands to restarted workers and prunes by `keep_last`) those whose folders
    are gone: set aside by the resume lookup, or removed by hand. Ray refuses to start on a
    snapshot that names a missing folder, and would otherwise later delete a new checkpoint
    saved under a forgotten one's name. Returns the names dropped."""
    snap = Path(checkpoints) / SNAPSHOT
    if not snap.is_file():
        return []
    gone: set[str] = set()
    try:
        state = json.loads(snap.read_text())
        results, indices = state["checkpoint_results"], state["checkpoint_report_indices"]
        latest = state.get("latest_checkpoint_result")
        named = [r["checkpoint_dir_name"] for r in results] + ([latest["checkpoint_dir_name"]] if latest else [])
        gone = {n for n in named if not (Path(checkpoints) / n).is_dir()}
        if not gone:
            return []
        kept = [(r, i) for r, i in zip(results, indices) if r["checkpoint_dir_name"] not in gone]
        state["checkpoint_results"] = [r for r, _ in kept]
        state["checkpoint_report_indices"] = [i for _, i in kept]
        if latest is not None and latest["checkpoint_dir_name"] in gone:
            state["latest_checkpoint_result"] = max(kept, key=lambda ri: ri[1])[0] if kept else None
        pending = [
            (r, v)
            for r, v in zip(state.get("pending_training_results", []), state.get("pending_validation_specs", []))
            if r["checkpoint_dir_name"] not in gone
        ]
        state["pending_training_results"] = [r for r, _ in pending]
        state["pending_validation_specs"] = [v for _, v in pending]
        for key in (
            "validated_checkpoint_dir_names",
            "timed_out_validation_checkpoint_dir_names",
            "failed_validation_checkpoint_dir_names",
        ):
            if key in state:
                state[key] = [n for n in state[key] if n not in gone]
    except (KeyError, TypeError, ValueError) as e:
        raise UserValueError(
            f"{snap}: Ray Train's checkpoint snapshot names checkpoints that are gone ({', '.join(sorted(gone)) or '?'}) "
            f"and could not be updated ({type(e).__name__}: {e}); resume from a checkpoint folder under a new "
            "logging.run_name (checkpoint.resume: <folder>)"
        ) from e
    atomic_write(snap, json.dumps(state))
    return sorted(gone)


def ensure_synthetic(syn: SyntheticDataConfig | None, cfg) -> None:
    if syn is None:
        return
    from qwen25_rl.data import write_synthetic_dataset

    manifest = write_synthetic_dataset(syn.out_dir, syn.spec())
    _say(cfg, f"synthetic data in {syn.out_dir}: " + ", ".join(f"{k} {v}" for k, v in manifest["rows"].items()))


def _interleaved(lists: list[list[str]], limit: int | None) -> list[str]:
    """Documents round-robin over sources (so a capped sample covers every source)."""
    out, i = [], 0
    while any(i < len(lst) for lst in lists) and (limit is None or len(out) < limit):
        for lst in lists:
            if i < len(lst) and (limit is None or len(out) < limit):
                out.append(lst[i])
        i += 1
    return out


def pretrain_tokenizer(cfg: PretrainConfig, run: RunDir) -> str:
    """The tokenizer folder: the model's or the configured one, or one trained on the corpus."""
    if cfg.model.path is not None:
        return _abs(cfg.tokenizer.path or cfg.model.path)
    if not cfg.tokenizer_training.enabled:
        return _abs(cfg.tokenizer.path)
    out = run.path / "tokenizer"
    if (out / "tokenizer.json").is_file():
        return str(out.resolve())
    from qwen25_rl.models.tokenizer import train_bpe, wrap_hf

    tt = cfg.tokenizer_training
    docs = _interleaved([read_source(s.files, s.text_key, s.format) for s in cfg.data.sources], tt.max_documents)
    t0 = time.time()
    max_len = max(p.max_position_embeddings or p.seq_len for p in cfg.phases)
    tok = wrap_hf(train_bpe(docs, vocab_size=tt.vocab_size, min_frequency=tt.min_frequency), model_max_length=max_len)
    with staging(out) as tmp:
        tok.save_pretrained(tmp)
    _say(cfg, f"trained tokenizer on {len(docs)} documents in {time.time() - t0:.1f}s: {len(tok)} tokens -> {out}")
    return str(out.resolve())


def initial_model(cfg, run: RunDir, tokenizer_dir: str) -> str:
    """A folder with the weights training starts from (qwen25_rl.models.initial_model_folder)."""
    return str(initial_model_folder(cfg.model, tokenizer_dir, run.path, announce=lambda msg: _say(cfg, msg)))


def _read_model_config(folder: str) -> dict:
    return json.loads((Path(folder) / "config.json").read_text())


def _tokenizer_fingerprint(tokenizer_dir: str) -> str:
    p = Path(tokenizer_dir) / "tokenizer.json"
    import hashlib

    return hashlib.sha256(p.read_bytes()).hexdigest()[:16] if p.is_file() else tokenizer_dir


def _special_ids(tokenizer_dir: str) -> tuple[int, int]:
    from qwen25_rl.models import load_tokenizer
    from qwen25_rl.models.tokenizer import DOC_SEPARATOR

    tok = load_tokenizer(tokenizer_dir)
    eos = tok.convert_tokens_to_ids(DOC_SEPARATOR)
    if eos is None or eos == tok.unk_token_id:
        raise UserValueError(f"tokenizer {tokenizer_dir} has no {DOC_SEPARATOR} token to separate documents")
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    return int(eos), int(pad)


# ---------------------------------------------------------------------------------------------
# pretraining data


def _schedule(cfg, lr: float | None, warmup: int | None) -> dict:
    return {
        "peak_lr": lr or cfg.optimizer.lr,
        "warmup_steps": cfg.scheduler.warmup_steps if warmup is None else warmup,
        "decay": cfg.scheduler.name,
        "min_lr_ratio": cfg.scheduler.min_lr_ratio,
    }


def plan_pretrain_phases(cfg: PretrainConfig, model_config: dict) -> list[dict]:
    """Phases with inherited values resolved: RoPE base and context carry over from the
    previous phase (or the model), a context below seq_len is raised to it."""
    theta = rope_theta_of(model_config) or 10000.0
    max_pos = int(model_config.get("max_position_embeddings") or 0)
    out = []
    for p in cfg.phases:
        theta = p.rope_theta if p.rope_theta is not None else theta
        max_pos = p.max_position_embeddings if p.max_position_embeddings is not None else max(max_pos, p.seq_len)
        out.append(
            {
                "name": p.name,
                "steps": p.steps,
                "seq_len": p.seq_len,
                "global_batch": p.global_batch_size or cfg.trainer.global_batch_size,
                "rope_theta": theta,
                "max_position_embeddings": max_pos,
                "schedule": _schedule(cfg, p.lr, p.warmup_steps),
            }
        )
    return out


def prepare_pretrain_data(cfg: PretrainConfig, run: RunDir, tokenizer_dir: str, phases: list[dict]) -> None:
    """Tokenise the sources once, then pack and order them per phase (sequence length)."""
    data = cfg.data
    eos, pad = _special_ids(tokenizer_dir)
    tok_fp = _tokenizer_fingerprint(tokenizer_dir)
    tokens: dict[str, list[np.ndarray]] | None = None
    eval_tokens: list[np.ndarray] | None = None
    for i, ph in enumerate(phases):
        base = run.path / "data" / ph["name"]
        fp = fingerprint(data.model_dump(mode="json"), ph["seq_len"], ph["steps"], ph["global_batch"], i, tok_fp)
        ph["train_dir"] = str((base / "train").resolve())
        ph["eval_dir"] = str((base / "eval").resolve()) if data.eval_files else None
        if (read_meta(base / "train") or {}).get("fingerprint") == fp and (
            not data.eval_files or (read_meta(base / "eval") or {}).get("fingerprint") == fp
        ):
            continue
        if tokens is None:
            t0 = time.time()
            tokens = {}
            for s in data.sources:
                docs = read_source(s.files, s.text_key, s.format)
                tokens[s.name] = tokenize_documents(tokenizer_dir, docs, data.tokenize_batch_documents)
            if data.eval_files:
                eval_docs = read_source(data.eval_files, data.eval_text_key)
                eval_tokens = tokenize_documents(tokenizer_dir, eval_docs, data.tokenize_batch_documents)
            _say(cfg, f"tokenised {sum(len(v) for v in tokens.values())} documents in {time.time() - t0:.1f}s")
        reset = not data.cross_document_attention
        packed = [pack_documents(tokens[s.name], ph["seq_len"], eos, pad, reset_positions=reset) for s in data.sources]
        rows = PackedRows(
            input_ids=np.concatenate([p.input_ids for p in packed]),
            labels=np.concatenate([p.labels for p in packed]),
            position_ids=np.concatenate([p.position_ids for p in packed]),
            lengths=np.concatenate([p.lengths for p in packed]),
        )
        total = ph["steps"] * ph["global_batch"]
        order, drawn = build_order([p.num_rows for p in packed], [s.weight for s in data.sources], total, seed=data.seed + 1000 * i)
        sources = {
            s.name: {
                "documents": len(tokens[s.name]),
                "tokens": int(p.lengths.sum()),
                "rows": p.num_rows,
                "weight": s.weight,
                "drawn_rows": d,
                "epochs": round(d / p.num_rows, 3),
            }
            for s, p, d in zip(data.sources, packed, drawn)
        }
        save_rows(base / "train", rows, {"fingerprint": fp, "phase": ph["name"], "sources": sources}, order=order)
        for name, s in sources.items():
            _say(
                cfg,
                f"phase {ph['name']}: source {name}: {s['documents']} docs, {s['tokens']} tokens, {s['rows']} rows of {ph['seq_len']}, drawn {s['drawn_rows']} ({s['epochs']} epochs)",
            )
        if data.eval_files:
            ev = pack_documents(eval_tokens, ph["seq_len"], eos, pad, reset_positions=reset)
            save_rows(base / "eval", ev, {"fingerprint": fp, "phase": ph["name"]})


# ---------------------------------------------------------------------------------------------
# SFT data


def _chat_rows(cfg: SFTConfig, tokenizer_dir: str, files: list[str], pad: int, label: str) -> tuple[PackedRows, dict]:
    convs = [c for f in files for c in read_conversations(f, cfg.data.messages_key)]
    tokenized = tokenize_conversations(tokenizer_dir, convs)
    samples, stats = build_samples(tokenized, cfg.data.max_length, cfg.data.overlong)
    if not samples:
        raise UserValueError(f"{label} files {files}: no conversation fits data.max_length {cfg.data.max_length} ({stats.as_dict()})")
    rows, _ = pack_samples(samples, cfg.data.max_length, pad, packing=cfg.data.packing)
    return rows, stats.as_dict()


def prepare_sft_data(cfg: SFTConfig, run: RunDir, tokenizer_dir: str) -> dict:
    """Tokenise, apply the over-length policy, pack; returns the single phase of the plan."""
    data, tr = cfg.data, cfg.trainer
    _, pad = _special_ids(tokenizer_dir)
    base = run.path / "data" / "sft"
    fp = fingerprint(data.model_dump(mode="json"), tr.global_batch_size, tr.epochs, tr.max_steps, _tokenizer_fingerprint(tokenizer_dir))
    meta = read_meta(base / "train")
    if meta is None or meta.get("fingerprint") != fp or (data.eval_files and (read_meta(base / "eval") or {}).get("fingerprint") != fp):
        rows, stats = _chat_rows(cfg, tokenizer_dir, data.train_files, pad, "data.train_files")
        B = tr.global_batch_size
        steps = max(1, math.ceil(tr.epochs * rows.num_rows / B))
        if tr.max_steps is not None:
            steps = min(steps, tr.max_steps)
        order, _ = build_order([rows.num_rows], [1.0], steps * B, seed=data.seed)
        meta = {"fingerprint": fp, "steps": steps, "conversations": stats}
        save_rows(base / "train", rows, meta, order=order)
        meta = read_meta(base / "train")
        if data.eval_files:
            ev, ev_stats = _chat_rows(cfg, tokenizer_dir, data.eval_files, pad, "data.eval_files")
            save_rows(base / "eval", ev, {"fingerprint": fp, "conversations": ev_stats})
    st = meta["conversations"]
    _say(
        cfg,
        f"sft data: {st['conversations']} conversations -> {meta['rows']} rows of {meta['seq_len']} tokens "
        f"({meta['padding_tokens']} padding), {meta['loss_tokens']} trained tokens; over {data.max_length} tokens: "
        f"{st['truncated']} truncated, {st['dropped_overlong']} dropped, {st['dropped_no_target']} dropped with no assistant token left",
    )
    return {
        "name": "sft",
        "steps": meta["steps"],
        "seq_len": data.max_length,
        "global_batch": tr.global_batch_size,
        "rope_theta": None,
        "max_position_embeddings": None,
        "schedule": _schedule(cfg, None, None),
        "train_dir": str((base / "train").resolve()),
        "eval_dir": str((base / "eval").resolve()) if data.eval_files else None,
        "epoch_rows": meta["rows"],
        "data_stats": st,
    }


# ---------------------------------------------------------------------------------------------
# reward-model data and initial model


def ensure_synthetic_preferences(cfg: RMConfig) -> None:
    syn = cfg.data.synthetic
    if syn is None:
        return
    from qwen25_rl.data.synth_preferences import write_synthetic_preferences

    manifest = write_synthetic_preferences(
        syn.out_dir,
        seed=syn.seed,
        num_prompts=syn.num_prompts,
        heldout_fraction=syn.heldout_fraction,
        criteria=tuple(cfg.reward_model.criteria),
        missing_label_fraction=syn.missing_label_fraction,
    )
    # One line: the counts per split (labels per criterion are printed with the data below, and
    # the whole manifest is in the folder's preferences_manifest.json).
    splits = manifest.get("splits", {})
    counts = ", ".join(f"{name} {s.get('rows', 0)} pairs of {s.get('prompts', 0)} prompts" for name, s in splits.items())
    _say(cfg, f"synthetic preferences in {_abs(syn.out_dir)}: {counts}")


def _preference_rows(cfg: RMConfig, tokenizer_dir: str, files: list[str], vocab_size: int) -> tuple[dict, np.ndarray, dict]:
    from qwen25_rl.data.preferences import load_preferences, preference_arrays
    from qwen25_rl.models import load_tokenizer

    d = cfg.data
    tok = load_tokenizer(tokenizer_dir)
    records, stats = load_preferences(
        files,
        tok,
        list(cfg.reward_model.criteria),
        prompt_key=d.prompt_key,
        chosen_key=d.chosen_key,
        rejected_key=d.rejected_key,
        margin_key=d.margin_key,
        apply_chat_template=d.apply_chat_template,
        max_length=d.max_length,
        on_long=d.on_long,
        vocab_size=vocab_size,
    )
    arrays = preference_arrays(records, tok.pad_token_id, len(cfg.reward_model.criteria))
    return arrays, arrays["chosen_len"] + arrays["rejected_len"], stats


def prepare_rm_data(cfg: RMConfig, run: RunDir, tokenizer_dir: str, vocab_size: int) -> dict:
    """Tokenise the preference pairs (labels per criterion, ratings, margins), fix the step
    order; returns the single phase of the plan."""
    from qwen25_rl.pretrain.prepare import save_arrays

    data, tr = cfg.data, cfg.trainer
    base = run.path / "data" / "rm"
    fp = fingerprint(
        data.model_dump(mode="json"),
        cfg.reward_model.criteria,
        tr.global_batch_size,
        tr.epochs,
        tr.max_steps,
        _tokenizer_fingerprint(tokenizer_dir),
    )
    meta = read_meta(base / "train")
    if meta is None or meta.get("fingerprint") != fp or (data.eval_files and (read_meta(base / "eval") or {}).get("fingerprint") != fp):
        arrays, lengths, stats = _preference_rows(cfg, tokenizer_dir, data.train_files, vocab_size)
        pairs = len(lengths)
        B = tr.global_batch_size
        steps = max(1, math.ceil(tr.epochs * pairs / B))
        if tr.max_steps is not None:
            steps = min(steps, tr.max_steps)
        order, _ = build_order([pairs], [1.0], steps * B, seed=data.seed)
        seq_len = int(arrays["chosen_ids"].shape[1])
        common = {"fingerprint": fp, "seq_len": seq_len}
        save_arrays(
            base / "train", arrays, lengths, {**common, "steps": steps, "rows": pairs, "tokens": int(lengths.sum()), "pairs": stats}, order
        )
        if data.eval_files:
            ev, ev_lengths, ev_stats = _preference_rows(cfg, tokenizer_dir, data.eval_files, vocab_size)
            save_arrays(
                base / "eval", ev, ev_lengths, {**common, "rows": len(ev_lengths), "tokens": int(ev_lengths.sum()), "pairs": ev_stats}
            )
        meta = read_meta(base / "train")
    st = meta["pairs"]
    missing = {k: v for k, v in st.get("missing_labels", {}).items() if v}
    _say(
        cfg,
        f"rm data: {meta['rows']} pairs, {meta['tokens']} tokens, longest {meta['seq_len']}; labelled per criterion "
        f"{st.get('labelled', {})}; missing labels (masked) {missing or 'none'}; over {data.max_length} tokens: "
        f"{st.get('too_long', 0)} dropped, {st.get('truncated', 0)} truncated",
    )
    return {
        "name": "rm",
        "steps": meta["steps"],
        "seq_len": meta["seq_len"],
        "global_batch": tr.global_batch_size,
        "rope_theta": None,
        "max_position_embeddings": None,
        "schedule": _schedule(cfg, None, None),
        "train_dir": str((base / "train").resolve()),
        "eval_dir": str((base / "eval").resolve()) if data.eval_files else None,
        "epoch_rows": meta["rows"],
        "data_stats": st,
    }


def initial_reward_model(cfg: RMConfig, run: RunDir, policy: str, tokenizer_dir: str) -> str:
    """run/initial_model: the policy's backbone with a new score head (one output per
    criterion), built once so every worker and every restart starts from the same head."""
    from qwen25_rl.checkpointing import ensure_initial_model
    from qwen25_rl.models import load_tokenizer
    from qwen25_rl.models.reward_model import save_new_reward_model

    head = cfg.reward_model

    def build(folder: Path) -> None:
        save_new_reward_model(
            folder,
            policy,
            load_tokenizer(tokenizer_dir),
            list(head.criteria),
            head.resolved_weights(),
            max_length=cfg.data.max_length,
            seed=cfg.seed,
            attn_implementation=cfg.model.attn_implementation,
        )
        _say(cfg, f"reward model: the backbone of {policy} with a {len(head.criteria)}-output score head ({', '.join(head.criteria)})")

    return str(ensure_initial_model(run.path, build).resolve())


def log_data_stats(run: RunDir, phases: list[dict]) -> None:
    """One `event: data` row per phase in metrics.jsonl: rows, tokens, padding, the mixture
    actually drawn per source, and (SFT) how many conversations were truncated or dropped."""
    writer = run.metrics_writer(tensorboard=False)
    try:
        for ph in phases:
            meta = read_meta(ph["train_dir"]) or {}
            row = {
                k: meta[k]
                for k in ("rows", "tokens", "padding_tokens", "loss_tokens", "seq_len", "sources", "conversations", "pairs")
                if k in meta
            }
            writer.log(0, {"event": "data", "phase": ph["name"], **row})
    finally:
        writer.close()


# ---------------------------------------------------------------------------------------------
# training and export


def _plan(cfg, stage: str, phases: list[dict], init_model: str, tokenizer_dir: str, resume_from: str | None) -> dict:
    return {
        "stage": stage,
        "phases": phases,
        "initial_model": init_model,
        "tokenizer_dir": tokenizer_dir,
        "resume_from": resume_from,
        "trainer": cfg.trainer.model_dump(mode="json"),
        "optimizer": cfg.optimizer.model_dump(mode="json"),
        "model": {"attn_implementation": cfg.model.attn_implementation, "gradient_checkpointing": cfg.model.gradient_checkpointing},
        "checkpoint_every": cfg.checkpoint.every_n_steps,
        "log_every": cfg.logging.log_every_n_steps,
        "seed": cfg.seed,
        "epoch_rows": phases[0].get("epoch_rows") if stage in ("sft", "rm") else None,
    }


def worker_failures_since(run: RunDir, first_row: int) -> list[dict]:
    """The `event: worker_error` rows (pretrain.callbacks) after row `first_row` of metrics.jsonl."""
    from qwen25_rl.runs import read_metrics

    path = run.path / "metrics.jsonl"
    rows = read_metrics(path)[first_row:] if path.is_file() else []
    return [r for r in rows if r.get("event") == "worker_error"]


def _metrics_rows(run: RunDir) -> int:
    from qwen25_rl.runs import read_metrics

    path = run.path / "metrics.jsonl"
    return len(read_metrics(path)) if path.is_file() else 0


def stopped_message(stage: str, run: RunDir, error: BaseException, max_failures: int, errors: list[dict]) -> str:
    """What a run that Ray Train gave up on says: which worker failed at which step, why, how
    often the workers were restarted, and where a rerun resumes."""
    from qwen25_rl.pretrain.progress import cause_of, died_first, read_progress

    failures: dict[int, Exception] = getattr(error, "worker_failures", None) or {}
    parts = []
    for rank, exc in died_first(failures):
        progress = read_progress(run.path, rank) or {}
        where = f" at step {progress['step']} (phase {progress.get('phase')}, pid {progress.get('pid')} on {progress.get('node')})"
        parts.append(f"worker rank {rank} failed{where if progress else ''}: {cause_of(exc)}")
    if not parts:
        parts.append(" ".join(f"{type(error).__name__}: {error}".split())[:600])
    restarts = max(0, len({r.get("failure") for r in errors}) - 1)
    newest = sorted(run.checkpoints.glob("step_*"), key=lambda p: int(p.name.split("_")[1]) if p.name.split("_")[1].isdigit() else -1)
    resume = f"a rerun of the stage resumes from {newest[-1].name}" if newest else "no checkpoint was saved: a rerun starts from step 0"
    return (
        f"{stage} stopped: {'; '.join(parts)}. The workers had been restarted {restarts} time(s) before "
        f"(trainer.max_failures: {max_failures}); {resume} (checkpoint.resume: auto), or raise trainer.max_failures"
    )


def fit(cfg, run: RunDir, plan: dict) -> Any:
    """Run the TorchTrainer; returns Ray's Result. A worker that fails (raises, or dies) makes
    Ray Train restart the worker group from the newest checkpoint, up to `trainer.max_failures`
    times; past that, `TrainingStoppedError` names the worker, its step and the cause."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.train.v2.api.exceptions import TrainingFailedError

    from qwen25_rl.pretrain.callbacks import RunFolderCallback
    from qwen25_rl.pretrain.progress import fault_from_env
    from qwen25_rl.pretrain.worker import train_loop_per_worker

    t = cfg.trainer
    # Where Ray Train assembles the checkpoints (RunConfig below): the workers name it in errors.
    plan = {**plan, "checkpoints_dir": str(run.checkpoints.resolve())}
    fault = fault_from_env()  # the chaos tests' seam (pretrain.progress); None in real runs
    if fault is not None:
        plan["fault"] = fault
    resources = {"CPU": t.cpus_per_worker}
    if t.use_gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=plan,
        torch_config=TorchConfig(backend="nccl" if t.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=t.num_workers,
            use_gpu=t.use_gpu,
            resources_per_worker=resources,
            placement_strategy=cfg.ray.placement_strategy,
        ),
        run_config=RunConfig(
            name="checkpoints",
            storage_path=str(run.path.resolve()),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoint.keep_last),
            failure_config=FailureConfig(max_failures=t.max_failures),
            callbacks=[
                RunFolderCallback(
                    str(run.path.resolve()),
                    plan["stage"],
                    tensorboard=cfg.logging.tensorboard,
                    console=cfg.logging.console,
                    ray_metrics=cfg.logging.ray_metrics,
                    run_name=run.path.name,
                    max_failures=t.max_failures,
                )
            ],
        ),
    )
    first_row = _metrics_rows(run)
    try:
        result = trainer.fit()
    except TrainingFailedError as e:
        errors = worker_failures_since(run, first_row)
        raise TrainingStoppedError(stopped_message(plan["stage"], run, e, t.max_failures, errors)) from e
    failures = len({r.get("failure") for r in worker_failures_since(run, first_row)})
    if failures:
        _say(cfg, f"Ray Train restarted the workers {failures} time(s) from the newest checkpoint (trainer.max_failures {t.max_failures})")
    result.worker_failures = failures
    return result


def _is_trainer_file(name: str) -> bool:
    import fnmatch

    return any(fnmatch.fnmatch(name, pat) for pat in TRAINER_ONLY)


def export_final(checkpoint_dir: Path, final: Path) -> Path:
    """Copy the HF part of a checkpoint (model, tokenizer, chat template, generation config)
    to `final/`, published atomically (an existing final/ is replaced whole)."""
    if not (checkpoint_dir / "config.json").is_file():
        raise FileNotFoundError(f"{checkpoint_dir}: checkpoint has no HF model (config.json)")
    with staging(final) as tmp:
        for item in checkpoint_dir.iterdir():
            if not _is_trainer_file(item.name):
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
    return final


def _finish(cfg, run: RunDir, result, steps: int) -> StageResult:
    final = None
    if cfg.checkpoint.save_final and result.checkpoint is not None:
        with result.checkpoint.as_directory() as d:
            problems = verify(Path(d), hashes=False)  # written in this run: sizes (final/ gets its own manifest)
            if problems:
                raise RuntimeError(f"checkpoint {result.checkpoint.path} fails verification: {'; '.join(problems)}; final/ not written")
            state = json.loads((Path(d) / "trainer_state.json").read_text())
            if state["step"] != steps:
                raise RuntimeError(f"training ended at step {state['step']}, expected {steps}; final/ not written")
            final = export_final(Path(d), run.final)
        _say(cfg, f"final model ({steps} steps) -> {final}")
    return StageResult(
        run_dir=run.path,
        final=final,
        steps=steps,
        metrics=dict(result.metrics or {}),
        worker_failures=getattr(result, "worker_failures", 0),
    )


def run_pretrain(cfg: PretrainConfig) -> StageResult:
    from qwen25_rl.ray_utils import init_ray

    with open_run(cfg, "pretrain") as (run, resume_from):
        _say(cfg, f"pretrain run folder: {run.path}")
        ensure_synthetic(cfg.data.synthetic, cfg)
        tokenizer_dir = pretrain_tokenizer(cfg, run)
        init_model = initial_model(cfg, run, tokenizer_dir)
        phases = plan_pretrain_phases(cfg, _read_model_config(init_model))
        init_ray(cfg.ray, third_party_logs=cfg.logging.third_party_logs)
        prepare_pretrain_data(cfg, run, tokenizer_dir, phases)
        log_data_stats(run, phases)
        run.mark_started()
        result = fit(cfg, run, _plan(cfg, "pretrain", phases, init_model, tokenizer_dir, resume_from))
        return _finish(cfg, run, result, cfg.total_steps)


def run_sft(cfg: SFTConfig) -> StageResult:
    from qwen25_rl.ray_utils import init_ray

    with open_run(cfg, "sft") as (run, resume_from):
        _say(cfg, f"sft run folder: {run.path}")
        init_model = initial_model(cfg, run, "")  # model.path is checked before any data is made
        ensure_synthetic(cfg.data.synthetic, cfg)
        tokenizer_dir = _abs(cfg.tokenizer.path or cfg.model.path)
        max_pos = _read_model_config(init_model).get("max_position_embeddings")
        if max_pos and cfg.data.max_length > max_pos:
            raise UserValueError(
                f"data.max_length {cfg.data.max_length} exceeds the model's max_position_embeddings {max_pos} ({init_model})"
            )
        init_ray(cfg.ray, third_party_logs=cfg.logging.third_party_logs)
        phase = prepare_sft_data(cfg, run, tokenizer_dir)
        log_data_stats(run, [phase])
        run.mark_started()
        result = fit(cfg, run, _plan(cfg, "sft", [phase], init_model, tokenizer_dir, resume_from))
        return _finish(cfg, run, result, phase["steps"])


def run_rm(cfg: RMConfig) -> StageResult:
    from qwen25_rl.ray_utils import init_ray

    with open_run(cfg, "rm") as (run, resume_from):
        _say(cfg, f"rm run folder: {run.path.resolve()}")
        policy = initial_model(cfg, run, "")  # model.path is checked before any data is made
        ensure_synthetic_preferences(cfg)
        tokenizer_dir = _abs(cfg.tokenizer.path or cfg.model.path)
        vocab_size = int(_read_model_config(policy)["vocab_size"])
        init_ray(cfg.ray, third_party_logs=cfg.logging.third_party_logs)
        phase = prepare_rm_data(cfg, run, tokenizer_dir, vocab_size)
        init_rm = initial_reward_model(cfg, run, policy, tokenizer_dir)
        log_data_stats(run, [phase])
        run.mark_started()
        plan = _plan(cfg, "rm", [phase], init_rm, tokenizer_dir, resume_from)
        head = cfg.reward_model
        plan["task"] = "reward"
        plan["reward_model"] = {
            "criteria": list(head.criteria),
            "weights": head.resolved_weights(),
            "centering_coef": head.centering_coef,
            "rating_weight": head.rating_weight,
            "use_margin": head.use_margin,
            "max_length": cfg.data.max_length,
            "source": policy,
        }
        result = fit(cfg, run, plan)
        return _finish(cfg, run, result, phase["steps"])
