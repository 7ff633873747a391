"""The SHA-256 of an export's payload: written into its metadata, checked before the file is used.

A file whose bytes changed after the export (a bad copy, a damaged disk, an edit) would otherwise load
and answer with wrong probabilities, or with none (NaN), and be reported as right. The digest covers
everything but the metadata that carries it:

* TorchScript (a zip archive): each member's name and content, in name order, except ``extra/metadata.json``
  and torch's ``.data/serialization_id`` (an id of the save, which follows the metadata). Reading the members
  also checks the zip's own CRCs.
* ONNX: the model's graph (its nodes and weights), serialised deterministically.

An export written before the digest existed still loads; it says it cannot be verified.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

from dtl_engine.errors import ExportError

PAYLOAD_KEY = "payload_sha256"
_METADATA_MEMBER = "/extra/metadata.json"
_NOT_PAYLOAD = (_METADATA_MEMBER, "/.data/serialization_id")
UNVERIFIED = ("'{name}' was exported without a checksum of its contents (an older export), so damage to the "
              "file cannot be detected; export it again to have it checked.")


def torchscript_digest(source: bytes | Path) -> str:
    """The payload digest of a TorchScript archive (bytes in memory, or a file)."""
    digest = hashlib.sha256()
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    with zipfile.ZipFile(handle) as archive:
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
            if info.filename.endswith(_NOT_PAYLOAD):
                continue
            data = archive.read(info)           # raises BadZipFile when the member's CRC does not match
            digest.update(info.filename.encode("utf-8", "surrogateescape") + b"\0")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
    return digest.hexdigest()


def onnx_digest(proto: Any) -> str:
    """The payload digest of an ONNX ModelProto (its graph)."""
    return hashlib.sha256(proto.graph.SerializeToString(deterministic=True)).hexdigest()


def check_payload(path: Path, format: str, metadata: dict[str, Any]) -> str | None:
    """Refuse (``ExportError``) a file whose payload does not match its digest; return a notice for a file
    without one (None when it matched)."""
    expected = metadata.get(PAYLOAD_KEY)
    if not expected:
        return UNVERIFIED.format(name=path.name)
    try:
        actual = torchscript_digest(path) if format == "torchscript" else _onnx_file_digest(path)
    except ImportError:
        return f"'{path.name}' cannot be checked for damage without the 'onnx' package (pip install onnx)."
    except Exception as exc:    # a damaged zip or protobuf fails in many ways; each is the same finding
        raise ExportError(_damaged(path, f"it cannot be read back ({type(exc).__name__})")) from exc
    if actual != expected:
        raise ExportError(_damaged(path, "its contents do not match the checksum written at export"))
    return None


def torchscript_metadata(path: Path) -> dict[str, Any]:
    """The metadata a TorchScript export carries, read from the archive without loading the model."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith(_METADATA_MEMBER)), None)
            return json.loads(archive.read(name)) if name else {}
    except Exception as exc:    # a damaged archive: the same finding as a wrong checksum
        raise ExportError(_damaged(path, f"it cannot be read back ({type(exc).__name__})")) from exc


def _onnx_file_digest(path: Path) -> str:
    import onnx             # ImportError: the caller says the file cannot be checked here

    return onnx_digest(onnx.load(str(path), load_external_data=False))


def _damaged(path: Path, why: str) -> str:
    return (f"The exported model '{path.name}' is damaged: {why}. It was not used; export the run again "
            "or copy the file again from where it was made.")
