"""Training mechanics shared by every stage that updates weights: the DeepSpeed / DDP engines
(`engines`) and the learning-rate schedule (`schedule`). Pretraining/SFT workers (Ray Train)
and the RL policy workers (Ray actors) both build on these, so they live here rather than in
either stage's package."""
