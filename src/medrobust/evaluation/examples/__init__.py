"""Files the grid writes beside the store: example slices (``.npz``) and adversarial images.

The grid keeps, per model, the ``k`` cases whose worst run lowered the score the most
(``drop = clean_score - adv_score``; for classifiers plus a small term for the fall of the
true-class probability so ties break by confidence). For each such run it saves one 2D
slice (the slice of a volume holding the most foreground in the label, else the central
one) with the clean and adversarial image, both predictions and the label. Files are
plain numeric/str arrays written with ``np.savez_compressed`` and read back with
``allow_pickle=False``. The report picks the same runs from the store (``select_examples``).

- :mod:`~medrobust.evaluation.examples.selection`: which runs keep an example
  (``select_examples``, ``ExampleKeeper``) and its file name.
- :mod:`~medrobust.evaluation.examples.slices`: one run's example slice (``save_example``,
  ``load_example``).
- :mod:`~medrobust.evaluation.examples.npz`: the plain ``.npz`` files (``write_npz``,
  ``read_npz``), shared with corruption thumbnails and Grad-CAM panels.
- :mod:`~medrobust.evaluation.examples.adversarial`: adversarial images in raw units and
  their ``manifest.json`` (``save_adversarial``, ``adversarial_folder``).
"""
from __future__ import annotations

from medrobust.evaluation.examples.adversarial import adversarial_folder, save_adversarial
from medrobust.evaluation.examples.npz import read_npz, write_npz
from medrobust.evaluation.examples.selection import EXAMPLES_DIR, ExampleKeeper, drop_of, example_name, select_examples
from medrobust.evaluation.examples.slices import load_example, save_example, slice_index

__all__ = ["EXAMPLES_DIR", "ExampleKeeper", "adversarial_folder", "drop_of", "example_name", "load_example",
           "read_npz", "save_adversarial", "save_example", "select_examples", "slice_index", "write_npz"]

