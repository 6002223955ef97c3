"""What checkpoint manifests cost (qwen25_rl.checkpointing): a checkpoint of the ~20M-parameter
model (`small-20m`, float32) laid out as a policy worker writes it -- HF model (safetensors),
Adam state after one step, RNG -- then the manifest written at save (sha256 of every file),
and the verification a resume runs: sizes only, and sizes + sha256 with the files in the page
cache (just written) and evicted from it (posix_fadvise DONTNEED, per file: nothing else on
the machine is touched). Compared with writing and loading the same checkpoint.

    .venv/bin/python bench/checkpoint_verify.py [--preset small-20m] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path


def _evict(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _best(fn, repeats: int, before=None) -> float:
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small-20m")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch
    from safetensors.torch import load_file

    from qwen25_rl import checkpointing as ck
    from qwen25_rl.models import build_model

    torch.set_num_threads(2)
    model = build_model(args.preset, vocab_size=4096)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model(input_ids=torch.randint(0, 4096, (1, 16)), labels=torch.randint(0, 4096, (1, 16))).loss.backward()
    opt.step()

    root = Path(tempfile.mkdtemp(prefix="ckpt-verify-"))
    try:
        dest = root / "checkpoints" / "step_1"

        def save() -> None:
            with ck.staging(dest, manifest=False) as tmp:
                model.save_pretrained(tmp / "policy" / "model", safe_serialization=True)
                torch.save(opt.state_dict(), tmp / "policy" / "optimizer.pt")
                ck.save_rng_state(tmp / "policy" / "rng_rank0.pt")

        t_save = _best(save, args.repeats)
        size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
        t_manifest = _best(lambda: ck.write_manifest(dest), args.repeats)
        assert ck.verify(dest) == []
        t_sizes = _best(lambda: ck.verify(dest, hashes=False), args.repeats)
        t_warm = _best(lambda: ck.verify(dest), args.repeats)
        t_cold = _best(lambda: ck.verify(dest), args.repeats, before=lambda: _evict(dest))

        def load() -> None:
            load_file(str(dest / "policy" / "model" / "model.safetensors"))
            torch.load(dest / "policy" / "optimizer.pt", weights_only=True)

        t_load_warm = _best(load, args.repeats)
        t_load_cold = _best(load, args.repeats, before=lambda: _evict(dest))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    mib = size / 2**20
    print(
        f"{args.preset}: {params / 1e6:.1f}M parameters, checkpoint {mib:.0f} MiB, {ck.HASH_THREADS} hashing threads, best of {args.repeats}"
    )
    print(f"  save (HF model + optimizer + RNG, fsync, rename) {t_save:6.2f} s")
    print(f"  manifest at save (sha256 of every file)        {t_manifest:6.2f} s  ({mib / t_manifest:.0f} MiB/s)")
    print(f"  verify, sizes only                             {t_sizes * 1000:6.1f} ms")
    print(f"  verify, sizes + sha256, page cache warm        {t_warm:6.2f} s  ({mib / t_warm:.0f} MiB/s)")
    print(f"  verify, sizes + sha256, page cache cold        {t_cold:6.2f} s  ({mib / t_cold:.0f} MiB/s)")
    print(f"  load (safetensors + torch.load), warm / cold   {t_load_warm:6.2f} s / {t_load_cold:.2f} s")


if __name__ == "__main__":
    main()
