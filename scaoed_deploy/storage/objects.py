"""Object storage through ``pyarrow.fs``: one S3 filesystem per process, set from the AWS variables.

Every failure (no such bucket, a refused key, an endpoint that does not answer) is an
``ObjectError``: one line naming the URL and what the server said. Connections time out after
``CONNECT_TIMEOUT_S`` and requests after ``REQUEST_TIMEOUT_S``, so a wrong endpoint is a line in
seconds, not a hang.
"""

from __future__ import annotations

import functools
import os
import posixpath

from ..errors import ScaoedError, first_line

SCHEMES = ("s3://",)
CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 60.0


class ObjectError(ScaoedError):
    """Object storage refused or could not be reached."""


def is_url(value) -> bool:
    return isinstance(value, str) and value.lower().startswith(SCHEMES)


def split(url: str) -> tuple[str, str]:
    """(bucket, key) of ``s3://bucket/key``."""
    rest = url.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ObjectError(f"{url}: no bucket named (write s3://BUCKET/PREFIX/)")
    return bucket, key


def name_of(url: str) -> str:
    return posixpath.basename(url.rstrip("/"))


def suffix_of(url: str) -> str:
    return posixpath.splitext(name_of(url))[1].lower()


def join(folder_url: str, name: str) -> str:
    return folder_url.rstrip("/") + "/" + name


def _arrow():
    """pyarrow.fs, or one line saying how to install it."""
    try:
        from pyarrow import fs
    except ImportError as e:
        raise ObjectError(f"s3:// needs pyarrow: pip install 'scaoed-deploy[s3]' ({first_line(e)})") from e
    return fs


@functools.lru_cache(maxsize=1)
def filesystem():
    """The S3 filesystem of this process, from the standard AWS variables (Arrow does not read AWS_ENDPOINT_URL
    itself: it is passed as the endpoint override)."""
    fs = _arrow()
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    return fs.S3FileSystem(
        endpoint_override=endpoint,
        region=region,
        connect_timeout=CONNECT_TIMEOUT_S,
        request_timeout=REQUEST_TIMEOUT_S,
        retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=3),
    )


def _path(url: str) -> str:
    bucket, key = split(url)
    return f"{bucket}/{key}".rstrip("/")


def _error(url: str, e: Exception, doing: str) -> ObjectError:
    text = first_line(e, 300)
    hint = ""
    if "ACCESS_DENIED" in text or "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text:
        hint = " (check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
    elif "NETWORK_CONNECTION" in text or "resolve host" in text:
        hint = " (check AWS_ENDPOINT_URL)"
    return ObjectError(f"{url}: cannot {doing}: {text}{hint}")


def check_bucket(url: str) -> None:
    """One line where the URL's bucket does not exist or cannot be reached with these credentials."""
    fs = _arrow()
    bucket, _ = split(url)
    try:
        info = filesystem().get_file_info(bucket)
    except OSError as e:
        raise _error(url, e, "reach its bucket") from e
    if info.type == fs.FileType.NotFound:
        raise ObjectError(
            f"{url}: no bucket named {bucket!r} at "
            f"{os.environ.get('AWS_ENDPOINT_URL_S3') or os.environ.get('AWS_ENDPOINT_URL') or 'AWS'}"
        )


def list_objects(folder_url: str) -> list[tuple[str, int]]:
    """(URL, size) of each object directly under ``folder_url`` (not recursively), sorted; [] for an empty or
    absent prefix of a bucket that exists."""
    fs = _arrow()
    check_bucket(folder_url)
    try:
        infos = filesystem().get_file_info(fs.FileSelector(_path(folder_url), recursive=False, allow_not_found=True))
    except OSError as e:
        raise _error(folder_url, e, "list it") from e
    scheme = folder_url.split("://", 1)[0]
    return sorted((f"{scheme}://{i.path}", i.size) for i in infos if i.type == fs.FileType.File)


def object_names(folder_url: str) -> set[str]:
    """The names of the objects directly under ``folder_url`` (one listing, however many there are)."""
    return {name_of(url) for url, _ in list_objects(folder_url)}


def read_bytes(url: str) -> bytes:
    try:
        with filesystem().open_input_stream(_path(url)) as f:
            return f.read()
    except FileNotFoundError as e:
        raise ObjectError(f"{url}: no such object") from e
    except OSError as e:
        raise _error(url, e, "read it") from e


def read_text(url: str) -> str:
    try:
        return read_bytes(url).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ObjectError(f"{url}: not UTF-8 text ({e})") from e


def write_bytes(url: str, data: bytes) -> None:
    """One object, put whole: readers see the old object (or none) until the upload completes."""
    try:
        with filesystem().open_output_stream(_path(url)) as f:
            f.write(data)
    except OSError as e:
        raise _error(url, e, "write it") from e
