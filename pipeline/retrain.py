"""Domain retraining with Ray Train: fine-tune the codec on a bucket of imagery, evaluate, register.

    listing (driver) ─▶ train keys / held-out keys (by file hash, or --holdout)
    ray.data.from_items(train keys) ─▶ map_batches(load_crops)         random crops + flips, uint8
    TorchTrainer(train_loop, num_workers, use_gpu)                     DDP; a checkpoint every N steps
        in the run's storage path; a killed worker restarts the group from the last checkpoint
    driver: finalise (coding tables, integer hyper-synthesis) ─▶ real-stream RD on held-out images,
        new vs base (BD-rate, per image) ─▶ ModelStore.register (weights, hash, config, data, metrics)
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from codec.training.data import random_crop

from .config import StorageOptions, TrainJobConfig
from .storage import filesystem, iter_objects, pyarrow_filesystem, split_url

FAULT_ENV = "TLIC_FAULT_KILL_TRAIN_WORKER"  # "STEP:/path/marker": the last worker dies once at STEP (tests)


def split_keys(keys: list[str], fraction: float) -> tuple[list[str], list[str]]:
    """(train, held out) by a hash of each file's name: stable as the bucket grows, never mixing a file."""
    from codec.training.data import split_validation

    train, held = split_validation([PurePosixPath(k) for k in keys], fraction)
    by_path = {PurePosixPath(k): k for k in keys}
    return [by_path[p] for p in train], [by_path[p] for p in held]


def read_rgb(key: str, storage: StorageOptions | None) -> np.ndarray:
    """An image from storage as uint8 RGB (alpha dropped, gray expanded)."""
    from codec.images.imageio import load_image

    fs, path = filesystem(key, storage)
    arr = load_image(fs.cat_file(path), key).pixels
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return np.ascontiguousarray(arr[..., :3])


def load_crops(batch: dict, storage: StorageOptions | None, crop: int, crops_per_image: int) -> dict:
    """Ray Data UDF: keys → random crops (with flips) of each image; images smaller than a crop are skipped."""
    rng = np.random.default_rng(int.from_bytes(os.urandom(8), "little"))
    crops = []
    for key in batch["key"]:
        try:
            im = read_rgb(str(key), storage)
        except Exception as exc:  # a bad training image is logged and skipped, not fatal
            print(f"load_crops: skipping {key}: {exc}", flush=True)
            continue
        if min(im.shape[:2]) < crop:
            continue
        crops += [random_crop(im, crop, rng) for _ in range(crops_per_image)]
    return {"crop": np.stack(crops) if crops else np.empty((0, crop, crop, 3), np.uint8)}


def _base_model(spec: str | None, registry: str, storage):
    from codec.families.hyperprior.model import HyperpriorCodec, ModelConfig

    from .model_store import model_resolver

    if spec is None:
        return HyperpriorCodec(ModelConfig()), None
    loaded = model_resolver(registry, storage).load(spec)
    model = HyperpriorCodec(loaded.model.config)
    model.load_state_dict(loaded.model.state_dict())
    return model, loaded.model_id


STATE_FILE = "state.pt"


