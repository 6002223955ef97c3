"""`qwen25-rl eval`: a model's accuracy and pass@k on GSM8K, MATH-500, HumanEval, MBPP or your
prompt file, on the same rollout workers and reward pool the RL stages use.

The recipe:  items (prompt + gold) -> rollout workers sample n responses per prompt (or a
responses file gives them) -> reward pool scores each (math verifier / code sandbox / your
reward functions) -> per item: c of n correct -> accuracy (mean of c/n) and pass@k (unbiased,
qwen25_rl.algorithms.pass_at_k) -> run folder with `results.jsonl` (one row per item) and
`summary.json`.

Prompts of the named sets (as the model's chat template renders them when it has one; the
plain-text form otherwise):
- GSM8K: the question + Qwen2.5-Math's chain-of-thought instruction ("... put your final
  answer within \\boxed{}"); gold = the text after `####` of the reference solution.
- MATH-500: the problem + the same instruction; gold = the `answer` field.
- HumanEval: chat: "complete this function" around the `prompt` code; plain: the `prompt`
  itself, continued by the model and cut at the Codex stop sequences (`\\ndef`, `\\nclass`,
  `\\nif`, `\\nprint`, `\\n#`). Gold = the problem's `test` and `entry_point`.
- MBPP: the task `text` + its first test as the signature hint; gold = `test_list` (+
  `test_setup_code`).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwen25_rl.algorithms.pass_at_k import pass_at_k
from qwen25_rl.checkpointing import atomic_write, check_published
from qwen25_rl.config.loader import load_config
from qwen25_rl.data.prompts import DatasetError, _chat, read_rows
from qwen25_rl.metrics import RayGauges
from qwen25_rl.paths import eval_data_file
from qwen25_rl.ray_utils import init_ray
from qwen25_rl.reward.config import RewardConfig, RewardFunctionConfig
from qwen25_rl.runs import RunDir, stage_run
from qwen25_rl.stages.eval_config import EVAL_SETS, EvalConfig, EvalDataConfig
from qwen25_rl.stages.grpo_cluster import collect, generate_async, placement_settings, rollout_group
from qwen25_rl.stages.grpo_collector import score_samples

# Qwen2.5-Math's chain-of-thought instruction: the verifier reads the boxed answer first.
MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
# Where a plain-text HumanEval completion ends (the Codex paper's stop sequences): the model
# continues the function body and would otherwise run on into new top-level code.
HUMANEVAL_STOP = ("\ndef", "\nclass", "\nif", "\nprint", "\n#")
# The reward that decides each named set (eval_config's docstring), and its params when the
# config lists no entry of that type: all of a problem's tests must pass; 10 s per test, since
# MBPP's reference for task 123 (amicable numbers up to 9999) needs ~2.5 s alone and more on a
# loaded machine.
SET_REWARD = {"gsm8k": "math", "math500": "math", "humaneval": "code", "mbpp": "code"}
DEFAULT_REWARD_PARAMS: dict[str, dict[str, Any]] = {"math": {}, "code": {"mode": "all", "per_test_timeout_s": 10.0}}
MBPP_SPLITS = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}
SOLVED = 1.0 - 1e-9  # a reward at (or within rounding of) 1.0 means solved


@dataclass
class EvalItem:
    """One problem: its prompt in chat form and plain form, and the gold the reward needs."""

    id: str
    messages: list[dict[str, str]]  # the chat, ending with the user's turn
    plain_prompt: str | None  # what a model without a chat template is given (None: chat only)
    answer: Any  # math: the gold answer text; code: the tests (HumanEval problem / MBPP asserts)
    data_source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    plain_stop: tuple[str, ...] = ()  # a plain-text completion is cut at the first of these
    location: str = ""  # file:line, for messages
    # Filled for the run:
    prompt_text: str = ""  # what the model saw (or the user's turn, for given responses)
    prompt_ids: list[int] = field(default_factory=list)
    chat: bool = True
    responses: list[str] = field(default_factory=list)


# -- the named sets ---------------------------------------------------------------------------


def _field(location: str, row: dict[str, Any], key: str, kind: type | tuple[type, ...] = str) -> Any:
    """row[key], checked; a missing key or a wrong type is an error naming file:line and key."""
    if key not in row:
        raise DatasetError(f"{location}: missing key {key!r}")
    v = row[key]
    if not isinstance(v, kind) or isinstance(v, bool):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DatasetError(f"{location}: key {key!r} must be {want}, got {type(v).__name__}")
    return v


def _user(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


def gsm8k_gold(location: str, solution: str) -> str:
    """GSM8K's answer: the text after the last `####` of the reference solution."""
    if "####" not in solution:
        raise DatasetError(f"{location}: key 'answer' has no '#### <answer>' line")
    gold = solution.rsplit("####", 1)[1].strip()
    if not gold:
        raise DatasetError(f"{location}: key 'answer' has nothing after '####'")
    return gold


