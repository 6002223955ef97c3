"""Data for the stages: synthetic task generators (arithmetic word problems in GSM8K format,
small Python function tasks in MBPP format), their train / held-out split by problem, and
the synthetic pretraining / SFT files built from them."""

from qwen25_rl.data.arithmetic import ArithmeticProblem, Difficulty, generate_problems, parse_final_answer
from qwen25_rl.data.code_tasks import CodeTask, generate_tasks
from qwen25_rl.data.splits import problem_id, split_of
from qwen25_rl.data.synthetic import SyntheticSpec, write_synthetic_dataset

__all__ = [
    "ArithmeticProblem",
    "CodeTask",
    "Difficulty",
    "SyntheticSpec",
    "generate_problems",
    "generate_tasks",
    "parse_final_answer",
    "problem_id",
    "split_of",
    "write_synthetic_dataset",
]
