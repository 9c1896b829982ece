"""`charlm data fetch`: download a classic corpus from its canonical address, verified."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

from charlm.errors import CorpusError
from charlm.files import write_atomic

KNOWN_CORPORA = {
    "tinyshakespeare": dict(
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/"
        "input.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        filename="tinyshakespeare.txt",
    ),
}
TIMEOUT_S = 60


def fetch(name: str, dest: Path, url: str | None = None) -> Path:
    """Download corpus `name` into `dest`, check its sha256, write it atomically."""
    if name not in KNOWN_CORPORA:
        raise CorpusError(f"unknown corpus {name!r}; available: {', '.join(KNOWN_CORPORA)}")
    known = KNOWN_CORPORA[name]
    source = url or known["url"]
    try:
        with urllib.request.urlopen(source, timeout=TIMEOUT_S) as response:
            data = response.read()
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise CorpusError(
            f"downloading {source} failed ({reason}); check the network or give --url"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != known["sha256"]:
        raise CorpusError(
            f"{source} has sha256 {digest}, expected {known['sha256']}; "
            f"the download is corrupt or not {name}: nothing was written"
        )
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / known["filename"]
    write_atomic(path, data)
    return path