def gsm8k_item(location: str, index: int, row: dict[str, Any]) -> EvalItem:
    question = _field(location, row, "question")
    gold = gsm8k_gold(location, _field(location, row, "answer"))
    content = f"{question}\n{MATH_INSTRUCTION}"
    return EvalItem(str(index), _user(content), f"Question: {content}\nAnswer:", gold, "gsm8k", location=location)


def math500_item(location: str, index: int, row: dict[str, Any]) -> EvalItem:
    problem = _field(location, row, "problem")
    gold = _field(location, row, "answer")
    if not gold.strip():
        raise DatasetError(f"{location}: key 'answer' is empty")
    uid = _field(location, row, "unique_id")
    content = f"{problem}\n{MATH_INSTRUCTION}"
    extra = {k: row[k] for k in ("subject", "level") if k in row}
    return EvalItem(uid, _user(content), f"Problem: {content}\nSolution:", gold, "math500", extra, location=location)


def humaneval_item(location: str, index: int, row: dict[str, Any]) -> EvalItem:
    task_id = _field(location, row, "task_id")
    prompt = _field(location, row, "prompt")
    # The canonical solution stays out of the sample: the reward sees only what it tests with.
    problem = {
        "task_id": task_id,
        "prompt": prompt,
        "test": _field(location, row, "test"),
        "entry_point": _field(location, row, "entry_point"),
    }
    content = (
        "Complete the following Python function. Reply with the complete function (its signature included) "
        f"in one ```python code block.\n\n```python\n{prompt}```"
    )
    return EvalItem(task_id, _user(content), prompt, problem, "humaneval", plain_stop=HUMANEVAL_STOP, location=location)


def mbpp_item(location: str, index: int, row: dict[str, Any]) -> EvalItem:
    task_id = _field(location, row, "task_id", int)
    text = _field(location, row, "text")
    tests = _field(location, row, "test_list", list)
    if not tests or not all(isinstance(t, str) for t in tests):
        raise DatasetError(f"{location}: key 'test_list' must be a non-empty list of assert statements")
    setup = row.get("test_setup_code") or ""
    if not isinstance(setup, str):
        raise DatasetError(f"{location}: key 'test_setup_code' must be a string, got {type(setup).__name__}")
    content = f"{text}\nYour code should pass this test:\n{tests[0]}\nReply with the Python code in one ```python code block."
    # Plain text: the prompt opens the code block, the completion is cut where the block closes.
    return EvalItem(
        str(task_id),
        _user(content),
        f"{content}\n```python\n",
        {"test_list": tests, "test_setup_code": setup},
        "mbpp",
        plain_stop=("\n```",),
        location=location,
    )


SET_BUILDERS = {"gsm8k": gsm8k_item, "math500": math500_item, "humaneval": humaneval_item, "mbpp": mbpp_item}


