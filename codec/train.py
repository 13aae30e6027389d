"""Training loop for the variable-rate model: R + λ(q)·D with q drawn per image.

Plain PyTorch so that a Ray Train job can call :func:`train_step` and the data
helpers from its workers. Checkpoints are written atomically and resumed from;
runs on CUDA when there is a GPU (crops are cut on the CPU one batch ahead).

    python -m codec.train --data ../shared/data/train-natural --out runs/default
    python -m codec.train --data ... --out runs/v2 --init default@1 --crop 256 --batch-size 16 --max-minutes 24
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, field_validator
from tqdm import tqdm

from .model import HyperpriorCodec, ModelConfig

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".ppm"}
SNAPSHOT_NAME = "weights_snapshot.pt"  # weights-only copy of the checkpoint (small enough to ship around)


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: list[Path]
    out: Path
    model: ModelConfig = ModelConfig()
    steps: int = 20000
    batch_size: int = 8
    crop: int = 128
    lr: float = 3e-4
    lr_decay_at: tuple[float, ...] = (0.7, 0.9)  # fractions of ``steps``; ×0.3 at each
    max_minutes: float | None = None
    validation_fraction: float = 0.05
    eval_every: int = 1000
    checkpoint_every: int = 250
    threads: int | None = None
    seed: int = 0
    channels_last: bool = True
    device: str = "auto"  # "auto": CUDA when available
    init: str | None = None  # start from a registered model (e.g. "default@1") instead of a PCA block transform

    @field_validator("data")
    @classmethod
    def _dirs_exist(cls, v: list[Path]) -> list[Path]:
        missing = [str(p) for p in v if not p.exists()]
        if missing:
            raise ValueError(f"training data not found: {', '.join(missing)}")
        return v


def list_images(dirs: list[Path]) -> list[Path]:
    files = [p for d in dirs for p in sorted(Path(d).rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    if any("kodak" in str(p).lower() for p in files):
        raise ValueError("Kodak is the evaluation set: never train on it")
    return files


def split_validation(files: list[Path], fraction: float) -> tuple[list[Path], list[Path]]:
    """Deterministic split by a hash of the file name (stable as folders grow)."""
    def is_val(p: Path) -> bool:
        return int(hashlib.sha1(p.name.encode()).hexdigest(), 16) % 1000 < fraction * 1000

    return [p for p in files if not is_val(p)], [p for p in files if is_val(p)]


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


class CropSampler:
    """Random crops with flips from images held in memory as uint8."""

    def __init__(self, images: list[np.ndarray], crop: int, seed: int):
        self.images = [im for im in images if min(im.shape[:2]) >= crop]
        if not self.images:
            raise ValueError(f"no training image is at least {crop}×{crop}")
        self.crop = crop
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int) -> torch.Tensor:
        out = np.empty((n, self.crop, self.crop, 3), dtype=np.uint8)
        for i in range(n):
            im = self.images[self.rng.integers(len(self.images))]
            y = self.rng.integers(im.shape[0] - self.crop + 1)
            x = self.rng.integers(im.shape[1] - self.crop + 1)
            c = im[y : y + self.crop, x : x + self.crop]
            if self.rng.random() < 0.5:
                c = c[:, ::-1]
            if self.rng.random() < 0.5:
                c = c[::-1]
            out[i] = c
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)


def sample_blocks(sampler: CropSampler, crops: int = 128) -> torch.Tensor:
    """16×16 blocks cut from random training crops: (N, 3, 16, 16)."""
    x = sampler.batch(crops)
    blocks = x.unfold(2, 16, 16).unfold(3, 16, 16)  # (B, 3, h, w, 16, 16)
    return blocks.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, 16, 16)


def rd_loss(model: HyperpriorCodec, x: torch.Tensor, q: torch.Tensor):
    """Rate–distortion loss; returns (loss, bpp, mse) with per-image λ(q)."""
    out = model(x, q)
    mse = (out.x_hat - x).pow(2).flatten(1).mean(1)
    bpp = out.bpp()
    loss = (model.lmbda(q) * 255.0**2 * mse + bpp).mean()
    return loss, bpp, mse


def train_step(model, optimizer, x: torch.Tensor, sync: bool = True) -> dict:
    """One optimiser step on a batch; ``sync=False`` returns 0-d tensors (no GPU→host wait per step)."""
    q = torch.rand(x.shape[0], device=x.device)
    loss, bpp, mse = rd_loss(model, x, q)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    psnr = 10 * torch.log10(1.0 / mse.detach().clamp_min(1e-10))
    stats = {"loss": loss.detach(), "bpp": bpp.detach().mean(), "psnr": psnr.mean()}
    return {k: float(v) for k, v in stats.items()} if sync else stats


@torch.no_grad()
def evaluate(model: HyperpriorCodec, images: list[np.ndarray], qualities=(0.0, 0.5, 1.0)) -> list[dict]:
    """Estimated bpp/PSNR per quality on held-out images (center crops, multiple of 64)."""
    model.eval()
    rows = []
    device = next(model.parameters()).device
    for q in qualities:
        bpps, psnrs = [], []
        for im in images:
            h, w = (min(s, 512) // 64 * 64 for s in im.shape[:2])
            x = torch.from_numpy(im[:h, :w].copy()).permute(2, 0, 1)[None].to(device).float() / 255
            out = model(x, torch.tensor([q], device=device))
            mse = (out.x_hat.clamp(0, 1) - x).pow(2).mean()
            bpps.append(float(out.bpp()[0]))
            psnrs.append(float(10 * torch.log10(1 / mse)))
        rows.append({"q": q, "bpp": float(np.mean(bpps)), "psnr": float(np.mean(psnrs))})
    model.train()
    return rows


def save_checkpoint(path: Path, state: dict) -> None:
    """Write a checkpoint atomically. ``state`` must hold only tensors, dicts, lists, tuples,
    strings, numbers, booleans and None (configs as plain dicts), so that it loads with
    :func:`load_checkpoint`."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded safely (or at all)."""


