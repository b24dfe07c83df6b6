"""Triton model configs (``config.pbtxt``): Triton's own ModelConfig message (from tritonclient) to text and back,
with one line for a malformed file and for what Triton would refuse at load time."""

from __future__ import annotations

from pathlib import Path

from ..errors import ScaoedError, first_line
from ..runtime.triton_client import require_tritonclient
from .guard import ModelLimits

CONFIG = "config.pbtxt"


def model_config_pb2():
    """Triton's ModelConfig protobuf module (from tritonclient)."""
    return require_tritonclient("tritonclient.grpc.model_config_pb2", "Triton model configs")


def config_text(cfg) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(cfg)


def read_config(path: str | Path):
    """Parse a config.pbtxt with Triton's ModelConfig message; one clear line for a malformed file."""
    from google.protobuf import text_format

    pb = model_config_pb2()
    path = Path(path)
    try:
        return text_format.Parse(path.read_text(), pb.ModelConfig())
    except (OSError, text_format.ParseError, UnicodeDecodeError) as e:
        raise ScaoedError(f"{path}: not a valid Triton model config: {first_line(e)}") from e


def check_config(cfg, model_dir: Path, name: str | None = None) -> None:
    """What Triton would refuse at load time, said before it does (``name``: the folder's final name)."""
    name = name or model_dir.name
    where = f"{name}/{CONFIG}"
    if cfg.name and cfg.name != name:
        raise ScaoedError(f"{where}: name {cfg.name!r} differs from its folder {name!r}")
    if not (cfg.platform or cfg.backend):
        raise ScaoedError(f"{where}: names neither a platform nor a backend")
    if not cfg.input or not cfg.output:
        raise ScaoedError(f"{where}: has no inputs or no outputs")
    too_big = [b for b in cfg.dynamic_batching.preferred_batch_size if b > cfg.max_batch_size]
    if too_big:
        raise ScaoedError(f"{where}: preferred batch sizes {too_big} exceed max_batch_size {cfg.max_batch_size}")
    versions = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    if not versions:
        raise ScaoedError(f"{name}: no version folder (1/)")


def model_limits(cfg) -> ModelLimits:
    """What a model's input takes, from its config, for the request guard."""
    side = cfg.parameters["max_side"].string_value if "max_side" in cfg.parameters else ""
    return ModelLimits(cfg.input[0].name, cfg.max_batch_size, list(cfg.input[0].dims), int(side) if side else None)


def repository_configs(repo: str | Path) -> dict:
    """{model name: its ModelConfig}, every config parsed and checked (one line for a bad one)."""
    repo = Path(repo)
    if not repo.is_dir():
        raise ScaoedError(f"model repository not found: {repo}")
    models = {}
    for d in sorted(p for p in repo.iterdir() if p.is_dir()):
        if not (d / CONFIG).is_file():  # Triton would take the folder for a model, and fail to start
            raise ScaoedError(
                f"{d}: a folder without {CONFIG} in the repository (Triton would take it for a model): "
                "remove it, or make the model with scaoed-deploy triton-repo"
            )
        cfg = read_config(d / CONFIG)
        check_config(cfg, d)
        models[d.name] = cfg
    if not models:
        raise ScaoedError(f"{repo} holds no models; make one with scaoed-deploy triton-repo ARTIFACT -o {repo}")
    return models