def load_named_set(name: str, mbpp_split: str = "test") -> list[EvalItem]:
    """Every item of a named set, read from $QWEN25_RL_DATA (qwen25_rl.paths.eval_data_dir)."""
    try:
        path = eval_data_file(EVAL_SETS[name])
    except FileNotFoundError as e:
        raise DatasetError(f"data.name {name}: {e}") from None
    rows = read_rows(path)
    if name == "mbpp" and mbpp_split != "all":
        lo, hi = MBPP_SPLITS[mbpp_split]
        rows = [(loc, r) for loc, r in rows if isinstance(r.get("task_id"), int) and lo <= r["task_id"] <= hi]
    return [SET_BUILDERS[name](loc, i, row) for i, (loc, row) in enumerate(rows)]


# -- your files -------------------------------------------------------------------------------


def load_file_items(d: EvalDataConfig) -> list[EvalItem]:
    """Rows of `data.eval_files`, read with the prompt loader's keys (qwen25_rl.data.prompts):
    `prompt_key` text or `messages_key` chat, the gold in `answer_key` (or `tests`), an id in
    `id_key` (else the row's position), `data_source`, and any other columns as extras."""
    items: list[EvalItem] = []
    seen: dict[str, str] = {}
    for path in d.eval_files:
        for location, row in read_rows(path):
            if row.get(d.messages_key) is not None:
                messages = _chat(location, row[d.messages_key], d.messages_key)
            elif isinstance(row.get(d.prompt_key), str):
                messages = _user(row[d.prompt_key])
            else:
                raise DatasetError(
                    f"{location}: row has neither {d.prompt_key!r} (text) nor {d.messages_key!r} (chat); keys: {sorted(row)}"
                )
            answer = row.get(d.answer_key, row.get("tests"))
            if answer is None:
                raise DatasetError(f"{location}: missing key {d.answer_key!r} (the gold answer; data.answer_key names the column)")
            if d.id_key in row:
                raw_id = row[d.id_key]
                if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
                    raise DatasetError(f"{location}: key {d.id_key!r} must be a string or integer, got {type(raw_id).__name__}")
                item_id = str(raw_id)
            else:
                item_id = str(len(items))
            if item_id in seen:
                raise DatasetError(f"{location}: key {d.id_key!r}: id {item_id!r} repeats (first at {seen[item_id]})")
            seen[item_id] = location
            reserved = {d.prompt_key, d.messages_key, d.answer_key, d.id_key, "tests", "data_source"}
            extra = {k: v for k, v in row.items() if k not in reserved}
            plain = messages[0]["content"] if len(messages) == 1 else None
            items.append(EvalItem(item_id, messages, plain, answer, str(row.get("data_source") or ""), extra, location=location))
    if not items:
        raise DatasetError(f"data.eval_files {d.eval_files}: no rows")
    return items


def load_items(d: EvalDataConfig) -> list[EvalItem]:
    """Every item of the configured set (before data.limit)."""
    return load_named_set(d.name, d.mbpp_split) if d.name is not None else load_file_items(d)


# -- given responses --------------------------------------------------------------------------


