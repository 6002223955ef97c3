"""An example custom reward in veRL's call style (referenced by rewards_example.yaml).

It rewards a short final line: 1.0 when the response's last non-empty line has at most
`max_words` words (default 30), falling linearly to 0.0 at three times that. `extra_info` is the
sample's extra columns; a `max_words` column there overrides the default.
"""


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    max_words = int((extra_info or {}).get("max_words", 30))
    lines = [line for line in solution_str.strip().splitlines() if line.strip()]
    if not lines:
        return 0.0
    words = len(lines[-1].split())
    if words <= max_words:
        return 1.0
    return max(0.0, 1.0 - (words - max_words) / (2 * max_words))
