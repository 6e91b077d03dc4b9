"""What every stage of a conversion shares; the quantizers, selection and the MAE build on it.

- :mod:`.options`: every setting and its range (``ConvertConfig``; no torch, so the CLI checks
  options before importing the quantizer).
- :mod:`.sources`: datasets in (folders, archives, arrays, WebDataset shards), odd images
  converted or reported; :mod:`.imaging`: the disk-backed image cache and the image helpers.
- :mod:`.context`: the typed ``Conversion`` handed to every stage; :mod:`.summary`: the summary,
  stage timings and the device choice; :mod:`.checkpoint`: the resumable work directory;
  :mod:`.output`: writing rows into a file or a dataset directory.
- :mod:`.distributed` (the ranks converting together) and :mod:`.progress` (bars and notes).

The orchestration that runs the stages in order is :mod:`dcqformat.conversion`, above them.
"""
