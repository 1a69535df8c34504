"""Image loading whose errors name the file.

MONAI's ``LoadImaged`` reports a truncated ``.nii.gz`` as ``EOFError: Compressed file ended ...`` inside a
``RuntimeError("applying transform ...")``, without the path. :class:`LoadImageNamed` is the same
transform, but any failure becomes ``ValueError("<path>: cannot read image (<cause>)")``, which the
command lines print as one line (:func:`swinunetr_lib.utils.run_cli`).
"""
from __future__ import annotations

from typing import Any, Hashable, Mapping

from monai.transforms import LoadImaged

from .utils import error_message


class LoadImageNamed(LoadImaged):
    """``monai.transforms.LoadImaged`` that names the file(s) it could not read."""

    def __call__(self, data: Mapping[Hashable, Any], reader: Any = None) -> dict[Hashable, Any]:
        try:
            return super().__call__(data, reader)
        except Exception as err:  # noqa: BLE001 - any reader failure: say which file
            files = ", ".join(str(data[k]) for k in self.keys if k in data)
            raise ValueError(f"{files}: cannot read image ({error_message(err)})") from err
