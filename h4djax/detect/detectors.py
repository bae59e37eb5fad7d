"""Person box detectors on onnxruntime: YOLOX and RTMDet as exported by mmdet / mmdeploy / rtmlib.

Preprocessing (rtmlib / mmdet): letterbox to the input size keeping the aspect ratio, image at the top-left,
padding 114; YOLOX takes raw 0-255 BGR, RTMDet BGR normalized with ImageNet mean/std (all set in the model card).

Outputs (card `output_format`):
- "end2end": `dets` f[1, N, 5] (x1, y1, x2, y2, score) in input pixels and `labels` i[1, N], NMS already done in
  the graph (mmdeploy's end2end export, what rtmlib ships). Person boxes are kept and NMS is re-applied with the
  card's threshold (harmless on already suppressed boxes, and it caps the count).
- "raw": the YOLOX head before decoding, f[1, anchors, 5 + classes] = (dx, dy, log w, log h, objectness,
  class probabilities) on the stride-8/16/32 grids (Ge et al., "YOLOX", 2021; the official export with
  decode_in_inference=False); decoded as (d + grid) x stride, exp(log size) x stride, score = obj x class.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float, UInt8

from h4djax.detect.blazepose import Detections
from h4djax.detect.cards import ModelCard
from h4djax.detect.crop import apply_affine, letterbox
from h4djax.detect.runtime import OnnxModel


def nms(boxes: Float[np.ndarray, "n 4"], scores: Float[np.ndarray, "n"], iou_threshold: float, max_out: int):
    """Greedy hard NMS on xyxy boxes; returns the kept indices, best first."""
    order = np.argsort(-scores, kind="stable")
    area = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    keep = []
    while order.size and len(keep) < max_out:  # over surviving candidates, not anchors
        i = order[0]
        keep.append(i)
        rest = order[1:]
        x1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        y1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        x2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        y2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
        union = area[i] + area[rest] - inter
        iou = inter / np.where(union > 0, union, 1.0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, np.int64)


def yolox_grid(input_w: int, input_h: int, strides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Grid cell offsets f[anchors, 2] and strides f[anchors] of the YOLOX head, row-major per stride."""
    grids, st = [], []
    for s in strides:
        gh, gw = input_h // s, input_w // s
        ys, xs = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
        grids.append(np.stack([xs.ravel(), ys.ravel()], 1))
        st.append(np.full(gh * gw, float(s)))
    return np.concatenate(grids).astype(np.float64), np.concatenate(st)


class BoxDetector:
    """YOLOX / RTMDet person detector (card kind `yolox` or `rtmdet`)."""

    def __init__(self, card: ModelCard, *, threads: int = 2, device: str = "auto"):
        if card.kind not in ("yolox", "rtmdet"):
            raise ValueError(f"card kind {card.kind!r} is not a box detector")
        self.card = card
        self.model = OnnxModel(card, threads=threads, device=device)
        w, h = card.input_size
        self.grid, self.grid_strides = yolox_grid(w, h, card.strides)

    def decode(self, outputs: list[np.ndarray], crop2img: Float[np.ndarray, "2 3"]) -> Detections:
        """Model outputs -> person Detections in image pixels (rois = the boxes, unpadded, rotation 0)."""
        c = self.card
        if c.output_format == "end2end":
            dets = next(o for o in outputs if o.ndim == 3 and o.shape[-1] == 5)[0].astype(np.float64)
            labels = [o for o in outputs if o.ndim == 2]
            is_person = labels[0][0] == c.person_class if labels else np.ones(len(dets), bool)
            boxes, scores = dets[:, :4], dets[:, 4]
        else:
            raw = outputs[0][0].astype(np.float64)
            if raw.shape[0] != self.grid.shape[0]:
                raise ValueError(f"{c.path}: raw output has {raw.shape[0]} anchors, the stride-{list(c.strides)} "
                                 f"grid of {list(c.input_size)} has {self.grid.shape[0]}")
            cxy = (raw[:, :2] + self.grid) * self.grid_strides[:, None]
            wh = np.exp(np.clip(raw[:, 2:4], -20.0, 20.0)) * self.grid_strides[:, None]
            boxes = np.concatenate([cxy - wh / 2, cxy + wh / 2], axis=1)
            scores = raw[:, 4] * raw[:, 5 + c.person_class]
            is_person = np.ones(len(scores), bool)
        keep = is_person & (scores >= c.score_threshold)
        boxes, scores = boxes[keep], scores[keep]
        k = nms(boxes, scores, c.nms_iou, c.max_people)
        boxes = apply_affine(crop2img, boxes[k].reshape(-1, 2, 2)).reshape(-1, 4)
        scores = scores[k]
        rois = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                         boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1], np.zeros(len(k))], axis=1)
        return Detections(boxes=boxes, scores=scores, keypoints=np.zeros((len(k), 0, 2)), rois=rois)

    def __call__(self, image: UInt8[np.ndarray, "H W 3"]) -> Detections:
        """Detect people in one RGB uint8 image."""
        w, h = self.card.input_size
        crop, crop2img = letterbox(image, w, h, align=self.card.letterbox, pad_value=self.card.pad_value)
        return self.decode(self.model.run(self.model.preprocess(crop[None])), crop2img)
