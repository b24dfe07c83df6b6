"""Verification bound to content: a digest of an artifact's graph and weights, recorded when it is verified.

``export`` and ``build-engine`` record ``scaoed.content_sha256``: the SHA-256 of everything in the file
but its metadata (an ONNX model with its ``metadata_props``, doc string and producer cleared; an
OpenVINO IR's XML without its ``<rt_info>``, then its ``.bin``). Metadata can be edited (a command
line, a note) without breaking it; one weight or one node cannot. ``check_seal`` recomputes it:
the runners, ``parity`` and ``triton-repo`` refuse a file whose digest differs ("edited after
verification") unless told ``allow_unverified``. An engine is bound to its sidecar by its own
``engine_sha256`` (``runtime/tensorrt.py``).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from .artifact import META_PREFIX, ONNX_SUFFIXES, OPENVINO_SUFFIXES, metadata_of, write_metadata
from .errors import VerificationError

SEAL_KEY = "content_sha256"  # scaoed.content_sha256


def onnx_digest(proto) -> str:
    """SHA-256 of an ONNX model without its metadata (deterministic serialisation)."""
    import onnx

    bare = onnx.ModelProto()
    bare.CopyFrom(proto)
    del bare.metadata_props[:]
    bare.doc_string = bare.producer_name = bare.producer_version = ""
    return hashlib.sha256(bare.SerializeToString(deterministic=True)).hexdigest()


def seal_onnx(proto) -> str:
    """Record ``proto``'s digest in its metadata (before it is written); returns it."""
    digest = onnx_digest(proto)
    meta = metadata_of(proto)
    meta[SEAL_KEY] = digest
    write_metadata(proto, meta)
    return digest


def ir_digest(xml_path: str | Path) -> str:
    """SHA-256 of an OpenVINO IR without its metadata: the XML less its ``<rt_info>``, then the weights file."""
    import xml.etree.ElementTree as ET

    xml_path = Path(xml_path)
    root = ET.parse(xml_path).getroot()
    for info in root.findall("rt_info"):
        root.remove(info)
    h = hashlib.sha256(ET.tostring(root))
    with open(xml_path.with_suffix(".bin"), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def seal_ir(xml_path: str | Path) -> str:
    """Record a written IR's digest in its ``scaoed`` rt_info entries (an edit inside ``<rt_info>``, which the
    digest leaves out); returns it."""
    xml_path = Path(xml_path)
    digest = ir_digest(xml_path)
    text = re.sub(r"\s*<content_sha256 value=\"[^\"]*\" />", "", xml_path.read_text())
    entry = f'<content_sha256 value="{digest}" />'
    if "<scaoed>" in text:
        text = text.replace("<scaoed>", f"<scaoed>\n\t\t\t{entry}", 1)
    elif "</rt_info>" in text:
        text = text.replace("</rt_info>", f"\t<scaoed>\n\t\t\t{entry}\n\t\t</scaoed>\n\t</rt_info>", 1)
    else:
        text = text.replace(
            "</net>", f"\t<rt_info>\n\t\t<scaoed>\n\t\t\t{entry}\n\t\t</scaoed>\n\t</rt_info>\n</net>", 1
        )
    xml_path.write_text(text)
    return digest


def content_digest(path: str | Path) -> str | None:
    """The digest of an ONNX file or an IR as it is now (None for other files)."""
    import onnx

    path = Path(path)
    if path.suffix.lower() in ONNX_SUFFIXES:
        return onnx_digest(onnx.load(str(path)))
    if path.suffix.lower() in OPENVINO_SUFFIXES:
        return ir_digest(path)
    return None


def check_seal(path: str | Path, metadata: dict[str, str], allow_unverified: bool = False) -> bool:
    """True when ``path`` records a digest and is still that content; False when it records none (a foreign file,
    or one made before artifacts were sealed). A file whose digest differs is refused unless ``allow_unverified``."""
    recorded = metadata.get(SEAL_KEY)
    if not recorded:
        return False
    if content_digest(path) == recorded:
        return True
    if allow_unverified:
        return False
    raise VerificationError(
        f"{path} was edited after verification: its graph or weights are not the ones its "
        f"{META_PREFIX}{SEAL_KEY} records; re-export or rebuild it, or pass --allow-unverified to "
        "use it as it is"
    )
