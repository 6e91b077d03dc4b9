"""The exceptions of dcqformat: one hierarchy rooted at :class:`DcqError`."""

from __future__ import annotations


class DcqError(ValueError):
    """Base class of every error that dcqformat raises about a file or its input."""


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

    def __init__(self, section: str, offset: int, stored: int, computed: int) -> None:
        super().__init__(
            "checksum mismatch",
            section=section,
            offset=offset,
            expected=f"stored CRC-32 {stored:#010x}",
            found=f"computed {computed:#010x}",
        )
        self.stored = stored
        self.computed = computed


class FileChanged(DcqError):
    """The file at a path is not the one first opened there (replaced or rewritten meanwhile)."""
