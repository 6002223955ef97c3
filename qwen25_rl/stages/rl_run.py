"""Run mechanics the RL stages (GRPO, DPO) share: the starting model and the checkpoint of an
`RLCluster` run (the policy workers' state plus the controller's loop state)."""

from __future__ import annotations

import json
from pathlib import Path

from qwen25_rl.checkpointing import atomic_write, prune, staging
from qwen25_rl.errors import UserValueError
from qwen25_rl.models import initial_model_folder
from qwen25_rl.runs import RunDir
from qwen25_rl.stages.grpo_cluster import RLCluster

STATE_FILE = "trainer_state.json"


def prepare_initial_model(cfg, run: RunDir) -> Path:
    """The policy's starting weights: a checkpoint folder, or a preset initialised once in the
    run folder (which needs `tokenizer.path`)."""
    if cfg.model.path is None and not cfg.tokenizer.path:
        raise UserValueError("model.preset needs tokenizer.path (a tokenizer folder) to size the vocabulary")
    return initial_model_folder(cfg.model, cfg.tokenizer.path or "", run.path)


def save_checkpoint(run: RunDir, cluster: RLCluster, keep_last: int | None, tokenizer_path: str, state: dict) -> Path:
    """checkpoints/step_N: the policy workers' state and the loop's, published whole with its
    manifest as the COMPLETE marker (qwen25_rl.checkpointing.staging: a save that fails, also
    for lack of disk space, leaves no partial folder). Older ones beyond keep_last are removed
    only after this one is published, so the previous checkpoint outlives every unfinished save."""
    dest = run.checkpoint_dir(state["step"])
    with staging(dest) as tmp:
        cluster.save(str(tmp / "policy"), tokenizer_path)
        atomic_write(tmp / STATE_FILE, json.dumps(state))
    prune(run.checkpoints, keep_last, protect=dest)
    return dest


def load_state(checkpoint: Path) -> dict:
    return json.loads((checkpoint / STATE_FILE).read_text())
