"""The exceptions of dcqformat: one hierarchy rooted at :class:`DcqError`."""

from __future__ import annotations


class DcqError(ValueError):
    """Base class of every error that dcqformat raises about a file or its input.

    ``path`` is the file concerned, when there is one (it prefixes the message).
    """

    path: str | None = None

    def __str__(self) -> str:
        text = super().__str__()
        return f"{self.path}: {text}" if self.path else text


class NotADcqFile(DcqError):
    """The bytes do not start with the .dcq magic."""


class UnsupportedVersion(DcqError):
    """The file's major version (or a required feature) is not one this reader knows."""


class CorruptFile(DcqError):
    """The file is a .dcq file whose structure is wrong.

    ``section`` names the section (or ``"header"``), ``offset`` the byte offset in the file
    where the problem lies, ``expected``/``found`` what was wanted and what is there.
    """

    def __init__(
        self,
        message: str,
        *,
        section: str = "header",
        offset: int | None = None,
        expected: object = None,
        found: object = None,
    ) -> None:
        self.section = section
        self.offset = offset
        self.expected = expected
        self.found = found
        where = f"{section}" + (f" at byte {offset}" if offset is not None else "")
        detail = ""
        if expected is not None or found is not None:
            detail = f": expected {expected}, found {found}"
        super().__init__(f"corrupt dcq file ({where}): {message}{detail}")


class TruncatedFile(CorruptFile):
    """The file is shorter than its header says."""


class ChecksumMismatch(CorruptFile):
    """A stored CRC-32 differs from the one computed over the bytes."""

    def __init__(self, section: str, offset: int, stored: int, computed: int, *, block: int | None = None,
                 span: tuple[int, int] | None = None) -> None:
        what = "checksum mismatch"
        if block is not None:
            what += f" in {section} block {block}" + (f" (bytes {span[0]}..{span[1]} of {section})" if span else "")
        super().__init__(
            what,
            section=section,
            offset=offset,
            expected=f"stored CRC-32 {stored:#010x}",
            found=f"computed {computed:#010x}",
        )
        self.stored = stored
        self.computed = computed
        self.block = block


class FileChanged(DcqError):
    """The file at a path is not the one first opened there (replaced or rewritten meanwhile)."""
