"""The online merging optimizer in the training engines: OnlineMerger against a manual merge,
DeepSpeed ZeRO-2 on two ranks against one process, the fp32 master copy under bf16, and the
merger's checkpoint state."""

from __future__ import annotations

import copy
import json
import os
import socket

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qwen25_rl.algorithms.merging import ondare_merge, onties_merge
from qwen25_rl.errors import UserPathError, UserValueError
from qwen25_rl.training.engines import DDPEngine
from qwen25_rl.training.merging import MERGER_FILE, OnlineMerger, build_merger

SHAPE = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=64,
)
OPT = {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.1, "grad_clip": 0.0}
GLOBAL_BATCH, SEQ = 4, 8


def tiny_lm(seed: int, **overrides):
    from qwen25_rl.models import build_model

    return build_model("tiny", seed=seed, attn_implementation="sdpa", **{**SHAPE, **overrides})


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A random base model and an "SFT" model that is the base plus small noise."""
    from qwen25_rl.models import save_pretrained

    root = tmp_path_factory.mktemp("merging")
    base = tiny_lm(seed=0)
    sft = copy.deepcopy(base)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in sft.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    save_pretrained(base, None, root / "base")
    save_pretrained(sft, None, root / "sft")
    return {"base": str(root / "base"), "sft": str(root / "sft")}


class TokenLoss(nn.Module):
    """Wraps the HF model as ResponseScorer does (at `.model`): summed next-token NLL * scale."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    @property
    def device(self):
        return self.model.device

    def forward(self, input_ids, scale):
        logits = self.model(input_ids=input_ids).logits[:, :-1].float()
        return F.cross_entropy(logits.flatten(0, 1), input_ids[:, 1:].flatten(), reduction="sum") * scale


