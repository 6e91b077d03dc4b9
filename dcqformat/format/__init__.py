"""The container (spec/FORMAT.md, spec/WEBDATASET.md): sections, assembly and the other file forms.

- Sections, one module each, both directions (parse and check / pack): :mod:`.header` (header
  and section table), :mod:`.records` (RECS), :mod:`.palettes` (PALT), :mod:`.masks` (MASK),
  :mod:`.checksums` (DCRC), :mod:`.weights` (WGHT, safetensors), :mod:`.meta` (META).
- Assembly: :mod:`.reader` (memory map -> checked sections -> ``streams(indices)``) and
  :mod:`.writer` (temporary file renamed into place). Neither knows a codec by name.
- Other forms of the same bytes: :mod:`.multifile` (dataset directories: a manifest and part
  files) and :mod:`.dcqi` (the WebDataset members ``.dcqb`` / ``.dcqi``).

``import dcqformat`` re-exports what users need: ``dcqformat.open``, ``DcqReader``, ``DcqWriter``.
"""