def read_responses(path: str | Path, items: list[EvalItem], dataset: str) -> dict[int, list[str]]:
    """Responses per item position from a JSONL file. A row names its item by `id` (the item's
    id: GSM8K's 0-based row, MATH-500's unique_id, HumanEval's task_id, MBPP's task_id, your
    file's id column or row) or `index` (0-based position in the set), and gives `response`
    (one text) or `responses` (a list of texts); several rows may name the same item. Other
    keys are ignored, so an eval run's results.jsonl reads back as a responses file.

    An unknown item, a missing key or a bad value is a DatasetError naming file:line and key."""
    by_id = {it.id: i for i, it in enumerate(items)}
    out: dict[int, list[str]] = {}
    for location, row in read_rows(path):
        pos = None
        if "id" in row:
            v = row["id"]
            if isinstance(v, bool) or not isinstance(v, (str, int)):
                raise DatasetError(f"{location}: key 'id' must be a string or integer, got {type(v).__name__}")
            if str(v) not in by_id:
                examples = ", ".join(repr(it.id) for it in items[:3])
                raise DatasetError(f"{location}: key 'id': no item {str(v)!r} in {dataset} (its ids look like {examples})")
            pos = by_id[str(v)]
        if "index" in row:
            v = row["index"]
            if isinstance(v, bool) or not isinstance(v, int):
                raise DatasetError(f"{location}: key 'index' must be an integer, got {type(v).__name__}")
            if not 0 <= v < len(items):
                raise DatasetError(f"{location}: key 'index': {v} is outside 0..{len(items) - 1} ({dataset} has {len(items)} items)")
            if pos is not None and pos != v:
                raise DatasetError(f"{location}: key 'index': item {v} is {items[v].id!r}, but key 'id' names {items[pos].id!r}")
            pos = v
        if pos is None:
            raise DatasetError(f"{location}: missing key 'id' (or 'index'): each row names the item it answers")
        if "response" in row and "responses" in row:
            raise DatasetError(f"{location}: key 'responses': give 'response' (one text) or 'responses' (a list), not both")
        if "response" in row:
            if not isinstance(row["response"], str):
                raise DatasetError(f"{location}: key 'response' must be a string, got {type(row['response']).__name__}")
            texts = [row["response"]]
        elif "responses" in row:
            texts = row["responses"]
            if not isinstance(texts, list) or not texts:
                raise DatasetError(f"{location}: key 'responses' must be a non-empty list of strings")
            for j, t in enumerate(texts):
                if not isinstance(t, str):
                    raise DatasetError(f"{location}: key 'responses': entry {j} must be a string, got {type(t).__name__}")
        else:
            raise DatasetError(f"{location}: missing key 'response' (one text) or 'responses' (a list of texts)")
        out.setdefault(pos, []).extend(texts)
    return out


# -- prompts for the model --------------------------------------------------------------------


def render_prompts(items: list[EvalItem], tokenizer, d: EvalDataConfig) -> int:
    """Fill each item's prompt text and token ids: the chat template (with the assistant turn
    opened) when `data.apply_chat_template` and the tokenizer has one, else the plain form.
    Returns how many items were dropped as too long (`on_long_prompt: drop`)."""
    chat = bool(d.apply_chat_template and getattr(tokenizer, "chat_template", None))
    kept, dropped = [], 0
    for it in items:
        if chat:
            text = tokenizer.apply_chat_template(it.messages, tokenize=False, add_generation_prompt=True)
        elif it.plain_prompt is not None:
            text = it.plain_prompt
        else:
            raise DatasetError(
                f"{it.location}: a multi-turn chat needs a chat template (the tokenizer has none, or data.apply_chat_template is false)"
            )
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) > d.max_prompt_length:
            if d.on_long_prompt == "error":
                raise DatasetError(
                    f"{it.location}: item {it.id!r}: the prompt has {len(ids)} tokens, more than data.max_prompt_length={d.max_prompt_length}"
                )
            dropped += 1
            continue
        it.prompt_text, it.prompt_ids, it.chat = text, ids, chat
        kept.append(it)
    items[:] = kept
    return dropped


