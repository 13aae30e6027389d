"""Training loop for the variable-rate model: R + λ(q)·D with q drawn per image.

Plain PyTorch so that a Ray Train job can call :func:`train_step` (and the crop sampler in
:mod:`codec.training.data`) from its workers. Checkpoints are written atomically, loaded
weights-only and resumed from; runs on CUDA when there is a GPU (crops are cut on the CPU
one batch ahead).

    python -m codec.train --data ../shared/data/train-natural --out runs/default
    python -m codec.train --data ... --out runs/v2 --init default@1 --crop 256 --batch-size 16 --max-minutes 24
    python -m codec.train --dataset satellite --data ../shared/data/satellite/train --out runs/sat --init default@2 --crop 256

``--dataset satellite`` trains on normalised band triplets of 16-bit rasters
(:mod:`codec.training.satellite`: its held-out scenes are never read, and no validation
images are drawn from the rest).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, field_validator
from tqdm import tqdm

from codec.families.hyperprior.model import HyperpriorCodec, ModelConfig
from codec.registry import load_model
from codec.training import satellite
from codec.training.data import crop_batch, list_images, load_rgb, split_validation, to_tensor

CHECKPOINT_NAME = "checkpoint.pt"  # model + optimizer + step + log: what a run resumes from
SNAPSHOT_NAME = "weights_snapshot.pt"  # weights-only copy of the checkpoint (small enough to ship around)
LOG_NAME = "train_log.json"
PCA_CROPS = 128  # crops whose 16×16 blocks set a fresh model's PCA block transform


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
    dataset: Literal["rgb", "satellite"] = "rgb"  # satellite: normalised band triplets of 16-bit rasters
    shift_anchors: int = 0  # with init: move the λ range up by this many gain-anchor steps (higher qualities)

    @field_validator("data")
    @classmethod
    def _dirs_exist(cls, v: list[Path]) -> list[Path]:
        missing = [str(p) for p in v if not p.exists()]
        if missing:
            raise ValueError(f"training data not found: {', '.join(missing)}")
        return v


# ---- one step, the schedule, validation ---------------------------------------------------------


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


def step_decay(lr: float, progress: float, decay_at=(0.7, 0.9)) -> float:
    """The learning rate at ``progress`` (0..1 of the run): ×0.3 at each fraction in ``decay_at``."""
    return lr * 0.3 ** sum(progress >= f for f in decay_at)


def sample_blocks(crops: torch.Tensor) -> torch.Tensor:
    """16×16 blocks cut from a batch of crops (N, 3, H, W) → (M, 3, 16, 16): the PCA start's samples."""
    blocks = crops.unfold(2, 16, 16).unfold(3, 16, 16)  # (B, 3, h, w, 16, 16)
    return blocks.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, 16, 16)


@torch.no_grad()
def validate(model: HyperpriorCodec, images: list[np.ndarray], qualities=(0.0, 0.5, 1.0)) -> list[dict]:
    """Estimated bpp/PSNR per quality on held-out images (center crops, multiple of 64): cheap
    progress numbers during training (real streams: :mod:`codec.training.evaluate`)."""
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


# ---- checkpoints ---------------------------------------------------------------------------------


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
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"refusing to load checkpoint {path}: it holds more than tensors and plain data "
                              f"(weights only unpickling failed: {str(exc).splitlines()[0]})") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a state dict")
    return state


# ---- a run: set-up, resume, the loop -------------------------------------------------------------


@dataclass
class Run:
    """Everything one training run carries from step to step (what a checkpoint saves and restores)."""

    cfg: TrainConfig
    device: torch.device
    model: HyperpriorCodec
    optimizer: torch.optim.Optimizer
    images: list  # training images (uint8 arrays, or satellite TripletImages) at least ``cfg.crop`` on each side
    val_images: list[np.ndarray]
    rng: np.random.Generator  # the crop sampler's
    step: int = 0
    log: list[dict] = field(default_factory=list)
    start: float = field(default_factory=time.time)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_data(cfg: TrainConfig) -> tuple[list, list[np.ndarray]]:
    """(training images that fit a crop, validation images), split by file-name hash; for the
    satellite dataset, the non-held-out band triplets and no validation images."""
    if cfg.dataset == "satellite":
        images = [t for d in cfg.data for t in satellite.training_triplets(d, cfg.crop)]
        print(f"training on {len(images)} band triplets of {len({t.source for t in images})} satellite rasters")
        return images, []
    train_files, val_files = split_validation(list_images(cfg.data), cfg.validation_fraction)
    print(f"training on {len(train_files)} images, validating on {len(val_files)}")
    images = [im for im in map(load_rgb, train_files) if min(im.shape[:2]) >= cfg.crop]
    if not images:
        raise ValueError(f"no training image is at least {cfg.crop}×{cfg.crop}")
    return images, [load_rgb(p) for p in val_files]


