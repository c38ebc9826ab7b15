"""medrobust.data: reading and writing images, datalists, datasets and demo data.

- :mod:`~medrobust.data.io`: NIfTI / PNG read and write (atomic), formats, ``DataError``.
- :mod:`~medrobust.data.readers`: every format through MONAI's ``LoadImage`` (NIfTI, NRRD,
  MetaImage, DICOM series); :mod:`~medrobust.data.writers`: outputs in the source's format.
- :mod:`~medrobust.data.datalists`: Decathlon ``dataset.json``, class folders, CSV;
  :mod:`~medrobust.data.nnunet_raw`: nnU-Net v2 raw datasets.
- :mod:`~medrobust.data.transforms`: ``make_dataset`` (checks, spacing, crop/pad,
  normalisation recorded as an ``IntensityMap``, augmentation) and ``collate``.
- :mod:`~medrobust.data.demo`: MNI152 demo sets; :mod:`~medrobust.data.phantoms`: phantoms.

Only the light I/O names are imported here, so ``import medrobust.data`` stays cheap.
"""
from medrobust.data.io import DataError, atomic_path, read_image_2d, read_nifti, write_json_atomic, write_nifti

__all__ = ["DataError", "atomic_path", "read_image_2d", "read_nifti", "write_json_atomic", "write_nifti"]
