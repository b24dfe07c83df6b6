"""OpenVINO IR files (an .xml with its weights in the .bin beside it): read with one line for each way they can be
broken, and the scaoed.* metadata they carry in their rt_info. OpenVINO is imported on first use."""

from __future__ import annotations

from pathlib import Path

from .errors import ScaoedError
from .util.optional import optional_import

IR_METADATA = "scaoed"  # the IR's rt_info section that holds the scaoed.* metadata (without the prefix)


def require_openvino(what: str):
    """The ``openvino`` module, or one line saying that ``what`` needs it."""
    return optional_import("openvino", f"{what} needs OpenVINO: pip install openvino")


def read_ir(path: str | Path):
    """An OpenVINO IR's ``ov.Model``, with one clear error for a missing .bin or a corrupt file."""
    path = Path(path)
    ov = require_openvino(f"reading {path}")
    if not path.with_suffix(".bin").is_file():
        raise ScaoedError(f"{path}: its weights file {path.with_suffix('.bin').name} is missing")
    _check_ir_xml(path)  # before OpenVINO: its other frontends log to stderr about a file that is no IR
    try:
        return ov.Core().read_model(str(path))
    except Exception as e:  # OpenVINO raises RuntimeError with a multi-line message
        raise ScaoedError(f"{path}: not a valid OpenVINO IR (truncated or corrupt?): {ov_reason(e)}") from e


def _check_ir_xml(path: Path) -> None:
    """Refuse an .xml that is not whole XML, or whose root is not an IR's ``<net>``, in one line."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ScaoedError(f"{path}: not an OpenVINO IR (truncated or not XML: {e})") from e
    except OSError as e:
        raise ScaoedError(f"{path}: cannot read it ({e.strerror or e})") from e
    if root.tag != "net":
        raise ScaoedError(f"{path}: not an OpenVINO IR (its root element is <{root.tag}>, an IR's is <net>)")


def ov_reason(e: BaseException) -> str:
    """The line of an OpenVINO error that says why: its messages open with where in OpenVINO's source they came
    from ('Exception from src/inference/src/cpp/core.cpp:84:', 'Check ... failed at ...'), then narrow down to
    the reason on the last line ('node <layer> is missing mandatory attribute: version')."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    said = [ln for ln in lines if not ln.startswith(("Exception from", "Check '")) and not ln.endswith(".cpp:")]
    return (said or lines or [type(e).__name__])[-1][:200]


def ir_metadata(model) -> dict[str, str]:
    """The scaoed.* metadata an IR carries in its rt_info (without the prefix)."""
    if not model.has_rt_info([IR_METADATA]):
        return {}
    return {k: str(v.astype(str)) for k, v in model.get_rt_info()[IR_METADATA].items()}


def write_ir_metadata(model, meta: dict[str, str]) -> None:
    for k, v in meta.items():
        model.set_rt_info(str(v), [IR_METADATA, k])
