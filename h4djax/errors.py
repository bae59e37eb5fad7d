"""Error types. Every error raised on bad user input names the file, camera and field it concerns."""

from __future__ import annotations


class H4DError(Exception):
    """Base class for all h4djax errors on bad input (caught by the CLI and printed without a traceback)."""


class ConfigError(H4DError):
    """A configuration file or override is malformed (unknown key, wrong type)."""


class CalibrationError(H4DError):
    """A calibration file is missing a field, has NaNs, a non-orthonormal rotation or an unknown camera model."""

    def __init__(self, file: str, camera: str | None, field: str | None, message: str):
        self.file, self.camera, self.field = str(file), camera, field
        where = f"{self.file}"
        if camera is not None:
            where += f", camera '{camera}'"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")


class CaptureError(H4DError):
    """A capture directory or keypoint file is malformed (wrong shapes, missing cameras, corrupt file)."""


class BodyModelError(H4DError):
    """A body-model file cannot be loaded or has inconsistent arrays."""
