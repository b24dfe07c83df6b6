"""Checkpoints: the authors' layout (.pth) and the project's own (safetensors + JSON).

Reading is strict. Missing, unexpected or wrongly shaped keys, and aliased keys
whose two copies differ, give one ``CheckpointError`` that names them. ``.pth``
files are read with ``torch.load(weights_only=True)``, which never unpickles code.

The project's format is ``NAME.safetensors`` (tensors in our key names, the
config also kept in the safetensors metadata) plus ``NAME.json`` beside it:
``{"format": "scaoed-deploy", "stages": K, "blocks": T, "provenance": {...}}``. The config is
checked against ``CONFIG_SCHEMA`` (types and ranges) when read: a wrong value is one line naming the key.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import CheckpointError, ScaoedError, first_line, short_list
from .model import ScaoedNet
from .model.layout import OFFICIAL_MARKER, OURS_MARKER, count_blocks, official_key_map
from .util.files import atomic_path, read_json_object, sha256_of

FORMAT = "scaoed-deploy"
#: The authors' default: 4 loop iterations, i.e. K = 5.
DEFAULT_STAGES = 5
DEFAULT_BLOCKS = 16
_WRAPPERS = ("state_dict", "model")
STORAGE_DTYPES = ("float32", "float16", "bfloat16")
#: What a checkpoint's config may hold (JSON Schema): unknown keys are kept, known ones must be right.
CONFIG_SCHEMA = {
    "type": "object",
    "properties": {
        "format": {"type": "string"},
        "stages": {"type": "integer", "minimum": 1, "maximum": ScaoedNet.MAX_STAGES},
        "blocks": {"type": "integer", "minimum": 1},
        "storage": {"enum": list(STORAGE_DTYPES)},
        "provenance": {"type": "object"},
    },
}


def check_config(config: dict, path: Path) -> dict:
    """``config`` if it fits CONFIG_SCHEMA, else one CheckpointError naming the key and what is wrong with it."""
    import jsonschema

    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(CONFIG_SCHEMA).iter_errors(config))
    if error is not None:
        key = "/".join(str(k) for k in error.absolute_path) or "(the config)"
        raise CheckpointError(f"{path}: its config's {key!r} is wrong: {error.message}")
    return {**config, **{k: int(config[k]) for k in ("stages", "blocks") if config.get(k) is not None}}


LAYOUT_NAMES = {"ours": "scaoed-deploy's", "official": "the authors'", "random": "random"}


@dataclass
class Weights:
    """A state dict in our key names and what is known about where it came from."""

    state_dict: dict[str, torch.Tensor]
    blocks: int
    stages: int | None = None  # the stage count the checkpoint was made for, when it says
    source: str = ""  # file path, or "random-seed-N"
    sha256: str | None = None
    layout: str = "ours"  # "official", "ours" or "random"
    provenance: dict = field(default_factory=dict)
    storage: str = "float32"  # the dtype the file stored (values are always float32 in memory)

    @property
    def is_random(self) -> bool:
        return self.layout == "random"

    @property
    def identity(self) -> str:
        """What ONNX metadata and reports quote: the file's sha256 or 'random-seed-N'."""
        return self.sha256 or self.source


def _expected_shapes(blocks: int) -> dict[str, torch.Size]:
    """Our keys and shapes for T blocks, built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        model = ScaoedNet(stages=1, blocks=blocks)
    return {k: v.shape for k, v in model.state_dict().items()}


def _fmt_shape(shape) -> str:
    return "x".join(str(int(s)) for s in shape) or "scalar"


#: What a file that is not a checkpoint begins with, for the message that says what it is instead.
_OTHER_FORMATS = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"GIF8", "a GIF image"),
    (b"RIFF", "a RIFF (WebP/WAV) file"),
    (b"\x08", "an ONNX or other protobuf file"),
    (b"{", "a JSON file"),
    (b"<", "an XML file"),
)


def _sniff_pth(path: Path) -> None:
    """Refuse a file that is neither a zip (torch.save's format) nor a pickle (the legacy one), saying so: torch's
    own error for one would read as 'holds Python objects'."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"PK") or head.startswith(b"\x80"):
        return
    what = next((name for magic, name in _OTHER_FORMATS if head.startswith(magic)), None)
    raise CheckpointError(
        f"{path}: not a PyTorch checkpoint"
        + (f" (it is {what})" if what else " (neither torch.save's zip format nor a pickle)")
    )


def _read_pth(path: Path) -> dict:
    _sniff_pth(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Weights only" in str(e):
            raise CheckpointError(
                f"{path}: holds Python objects besides tensors; refusing to unpickle them "
                "(torch.load weights_only=True). Save a plain state dict instead."
            ) from e
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_first_line(e)})") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise CheckpointError(f"{path}: truncated or not a PyTorch checkpoint ({_first_line(e)})") from e
    for wrapper in _WRAPPERS:
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path}: expected a state dict (a mapping of names to tensors)")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entries that are not tensors: {short_list(bad)}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def _first_line(e: BaseException) -> str:
    """The first sentence of a library's error message (torch's run on for several)."""
    return first_line(e, 400).split(". ")[0].rstrip(".")[:160]