def train_loop(config: dict) -> None:
    """One Ray Train worker: (re)start from the last checkpoint, train to ``steps``, checkpoint on the way."""
    import ray.train
    import ray.train.torch
    import torch

    from codec.training.train import train_step

    cfg: TrainJobConfig = config["cfg"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    torch.manual_seed(1234 + rank)
    model, state = _start(cfg, rank)
    step, log = (state["step"], state["log"]) if state else (0, [])
    batches = _endless(ray.train.get_dataset_shard("train"), cfg.batch_size)
    if cfg.base is None and state is None:  # from scratch: the block transform starts as PCA of real blocks
        from codec.training.train import sample_blocks

        model.init_block_transform(sample_blocks(next(batches)))
    model = ray.train.torch.prepare_model(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    if state:
        optimizer.load_state_dict(state["optimizer"])
    fault_step, fault_marker = _fault(config.get("fault"))
    running, t0, start_step = None, time.time(), step
    while step < cfg.steps:
        for g in optimizer.param_groups:
            g["lr"] = cfg.lr * 0.3 ** sum(step / cfg.steps >= f for f in cfg.lr_decay_at)
        x = next(batches).to(ray.train.torch.get_device())
        stats = train_step(_Unwrapped(model), optimizer, x)
        running = stats if running is None else {k: 0.9 * running[k] + 0.1 * v for k, v in stats.items()}
        step += 1
        if fault_step == step and rank == world - 1 and not Path(fault_marker).exists():
            _die(step, fault_marker)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            log.append({"step": step, "time": time.time(), **running})
            metrics = {"step": step, "steps_per_s": (step - start_step) / max(time.time() - t0, 1e-9), **running}
            _checkpoint(cfg, rank, metrics, model, optimizer, log)


def _start(cfg: TrainJobConfig, rank: int):
    """(the worker's model, the last checkpoint's state or None on a fresh start)."""
    import ray.train

    model, _ = _base_model(cfg.base, cfg.registry, cfg.storage)
    checkpoint = ray.train.get_checkpoint()
    if not checkpoint:
        return model, None
    with checkpoint.as_directory() as d:
        state = load_train_state(Path(d) / STATE_FILE)
    model.load_state_dict(state["model"])
    state["log"].append({"event": "resumed", "step": state["step"], "time": time.time()})
    print(f"worker {rank}: resumed from step {state['step']}", flush=True)
    return model, state


def _checkpoint(cfg: TrainJobConfig, rank: int, metrics: dict, model, optimizer, log: list[dict]) -> None:
    """Report ``metrics`` to Ray Train with a checkpoint (written by rank 0), and log progress."""
    import ray.train

    step = metrics["step"]
    if rank == 0:  # progress, in the job's log
        print(f"step {step}/{cfg.steps}  loss {metrics['loss']:.3f}  bpp {metrics['bpp']:.3f}  "
              f"psnr {metrics['psnr']:.2f} dB  {metrics['steps_per_s']:.2f} steps/s", flush=True)
    with tempfile.TemporaryDirectory() as d:
        ckpt = None
        if rank == 0:
            save_train_state(Path(d) / STATE_FILE, model, optimizer, step, log)
            ckpt = ray.train.Checkpoint.from_directory(d)
        ray.train.report(metrics, checkpoint=ckpt)


def _die(step: int, marker: str) -> None:
    """The fault-tolerance test's worker death, once (``marker`` records that it happened)."""
    Path(marker).write_text(str(step))
    # a worker dies mid-run, after the controller has collected the last report (it polls workers
    # every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, 2 s): a death within that window would resume from
    # the checkpoint before, and the test would not know which one
    time.sleep(3 * float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", 2.0)))
    os._exit(1)


def save_train_state(path: Path, model, optimizer, step: int, log: list[dict]) -> None:
    """A Ray Train checkpoint's state: tensors, dicts, lists, strings and numbers only (the model
    config as a plain dict), so that :func:`load_train_state` can refuse anything else."""
    import torch

    raw = model.module if hasattr(model, "module") else model
    torch.save({"model": {k: v.detach().cpu() for k, v in raw.state_dict().items()},
                "optimizer": optimizer.state_dict(), "step": int(step), "log": _plain(log),
                "model_config": raw.config.model_dump(mode="json")}, path)


def load_train_state(path: Path) -> dict:
    """Load a checkpoint written by :func:`save_train_state` with ``weights_only=True``.

    Checkpoints live in the run's storage path (object storage): whoever can write there must
    not be able to run code on every worker and on the driver, so a file holding anything
    but plain data is refused (``codec.training.train.CheckpointError``), never unpickled.
    """
    from codec.training.train import CheckpointError, load_checkpoint

    state = load_checkpoint(path, map_location="cpu")
    missing = {"model", "optimizer", "step", "log", "model_config"} - set(state)
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(sorted(missing))}")
    return state


def _plain(x):
    """``x`` with numpy scalars turned into Python numbers (what weights-only loading accepts)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


class _Unwrapped:
    """``train_step`` calls ``model(x, q)`` and ``model.lmbda(q)``: route both through DDP's wrapper."""

    def __init__(self, ddp):
        self.ddp, self.raw = ddp, (ddp.module if hasattr(ddp, "module") else ddp)

    def __call__(self, *a):
        return self.ddp(*a)

    def __getattr__(self, name):
        return getattr(self.raw, name)


def _endless(shard, batch_size: int):
    """Batches of float crops in [0, 1], (N, 3, H, W), pass after pass over the shard."""
    import torch

    while True:
        got = False
        for b in shard.iter_torch_batches(batch_size=batch_size, drop_last=True, dtypes={"crop": torch.uint8}):
            got = True
            yield b["crop"].permute(0, 3, 1, 2).float().div_(255.0)
        if not got:
            raise RuntimeError("no training crops: are the images at least --crop pixels on each side?")


def _fault(spec: str | None) -> tuple[int | None, str | None]:
    if not spec:
        return None, None
    step, marker = spec.split(":", 1)
    return int(step), marker


@dataclass
class TrainOutcome:
    model_id: str
    steps: int
    resumed_at: list[int]
    train_images: int
    holdout_images: int
    bd_rate_vs_base: float | None
    table: str
    seconds: float


def _calibration(keys: list[str], storage, crop: int, n: int = 16) -> "torch.Tensor":  # noqa: F821
    import torch

    rng = np.random.default_rng(0)
    crops = []
    for key in keys[:n]:
        im = read_rgb(key, storage)
        size = min(crop, min(im.shape[:2]) // 64 * 64)
        if size < 64:
            continue
        c = random_crop(im, size, rng, flip=False)
        crops.append(torch.from_numpy(np.ascontiguousarray(c)).permute(2, 0, 1).float() / 255)
    size = min(c.shape[-1] for c in crops)
    return torch.stack([c[:, :size, :size] for c in crops])


def run_training(cfg: TrainJobConfig, progress: bool = True) -> TrainOutcome:
    """Train (or resume) ``cfg.run_name`` on Ray Train, finalise, evaluate against the base, register."""
    import hashlib

    from codec.registry import LoadedModel

    from .model_store import ModelStore, model_resolver

    t0 = time.time()
    train_keys, holdout = _split_data(cfg)
    state = _fit(cfg, train_keys, progress)
    model, blob = _finalised(cfg, state, train_keys)
    candidate = LoadedModel(model, f"{cfg.name}@candidate", hashlib.sha256(blob).digest())
    models = model_resolver(cfg.registry, cfg.storage)
    base_id = models.resolve(cfg.base or "default")
    eval_keys = holdout[: cfg.eval_images] if cfg.eval_images else holdout
    metrics, table = _evaluate(cfg, base_id, {"base": models.load(base_id), "new": candidate}, eval_keys)
    resumed = [e["step"] for e in state["log"] if e.get("event") == "resumed"]
    card = {"base": base_id if cfg.base else None, "config": model.config.model_dump(),
            "training": cfg.model_dump(mode="json", exclude={"storage"}) | {"steps_done": state["step"], "resumed_at": resumed,
                                                                              "run_storage": f"{cfg.storage_path.rstrip('/')}/{cfg.run_name}"},
            "data": {"train": cfg.data, "train_images": len(train_keys), "holdout": cfg.holdout or f"{cfg.holdout_fraction:.0%} of {cfg.data} by file hash",
                     "holdout_keys": holdout, "evaluated_keys": eval_keys},
            "metrics": metrics, "train_log": state["log"]}
    model_id = ModelStore(cfg.registry, cfg.storage).register(cfg.name, blob, **card)
    return TrainOutcome(model_id, state["step"], resumed, len(train_keys), len(holdout), metrics.get("bd_rate_vs_base_pct"),
                        table, time.time() - t0)


def _split_data(cfg: TrainJobConfig) -> tuple[list[str], list[str]]:
    """(training keys, held-out keys): --holdout, or a share of --data by file hash."""
    keys = [o.key for o in iter_objects(cfg.data, cfg.storage, cfg.extensions)]
    if cfg.holdout:
        train_keys, holdout = keys, [o.key for o in iter_objects(cfg.holdout, cfg.storage, cfg.extensions)]
    else:
        train_keys, holdout = split_keys(keys, cfg.holdout_fraction)
    if not train_keys:
        raise ValueError(f"no training images under {cfg.data}")
    print(f"training {cfg.name} on {len(train_keys)} images, holding out {len(holdout)}", flush=True)
    return train_keys, holdout


def _fit(cfg: TrainJobConfig, train_keys: list[str], progress: bool) -> dict:
    """Run the TorchTrainer (resuming ``cfg.run_name`` if it has checkpoints); the last checkpoint's state."""
    from .driver import local_ray_on_loopback

    local_ray_on_loopback()
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if not ray.is_initialized():
        ray.init(log_to_driver=progress, include_dashboard=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    ds = ray.data.from_items([{"key": k} for k in train_keys]).repartition(max(1, min(len(train_keys), 4 * cfg.num_workers)))
    ds = ds.map_batches(load_crops, fn_kwargs={"storage": cfg.storage, "crop": cfg.crop, "crops_per_image": cfg.crops_per_image},
                        batch_size=4, num_cpus=0.5)
    fs, path = pyarrow_filesystem(cfg.storage_path, cfg.storage)
    local = split_url(cfg.storage_path)[0] == "file"
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"cfg": cfg, "fault": os.environ.get(FAULT_ENV)},
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": cfg.cpus_per_worker, **({"GPU": 1} if cfg.use_gpu else {})}),
        run_config=RunConfig(name=cfg.run_name, storage_path=os.path.abspath(path) if local else path,
                             storage_filesystem=None if local else fs,
                             failure_config=FailureConfig(max_failures=cfg.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
        datasets={"train": ds},
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training {cfg.run_name} produced no checkpoint: {result.error}")
    with result.checkpoint.as_directory() as d:
        return load_train_state(Path(d) / STATE_FILE)


def _finalised(cfg: TrainJobConfig, state: dict, train_keys: list[str]):
    """(the trained model, finalised for coding; its weights file's bytes)."""
    from codec.families.hyperprior.model import HyperpriorCodec, ModelConfig
    from codec.registry import save_weights

    model = HyperpriorCodec(ModelConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    model.eval().finalize(_calibration(train_keys, cfg.storage, cfg.crop))
    buf = io.BytesIO()
    save_weights(model, buf)
    return model, buf.getvalue()


def _evaluate(cfg: TrainJobConfig, base_id: str, models: dict, eval_keys: list[str]) -> tuple[dict, str]:
    """(the card's metrics, a table) of the new model against the base on real streams of the held-out images."""
    from codec.training.evaluate import compare

    images = {k: read_rgb(k, cfg.storage) for k in eval_keys}
    if not images:
        return {}, "no held-out images: not evaluated"
    cmp = compare(models, images, reference="base")
    metrics = {"bd_rate_vs_base_pct": cmp["bd_rate"]["new"],
               "per_image": {k: {"bd_rate_pct": cmp["bd_rate_per_image"][k]["new"],
                                 "base": vars(cmp["per_image"][k]["base"]), "new": vars(cmp["per_image"][k]["new"])}
                             for k in images},
               "mean": {m: vars(c) for m, c in cmp["mean"].items()}}
    return metrics, evaluation_table(cfg.name, base_id, cmp)


def evaluation_table(name: str, base_id: str, cmp: dict) -> str:
    keys = list(cmp["bd_rate_per_image"])
    prefix = os.path.commonprefix(keys).rpartition("/")[0] + "/" if len(keys) > 1 else ""
    lines = [f"held-out evaluation: {name} vs {base_id} (real streams; BD-rate < 0 = smaller files at equal PSNR)",
             f"  {'image' + (f' (under {prefix})' if prefix else ''):<48} {'BD-rate':>9}"]
    for k, v in cmp["bd_rate_per_image"].items():
        bd = v["new"]
        lines.append(f"  {k.removeprefix(prefix)[-48:]:<48} {'n/a' if bd is None else f'{bd:+.1f}%':>9}")
    bd = cmp["bd_rate"]["new"]
    lines.append(f"  {'mean curve':<48} {'n/a' if bd is None else f'{bd:+.1f}%':>9}")
    return "\n".join(lines)


__all__ = ["run_training", "train_loop", "load_crops", "split_keys", "TrainOutcome", "save_train_state",
           "load_train_state"]
