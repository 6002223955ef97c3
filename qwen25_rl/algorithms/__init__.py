"""The RL algorithm core: pure functions of tensors (no Ray, no I/O, no config objects).

log-probs / entropy (chunked, from logits or from hidden states), advantage estimators,
policy / KL / DPO / reward-model / language-model losses. Extension points are registries:
`ADVANTAGE_ESTIMATORS`, `POLICY_LOSSES`, `KL_ESTIMATORS`, `DPO_LOSSES`, `REWARD_COMBINERS`; adding one is one
function decorated with `register_advantage_estimator("name")` (etc.).
"""

from qwen25_rl.algorithms.advantages import (
    ADVANTAGE_ESTIMATORS,
    GroupStats,
    compute_advantages,
    dr_grpo_advantages,
    get_advantage_estimator,
    group_index,
    grpo_advantages,
    register_advantage_estimator,
    reinforce_pp_advantages,
    reinforce_pp_baseline_advantages,
    rloo_advantages,
)
from qwen25_rl.algorithms.aggregation import LOSS_AGG_MODES, aggregate_token_loss, token_and_sequence_counts
from qwen25_rl.algorithms.dpo import DPO_LOSSES, dpo_loss, get_dpo_loss, register_dpo_loss
from qwen25_rl.algorithms.fused import (
    FusedLossOutput,
    FusedPolicyLossOutput,
    fused_loss_from_hidden,
    policy_loss_from_hidden,
)
from qwen25_rl.algorithms.kl import (
    KL_ESTIMATORS,
    get_kl_estimator,
    kl_divergence,
    kl_penalty_token_rewards,
    register_kl_estimator,
)
from qwen25_rl.algorithms.logprobs import (
    entropy_from_logits,
    token_log_probs,
    token_log_probs_and_entropy,
    token_log_probs_and_entropy_from_hidden,
    token_log_probs_from_hidden,
)
from qwen25_rl.algorithms.losses import LossOutput, bradley_terry_loss, lm_loss, lm_loss_from_hidden
from qwen25_rl.algorithms.policy_loss import (
    POLICY_LOSSES,
    get_policy_loss,
    masked_mean,
    policy_loss,
    ppo_clip_loss,
    register_policy_loss,
    truncated_importance_weights,
)
from qwen25_rl.algorithms.registry import Registry, UnknownNameError
from qwen25_rl.algorithms.reward_combination import REWARD_COMBINERS, combine_rewards, register_reward_combiner
from qwen25_rl.algorithms.reward_model import DEFAULT_CRITERIA, multi_criterion_bt_loss, pairwise_accuracy, rating_loss

__all__ = [
    "REWARD_COMBINERS",
    "combine_rewards",
    "register_reward_combiner",
    "ADVANTAGE_ESTIMATORS",
    "DEFAULT_CRITERIA",
    "DPO_LOSSES",
    "KL_ESTIMATORS",
    "LOSS_AGG_MODES",
    "POLICY_LOSSES",
    "FusedLossOutput",
    "FusedPolicyLossOutput",
    "GroupStats",
    "LossOutput",
    "Registry",
    "UnknownNameError",
    "aggregate_token_loss",
    "bradley_terry_loss",
    "compute_advantages",
    "dpo_loss",
    "dr_grpo_advantages",
    "entropy_from_logits",
    "fused_loss_from_hidden",
    "get_advantage_estimator",
    "get_dpo_loss",
    "get_kl_estimator",
    "get_policy_loss",
    "group_index",
    "grpo_advantages",
    "kl_divergence",
    "kl_penalty_token_rewards",
    "lm_loss",
    "lm_loss_from_hidden",
    "masked_mean",
    "multi_criterion_bt_loss",
    "pairwise_accuracy",
    "policy_loss",
    "policy_loss_from_hidden",
    "ppo_clip_loss",
    "rating_loss",
    "register_advantage_estimator",
    "register_dpo_loss",
    "register_kl_estimator",
    "register_policy_loss",
    "reinforce_pp_advantages",
    "reinforce_pp_baseline_advantages",
    "rloo_advantages",
    "token_and_sequence_counts",
    "token_log_probs",
    "token_log_probs_and_entropy",
    "token_log_probs_and_entropy_from_hidden",
    "token_log_probs_from_hidden",
    "truncated_importance_weights",
]