def _read_safetensors(path: Path) -> tuple[dict, dict]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: truncated or not a safetensors file ({_first_line(e)})") from e
    config = {}
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            config = read_json_object(sidecar, "checkpoint config")
        except ScaoedError as e:
            raise CheckpointError(str(e)) from e
    elif FORMAT in meta:
        try:
            config = json.loads(meta[FORMAT])
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: its config is not valid JSON ({e})") from e
        if not isinstance(config, dict):
            raise CheckpointError(f"{path}: its config holds a JSON {type(config).__name__}, not an object")
    return tensors, config


def _pth_config(path: Path) -> dict:
    """The NAME.json that ``save_official`` writes beside a .pth (K, storage, provenance), when it is ours."""
    sidecar = path.with_suffix(".json")
    try:
        config = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    except (ValueError, OSError):  # not JSON, not UTF-8
        return {}  # somebody else's JSON: the authors' layout carries no config
    return config if isinstance(config, dict) and config.get("format") == FORMAT else {}


def _check_keys(src: str, got: dict, expected: dict[str, torch.Size], what: str) -> None:
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    wrong = [
        f"{k} ({_fmt_shape(got[k].shape)}, expected {_fmt_shape(expected[k])})"
        for k in expected
        if k in got and tuple(got[k].shape) != tuple(expected[k])
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {short_list(missing, 3)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {short_list(unexpected, 3)}")
    if wrong:
        problems.append(f"{len(wrong)} wrongly shaped: {short_list(wrong, 3)}")
    if problems:
        raise CheckpointError(f"{src}: does not match ScaoedNet ({what}): " + "; ".join(problems))


def official_to_ours(sd: dict[str, torch.Tensor], src: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Translate a state dict in the authors' layout, enforcing the aliasing rule."""
    blocks = count_blocks(sd)
    if blocks == 0:
        raise CheckpointError(f"{src}: no FM2ARB blocks (RE_Net.body.N.*) found")
    ours_shapes = _expected_shapes(blocks)
    key_map = official_key_map(ours_shapes)
    expected = {name: ours_shapes[k] for k, names in key_map.items() for name in names}
    _check_keys(src, sd, expected, f"authors' layout, T={blocks}")
    out = {}
    for k, names in key_map.items():
        canonical = sd[names[0]]
        for alias in names[1:]:
            if not torch.equal(sd[alias], canonical):
                diff = (sd[alias].float() - canonical.float()).abs().max().item()
                raise CheckpointError(
                    f"{src}: {names[0]} and {alias} are one shared tensor in ScaoedNet but differ "
                    f"here (max abs difference {diff:.3g}); refusing an inconsistent checkpoint"
                )
        out[k] = canonical
    return out


def ours_to_official(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict in the authors' layout, aliases included (sharing one tensor)."""
    return {name: v for k, v in sd.items() for name in official_key_map([k])[k]}


def read_checkpoint(path: str | Path) -> Weights:
    """Read a checkpoint in either layout into our key names (float32, CPU)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint is not a file: {path}")
    config: dict = {}
    if path.suffix == ".safetensors":
        sd, config = _read_safetensors(path)
    else:
        sd = _read_pth(path)
        config = _pth_config(path)
    if OFFICIAL_MARKER in sd:
        layout = "official"
        sd = official_to_ours(sd, str(path))
    elif OURS_MARKER in sd:
        layout = "ours"
        blocks = count_blocks(sd)
        if blocks == 0:
            raise CheckpointError(f"{path}: no FM2ARB blocks (z_net.blocks.N.*) found")
        _check_keys(str(path), sd, _expected_shapes(blocks), f"scaoed-deploy layout, T={blocks}")
    else:
        raise CheckpointError(
            f"{path}: unrecognised key layout; expected the authors' ({OFFICIAL_MARKER}, ...) "
            f"or scaoed-deploy's ({OURS_MARKER}, ...), found: {short_list(sorted(sd), 3)}"
        )
    ints = {k: v.dtype for k, v in sd.items() if not v.is_floating_point()}
    if ints:  # an integer (quantized) tensor would be cast to float and run as garbage
        first = next(iter(ints))
        raise CheckpointError(
            f"{path}: {len(ints)} tensor(s) are not floating point (first: {first}, "
            f"{str(ints[first]).replace('torch.', '')}); ScaoedNet weights are float32, float16 "
            "or bfloat16"
        )
    sd = {k: v.detach().to(torch.float32).contiguous() for k, v in sd.items()}
    bad = {k: int((~torch.isfinite(v)).sum()) for k, v in sd.items() if not torch.isfinite(v).all()}
    if bad:  # a model with NaN weights gives a black image, not an error
        first = next(iter(bad))
        raise CheckpointError(
            f"{path}: {sum(bad.values())} NaN/Inf value(s) in {len(bad)} tensor(s) "
            f"(first: {first}); the weights are damaged"
        )
    config = check_config(config, path)
    blocks = count_blocks(sd)
    if config.get("blocks") not in (None, blocks):
        raise CheckpointError(f"{path}: config says T={config['blocks']} but the tensors hold T={blocks}")
    return Weights(
        state_dict=sd,
        blocks=blocks,
        stages=config.get("stages"),
        source=str(path),
        sha256=sha256_of(path),
        layout=layout,
        provenance=dict(config.get("provenance", {})),
        storage=str(config.get("storage", "float32")),
    )


def random_weights(blocks: int = DEFAULT_BLOCKS, seed: int = 0) -> Weights:
    """PyTorch's default initialisation under a fixed seed: for export and benchmarks only."""
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        sd = ScaoedNet(stages=1, blocks=blocks).state_dict()
    finally:
        torch.random.set_rng_state(gen_state)
    return Weights(state_dict=sd, blocks=blocks, source=f"random-seed-{seed}", layout="random")


def build_model(weights: Weights, stages: int | None = None) -> ScaoedNet:
    """A ScaoedNet in eval mode holding ``weights``, run with ``stages`` (K)."""
    k = stages or weights.stages or DEFAULT_STAGES
    try:
        model = ScaoedNet(stages=k, blocks=weights.blocks)
    except ValueError as e:
        raise CheckpointError(str(e)) from e
    model.load_state_dict(weights.state_dict, strict=True)
    return model.eval()


def save_safetensors(
    weights: Weights,
    path: str | Path,
    stages: int | None = None,
    provenance: dict | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write NAME.safetensors and its NAME.json config, each atomically.

    ``dtype=torch.float16`` halves the file; reading always gives float32 back.
    """
    from safetensors.torch import save_file

    path = Path(path)
    config = {
        "format": FORMAT,
        "stages": stages or weights.stages or DEFAULT_STAGES,
        "blocks": weights.blocks,
        "storage": str(dtype).replace("torch.", ""),
        "provenance": provenance if provenance is not None else weights.provenance,
    }
    tensors = {k: v.to(dtype).contiguous() for k, v in weights.state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={FORMAT: json.dumps(config)})
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(config, indent=2) + "\n")
    return path


def save_official(weights: Weights, path: str | Path, stages: int | None = None) -> Path:
    """Write a .pth in the authors' layout (aliased keys share one tensor), atomically, and beside it the
    NAME.json config (K, T, storage, provenance) that the layout has no room for: their loader ignores it,
    ours reads it back, so a round trip keeps K, the provenance and the storage dtype."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(ours_to_official(weights.state_dict), tmp)
    config = {
        "format": FORMAT,
        "stages": stages or weights.stages or DEFAULT_STAGES,
        "blocks": weights.blocks,
        "storage": weights.storage,
        "provenance": weights.provenance,
    }
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(config, indent=2) + "\n")
    return path


def convert(src: str | Path, dst: str | Path, stages: int | None = None) -> dict:
    """Convert between layouts; the format of ``dst`` follows its extension."""
    weights = read_checkpoint(src)
    dst = Path(dst)
    if dst.suffix == ".safetensors":
        provenance = dict(weights.provenance) or {
            "converted_from": Path(weights.source).name,
            "source_sha256": weights.sha256,
            "source_layout": weights.layout,
        }
        save_safetensors(
            weights, dst, stages=stages, provenance=provenance, dtype=getattr(torch, weights.storage, torch.float32)
        )
        fmt = "scaoed-deploy safetensors + json"
    elif dst.suffix in (".pth", ".pt"):
        save_official(weights, dst, stages=stages)
        fmt = "the authors' layout (.pth) + json"
    else:
        raise CheckpointError(f"{dst}: unknown output format; use .safetensors or .pth")
    return {
        "source": str(src),
        "source_layout": LAYOUT_NAMES.get(weights.layout, weights.layout),
        "output": str(dst),
        "output_format": fmt,
        "blocks": weights.blocks,
        "parameters": sum(v.numel() for v in weights.state_dict.values()),
        "sha256": sha256_of(dst),
    }