def cut_batch(cfg: TrainConfig, images: list, n: int, rng: np.random.Generator) -> torch.Tensor:
    """``n`` random training crops as a float tensor (N, 3, crop, crop) in [0, 1], per the dataset."""
    if cfg.dataset == "satellite":
        return satellite.to_tensor(satellite.crop_batch(images, n, cfg.crop, rng))
    return to_tensor(crop_batch(images, n, cfg.crop, rng))


def shift_rate_range(model: HyperpriorCodec, anchors: int) -> HyperpriorCodec:
    """A copy of ``model`` whose λ range (and so its quality range) sits ``anchors`` gain-anchor steps
    higher: λ_min and λ_max × (λ_max/λ_min)^(anchors/(A-1)); the kept anchors' gains are copied to
    their new positions and the new top ones extrapolated log-linearly, so every old quality above the
    shift is still reachable and fine-tuning starts from a working model. Only the training target and
    the gains change: the architecture (and so the codec) is the same."""
    c = model.config
    a = c.gain_anchors
    if not 0 < anchors < a - 1:
        raise ValueError(f"shift_anchors must be between 1 and {a - 2} for a model with {a} gain anchors, got {anchors}")
    factor = (c.lambda_max / c.lambda_min) ** (anchors / (a - 1))
    shifted = HyperpriorCodec(c.model_copy(update={"lambda_min": c.lambda_min * factor, "lambda_max": c.lambda_max * factor}))
    state = model.state_dict()
    for key in ("log_gain", "log_inv_gain"):
        g = state[key]
        step = g[-1] - g[-2]
        state[key] = torch.cat([g[anchors:]] + [g[-1:] + k * step for k in range(1, anchors + 1)])
    shifted.load_state_dict(state)
    return shifted


def init_config(cfg: dict) -> ModelConfig:
    """The model config a run with ``cfg`` (a TrainConfig as a dict) trains: its ``init`` model's, shifted
    by ``shift_anchors``, or ``cfg["model"]``. (Checkpoints written before the config was saved from
    the model itself hold the fresh-model default for ``init`` runs: read those through this.)"""
    if not cfg.get("init"):
        return ModelConfig(**cfg["model"])
    base = load_model(cfg["init"]).model
    return shift_rate_range(base, cfg["shift_anchors"]).config if cfg.get("shift_anchors") else base.config


def initial_model(cfg: TrainConfig, images: list, rng: np.random.Generator) -> HyperpriorCodec:
    """A registered model's weights (fine-tuning, continuing; its rate range optionally shifted up)
    or a fresh model with a PCA block transform."""
    if cfg.init:
        loaded = load_model(cfg.init).model
        model = HyperpriorCodec(loaded.config)
        model.load_state_dict(loaded.state_dict())
        return shift_rate_range(model, cfg.shift_anchors) if cfg.shift_anchors else model
    model = HyperpriorCodec(cfg.model)
    model.init_block_transform(sample_blocks(cut_batch(cfg, images, PCA_CROPS, rng)))
    return model


