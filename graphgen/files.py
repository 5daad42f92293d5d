"""What a file the user gave turns out to be, said in their terms when it is not what was asked for."""

from __future__ import annotations

from pathlib import Path


def looks_like_text(head: bytes) -> bool:
    """Whether a file's first bytes are plain text (a README, a label list, JSON...)."""
    if not head or b"\x00" in head:
        return False
    text = head.decode("utf-8", errors="replace")
    readable = sum(ch.isprintable() or ch in "\t\r\n" for ch in text)
    return readable >= 0.95 * len(text)


def text_hint(path: Path) -> str:
    """``" (it looks like a text file)"`` when it does, else ``""``: for the end of a refusal."""
    try:
        with path.open("rb") as stream:
            head = stream.read(512)
    except OSError:
        return ""
    return " (it looks like a text file)" if looks_like_text(head) else ""


def not_a_file(path: Path, what: str) -> str | None:
    """Why ``path`` cannot be read as ``what`` (a folder, nothing there), or None when it is a file."""
    if path.is_dir():
        return f"{path} is a folder, not {what}"
    if not path.is_file():
        return f"{path}: no such file"
    return None
