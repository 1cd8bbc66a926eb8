"""Evaluation throughput: images per second through `Evaluator.run`, with and without input overlap
(`config.eval.prefetch` worker threads decoding and preprocessing the next images), on 1 and on all local
devices.

    python benchmarks/eval_throughput.py                             # DeepGlobe-size images, this CPU
    python benchmarks/eval_throughput.py --images 8 --devices 1,all --prefetch 0,2
    python benchmarks/eval_throughput.py --case cityscapes --devices 1,all    # on a GPU host

The images are synthetic scenes of the dataset's size written as JPEG (DeepGlobe 2448x2448) or PNG
(Cityscapes 2048x1024) files and decoded by the source as a dataset's files are; the models keep their
random initialisation (the same speed as trained weights). Prints one JSON line per setting, then a
table: `wall_s_per_image` (the loop's wall time over the images: what overlap improves),
`seconds_per_image` (the results' median per-image compute + preprocessing) and the ratio to the first
setting of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from magnet_jax.allocator import configure_allocator  # noqa: E402

configure_allocator()

CASES = {  # backbone, classes, scales, crop, input, extension, size (W, H)
    "deepglobe": ("fpn", 7, [(612, 612), (1224, 1224), (2448, 2448)], (612, 612), (508, 508), ".jpg", (2448, 2448)),
    "cityscapes": ("hrnet18+ocr", 19, [(1024, 512), (2048, 1024)], (1024, 512), (1024, 512), ".png", (2048, 1024)),
    "small": ("small", 5, [(128, 128), (256, 256), (512, 512)], (128, 128), (128, 128), ".jpg", (512, 512)),
}


class FileSource:
    """`source[i] -> {"image", "label", "name"}` decoding image files, as the datasets' sources do."""

    def __init__(self, paths: list[str], classes: int):
        self.paths, self.classes = paths, classes

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        import numpy as np

        from magnet_jax.preprocess import read_image_rgb

        image = read_image_rgb(self.paths[i])
        label = (image[..., 0].astype(np.int64) * self.classes // 256).astype(np.uint8)
        return {"image": image, "label": label, "name": Path(self.paths[i]).stem}


class Dataset:
    def __init__(self, n: int):
        self.name, self.num_classes, self.ignore_label, self.metric = "bench", n, 255, "miou"
        self.miou_classes, self.class_names = list(range(n)), [f"class {i}" for i in range(n)]
        self.absent_classes = "zero"  # the original MagNet's rule (metrics.ABSENT_RULES)


def write_images(folder: str, count: int, size_wh: tuple[int, int], ext: str) -> list[str]:
    import cv2

    from magnet_jax.data.synthetic import generate_sample

    paths = []
    for i in range(count):
        w, h = size_wh
        tile = generate_sample(7, "test", i, max(w, h))[0][:h, :w]
        path = os.path.join(folder, f"image{i}{ext}")
        cv2.imwrite(path, cv2.cvtColor(tile, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", default="deepglobe", choices=sorted(CASES))
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--devices", default="1", help="comma-separated: a count or 'all' (local devices)")
    p.add_argument("--prefetch", default="0,2", help="comma-separated input-thread counts (0: in turn)")
    args = p.parse_args()
    if args.images < 1:
        p.error("--images: expected >= 1")
    import jax

    from magnet_jax.compile_cache import enable_compilation_cache
    from magnet_jax.evaluation import Evaluator
    from magnet_jax.inference.plan import make_plan
    from magnet_jax.inference.predictor import MagNetPredictor
    from magnet_jax.models import build_model
    from magnet_jax.sharding import make_mesh

    enable_compilation_cache()
    model, n, scales, crop, inp, ext, size = CASES[args.case]
    plan = make_plan(scales, crop, inp, n, n_points=0.75 if args.case == "deepglobe" else 0.5)
    backbone, refiner = build_model(model, n), build_model("refinement", n, seed=1)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        source = FileSource(write_images(folder, args.images, size, ext), n)
        for devices in args.devices.split(","):
            local = jax.local_devices()
            mesh = make_mesh(local if devices == "all" else local[: int(devices)])
            evaluator = Evaluator(MagNetPredictor(plan, backbone, [refiner], mesh=mesh), Dataset(n))
            evaluator.predictor.warmup()
            for prefetch in (int(x) for x in args.prefetch.split(",")):
                res = evaluator.run(source, progress=False, prefetch=prefetch)
                row = {"case": args.case, "device": jax.devices()[0].device_kind, "devices": int(mesh.devices.size),
                       "prefetch": prefetch, "images": res["num_images"],
                       "wall_s_per_image": res["wall_seconds_per_image"],
                       "seconds_per_image": round(res["seconds_per_image"], 3)}  # fmt: skip
                rows.append(row)
                print(json.dumps(row), flush=True)
    base = rows[0]["wall_s_per_image"]
    print("\n| devices | prefetch | wall s/image | median s/image | wall vs first |\n| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['devices']} | {r['prefetch']} | {r['wall_s_per_image']:.3f} | {r['seconds_per_image']:.3f} | "
              f"{r['wall_s_per_image'] / base:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
