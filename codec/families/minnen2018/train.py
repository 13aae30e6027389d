"""Train the minnen2018 networks on random 64×64 crops (never Kodak): ``python -m codec.families.minnen2018.train``.

One loop trains both parts jointly: the context predictor with an L1 loss on the lower-right
quadrant of each crop, and the residual coder on the residual it leaves (the prediction is
detached, so the two losses do not mix), with the mean L1 residual over the iterations as its
loss. A quarter of the crops are coded against a flat mid-grey prediction instead, so the same
coder also serves the no-context (independent tiles) comparison. Half the contexts get a little
noise and 30% are blurred (4× average-pooled), standing in for the coding error of decoded neighbours.

Resumable: ``--out DIR`` holds ``checkpoint.pt`` (written every ``--checkpoint-every`` steps) and
``train.log``; running again continues from the checkpoint. ``--finalize`` counts the bit
statistics (the entropy model) with deterministic codes and writes ``DIR/weights.pt``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from codec.training.data import crop_batch, list_images, load_rgb, to_tensor
from codec.families.minnen2018.model import TILE, Minnen2018Codec, Minnen2018Config
from codec.families.minnen2018.weights import save_weights

DEFAULT_DATA = ["../shared/data/train-natural", "../shared/data/aerial/train"]


def load_pool(dirs: list[str], max_side: int = 1024, seed: int = 0) -> list[np.ndarray]:
    """The training images as uint8 RGB (large ones cut to a random ``max_side`` window to bound memory)."""
    rng = np.random.default_rng(seed)
    pool = []
    for path in list_images([Path(d) for d in dirs]):
        im = load_rgb(path)
        h, w = im.shape[:2]
        y, x = rng.integers(max(1, h - max_side + 1)), rng.integers(max(1, w - max_side + 1))
        pool.append(np.ascontiguousarray(im[y : y + max_side, x : x + max_side]))
    return pool


def make_batch(pool, n: int, rng: np.random.Generator, noise: float = 0.02):
    """(context patch, target quadrant, use_context) for ``n`` random 64×64 crops."""
    x = to_tensor(crop_batch(pool, n, 2 * TILE, rng))
    target = x[:, :, TILE:, TILE:].clone()
    patch = x.clone()
    patch[:, :, TILE:, TILE:] = 0.5
    noisy = torch.from_numpy(rng.random(n) < 0.5)
    patch = torch.where(noisy[:, None, None, None], (patch + noise * torch.randn_like(patch)).clamp(0, 1), patch)
    blurred = torch.from_numpy(rng.random(n) < 0.3)  # decoded neighbours at low rates are blurry
    soft = torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(patch, 4), scale_factor=4, mode="bilinear")
    patch = torch.where(blurred[:, None, None, None], soft, patch)
    patch[:, :, TILE:, TILE:] = 0.5
    use_context = torch.from_numpy(rng.random(n) >= 0.25)
    return patch, target, use_context


def log(out: Path, record: dict) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    with open(out / "train.log", "a") as f:
        f.write(line + "\n")


def train(args) -> None:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.pt"
    model = Minnen2018Codec(config_of(args))
    step = 0
    if args.init and not ckpt.exists():  # a warm start: same networks, e.g. minnen2018@1's, before the gain
        if Path(args.init).is_file():  # another run's checkpoint.pt
            init = torch.load(args.init, weights_only=False)["model"]
        else:
            import codec

            init = codec.load_model(args.init).model.state_dict()
        own = model.state_dict()
        model.load_state_dict({k: v for k, v in init.items() if k in own and own[k].shape == v.shape}, strict=False)
        log(out, {"event": "init", "from": args.init})
    model.to(args.device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False, map_location=args.device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
        log(out, {"event": "resumed", "step": step})
    rng = np.random.default_rng(args.seed + step)
    torch.manual_seed(args.seed + step)
    pool = load_pool(args.data)
    log(out, {"event": "start", "images": len(pool), "step": step, "args": vars(args)})
    model.train()
    t0, acc = time.time(), []
    while step < args.steps:
        lr = args.lr * (0.1 if step >= 0.85 * args.steps else 1.0)
        for g in opt.param_groups:
            g["lr"] = lr
        patch, target, use_ctx = (t.to(args.device) for t in make_batch(pool, args.batch, rng))
        iterations = curriculum(step, args)
        ctx_loss, res_losses, _ = model(patch, target, iterations, use_ctx)
        loss = ctx_loss + res_losses.mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        picks = [min(t, iterations) - 1 for t in (1, 4, 8, args.iterations)]
        acc.append([ctx_loss.item(), *res_losses[picks].tolist()])
        if step % args.log_every == 0:
            m = np.mean(acc, 0)
            log(out, {"step": step, "ctx_l1": round(m[0], 4), "res_l1_it1": round(m[1], 4), "it4": round(m[2], 4),
                      "it8": round(m[3], 4), f"it{args.iterations}": round(m[4], 4), "iterations": iterations,
                      "lr": lr, "s_per_step": round((time.time() - t0) / len(acc), 3)})
            t0, acc = time.time(), []
        if step % args.checkpoint_every == 0 or step == args.steps:
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": {k: v.cpu() for k, v in model.state_dict().items()}, "opt": opt.state_dict(),
                        "step": step}, tmp)
            tmp.replace(ckpt)


def config_of(args) -> Minnen2018Config:
    return Minnen2018Config(residual_gain=not args.no_gain)


def curriculum(step: int, args) -> int:
    """Iterations unrolled at ``step``: ``--curriculum`` fractions of the run at 4, then 8, then all
    ``--iterations`` (short unrolls are cheap on a CPU; with the gain every iteration is the same problem)."""
    a, b = args.curriculum
    if step < a * args.steps:
        return min(4, args.iterations)
    if step < b * args.steps:
        return min(8, args.iterations)
    return args.iterations


@torch.no_grad()
def finalize(args) -> None:
    """Count P(bit = 1) per (iteration, position) over deterministic codes of fresh crops; write weights.pt."""
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    model = Minnen2018Codec(config_of(args))
    model.load_state_dict(torch.load(out / "checkpoint.pt", weights_only=False)["model"])
    model.eval()
    rng = np.random.default_rng(args.seed + 10_000)
    pool = load_pool(args.data, seed=1)
    ones = torch.zeros(args.iterations, model.symbols_per_iteration, dtype=torch.float64)
    total = 0
    for _ in range(args.calibration_batches):
        patch, target, use_ctx = make_batch(pool, args.batch, rng)
        _, _, codes = model(patch, target, args.iterations, use_ctx)
        ones += (codes > 0).double().sum(1)
        total += codes.shape[1]
    model.bit_ones = (ones + 1).float()  # Laplace's rule: no probability is 0 or 1
    model.bit_total = torch.full((args.iterations, 1), float(total + 2))
    step = torch.load(out / "checkpoint.pt", weights_only=False)["step"]
    meta = {k: v for k, v in vars(args).items() if k not in ("finalize", "register")}
    meta["curriculum"] = list(args.curriculum)
    save_weights(model, out / "weights.pt", training={**meta, "steps_done": step})
    if args.register:  # into the built-in registry (codec/weights), so the CLI and the pipeline find it by name
        from codec.registry import BUILTIN

        name, _, version = args.register.partition("@")
        mid = BUILTIN.add_version(name, int(version or 1), (out / "weights.pt").read_bytes(),
                                  family="minnen2018", config=model.config.to_dict(), train_steps=step,
                                  data=list(args.data), description=args.description)
        log(out, {"event": "registered", "model_id": mid})
    p = (model.bit_ones / model.bit_total).double()
    h = -(p * p.log2() + (1 - p) * (1 - p).log2()).sum(1)
    log(out, {"event": "finalized", "bits_per_iteration_entropy": [round(v, 1) for v in h.tolist()]})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/minnen2018")
    ap.add_argument("--data", nargs="+", default=DEFAULT_DATA)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--iterations", type=int, default=16, help="coder iterations per crop (128 bits each)")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (training; --finalize runs on the CPU)")
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--checkpoint-every", type=int, default=100)
    ap.add_argument("--calibration-batches", type=int, default=100)
    ap.add_argument("--curriculum", type=float, nargs=2, default=(0.3, 0.6),
                    help="fractions of --steps after which 4 → 8 → --iterations iterations are unrolled")
    ap.add_argument("--no-gain", action="store_true", help="minnen2018@1's coder: no residual gain")
    ap.add_argument("--init", help="warm start from a registered model (e.g. minnen2018@1) or a checkpoint.pt")
    ap.add_argument("--finalize", action="store_true", help="count the bit statistics and write weights.pt")
    ap.add_argument("--register", help="with --finalize: NAME@VERSION to (re)write in the built-in registry")
    ap.add_argument("--description", default="minnen2018 (ICIP 2018) tiled context-prediction + conv-LSTM codec, "
                    "reduced widths, trained on 64x64 crops of train-natural + aerial/train on CPU")
    args = ap.parse_args(argv)
    (finalize if args.finalize else train)(args)


if __name__ == "__main__":
    main()
