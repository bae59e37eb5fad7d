"""Errors of the 2D front end. Both derive from the package's base classes, so the CLI reports them in one line."""

from __future__ import annotations

from h4djax.errors import CaptureError, H4DError


class ModelCardError(H4DError):
    """A model card (`.toml` beside an `.onnx`) or a command-line override is malformed, or the ONNX model does not
    match its card (input shape, number of outputs). The message names the file and the field."""

    def __init__(self, file: str, field: str | None, message: str):
        self.file, self.field = str(file), field
        where = self.file if field is None else f"{self.file}, field '{field}'"
        super().__init__(f"{where}: {message}")


class VideoError(CaptureError):
    """A video file or image folder cannot be read, or cameras disagree (frame count, frame size vs calibration)
    in a way that cannot be handled automatically. The message names the camera and the file."""

    def __init__(self, file: str, camera: str | None, message: str):
        self.file, self.camera = str(file), camera
        where = self.file if camera is None else f"{self.file} (camera '{camera}')"
        super().__init__(f"{where}: {message}")
