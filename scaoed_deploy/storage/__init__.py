"""Where a run's images live: local paths, or objects in a bucket (``s3://bucket/prefix/name.png``).

``denoise`` reads and writes object storage through ``pyarrow.fs`` (``objects.py``), configured the
way every AWS tool is: ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) for an S3-compatible
server, ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_REGION``
(or ``AWS_DEFAULT_REGION``). An input is copied to a local temporary file, denoised as a local
file is, and its output put back as one object (S3 shows an object only once its upload is
complete: no partial output is ever visible); ``staged.py`` does that around ``denoise_file``.
"""

from .objects import (
    ObjectError,
    check_bucket,
    is_url,
    join,
    list_objects,
    name_of,
    object_names,
    read_text,
    suffix_of,
    write_bytes,
)
from .staged import local_copy, staged_output

__all__ = [
    "ObjectError",
    "check_bucket",
    "is_url",
    "join",
    "list_objects",
    "local_copy",
    "name_of",
    "object_names",
    "read_text",
    "staged_output",
    "suffix_of",
    "write_bytes",
]
