"""Pretraining and SFT on Ray Train (the first two stages of the Qwen2.5 recipe).

corpus.py      reading JSONL / Parquet / text documents and chat rows, with errors naming the row
packing.py     fixed-length rows: documents joined by EOS, samples packed whole; positions
               restart per document so packed documents do not attend to each other
data_order.py  mixture shares per source and the fixed, resumable order of rows per step
sft_data.py    assistant-only labels from the chat template's {% generation %} markers
prepare.py     tokenisation in Ray tasks, packed arrays in the run folder, memory-mapped reads
worker.py      the Ray Train worker loop (resume, steps, metrics, checkpoints, RoPE phases)
progress.py    each worker's current step in the run folder (named when a worker dies) and the worker-failure test seam
callbacks.py   controller-side metrics.jsonl / TensorBoard / Ray gauges / a size check of each assembled checkpoint against its manifest
reference.py   the same optimizer steps in one process, no Ray (the distributed tests' oracle)
driver.py      `run_pretrain` and `run_sft`: the stage recipes
config.py      the `pretrain` and `sft` stage configs
flops.py       FLOPs per token and MFU

The lr schedule and the DeepSpeed / DDP engines, which GRPO shares, live in `qwen25_rl/training/`.
"""