def batches(steps: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return [torch.randint(0, SHAPE["vocab_size"], (GLOBAL_BATCH, SEQ), generator=g) for _ in range(steps)]


def train(engine, data: list[torch.Tensor], world_size: int = 1, rank: int = 0, lr: float = OPT["lr"]) -> None:
    """One optimizer step per global batch; this rank trains its contiguous share, the loss
    scaled as the engines' docstring says: sum over its samples / global count * world size."""
    per_rank = GLOBAL_BATCH // world_size
    global_tokens = GLOBAL_BATCH * (SEQ - 1)
    for ids in data:
        with engine.micro_batch(True):
            loss = engine.forward(input_ids=ids[rank * per_rank : (rank + 1) * per_rank], scale=world_size / global_tokens)
            engine.backward(loss)
        engine.after_micro_batch(True, lr)


def ddp_engine(model, merger=None):
    trainer = {"micro_batch_size": GLOBAL_BATCH, "zero_stage": 0, "use_gpu": False}
    return DDPEngine(TokenLoss(model), opt=OPT, trainer=trainer, grad_accumulation=1, bf16=False, world_size=1, merger=merger)


def load_policy(folder: str):
    """The SFT model to train. k_proj's bias is frozen: its gradient is zero in exact arithmetic
    (a constant shift of every attention logit of a query), so Adam would turn rounding noise
    into full-size steps that differ between any two summation orders."""
    from qwen25_rl.models import load_model

    model = load_model(folder)
    model.model.layers[0].self_attn.k_proj.bias.requires_grad_(False)
    return model


def hf_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


# -- OnlineMerger and build_merger ------------------------------------------------------------


def test_task_vector_is_sft_minus_base_once_per_tied_tensor(folders):
    from qwen25_rl.models import load_model

    sft, base = load_model(folders["sft"]), load_model(folders["base"])
    merger = build_merger(sft, method="ondare", base_model=folders["base"], alpha=0.5, keep=0.5, seed=0)
    assert list(merger.tau) == [n for n, _ in sft.named_parameters()]
    assert "lm_head.weight" not in merger.tau  # tied to model.embed_tokens.weight
    b = dict(base.named_parameters())
    for name, p in sft.named_parameters():
        torch.testing.assert_close(merger.tau[name], p.detach() - b[name].detach())


def test_a_resumed_policy_takes_tau_from_the_sft_folder(folders):
    """A resumed run starts from trained weights: θ_SFT then comes from `sft_model`."""
    from qwen25_rl.models import load_model

    trained = load_model(folders["sft"])
    fake_step(trained)
    merger = build_merger(trained, method="ondare", base_model=folders["base"], alpha=0.5, keep=0.5, seed=0, sft_model=folders["sft"])
    sft, base = dict(load_model(folders["sft"]).named_parameters()), dict(load_model(folders["base"]).named_parameters())
    for name, t in merger.tau.items():
        torch.testing.assert_close(t, sft[name].detach() - base[name].detach())


def test_one_ddp_step_equals_adamw_then_a_manual_merge(folders):

    model = load_policy(folders["sft"])
    reference = copy.deepcopy(model)
    merger = build_merger(model, method="ondare", base_model=folders["base"], alpha=0.3, keep=0.5, seed=5)
    train(ddp_engine(model, merger), batches(1))

    from qwen25_rl.training.engines import make_optimizer

    wrapped = TokenLoss(reference)
    before = hf_state(reference)
    opt = make_optimizer(wrapped, OPT)
    ids = batches(1)[0]
    wrapped(ids, 1 / (GLOBAL_BATCH * (SEQ - 1))).backward()
    opt.step()
    for index, (name, p) in enumerate(reference.named_parameters()):
        if not p.requires_grad:  # frozen: neither stepped nor merged
            torch.testing.assert_close(dict(model.named_parameters())[name], before[name], rtol=0, atol=0)
            continue
        g = torch.Generator().manual_seed(merger.mask_seed(0, index))
        expected = before[name] + ondare_merge(p.detach() - before[name], merger.tau[name], alpha=0.3, keep=0.5, generator=g)
        torch.testing.assert_close(dict(model.named_parameters())[name], expected, rtol=0, atol=1e-6)
    assert merger.step == 1


def test_merger_applies_to_the_hf_model_or_a_wrapper_alike(folders):
    from qwen25_rl.models import load_model

    results = []
    for wrap in (False, True):
        model = load_model(folders["sft"])
        merger = build_merger(model, method="onties", base_model=folders["base"], alpha=0.5, keep=0.3, seed=0)
        module = TokenLoss(model) if wrap else model
        merger.snapshot(module)
        fake_step(model)
        merger.apply(module)
        results.append(hf_state(model))
    for name in results[0]:
        torch.testing.assert_close(results[0][name], results[1][name], rtol=0, atol=0)


def test_onties_merge_of_a_known_step(folders):
    """A fake optimizer step of random noise, merged by hand with onties_merge."""
    from qwen25_rl.models import load_model

    model = load_model(folders["sft"])
    merger = build_merger(model, method="onties", base_model=folders["base"], alpha=0.5, keep=0.3, seed=0)
    before = hf_state(model)
    merger.snapshot(model)
    fake_step(model)
    after = hf_state(model)
    merger.apply(model)
    for name, p in model.named_parameters():
        expected = before[name] + onties_merge(after[name] - before[name], merger.tau[name], alpha=0.5, keep=0.3)
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=0)


def fake_step(model) -> None:
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.001 * torch.randn(p.shape, generator=g))


def test_a_missing_base_folder_is_a_user_error_naming_it(folders, tmp_path):
    from qwen25_rl.models import load_model

    with pytest.raises(UserValueError, match="nowhere"):
        build_merger(load_model(folders["sft"]), method="ondare", base_model=str(tmp_path / "nowhere"), alpha=0.1, keep=0.5, seed=0)


def test_a_base_of_another_shape_is_a_user_error_naming_the_parameter(folders, tmp_path):
    from qwen25_rl.models import load_model, save_pretrained

    save_pretrained(tiny_lm(seed=0, intermediate_size=48), None, tmp_path / "other")
    with pytest.raises(UserValueError, match=r"model\.layers\.0\.mlp\.gate_proj\.weight.*other"):
        build_merger(load_model(folders["sft"]), method="ondare", base_model=str(tmp_path / "other"), alpha=0.1, keep=0.5, seed=0)