def start_run(cfg: TrainConfig) -> Run:
    """Seed, load the data, build the model and optimiser, and resume from the run folder's checkpoint."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    cfg.out.mkdir(parents=True, exist_ok=True)
    images, val_images = load_data(cfg)
    rng = np.random.default_rng(cfg.seed)
    model = initial_model(cfg, images, rng).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    print(f"model {model.config.model_dump()} on {device}" + (f", starting from {cfg.init}" if cfg.init else ""))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    run = Run(cfg, device, model, optimizer, images, val_images, rng)
    if (cfg.out / CHECKPOINT_NAME).exists():
        resume(run)
    run.model.train()
    run.start = time.time()
    return run


def resume(run: Run) -> None:
    """Restore weights, optimiser, step and log (weights-only load); the crop sampler restarts at seed + step."""
    state = load_checkpoint(run.cfg.out / CHECKPOINT_NAME, map_location=run.device)
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.step, run.log = state["step"], state["log"]
    run.rng = np.random.default_rng(run.cfg.seed + run.step)
    print(f"resumed from step {run.step}")


def save_run(run: Run) -> None:
    """The checkpoint (resumable) and its weights-only snapshot, both atomically."""
    config = run.cfg.model_dump(mode="json")
    config["model"] = run.model.config.model_dump()  # the model's own (an --init run's, shifted), not the fresh-model default
    common = {"step": run.step, "log": run.log, "config": config}
    weights = {k: v.detach().cpu() for k, v in run.model.state_dict().items()}
    save_checkpoint(run.cfg.out / CHECKPOINT_NAME, {"model": weights, "optimizer": run.optimizer.state_dict(), **common})
    save_checkpoint(run.cfg.out / SNAPSHOT_NAME, {"model": weights, **common})


def lr_at(run: Run, step: int) -> float:
    """Step decay on the share of steps done, or of the time budget when that is further along."""
    cfg, progress = run.cfg, step / run.cfg.steps
    if cfg.max_minutes:  # a time-limited run decays on schedule too
        progress = max(progress, (time.time() - run.start) / (cfg.max_minutes * 60))
    return step_decay(cfg.lr, progress, cfg.lr_decay_at)


def batches(run: Run) -> Iterator[torch.Tensor]:
    """Training batches on the device; the next one is cut on the CPU (a thread) while this one trains."""
    cfg = run.cfg

    def cut() -> torch.Tensor:
        x = cut_batch(cfg, run.images, cfg.batch_size, run.rng)
        return x.pin_memory() if run.device.type == "cuda" else x

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(cut)
        while True:
            x, pending = pending.result().to(run.device, non_blocking=True), pool.submit(cut)
            yield x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x


def train(cfg: TrainConfig) -> HyperpriorCodec:
    """Train (or resume) the run in ``cfg.out`` to ``cfg.steps`` or the time budget; returns the model."""
    run = start_run(cfg)
    feed = batches(run)
    bar = tqdm(total=cfg.steps, initial=run.step, desc="train", mininterval=5)
    try:
        train_loop(run, feed, bar)
    finally:
        bar.close()
        feed.close()
    save_run(run)
    (cfg.out / LOG_NAME).write_text(json.dumps(run.log, indent=1))
    return run.model


def train_loop(run: Run, feed: Iterator[torch.Tensor], bar: tqdm) -> None:
    """Steps until ``cfg.steps`` or the time budget: logs, validates and checkpoints on the way."""
    cfg = run.cfg
    running, last = None, (run.step, time.time())
    while run.step < cfg.steps:
        if cfg.max_minutes and time.time() - run.start > cfg.max_minutes * 60:
            print(f"time budget of {cfg.max_minutes} min reached at step {run.step}")
            break
        for g in run.optimizer.param_groups:
            g["lr"] = lr_at(run, run.step)
        stats = train_step(run.model, run.optimizer, next(feed), sync=False)
        running = stats if running is None else {k: 0.98 * running[k] + 0.02 * v for k, v in stats.items()}
        run.step += 1
        if run.step % 25 == 0:  # reading the numbers waits for the GPU: not every step
            bar.update(run.step - bar.n)
            bar.set_postfix({k: f"{float(v):.3f}" for k, v in running.items()})
        if run.step % cfg.checkpoint_every == 0 or run.step == cfg.steps:
            last = log_progress(run, running, last)
        if run.step % cfg.eval_every == 0 and run.val_images:
            log_validation(run)
        if run.step % cfg.checkpoint_every == 0:
            save_run(run)


def log_progress(run: Run, running: dict, last: tuple[int, float]) -> tuple[int, float]:
    """Append the running numbers and the speed since ``last`` (step, time) to the log; returns the new mark."""
    now, numbers = time.time(), {k: float(v) for k, v in running.items()}
    rate = (run.step - last[0]) / max(now - last[1], 1e-9)
    run.log.append({"step": run.step, "time": now, **numbers, "steps_per_s": rate})
    tqdm.write(f"step {run.step}  " + "  ".join(f"{k} {v:.3f}" for k, v in numbers.items()) + f"  {rate:.2f} steps/s")
    return run.step, now


def log_validation(run: Run) -> None:
    ev = validate(run.model, run.val_images)
    run.log.append({"step": run.step, "eval": ev})
    tqdm.write(f"step {run.step} eval " + "  ".join(f"q={r['q']:.1f}: {r['bpp']:.3f} bpp {r['psnr']:.2f} dB" for r in ev))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m codec.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
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
    ap.add_argument("--shift-anchors", type=int, default=0,
                    help="with --init: move the model's λ range up this many gain anchors (higher top quality)")
    ap.add_argument("--dataset", choices=("rgb", "satellite"), default="rgb",
                    help="satellite: 16-bit rasters as normalised band triplets (codec.training.satellite)")
    a = ap.parse_args(argv)
    model = ModelConfig(**({"channels": a.channels} if a.channels else {}))
    train(TrainConfig(data=a.data, out=a.out, steps=a.steps, batch_size=a.batch_size, crop=a.crop, lr=a.lr,
                      max_minutes=a.max_minutes, threads=a.threads, eval_every=a.eval_every,
                      checkpoint_every=a.checkpoint_every, lr_decay_at=tuple(a.lr_decay_at), device=a.device,
                      init=a.init, model=model, dataset=a.dataset,
                      shift_anchors=a.shift_anchors))


if __name__ == "__main__":
    main()
