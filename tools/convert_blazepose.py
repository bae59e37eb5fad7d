"""Convert MediaPipe BlazePose (pose detector + full landmark model) from TFLite to ONNX, and check parity.

One-off build tool; TensorFlow is never a runtime dependency of h4djax. Run it in a throwaway virtualenv:

    python3.11 -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install tensorflow-cpu==2.19.1 tf2onnx==1.17.0 onnx onnxruntime opencv-python-headless jaxtyping
    /tmp/tfvenv/bin/python tools/convert_blazepose.py --out models \\
        --video /work/shared/data/pose2sim_demo/videos_single/cam01.mp4 --parity-json /tmp/blazepose_parity.json

Source: the `mediapipe==0.10.14` wheel from PyPI (the last wheels that bundle the legacy pose models; Apache-2.0),
fetched with `pip download --no-deps` unless `--wheel` points at it. Files used:
`mediapipe/modules/pose_detection/pose_detection.tflite` and `mediapipe/modules/pose_landmark/pose_landmark_full.tflite`.

- Landmark model: tf2onnx converts it directly (opset 17).
- Detector: its 1x1-convolution weights are stored as sparse fp16 tensors behind DENSIFY ops, which tf2onnx cannot
  read. This tool decodes the sparse format itself (TFLite schema: DENSE leading dimensions, one SPARSE_CSR last
  dimension), checks the result bit-for-bit against the dense tensors the TFLite interpreter computes (built with
  the plain builtin op resolver: the XNNPACK delegate repacks the weights and the intermediate tensors no longer
  hold them), writes a dense copy of the flatbuffer without the DENSIFY ops (their consumers read the dense
  constant directly: DENSIFY is an identity on values), checks that this copy runs identically to the original
  in TFLite, and converts the copy.
- Outputs are renamed (detector: `regressors`, `scores`; landmark: `landmarks`, `pose_flag`, `segmentation`,
  `heatmap`, `world_landmarks`; input: `image`), provenance goes into the ONNX metadata.
- Parity on a real frame: raw outputs and decoded results (h4djax.detect's own pre/post-processing) of ONNX
  (onnxruntime) vs TFLite (with and without XNNPACK), written to `--parity-json`.

Re-running gives numerically identical models but not identical bytes (tf2onnx node naming), hence the committed
files and their sha256 sums in models/SHA256SUMS.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WHEEL_SPEC = "mediapipe==0.10.14"
DETECTOR_TFLITE = "mediapipe/modules/pose_detection/pose_detection.tflite"
LANDMARK_TFLITE = "mediapipe/modules/pose_landmark/pose_landmark_full.tflite"
OPSET = 17


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def fetch_wheel(dest: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL_SPEC, "--only-binary=:all:", "-d", str(dest)],
        check=True,
    )
    wheels = sorted(dest.glob("mediapipe-0.10.14-*.whl"))
    if not wheels:
        raise SystemExit(f"pip download did not produce a {WHEEL_SPEC} wheel in {dest}")
    return wheels[0]


def extract(wheel: Path, member: str, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as z:
        out = dest / Path(member).name
        out.write_bytes(z.read(member))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Sparse TFLite tensors (DENSIFY)
# ----------------------------------------------------------------------------------------------------------------

def _opname(model, op) -> str:
    from tensorflow.lite.python import schema_py_generated as schema

    oc = model.operatorCodes[op.opcodeIndex]
    code = max(oc.builtinCode, oc.deprecatedBuiltinCode)
    names = {v: k for k, v in schema.BuiltinOperator.__dict__.items() if not k.startswith("_")}
    return names[code]


def decode_sparse(tensor, buffer_bytes: np.ndarray) -> np.ndarray:
    """Dense fp16 values of a sparse TFLite tensor (TFLite schema SparsityParameters).

    Supports what the BlazePose detector uses (asserted): identity traversal order, no block map, DENSE leading
    dimensions and a single SPARSE_CSR last dimension. Row r of the flattened leading dimensions holds
    values[seg[r]:seg[r+1]] at columns idx[seg[r]:seg[r+1]].
    """
    from tensorflow.lite.python import schema_py_generated as schema

    sp = tensor.sparsity
    shape = [int(s) for s in tensor.shape]
    assert tensor.type == schema.TensorType.FLOAT16, tensor.type
    assert list(sp.traversalOrder) == list(range(len(shape))), sp.traversalOrder
    assert sp.blockMap is None or len(sp.blockMap) == 0, sp.blockMap
    dims = sp.dimMetadata
    assert all(d.format == schema.DimensionType.DENSE for d in dims[:-1])
    assert dims[-1].format == schema.DimensionType.SPARSE_CSR
    assert [int(d.denseSize) for d in dims[:-1]] == shape[:-1]
    seg = np.asarray(dims[-1].arraySegments.values, np.int64)
    idx = np.asarray(dims[-1].arrayIndices.values, np.int64)
    vals = np.frombuffer(np.asarray(buffer_bytes, np.uint8).tobytes(), dtype="<f2")
    rows = int(np.prod(shape[:-1]))
    assert seg.shape == (rows + 1,) and seg[-1] == len(idx) == len(vals), (seg.shape, rows, len(idx), len(vals))
    dense = np.zeros((rows, shape[-1]), np.float16)
    row_of = np.repeat(np.arange(rows), np.diff(seg))
    dense[row_of, idx] = vals
    return dense.reshape(shape)


def interpreter(path: Path, *, xnnpack: bool, preserve: bool = False):
    import tensorflow as tf

    resolver = (tf.lite.experimental.OpResolverType.AUTO if xnnpack
                else tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it = tf.lite.Interpreter(model_path=str(path), experimental_op_resolver_type=resolver,
                             experimental_preserve_all_tensors=preserve)
    it.allocate_tensors()
    return it


def run_tflite(it, x: np.ndarray) -> dict[str, np.ndarray]:
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return {d["name"]: it.get_tensor(d["index"]).copy() for d in it.get_output_details()}


def densify_detector(src: Path, dst: Path, probe: np.ndarray) -> dict:
    """Write a dense copy of the detector flatbuffer without DENSIFY ops; returns check statistics."""
    from tensorflow.lite.tools import flatbuffer_utils as fu

    model = fu.read_model(str(src))
    assert len(model.subgraphs) == 1
    g = model.subgraphs[0]
    dens_ops = [op for op in g.operators if _opname(model, op) == "DENSIFY"]

    # Reference: the interpreter's DENSIFY outputs, without any delegate.
    it = interpreter(src, xnnpack=False, preserve=True)
    run_tflite(it, probe)
    n_checked, n_vals = 0, 0
    replace: dict[int, int] = {}
    for op in dens_ops:
        t_in, t_out = int(op.inputs[0]), int(op.outputs[0])
        tensor = g.tensors[t_in]
        dense = decode_sparse(tensor, model.buffers[tensor.buffer].data)
        ref = it.get_tensor(t_out)
        if ref.shape != dense.shape or not np.array_equal(ref.view(np.uint16), dense.view(np.uint16)):
            raise SystemExit(f"DENSIFY decode mismatch for {tensor.name!r}: "
                             f"max |diff| {np.abs(ref.astype(np.float32) - dense.astype(np.float32)).max()}")
        n_checked += 1
        n_vals += dense.size
        model.buffers[tensor.buffer].data = np.frombuffer(dense.astype("<f2").tobytes(), np.uint8)
        tensor.sparsity = None
        replace[t_out] = t_in
    for op in g.operators:
        op.inputs = np.asarray([replace.get(int(i), int(i)) for i in op.inputs], np.int32)
    g.operators = [op for op in g.operators if _opname(model, op) != "DENSIFY"]
    fu.write_model(model, str(dst))

    # The dense copy must compute exactly what the original computes.
    a = run_tflite(interpreter(src, xnnpack=False), probe)
    b = run_tflite(interpreter(dst, xnnpack=False), probe)
    max_diff = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    if max_diff != 0.0:
        raise SystemExit(f"densified detector differs from the original in TFLite: max |diff| {max_diff}")
    return {"densify_ops": len(dens_ops), "tensors_checked_bitwise": n_checked, "dense_values": n_vals,
            "dense_vs_original_tflite_max_abs_diff": max_diff}


# ----------------------------------------------------------------------------------------------------------------
# ONNX
# ----------------------------------------------------------------------------------------------------------------

def to_onnx(tflite: Path):
    import tf2onnx

    model_proto, _ = tf2onnx.convert.from_tflite(str(tflite), opset=OPSET)
    return model_proto


def rename_io(model, by_shape: dict[tuple[int, ...], str], input_name: str = "image"):
    """Rename graph outputs by their static shape, and the single input, everywhere in the graph."""
    g = model.graph
    mapping = {g.input[0].name: input_name}
    for o in g.output:
        shape = tuple(d.dim_value for d in o.type.tensor_type.shape.dim)
        if shape not in by_shape:
            raise SystemExit(f"unexpected output {o.name} with shape {shape}")
        mapping[o.name] = by_shape[shape]
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        vi.name = mapping.get(vi.name, vi.name)
    for node in g.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
    return model


def add_metadata(model, items: dict[str, str]):
    for k, v in items.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    return model


# ----------------------------------------------------------------------------------------------------------------
# Parity on a real frame
# ----------------------------------------------------------------------------------------------------------------

def read_frame(video: Path, index: int) -> np.ndarray:
    import cv2

    cap = cv2.VideoCapture(str(video))
    for _ in range(index + 1):
        ok, frame = cap.read()
        if not ok:
            raise SystemExit(f"{video}: cannot read frame {index}")
    cap.release()
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def parity(det_onnx: Path, lm_onnx: Path, det_tfl: Path, lm_tfl: Path, image: np.ndarray) -> dict:
    """ONNX vs TFLite on one image: raw tensors, and decoded results through h4djax.detect's own pipeline."""
    sys.path.insert(0, str(REPO))
    from h4djax.detect.blazepose import BlazePoseDetector, BlazePoseLandmarker
    from h4djax.detect.cards import load_model_card

    # The committed model cards (models/*.toml) describe the pre/post-processing, wherever --out points.
    cards = REPO / "models"
    det = BlazePoseDetector(load_model_card(det_onnx, card_path=cards / "blazepose_detector.toml"), device="cpu")
    lmk = BlazePoseLandmarker(load_model_card(lm_onnx, card_path=cards / "blazepose_landmark_full.toml"),
                              device="cpu")
    report: dict = {"image_size_wh": [int(image.shape[1]), int(image.shape[0])]}

    x, crop2img = det.input_tensor(image)
    onnx_raw = det.model.run(x)
    onnx_boxes = next(o for o in onnx_raw if o.shape[-1] == 12).reshape(-1, 12)
    onnx_scores = next(o for o in onnx_raw if o.shape[-1] == 1).reshape(-1)
    results = {"onnx": det.decode(onnx_boxes, onnx_scores, crop2img)}
    for name, xnn in (("tflite_xnnpack", True), ("tflite_builtin", False)):
        out = run_tflite(interpreter(det_tfl, xnnpack=xnn), x)
        tb = next(v for v in out.values() if v.shape[-1] == 12).reshape(-1, 12)
        ts = next(v for v in out.values() if v.shape[-1] == 1).reshape(-1)
        report[f"detector_raw_max_abs_diff_onnx_vs_{name}"] = {
            "regressors_px": float(np.abs(tb - onnx_boxes).max()),
            "score_logits": float(np.abs(ts - onnx_scores).max()),
        }
        results[name] = det.decode(tb, ts, crop2img)
    ref = results["tflite_builtin"]
    if ref.num_people == 0:
        raise SystemExit("no person detected on the parity frame: pick another frame")
    for name, d in results.items():
        report[f"detections_{name}"] = {
            "scores": d.scores.tolist(), "boxes_xyxy": d.boxes.tolist(),
            "keypoints": d.keypoints.tolist(), "rois": d.rois.tolist(),
        }
    on = results["onnx"]
    if on.num_people != ref.num_people:
        raise SystemExit(f"ONNX finds {on.num_people} people, TFLite {ref.num_people}")
    report["detection_max_abs_diff_onnx_vs_tflite_builtin"] = {
        "score": float(np.abs(on.scores - ref.scores).max()),
        "keypoints_px": float(np.abs(on.keypoints - ref.keypoints).max()),
        "roi_center_px": float(np.abs(on.rois[:, :2] - ref.rois[:, :2]).max()),
        "roi_size_px": float(np.abs(on.rois[:, 2] - ref.rois[:, 2]).max()),
        "roi_rotation_rad": float(np.abs(on.rois[:, 4] - ref.rois[:, 4]).max()),
    }

    # Landmarks on the TFLite detector's first ROI (same crop for every backend).
    roi = ref.rois[:1]
    crops, affs = lmk.crops(image, roi)
    xin = lmk.model.preprocess(crops)
    o_named = lmk._outputs(lmk.model.run(xin))
    lms = {"onnx": lmk.decode(o_named["landmarks"], o_named["pose_flag"], o_named["heatmap"], affs, roi)}
    for name, xnn in (("tflite_xnnpack", True), ("tflite_builtin", False)):
        out = run_tflite(interpreter(lm_tfl, xnnpack=xnn), xin)
        t_lm = next(v for v in out.values() if v.shape == (1, 195))
        t_flag = next(v for v in out.values() if v.shape == (1, 1))
        t_hm = next(v for v in out.values() if v.ndim == 4 and v.shape[-1] == 39)
        report[f"landmark_raw_max_abs_diff_onnx_vs_{name}"] = {
            "landmarks_crop_px_xy": float(np.abs(t_lm.reshape(39, 5)[:, :2]
                                                 - o_named["landmarks"].reshape(39, 5)[:, :2]).max()),
            "landmarks_all_values": float(np.abs(t_lm - o_named["landmarks"]).max()),
            "pose_flag": float(np.abs(t_flag - o_named["pose_flag"]).max()),
            "heatmap_logits": float(np.abs(t_hm - o_named["heatmap"]).max()),
        }
        lms[name] = lmk.decode(t_lm, t_flag, t_hm, affs, roi)
    for name, lm in lms.items():
        report[f"landmarks_{name}"] = {
            "roi": roi[0].tolist(), "pose_score": float(lm.pose_score[0]),
            "coco17": lm.coco17(lmk.card)[0].tolist(),
        }
    a, b = lms["onnx"].landmarks[0], lms["tflite_builtin"].landmarks[0]
    report["landmarks_image_max_abs_diff_onnx_vs_tflite_builtin"] = {
        "xy_px": float(np.abs(a[:, :2] - b[:, :2]).max()),
        "visibility": float(np.abs(a[:, 3] - b[:, 3]).max()),
        "pose_score": float(abs(lms["onnx"].pose_score[0] - lms["tflite_builtin"].pose_score[0])),
    }
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "models")
    ap.add_argument("--wheel", type=Path, default=None, help="a downloaded mediapipe-0.10.14 wheel")
    ap.add_argument("--video", type=Path, default=None, help="real video for the parity check")
    ap.add_argument("--frame", type=int, default=0)
    ap.add_argument("--parity-json", type=Path, default=None)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        wheel = args.wheel or fetch_wheel(tmp)
        det_tfl = extract(wheel, DETECTOR_TFLITE, tmp)
        lm_tfl = extract(wheel, LANDMARK_TFLITE, tmp)
        provenance = {"source_wheel": wheel.name, "converter": f"tf2onnx opset {OPSET} via tools/convert_blazepose.py",
                      "license": "Apache-2.0 (MediaPipe, Google LLC)"}
        print(f"wheel {wheel.name}\n  {DETECTOR_TFLITE} sha256 {sha256(det_tfl)}\n"
              f"  {LANDMARK_TFLITE} sha256 {sha256(lm_tfl)}")

        image = read_frame(args.video, args.frame) if args.video else None
        probe = (np.random.default_rng(0).uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32))
        dense_tfl = tmp / "pose_detection_dense.tflite"
        dens_report = densify_detector(det_tfl, dense_tfl, probe)
        print("detector densified:", dens_report)

        import onnx

        args.out.mkdir(parents=True, exist_ok=True)
        det_onnx = args.out / "blazepose_detector.onnx"
        lm_onnx = args.out / "blazepose_landmark_full.onnx"
        m = to_onnx(dense_tfl)
        rename_io(m, {(1, 2254, 12): "regressors", (1, 2254, 1): "scores"})
        add_metadata(m, {**provenance, "source_file": DETECTOR_TFLITE, "source_sha256": sha256(det_tfl)})
        onnx.checker.check_model(m)
        onnx.save(m, str(det_onnx))
        m = to_onnx(lm_tfl)
        rename_io(m, {(1, 195): "landmarks", (1, 1): "pose_flag", (1, 256, 256, 1): "segmentation",
                      (1, 64, 64, 39): "heatmap", (1, 117): "world_landmarks"})
        add_metadata(m, {**provenance, "source_file": LANDMARK_TFLITE, "source_sha256": sha256(lm_tfl)})
        onnx.checker.check_model(m)
        onnx.save(m, str(lm_onnx))
        for p in (det_onnx, lm_onnx):
            print(f"{sha256(p)}  {p.name}  ({p.stat().st_size} bytes)")

        if image is not None:
            rep = {"video": str(args.video), "frame": args.frame, "densify": dens_report,
                   **parity(det_onnx, lm_onnx, det_tfl, lm_tfl, image)}
            rep["onnx_sha256"] = {p.name: sha256(p) for p in (det_onnx, lm_onnx)}
            rep["tflite_sha256"] = {DETECTOR_TFLITE: sha256(det_tfl), LANDMARK_TFLITE: sha256(lm_tfl)}
            text = json.dumps(rep, indent=1)
            if args.parity_json:
                args.parity_json.write_text(text)
            print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