def load_checkpoint(path, map_location="cpu") -> dict:
    """A checkpoint's state, loaded with ``weights_only=True``: a file that would run code when
    unpickled (anyone who can write the run folder could plant one) is refused, not executed."""
    import pickle

    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"refusing to load checkpoint {path}: it holds more than tensors and plain data "
                              f"(weights only unpickling failed: {str(exc).splitlines()[0]})") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a state dict")
    return state


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def initial_model(cfg: TrainConfig, sampler: CropSampler) -> HyperpriorCodec:
    """A registered model's weights (fine-tuning, continuing) or a fresh model with a PCA block transform."""
    if cfg.init:
        from .registry import load_model

        loaded = load_model(cfg.init).model
        model = HyperpriorCodec(loaded.config)
        model.load_state_dict(loaded.state_dict())
        return model
    model = HyperpriorCodec(cfg.model)
    model.init_block_transform(sample_blocks(sampler))
    return model


def train(cfg: TrainConfig) -> HyperpriorCodec:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    cfg.out.mkdir(parents=True, exist_ok=True)
    train_files, val_files = split_validation(list_images(cfg.data), cfg.validation_fraction)
    print(f"training on {len(train_files)} images, validating on {len(val_files)}")
    sampler = CropSampler([load_rgb(p) for p in train_files], cfg.crop, cfg.seed)
    val_images = [load_rgb(p) for p in val_files]

    model = initial_model(cfg, sampler).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    print(f"model {model.config.model_dump()} on {device}" + (f", starting from {cfg.init}" if cfg.init else ""))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    ckpt_path = cfg.out / "checkpoint.pt"
    step, log = 0, []
    if ckpt_path.exists():
        state = load_checkpoint(ckpt_path, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, log = state["step"], state["log"]
        sampler.rng = np.random.default_rng(cfg.seed + step)
        print(f"resumed from step {step}")
    model.train()
    start = time.time()

    def lr_at(s: int) -> float:
        progress = s / cfg.steps
        if cfg.max_minutes:  # a time-limited run decays on schedule too
            progress = max(progress, (time.time() - start) / (cfg.max_minutes * 60))
        return cfg.lr * 0.3 ** sum(progress >= f for f in cfg.lr_decay_at)

    def checkpoint():
        common = {"step": step, "log": log, "config": cfg.model_dump(mode="json")}
        weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        save_checkpoint(ckpt_path, {"model": weights, "optimizer": optimizer.state_dict(), **common})
        save_checkpoint(cfg.out / SNAPSHOT_NAME, {"model": weights, **common})

    def next_batch() -> torch.Tensor:
        x = sampler.batch(cfg.batch_size)
        return x.pin_memory() if device.type == "cuda" else x

    prefetch = ThreadPoolExecutor(max_workers=1)
    pending = prefetch.submit(next_batch)
    running, last_log = None, (step, time.time())
    bar = tqdm(total=cfg.steps, initial=step, desc="train", mininterval=5)
    while step < cfg.steps:
        if cfg.max_minutes and time.time() - start > cfg.max_minutes * 60:
            print(f"time budget of {cfg.max_minutes} min reached at step {step}")
            break
        for g in optimizer.param_groups:
            g["lr"] = lr_at(step)
        x, pending = pending.result().to(device, non_blocking=True), prefetch.submit(next_batch)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        stats = train_step(model, optimizer, x, sync=False)
        running = stats if running is None else {k: 0.98 * running[k] + 0.02 * v for k, v in stats.items()}
        step += 1
        if step % 25 == 0:  # reading the numbers waits for the GPU: not every step
            bar.update(step - bar.n)
            bar.set_postfix({k: f"{float(v):.3f}" for k, v in running.items()})
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            now, numbers = time.time(), {k: float(v) for k, v in running.items()}
            rate, last_log = (step - last_log[0]) / max(now - last_log[1], 1e-9), (step, now)
            log.append({"step": step, "time": now, **numbers, "steps_per_s": rate})
            tqdm.write(f"step {step}  " + "  ".join(f"{k} {v:.3f}" for k, v in numbers.items()) + f"  {rate:.2f} steps/s")
        if step % cfg.eval_every == 0 and val_images:
            ev = evaluate(model, val_images)
            log.append({"step": step, "eval": ev})
            tqdm.write(f"step {step} eval " + "  ".join(f"q={r['q']:.1f}: {r['bpp']:.3f} bpp {r['psnr']:.2f} dB" for r in ev))
        if step % cfg.checkpoint_every == 0:
            checkpoint()
    bar.close()
    prefetch.shutdown(cancel_futures=True)
    checkpoint()
    (cfg.out / "train_log.json").write_text(json.dumps(log, indent=1))
    return model


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--max-minutes", type=float)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--eval-every", type=int, default=1000)
    ap.add_argument("--checkpoint-every", type=int, default=250)
    ap.add_argument("--lr-decay-at", type=float, nargs="*", default=[0.7, 0.9])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--init", help="registered model to start from, e.g. default@1")
    ap.add_argument("--channels", type=int, help="transform width N of a fresh model")
    a = ap.parse_args(argv)
    model = ModelConfig(**({"channels": a.channels} if a.channels else {}))
    train(TrainConfig(data=a.data, out=a.out, steps=a.steps, batch_size=a.batch_size, crop=a.crop, lr=a.lr,
                      max_minutes=a.max_minutes, threads=a.threads, eval_every=a.eval_every,
                      checkpoint_every=a.checkpoint_every, lr_decay_at=tuple(a.lr_decay_at), device=a.device,
                      init=a.init, model=model))


if __name__ == "__main__":
    main()
