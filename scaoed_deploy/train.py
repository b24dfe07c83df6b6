"""Training ScaoedNet on clean images with synthetic camera noise (``scaoed-deploy train``).

Random crops with flips and rotations from clean folders; noise from
``scaoed_deploy.noise`` per patch; L1 loss on the clean output; Adam with cosine
decay; periodic validation on held-out synthetic-noise crops (and, for
monitoring only, on real pairs given with ``--val``); a resumable training
state written atomically every ``save_every`` steps. Everything random draws
from generators whose state is saved, so a resumed run continues exactly.

The SIDD crops are evaluation data: the trainer refuses them as training input.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import Weights, read_checkpoint, save_safetensors
from .data import is_evaluation_data, load_samples
from .errors import ScaoedError
from .images import list_images, read_image
from .model import ScaoedNet
from .noise import NoiseConfig, synthesize
from .util.files import atomic_path


@dataclass
class TrainConfig:
    clean: list[str]
    stages: int = 2
    blocks: int = 16
    patch: int = 64
    batch: int = 8
    steps: int = 2000
    lr: float = 2e-4
    lr_min: float = 1e-6
    seed: int = 0
    val_every: int = 250
    save_every: int = 100
    val_images: int = 4  # clean images held out of training for synthetic-noise validation
    pairs: list[str] = field(default_factory=list)  # extra real noisy/clean training pairs (noisy/, clean/)
    val: str | None = None  # real pairs for monitoring only
    amp: str = "none"  # "bf16": autocast the forward pass to bfloat16 (weights and Adam state stay float32)
    noise: dict = field(default_factory=lambda: NoiseConfig().to_dict())
    stage_choices: list[int] = field(default_factory=list)  # K drawn per batch from these (empty: always `stages`)
    init: str | None = None  # start from these weights (fresh optimiser), e.g. to fine-tune for every K

    def to_dict(self) -> dict:
        return asdict(self)


def _load_clean(folders: list[str]) -> list[np.ndarray]:
    images = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise ScaoedError(f"clean image folder not found: {folder}")
        if is_evaluation_data(folder):
            raise ScaoedError(f"{folder}: the SIDD crops are evaluation data; never train on them")
        files = list_images(folder)
        if not files:
            raise ScaoedError(f"no images in {folder}")
        images += [read_image(p).rgb.transpose(2, 0, 1).copy() for p in files]
    return images


def _load_pairs(folders: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    for folder in folders:
        if is_evaluation_data(folder):
            raise ScaoedError(f"{folder}: the SIDD crops are evaluation data; never train on them")
        pairs += [(s.noisy, s.clean) for s in load_samples(folder) if s.clean is not None]
    return pairs


def _augment(x: np.ndarray, mode: int) -> np.ndarray:
    """One of the 8 flips/rotations (mode 0..7), on (C, H, W) arrays."""
    x = np.rot90(x, k=mode % 4, axes=(1, 2))
    return np.ascontiguousarray(x[:, :, ::-1] if mode >= 4 else x)


class PatchSampler:
    """Random crops with augmentation from in-memory images; its state is one numpy generator."""

    def __init__(self, images: list[np.ndarray], pairs: list, patch: int, seed: int):
        small = [i for i, im in enumerate(images) if min(im.shape[1:]) < patch]
        if small:
            raise ScaoedError(f"{len(small)} training image(s) are smaller than the {patch}px patch")
        self.images, self.pairs, self.patch = images, pairs, patch
        self.rng = np.random.default_rng(seed)

    def _crop(self, arrays, h, w):
        top, left = self.rng.integers(0, h - self.patch + 1), self.rng.integers(0, w - self.patch + 1)
        mode = int(self.rng.integers(0, 8))
        return [_augment(a[:, top : top + self.patch, left : left + self.patch], mode) for a in arrays]

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None, list[int]]:
        """(clean patches, real noisy patches or None per slot, indices of real-pair slots)."""
        clean, noisy, real = [], [], []
        for i in range(n):
            if self.pairs and self.rng.random() < 0.25:
                nz, cl = self.pairs[int(self.rng.integers(len(self.pairs)))]
                nz, cl = self._crop([nz, cl], *cl.shape[1:])
                clean.append(cl)
                noisy.append(nz)
                real.append(i)
            else:
                im = self.images[int(self.rng.integers(len(self.images)))]
                clean.append(self._crop([im], *im.shape[1:])[0])
                noisy.append(None)
        c = torch.from_numpy(np.stack(clean))
        return c, noisy, real


def _lr_at(step: int, cfg: TrainConfig) -> float:
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * min(step, cfg.steps) / cfg.steps))


def _psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    mse = F.mse_loss(x.clamp(0, 1), y).item()
    return 10 * math.log10(1 / mse) if mse > 0 else math.inf


@torch.no_grad()
def _validate(model, val_set) -> float:
    model.eval()
    psnrs = [_psnr(model(noisy[None])[0], clean) for noisy, clean in val_set]
    model.train()
    return float(np.mean(psnrs))


NOISE_MODEL = (
    "Poisson-Gaussian in linear raw behind WB gains (read noise tied to shot noise unless a range is given), "
    "Bayer mosaic + Malvar-He-Cutler or bilinear demosaic of the noise, cross-channel correlation, optional "
    "colour correction (Brooks et al.'s camera matrices), sRGB or steeper power tone curve, JPEG; the "
    "parameters are in 'noise'"
)


def _synthetic_val_set(images: list[np.ndarray], noise_cfg: NoiseConfig, seed: int):
    """Fixed noisy/clean crops (128 px, or the image) from held-out images: same every run and step."""
    gen = torch.Generator().manual_seed(seed + 1)
    out = []
    for im in images:
        c = torch.from_numpy(im[:, :128, :128].copy())
        c = c[:, : c.shape[1] // 2 * 2, : c.shape[2] // 2 * 2]
        out.append((synthesize(c[None], gen, noise_cfg)[0], c))
    return out


def _real_val_set(folder: str | None):
    if not folder:
        return []

    return [(torch.from_numpy(s.noisy), torch.from_numpy(s.clean)) for s in load_samples(folder) if s.clean is not None]


@dataclass
class TrainState:
    step: int
    model: dict
    optimizer: dict
    sampler_state: dict
    noise_gen: torch.Tensor
    config: dict
    history: list


def _save_state(path: Path, st: TrainState) -> None:
    with atomic_path(path) as tmp:
        torch.save(asdict(st), tmp)


def _load_state(path: Path) -> dict:
    if not path.is_file():
        raise ScaoedError(f"training state not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ScaoedError(f"{path}: not a readable training state ({str(e).splitlines()[0][:150]})") from e


def state_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".train-state.pt")


def train(
    cfg: TrainConfig,
    out: str | Path,
    resume: str | Path | None = None,
    device: str = "cpu",
    report: Callable[[dict], None] = lambda d: None,
    max_seconds: float | None = None,
) -> dict:
    """Train (or resume) and write ``out`` (.safetensors + .json) and its resumable training state.

    ``max_seconds``: stop after the step that spends this much time, validating and saving the state and the
    weights reached so far, so a long run fits into jobs of fixed length (resume with the same ``steps``: the
    schedule is planned over ``cfg.steps``; on CPU the chained run ends bit-identical to an unbroken one)."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ScaoedError(f"{out}: training writes .safetensors weights (plus .json config)")
    if cfg.amp not in ("none", "bf16"):
        raise ScaoedError(f"unknown amp mode {cfg.amp!r}; use none or bf16")
    if resume:  # everything but the step count and the amp mode comes from the saved state
        saved = _load_state(Path(resume))
        cfg = TrainConfig(**dict(saved["config"], steps=cfg.steps, amp=cfg.amp))
    torch.manual_seed(cfg.seed)
    images = _load_clean(cfg.clean)
    val_imgs, train_imgs = images[: cfg.val_images], images[cfg.val_images :]
    sampler = PatchSampler(train_imgs, _load_pairs(cfg.pairs), cfg.patch, cfg.seed)
    noise_gen = torch.Generator().manual_seed(cfg.seed + 2)
    noise_cfg = NoiseConfig.from_saved(cfg.noise)
    model = ScaoedNet(stages=cfg.stages, blocks=cfg.blocks)
    if cfg.init and not resume:
        init = read_checkpoint(cfg.init)
        if init.blocks != cfg.blocks:
            raise ScaoedError(f"{cfg.init}: has T={init.blocks} FM2ARB blocks, training asks for T={cfg.blocks}")
        model.load_state_dict(init.state_dict)
    bad = [k for k in cfg.stage_choices if not 1 <= int(k) <= ScaoedNet.MAX_STAGES]
    if bad:
        raise ScaoedError(f"stage choices must be 1 to {ScaoedNet.MAX_STAGES}, got {bad}")
    # channels-last: oneDNN convolutions ~10 % faster per K=3 step alone (1.49 -> 1.33 s); over a whole run on the
    # shared 2-core machine 1.44 s/step against 1.46 before. save_safetensors writes the weights contiguous.
    model = model.to(device, memory_format=torch.channels_last).train()
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed patch shapes: let cuDNN pick its fastest kernels once
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step, history = 0, []
    if resume:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sampler.rng.bit_generator.state = saved["sampler_state"]
        noise_gen.set_state(saved["noise_gen"])
        step, history = saved["step"], list(saved["history"])
    val_syn, val_real = _synthetic_val_set(val_imgs, noise_cfg, cfg.seed), _real_val_set(cfg.val)
    t0, last = time.perf_counter(), None
    spath = state_path(out)

    def checkpoint():
        _save_state(
            spath,
            TrainState(
                step,
                model.state_dict(),
                opt.state_dict(),
                sampler.rng.bit_generator.state,
                noise_gen.get_state(),
                cfg.to_dict(),
                history,
            ),
        )

    while step < cfg.steps:
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg)
        if cfg.stage_choices:  # drawn from the sampler's generator, so resuming stays exact
            model.stages = int(cfg.stage_choices[int(sampler.rng.integers(len(cfg.stage_choices)))])
        clean, real_noisy, real_idx = sampler.batch(cfg.batch)
        noisy = synthesize(clean, noise_gen, noise_cfg)
        for i in real_idx:
            noisy[i] = torch.from_numpy(real_noisy[i])
        clean, noisy = clean.to(device), noisy.to(device).contiguous(memory_format=torch.channels_last)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16"):
            pred = model(noisy)
        loss = F.l1_loss(pred.float(), clean)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        elapsed = time.perf_counter() - t0
        out_of_time = max_seconds is not None and elapsed >= max_seconds and step < cfg.steps
        last_step = step == cfg.steps or out_of_time  # always validated and saved
        last = {"step": step, "loss": float(loss.item()), "lr": opt.param_groups[0]["lr"], "seconds": round(elapsed, 1)}
        model.stages = cfg.stages  # validation and the saved weights use the default K
        if step % cfg.val_every == 0 or last_step:
            last["val_psnr_synthetic"] = _validate(model, [(n.to(device), c.to(device)) for n, c in val_syn])
            if val_real:
                last["val_psnr_real"] = _validate(model, [(n.to(device), c.to(device)) for n, c in val_real])
            history.append(last)
        report(last)
        if step % cfg.save_every == 0 or last_step:
            checkpoint()
        if out_of_time:
            break
    weights = Weights(
        {k: v.detach().cpu() for k, v in model.state_dict().items()}, cfg.blocks, cfg.stages, str(out), layout="ours"
    )
    provenance = {
        "trained_by": "scaoed-deploy train",
        "demo_weights": True,
        "data": [Path(c).name for c in cfg.clean] + [Path(p).name for p in cfg.pairs],
        "noise_model": NOISE_MODEL,
        "noise": cfg.noise,
        "steps": step,
        "planned_steps": cfg.steps,  # more than steps: stopped by its time budget, resumable from the state
        "resumed_from_step": saved["step"]
        if resume
        else None,  # None: not resumed; a resume re-plans the cosine over the new total
        "stages_trained": cfg.stage_choices or cfg.stages,
        "default_stages": cfg.stages,
        "init": Path(cfg.init).name if cfg.init else None,
        "patch": cfg.patch,
        "batch": cfg.batch,
        "lr": cfg.lr,
        "seed": cfg.seed,
        "amp": cfg.amp,
        "history": history[-5:],
    }
    save_safetensors(weights, out, stages=cfg.stages, provenance=provenance)
    return {
        "weights": str(out),
        "state": str(spath),
        "steps": step,
        "planned_steps": cfg.steps,
        "complete": step >= cfg.steps,
        "last": last,
        "history": history,
    }