def test_bad_merge_settings_are_user_errors(folders):
    from qwen25_rl.algorithms.registry import UnknownNameError
    from qwen25_rl.models import load_model

    model = load_model(folders["sft"])
    with pytest.raises(UserValueError, match="keep"):
        build_merger(model, method="ondare", base_model=folders["base"], alpha=0.1, keep=0.0, seed=0)
    with pytest.raises(UnknownNameError, match="onties"):
        build_merger(model, method="ties", base_model=folders["base"], alpha=0.1, keep=0.5, seed=0)


def test_deepspeed_refuses_online_merging_under_zero3():
    from qwen25_rl.training.engines import DeepSpeedEngine

    merger = OnlineMerger({"w": torch.zeros(2)}, method="ondare", alpha=0.1, keep=0.5, seed=0)
    with pytest.raises(ValueError, match="ZeRO stage 0-2 or ddp"):
        DeepSpeedEngine(
            nn.Linear(2, 2),
            opt=OPT,
            trainer={"micro_batch_size": 1, "zero_stage": 3, "use_gpu": False},
            grad_accumulation=1,
            bf16=False,
            world_size=1,
            merger=merger,
        )


# -- checkpoint state -----------------------------------------------------------------------


def test_save_and_load_resume_the_same_masks(folders, tmp_path):
    """Two steps straight equal one step, save, a fresh engine + merger loading it, one step."""

    def new(model):
        merger = build_merger(model, method="ondare", base_model=folders["base"], alpha=0.3, keep=0.5, seed=3)
        return ddp_engine(model, merger), merger

    data = batches(2)
    straight = load_policy(folders["sft"])
    train(new(straight)[0], data)

    first = load_policy(folders["sft"])
    engine, merger = new(first)
    train(engine, data[:1])
    engine.save(tmp_path, rank=0)
    assert json.loads((tmp_path / MERGER_FILE).read_text()) == {
        "method": "ondare",
        "alpha": 0.3,
        "keep": 0.5,
        "seed": 3,
        "rescale": False,
        "step": 1,
    }
    resumed = load_policy(folders["sft"])
    resumed_engine, resumed_merger = new(resumed)  # tau from the SFT weights, before loading
    resumed.load_state_dict(first.state_dict())
    resumed_engine.load(tmp_path)
    assert resumed_merger.step == 1
    train(resumed_engine, data[1:])
    for name, p in straight.named_parameters():
        torch.testing.assert_close(dict(resumed.named_parameters())[name], p, rtol=0, atol=0)


def test_loading_without_merger_state_is_a_clear_error(folders, tmp_path):
    from qwen25_rl.models import load_model

    model = load_model(folders["sft"])
    ddp_engine(model).save(tmp_path, rank=0)  # trained without merging
    merger = build_merger(model, method="ondare", base_model=folders["base"], alpha=0.3, keep=0.5, seed=3)
    with pytest.raises(UserPathError, match="no online merging state"):
        ddp_engine(model, merger).load(tmp_path)


def test_loading_state_saved_with_other_settings_is_a_user_error():
    merger = OnlineMerger({"w": torch.zeros(2)}, method="ondare", alpha=0.1, keep=0.5, seed=0)
    state = merger.state_dict() | {"keep": 0.2, "step": 4}
    with pytest.raises(UserValueError, match="keep 0.2 -> 0.5"):
        merger.load_state_dict(state)


# -- DeepSpeed ZeRO-2, two ranks ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MERGE = {"method": "ondare", "alpha": 0.3, "keep": 0.5}
IDENTITY = {"method": "ondare", "alpha": 0.0, "keep": 1.0}
STEPS = 3
BF16_LR = 1e-5  # Adam moves each weight about this much per step: far below a bf16 step


