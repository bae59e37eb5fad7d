"""onnxruntime sessions for the 2D front end: CUDA when available, else CPU; thread counts configurable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from h4djax.detect.cards import ModelCard
from h4djax.detect.errors import ModelCardError


def available_providers(device: str = "auto") -> list[str]:
    """Execution providers for `device` ("auto": CUDA if this onnxruntime build has it, then CPU; "cpu"; "cuda")."""
    have = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in have:
            raise ModelCardError("<onnxruntime>", "device", f"CUDA requested but onnxruntime offers only {have}")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device != "auto":
        raise ModelCardError("<onnxruntime>", "device", f"unknown device {device!r} (auto, cpu, cuda)")
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in have]


def make_session(path: str | Path, *, threads: int = 2, device: str = "auto") -> ort.InferenceSession:
    """An InferenceSession with `threads` intra-op threads (0 = onnxruntime's default) and one inter-op thread."""
    path = Path(path)
    if not path.is_file():
        raise ModelCardError(str(path), None, "ONNX model file not found")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(0, int(threads))
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=available_providers(device))
    except Exception as e:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
        raise ModelCardError(str(path), None, f"onnxruntime cannot load the model: {e}") from None


class OnnxModel:
    """A session plus its card; checks the input shape against the card once, at load time."""

    def __init__(self, card: ModelCard, *, threads: int = 2, device: str = "auto"):
        self.card = card
        self.session = make_session(card.path, threads=threads, device=device)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_names = [o.name for o in self.session.get_outputs()]
        w, h = card.input_size
        want = [h, w, 3] if card.layout == "nhwc" else [3, h, w]
        got = list(inp.shape[1:])
        if len(got) != 3 or any(isinstance(g, int) and g != x for g, x in zip(got, want)):
            raise ModelCardError(
                card.card_path or card.path, "input_size",
                f"card says {card.layout} {want} (input_size={list(card.input_size)}) but the model input "
                f"'{inp.name}' has shape {inp.shape}",
            )

    def preprocess(self, crops: np.ndarray) -> np.ndarray:
        """uint8 RGB crops [n, h, w, 3] -> the model's input tensor (colour order, normalization, layout)."""
        c = self.card
        x = crops if c.color == "rgb" else crops[..., ::-1]
        if c.input_dtype == "uint8":
            x = np.ascontiguousarray(x, dtype=np.uint8)
        else:
            mean = np.asarray(c.mean, np.float32)
            inv_std = 1.0 / np.asarray(c.std, np.float32)
            x = (x.astype(np.float32) - mean) * inv_std
        if c.layout == "nchw":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x)

    def run(self, tensor: np.ndarray) -> list[np.ndarray]:
        """Run on a batch; models exported with batch size 1 are run item by item."""
        batch_dim = self.session.get_inputs()[0].shape[0]
        if isinstance(batch_dim, int) and batch_dim == 1 and tensor.shape[0] != 1:
            outs = [self.session.run(None, {self.input_name: tensor[i:i + 1]}) for i in range(tensor.shape[0])]
            return [np.concatenate([o[j] for o in outs], axis=0) for j in range(len(outs[0]))]
        return self.session.run(None, {self.input_name: tensor})
