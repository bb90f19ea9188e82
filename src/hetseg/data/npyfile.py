"""Read ``.npy`` files without ever running a user's pickle.

Project rule: never unpickle a user's file with ``np.load(..., allow_pickle=True)``: a pickle can
call any function (``os.system`` included) while it loads. irn/psa's ``cls_labels.npy`` *is* a
pickle (``np.save`` of a dict id -> multi-hot), so :func:`read_npy` parses the header with
``numpy.lib.format`` and, for object arrays only, unpickles the payload with
:class:`RestrictedUnpickler`, whose ``find_class`` hands out nothing but the few globals numpy needs
to rebuild arrays, dtypes and scalars (each wrapped to refuse object-typed tricks) and the
builtin containers. Any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...)
raises before it is called, so nothing in the file runs.
"""

from __future__ import annotations

import builtins
import codecs
import pickle
from pathlib import Path

import numpy as np
from numpy.lib import format as npformat

from hetseg.errors import DataError

_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy.(_)core.multiarray._reconstruct
_SCALAR = np.int32(0).__reduce__()[0]  # numpy.(_)core.multiarray.scalar


class ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle asked for a global outside the allow-list (nothing was called)."""


def _reconstruct(subtype, shape, dtype_code):
    if subtype is not np.ndarray:
        raise ForbiddenGlobal(f"_reconstruct of {subtype!r}, not numpy.ndarray")
    return _RECONSTRUCT(subtype, shape, dtype_code)


def _scalar(dtype, data=None):
    # Numeric scalars only (e.g. irn's numpy.int32 keys): object-typed scalars are never needed.
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc" or not isinstance(data, bytes):
        raise ForbiddenGlobal(f"numpy scalar of dtype {dtype!r}")
    return _SCALAR(dtype, data)


def _encode(text, encoding="utf-8", errors="strict"):
    # Protocol-2 pickles spell bytes as _codecs.encode(str, 'latin1').
    if not isinstance(text, str) or codecs.lookup(encoding).name not in ("latin-1", "iso8859-1", "utf-8"):
        raise ForbiddenGlobal(f"_codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, encoding, errors)


ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("_codecs", "encode"): _encode,
    **{("builtins", n): getattr(builtins, n) for n in ("dict", "list", "tuple", "set", "frozenset")},
}


class RestrictedUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` whose ``find_class`` allows only :data:`ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ForbiddenGlobal(f"the pickle asks for {module}.{name}") from None

    def persistent_load(self, pid):
        raise ForbiddenGlobal("the pickle uses persistent ids")


_FIX = "pass a .npy written by np.save from plain numbers (irn/psa's voc12/cls_labels.npy is one)"


def read_npy(path: str | Path) -> np.ndarray:
    """Read a ``.npy`` file; object arrays are unpickled with :class:`RestrictedUnpickler`.

    Missing file, bad magic/header, truncated data and any global outside the allow-list raise
    :class:`DataError` naming the file (for a forbidden global, the problem names it and says that
    nothing was run).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "is a directory, not a .npy file" if p.is_dir() else ".npy file not found",
                        "check the path")
    try:
        with open(p, "rb") as f:
            version = npformat.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = npformat.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = npformat.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            if not dtype.hasobject:
                f.seek(0)
                return npformat.read_array(f, allow_pickle=False)
            if dtype != np.dtype(object):
                raise ValueError(f"structured dtype {dtype} with objects")
            arr = RestrictedUnpickler(f).load()
    except ForbiddenGlobal as e:
        raise DataError(p, f"refused to unpickle: {e} (nothing was run; only numpy arrays, dtypes, numbers "
                        "and containers are rebuilt)", _FIX) from None
    except Exception as e:  # noqa: BLE001 - a hostile or corrupt file may raise anything; never a traceback
        raise DataError(p, f"cannot read .npy ({type(e).__name__}: {e})", _FIX) from None
    if not isinstance(arr, np.ndarray) or arr.dtype != np.dtype(object) or arr.shape != tuple(shape):
        raise DataError(p, f"pickled payload is a {type(arr).__name__}, not the {shape} object array the header "
                        "announces", _FIX)
    return arr
