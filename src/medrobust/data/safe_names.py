"""The one rule for file and folder names made from user data (case ids, model and attack names).

A name from a datalist or a grid may hold ``../``, an absolute path, a backslash, NUL or simply a
character a file system refuses. :func:`safe_name` turns it into one path component that
cannot leave its folder: names that are already safe are kept as they are, any other name
becomes a readable slug plus a short hash of the original (so two different names never
share a slug). :class:`UniqueNames` hands out the names of one output folder for one run:
a second key whose name is taken (case-insensitively, as on macOS and Windows) gets a
``-2``, ``-3``, ... suffix, and the writer records the key -> file mapping in its manifest.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
MAX_SLUG = 80  # characters of the readable part


def safe_name(text: str) -> str:
    """One path component for ``text`` that stays inside its folder.

    Args:
        text: a case id, model name, attack label, ... as the user wrote it.

    Returns:
        ``text`` itself when it is made of letters, digits, ``.``, ``_`` and ``-`` only,
        starts with a letter or digit and has at most 80 characters; otherwise a slug of
        its safe characters plus ``-`` and 8 hex digits of its SHA-1.

    Example:
        >>> safe_name("case_001")
        'case_001'
        >>> safe_name("../../victim/labelsTs/mni_017")
        'victim_labelsTs_mni_017-78091127'
        >>> safe_name("/etc/passwd"), safe_name("..")
        ('etc_passwd-b5cc3f67', 'x-9d891e73')
        >>> name = safe_name("a" + chr(92) + "b/c" + chr(0) + "d")  # backslash, slash, NUL
        >>> name, "/" in name
        ('a_b_c_d-d1bb4b03', False)
    """
    text = str(text)
    if _SAFE.fullmatch(text) and len(text) <= MAX_SLUG:
        return text
    slug = _UNSAFE_RUN.sub("_", text).strip("._-")[:MAX_SLUG] or "x"
    digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{slug}-{digest}"


class UniqueNames:
    """File names of one output folder in one run.

    The same key always gets the same name; two keys never share one.

    Args:
        taken: names already used in the folder, by key (e.g. read back from its manifest);
            those keys keep their names.

    Example:
        >>> names = UniqueNames()
        >>> names.name("case1", "_pred.nii.gz"), names.name("Case1", "_pred.nii.gz")
        ('case1_pred.nii.gz', 'Case1-2_pred.nii.gz')
        >>> names.name("case1", "_pred.nii.gz")  # the same key: the same file
        'case1_pred.nii.gz'
        >>> UniqueNames({"a": "a.nii.gz"}).name("b/../a", ".nii.gz")
        'b_.._a-75bd7b13.nii.gz'
    """

    def __init__(self, taken: Mapping[str, str] | None = None) -> None:
        self._by_key: dict[str, str] = dict(taken or {})
        self._used = {name.lower() for name in self._by_key.values()}

    def name(self, key: str, suffix: str = "") -> str:
        """The file name of ``key``: its :func:`safe_name`, a ``-k`` counter if taken, then ``suffix``.

        Args:
            key: the case id (or other user-given name) the file belongs to.
            suffix: appended unchanged (``".nii.gz"``, ``"_pred.nii.gz"``); must be safe.

        Returns:
            A name unique in this folder, the same on every call with ``key``.
        """
        if key in self._by_key:
            return self._by_key[key]
        base, k = safe_name(key), 1
        candidate = f"{base}{suffix}"
        while candidate.lower() in self._used:
            k += 1
            candidate = f"{base}-{k}{suffix}"
        self._by_key[key] = candidate
        self._used.add(candidate.lower())
        return candidate