def _rank_main(rank: int, world: int, port: int, folders: dict, out: str) -> None:
    """One rank: every configuration the tests below compare, each from the same SFT weights."""
    os.environ.update(
        DS_ACCELERATOR="cpu", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world)
    )
    torch.set_num_threads(1)
    import torch.distributed as dist

    from qwen25_rl.training.engines import DeepSpeedEngine, _master_weights

    dist.init_process_group("gloo", rank=rank, world_size=world)
    data = batches(STEPS)

    def run(strategy: str, zero_stage: int, bf16: bool, lr: float, merger_args: dict | None):
        model = load_policy(folders["sft"])
        merger = build_merger(model, base_model=folders["base"], seed=11, **merger_args) if merger_args else None
        trainer = {"micro_batch_size": GLOBAL_BATCH // world, "zero_stage": zero_stage, "use_gpu": False}
        cls = DeepSpeedEngine if strategy == "deepspeed" else DDPEngine
        engine = cls(
            TokenLoss(model), opt=OPT | {"lr": lr}, trainer=trainer, grad_accumulation=1, bf16=bf16, world_size=world, merger=merger
        )
        train(engine, data, world, rank, lr)
        read = _master_weights(engine.engine)[0] if strategy == "deepspeed" else (lambda p: p.detach())
        masters = {n: read(p).float().clone() for n, p in model.named_parameters() if p.requires_grad}
        return {"params": hf_state(model), "masters": masters}

    results = {
        "zero2": run("deepspeed", 2, False, OPT["lr"], MERGE),
        "zero0": run("deepspeed", 0, False, OPT["lr"], MERGE),
        "ddp": run("ddp", 0, False, OPT["lr"], MERGE),
    }
    for stage in (2, 0):
        results[f"zero{stage}_bf16_identity"] = run("deepspeed", stage, True, BF16_LR, IDENTITY)
        results[f"zero{stage}_bf16_plain"] = run("deepspeed", stage, True, BF16_LR, None)
    torch.save(results, f"{out}/rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(folders, tmp_path_factory):
    """Each configuration trained on two ranks (spawned, gloo), per rank."""
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("two_ranks")
    old = os.environ.get("DS_ACCELERATOR")
    os.environ["DS_ACCELERATOR"] = "cpu"
    try:
        mp.spawn(_rank_main, args=(2, free_port(), folders, str(out)), nprocs=2, join=True)
    finally:
        if old is None:
            os.environ.pop("DS_ACCELERATOR")
        else:
            os.environ["DS_ACCELERATOR"] = old
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.fixture(scope="module")
def one_process(folders):
    """The reference: one process, plain torch AdamW (DDPEngine), the same merger settings."""
    model = load_policy(folders["sft"])
    merger = build_merger(model, base_model=folders["base"], seed=11, **MERGE)
    train(ddp_engine(model, merger), batches(STEPS))
    return hf_state(model)


def assert_equal_weights(got: dict, expected: dict, atol: float) -> None:
    for name, value in got.items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=atol, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("config", ["zero2", "zero0", "ddp"])
def test_two_ranks_train_as_one_process_with_merging(two_ranks, one_process, config):
    """Same masks on every rank, same merged weights as one process, over several steps."""
    for rank in two_ranks:
        assert_equal_weights(rank[config]["params"], one_process, atol=1e-6)


@pytest.mark.parametrize("config", ["zero2", "zero0"])
def test_deepspeed_master_weights_hold_the_merged_values(two_ranks, one_process, config):
    """The optimizer's own weights are merged too; otherwise its next step reverts the merge."""
    for rank in two_ranks:
        assert_equal_weights(rank[config]["masters"], one_process, atol=1e-6)


@pytest.mark.parametrize("stage", [2, 0])
def test_bf16_merge_works_on_the_fp32_master_not_the_bf16_weights(two_ranks, folders, stage):
    """An identity merge (alpha 0, keep 1) must leave the fp32 master where plain training
    puts it; merging the bf16 module weights would round away the sub-bf16-step updates."""
    plain = two_ranks[0][f"zero{stage}_bf16_plain"]["masters"]
    for rank in two_ranks:
        assert_equal_weights(rank[f"zero{stage}_bf16_identity"]["masters"], plain, atol=1e-7)
    initial = hf_state(load_policy(folders["sft"]))
    moved = max((plain[n] - initial[n].bfloat16().float()).abs().max().item() for n in plain)
    assert BF16_LR < moved < 10 * BF16_LR  # plain bf16 training did move the master ...
    assert any((plain[n] - plain[n].bfloat16().float()).abs().max() > 0 for n in plain)  # ... off the bf16 grid