def cut_at_stop(text: str, stops: tuple[str, ...]) -> str:
    """`text` up to the first of `stops` (a plain-text completion's end)."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


# -- the reward -------------------------------------------------------------------------------


def reward_for(cfg: EvalConfig) -> tuple[RewardConfig, str]:
    """The reward config the pool runs and the label of the function that decides correctness
    (eval_config's docstring says which)."""
    if cfg.data.name is None:
        labels = [f.label for f in cfg.reward.functions]
        return cfg.reward, cfg.eval.accuracy_reward or labels[0]
    kind = SET_REWARD[cfg.data.name]
    chosen = next((f for f in cfg.reward.functions if f.type == kind), None)
    if chosen is None:
        chosen = RewardFunctionConfig(type=kind, params=DEFAULT_REWARD_PARAMS[kind])
    # The set's reward scores every item alone: no data-source filter, weight 1 (score = verdict).
    fn = chosen.model_copy(update={"data_sources": None, "weight": 1.0})
    return cfg.reward.model_copy(update={"functions": [fn]}), fn.label


def response_status(result, label: str) -> str:
    """One response's outcome: the verifier's own status (math: correct / wrong / no_answer /
    timeout; code: passed / failed / no-code / no-verdict), or why there is no verdict (the
    reward's error / timeout, dropped by the pool's failure policy, or skipped: the deciding
    function does not apply to the item)."""
    if result.dropped:
        return "dropped"
    fs = result.function_status.get(label)
    if fs is None:
        return "skipped"
    if fs != "ok":
        return fs
    details = result.details.get(label) or {}
    status = details.get("status")
    value = result.breakdown.get(label)
    solved = value is not None and value >= SOLVED
    if status == "graded":  # code: a verdict came back; it passed or it did not
        return "passed" if solved else "failed"
    if isinstance(status, str):
        return status
    return "correct" if solved else "incorrect"


# -- the stage --------------------------------------------------------------------------------


def main(config_path: str | None, overrides: list[str] | None = None) -> dict[str, Any]:
    cfg = load_config(config_path, overrides, schema=EvalConfig)
    with stage_run(cfg, cfg.logging.output_dir, cfg.logging.run_name, stage="eval") as run:
        return run_eval(cfg, run)  # type: ignore[arg-type]


def run_eval(cfg: EvalConfig, run: RunDir) -> dict[str, Any]:
    """Evaluate; returns the summary (also in <run>/summary.json)."""
    t_start = time.perf_counter()
    d = cfg.data
    dataset = d.name or ",".join(d.eval_files)
    items = load_items(d)
    selected = items[: d.limit] if d.limit else items
    notes: dict[str, int] = {}
    if cfg.generating:
        from qwen25_rl.models import load_tokenizer

        check_published(Path(cfg.model.path), "model.path")  # a stage's final/ verifies before it is loaded
        tokenizer = load_tokenizer(cfg.tokenizer.path or str(cfg.model.path))
        notes["dropped_too_long"] = render_prompts(selected, tokenizer, d)
        todo = selected
    else:
        given = read_responses(d.responses_file, items, dataset)
        in_limit = {id(it) for it in selected}
        notes["responses_outside_limit"] = sum(len(v) for i, v in given.items() if id(items[i]) not in in_limit)
        for i, texts in given.items():
            items[i].responses = texts
        todo = [it for it in selected if it.responses]
        notes["items_without_responses"] = len(selected) - len(todo)
        for it in todo:
            it.prompt_text = it.messages[-1]["content"]
        for k in cfg.eval.pass_k:
            short = next((it for it in todo if len(it.responses) < k), None)
            if short is not None:
                raise DatasetError(
                    f"{d.responses_file}: item {short.id!r} has {len(short.responses)} response(s), fewer than k={k} "
                    "(eval.pass_k): pass@k needs at least k responses per item"
                )
    if not todo:
        why = (
            "no item has a response" if not cfg.generating else f"every prompt is longer than data.max_prompt_length={d.max_prompt_length}"
        )
        raise DatasetError(f"nothing to evaluate in {dataset}: {why}")
    for key, n in notes.items():
        if n:
            print(f"eval: {key.replace('_', ' ')}: {n}", flush=True)

    reward_cfg, label = reward_for(cfg)
    init_ray(cfg.ray, third_party_logs=cfg.logging.third_party_logs)
    from qwen25_rl.reward.pool import RewardPool

    pool = RewardPool(reward_cfg, name_prefix="eval/reward")
    rollout = None
    try:
        if cfg.generating:
            rollout = rollout_group(cfg, str(cfg.model.path), "eval", placement_settings(cfg))
        run.mark_started()
        gauges = RayGauges("eval", run.path.name) if cfg.logging.ray_metrics else None
        rows, timing = _evaluate(cfg, todo, pool, rollout, reward_cfg, label, gauges)
    finally:
        if rollout is not None:
            rollout.shutdown()
        pool.shutdown()

    summary = summarize(rows, cfg.eval.pass_k)
    summary = {
        "dataset": dataset,
        "model": str(cfg.model.path) if cfg.model.path is not None else None,
        "responses_file": d.responses_file,
        "reward": label,
        "temperature": cfg.rollout.temperature if cfg.generating else None,
        "max_new_tokens": cfg.rollout.max_new_tokens if cfg.generating else None,
        **summary,
        **notes,
        **timing,
        "wall_s": time.perf_counter() - t_start,
    }
    run_path = run.path.resolve()
    atomic_write(run_path / "results.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    atomic_write(run_path / "summary.json", json.dumps(summary, indent=2) + "\n")
    metrics = run_path / "metrics.jsonl"
    if metrics.exists():
        os.unlink(metrics)  # a re-run into the same folder replaces its results
    writer = run.metrics_writer(tensorboard=cfg.logging.tensorboard)
    try:
        writer.log(0, metric_row(summary))
    finally:
        writer.close()
    if gauges is not None:
        gauges.set(metric_row(summary))
    scores = ", ".join(f"pass@{k} {summary[f'pass@{k}']:.4f}" for k in cfg.eval.pass_k)
    print(f"eval: {dataset}: {summary['items']} items, accuracy {summary['accuracy']:.4f}, {scores}; {summary['wall_s']:.1f} s", flush=True)
    return {**summary, "run_dir": str(run_path)}


def _evaluate(cfg: EvalConfig, todo: list[EvalItem], pool, rollout, reward_cfg: RewardConfig, label: str, gauges: RayGauges | None = None):
    """Generate (or take the given responses) and score, batch by batch; the next batch is
    generating on the rollout workers while this one is scored. After each batch the progress
    (`eval/items_scored`, `eval/accuracy` so far) goes to `gauges` (Ray metrics) when given."""
    from qwen25_rl.actors.rollout import SamplingSettings

    ro, bs = cfg.rollout, cfg.eval.prompts_per_batch
    batches = [todo[a : a + bs] for a in range(0, len(todo), bs)]
    timing = {"generate_s": 0.0, "score_s": 0.0} if rollout is not None else {"score_s": 0.0}

    def start(b: int):
        settings = SamplingSettings(
            n=ro.samples_per_prompt,
            temperature=ro.temperature,
            top_p=ro.top_p,
            top_k=ro.top_k,
            max_new_tokens=ro.max_new_tokens,
            seed=(cfg.seed * 1_000_003 + b) % (2**31 - 1),
        )
        return generate_async(rollout, [it.prompt_ids for it in batches[b]], settings)

    rows: list[dict[str, Any]] = []
    pending = start(0) if rollout is not None else None
    done_items = solved_sum = 0
    for b, chunk in enumerate(batches):
        # (item position in chunk, response text, tokens, finish reason) per response
        samples_of: list[tuple[int, str, int | None, str | None]] = []
        if pending is not None:
            batch, seconds = collect(pending)
            timing["generate_s"] += seconds
            pending = start(b + 1) if b + 1 < len(batches) else None
            lengths = batch["response_mask"].sum(1).tolist()
            for i, text, n_tok, reason in zip(
                batch.meta["prompt_index"], batch.meta["response_text"], lengths, batch.meta["finish_reason"]
            ):
                it = chunk[i]
                if not it.chat and it.plain_stop:
                    text = cut_at_stop(text, it.plain_stop)
                samples_of.append((i, text, int(n_tok), reason))
            samples_of.sort(key=lambda s: s[0])  # stable: each item's samples in sampling order
        else:
            samples_of = [(i, text, None, None) for i, it in enumerate(chunk) for text in it.responses]
        t = time.perf_counter()
        rows_b = _score_chunk(chunk, samples_of, pool, reward_cfg, label, f"b{b}")
        timing["score_s"] += time.perf_counter() - t
        rows += rows_b
        done_items += len(chunk)
        solved_sum += sum(r["passes"] / r["n"] for r in rows_b)
        print(f"eval: {done_items}/{len(todo)} items scored, accuracy so far {solved_sum / done_items:.4f}", flush=True)
        if gauges is not None:
            gauges.set({"eval/items_scored": done_items, "eval/items": len(todo), "eval/accuracy": solved_sum / done_items})
    return rows, timing


def _score_chunk(chunk: list[EvalItem], samples_of, pool, reward_cfg: RewardConfig, label: str, tag: str) -> list[dict[str, Any]]:
    from qwen25_rl.reward.types import RewardSample

    samples = [
        RewardSample(
            response=text,
            prompt=chunk[i].prompt_text,
            answer=chunk[i].answer,
            data_source=chunk[i].data_source,
            group_id=f"{tag}i{i}",
            sample_id=f"{tag}i{i}s{j}",
            response_length=n_tok,
            extra=chunk[i].extra,
        )
        for j, (i, text, n_tok, _) in enumerate(samples_of)
    ]
    scored = score_samples(pool, {}, reward_cfg.functions, [], "sum", samples, [chunk[i].messages for i, *_ in samples_of])
    per_item: dict[int, list[int]] = {}
    for j, (i, *_) in enumerate(samples_of):
        per_item.setdefault(i, []).append(j)
    rows = []
    for i, it in enumerate(chunk):
        js = per_item.get(i, [])
        statuses = [response_status(scored.results[j], label) for j in js]
        correct = [_solved(scored.results[j], label) for j in js]
        score = [float(scored.rewards[j]) for j in js]
        row = {
            "id": it.id,
            "data_source": it.data_source,
            "prompt": it.prompt_text,
            "responses": [samples[j].response for j in js],
            "scores": [s if math.isfinite(s) else None for s in score],
            "statuses": statuses,
            "correct": correct,
            "passes": sum(correct),
            "n": len(js),
        }
        if samples_of and samples_of[0][3] is not None:
            row["finish_reasons"] = [samples_of[j][3] for j in js]
        if isinstance(it.answer, str):
            row["gold"] = it.answer
        rows.append(row)
    return rows


def _solved(result, label: str) -> bool:
    if result.dropped or result.function_status.get(label) != "ok":
        return False
    v = result.breakdown.get(label)
    return v is not None and v >= SOLVED


def summarize(rows: list[dict[str, Any]], ks: list[int]) -> dict[str, Any]:
    """Accuracy (mean over items of c/n), pass@k per k from each item's (n, c), counts."""
    ns = [r["n"] for r in rows]
    out: dict[str, Any] = {
        "items": len(rows),
        "responses": sum(ns),
        "n": ns[0] if len(set(ns)) == 1 else None,  # samples per item (None: it varies)
        "n_min": min(ns),
        "n_max": max(ns),
        "accuracy": sum(r["passes"] / r["n"] for r in rows) / len(rows),
        "items_solved": sum(r["passes"] > 0 for r in rows),
    }
    for k in ks:
        out[f"pass@{k}"] = sum(pass_at_k(r["n"], r["passes"], k) for r in rows) / len(rows)
    scores = [s for r in rows for s in r["scores"] if s is not None]
    out["mean_score"] = sum(scores) / len(scores) if scores else None
    out["statuses"] = dict(sorted(Counter(s for r in rows for s in r["statuses"]).items()))
    return out


def metric_row(summary: dict[str, Any]) -> dict[str, float]:
    """The summary's numbers as one metrics.jsonl row (eval/..., time/...)."""
    m: dict[str, float] = {}
    for k, v in summary.items():
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, (int, float)):
            m[f"time/{k}" if k.endswith("_s") else f"eval/{k}"] = float(v)
    for s, c in summary["statuses"].items():
        m[f"eval/status/{s}"] = float(c)
    return m
