"""`Evaluator`: MagNet over a dataset split, every view from one pass per image.

Views (each a confusion matrix summed over the split, as the original's test script):
- `coarse`: stage 0's P, the backbone on the whole image at the first scale;
- `stages`: P after every stage (stage 0 is `coarse`, the last is `refined`, MagNet's output);
- `patch` (optional, `patch_view=True`): the backbone alone on every patch of the finest scale,
  stitched with overlaps averaged, no refinement (what patch-only segmentation would give).
Each view's probabilities are resized bilinear(align_corners=False) to the label's resolution, then
argmax. The evaluator holds one compiled predictor: `swap_weights` replaces its weights without
retracing (validation during training), and the sweeps change only what the plan changes.
"""

from __future__ import annotations

import collections
import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from magnet_jax.evaluation.memory import PeakMemory
from magnet_jax.evaluation.processes import ProcessGroup, process_images
from magnet_jax.evaluation.results import build_results
from magnet_jax.inference.kernels import make_patch_view_fn
from magnet_jax.inference.predictor import MagNetPredictor, prepare_patches
from magnet_jax.inference.result import MagNetResult
from magnet_jax.metrics import ConfusionMatrix


class EvaluationInterrupted(RuntimeError):
    """A sample failed mid-split; `results` holds what was computed before it (marked partial)."""

    def __init__(self, message: str, results: dict):
        super().__init__(message)
        self.results = results


class Evaluator:
    """Evaluates one predictor on sources (`source[i] -> {"image", "label", "name"}`).

    Args:
        predictor: the compiled MagNet predictor (plan + models).
        dataset: the resolved dataset (`magnet_jax.data.dataset_spec(config)`): `num_classes`,
            `ignore_label`, `miou_classes`, `class_names`, `metric`, `palette`.
        patch_view: also score the backbone alone on the finest patches (one more backbone pass per patch).
    """

    def __init__(self, predictor: MagNetPredictor, dataset: Any, *, patch_view: bool = False):
        self.predictor = predictor
        self.dataset = dataset
        self._patch_fn = None
        if patch_view and predictor.plan.stages:
            if predictor.tiled:
                raise ValueError("the patch view scores whole images: set config.magnet.streamed=off for it")
            plan = predictor.plan
            self._patch_fn = make_patch_view_fn(predictor.backbone_graph, plan.stages[-1], plan, predictor.mesh)

    @property
    def plan(self):
        return self.predictor.plan

    def swap_weights(
        self, *, backbone: nnx.Module | None = None, refiners: Sequence[nnx.Module] | nnx.Module | None = None
    ) -> None:
        """New weights for the same architecture; compiled stages are reused."""
        self.predictor.swap_weights(backbone=backbone, refiners=refiners)

    def _matrices(self) -> dict[str, Any]:
        ds = self.dataset
        make = lambda: ConfusionMatrix(ds.num_classes, ds.ignore_label, ds.miou_classes)  # noqa: E731
        # one per stage the plan runs (n_patches 0: the coarse stage only, so MagNet's output is the coarse one)
        cms: dict[str, Any] = {"stages": [make() for _ in range(len(self.plan.stages) + 1)]}
        if self._patch_fn is not None:
            cms["patch"] = make()
        return cms

    def _score(self, cms: dict, result: MagNetResult, label: np.ndarray) -> dict[str, np.ndarray]:
        """Updates every view's confusion matrix with one image; returns the predictions `[h, w]` uint8."""
        hw = label.shape[:2]
        preds = {}
        for i, stage in enumerate(result.stages):
            pred = self.predictor.argmax_at(stage.probs, hw)
            cms["stages"][i].update(label, pred)
            preds[f"stage{i}"] = pred
        preds["coarse"], preds["refined"] = preds["stage0"], preds[f"stage{len(result.stages) - 1}"]
        if self._patch_fn is not None:
            with self.predictor.precision():
                probs = self._patch_fn(self.predictor.backbone_state, result.patches[-1])
            preds["patch"] = self.predictor.argmax_at(probs, hw)
            cms["patch"].update(label, preds["patch"])
        return preds

    def run(
        self,
        source,
        *,
        max_images: int = -1,
        progress: bool = True,
        desc: str = "evaluate",
        warmup: bool = False,
        on_image: Callable[[int, dict, dict[str, np.ndarray]], None] | None = None,
        prefetch: int = 2,
        batch_images: int = 1,
        group: ProcessGroup | None = None,
    ) -> dict:
        """Evaluates the first `max_images` samples (all if < 0) of `source`; returns the results dict
        (`results.build_results`: `miou`, `iou`, `confusion`, timings, memory, compute) of the whole split.

        The images are dealt over the processes (`processes.process_images`) and the partial sums
        exchanged, so every process returns the same results. `prefetch` worker threads read and
        preprocess the next images while the current one computes (0: in turn); `batch_images` same-size
        images run per compiled call (`MagNetPredictor.predict_batch`, accelerators). `warmup`: compile every
        stage on a blank image first, so that `seconds_per_image` (the median over images) excludes
        compilation and `compile_seconds` reports it. `on_image(i, sample, preds)` is called after each
        image (pictures). A sample that fails to load raises `EvaluationInterrupted` carrying the partial
        results of the images before it (on every process).
        """
        total = len(source) if max_images is None or max_images < 0 else min(len(source), int(max_images))
        group = group or ProcessGroup()
        cms = self._matrices()
        memory = PeakMemory()
        compile_s = self.predictor.warmup() if warmup else None
        seconds: list[float] = []
        points = np.zeros(len(self.plan.stages), np.float64)
        bar = _progress_bar(total, desc) if progress and group.index == 0 else None
        done, error = 0, None
        t_loop = time.perf_counter()
        try:
            mine = process_images(total, group.index, group.count)
            for items in same_size_groups(prefetched(source, mine, self._prepare, prefetch), batch_images):
                i, first = items[0]
                if isinstance(first, Exception):
                    error = {"index": i, "message": f"sample {i}: {first}"}
                    break
                t = time.perf_counter()
                for (i, sample), result in zip(items, self._predict([s for _, s in items]), strict=True):
                    done += self._account(i, sample, result, cms, seconds, points, memory, on_image)
                if bar is not None:
                    bar.n = group.progress(desc, len(items)) if group.count > 1 else bar.n + len(items)
                    bar.set_postfix_str(
                        f"coarse {100 * cms['stages'][0].miou():.1f}, "
                        f"MagNet {100 * cms['stages'][-1].miou():.1f} mIoU, "
                        f"{(time.perf_counter() - t) / len(items):.2f} s/img",
                        refresh=False,
                    )
                    bar.refresh()
                elif group.count > 1:
                    group.progress(desc, len(items))
        finally:
            if bar is not None:
                bar.close()
        wall = time.perf_counter() - t_loop
        partial = {
            "stages": [cm.matrix.tolist() for cm in cms["stages"]],
            "patch": cms["patch"].matrix.tolist() if "patch" in cms else None,
            "done": done, "seconds": seconds, "points": points.tolist(), "compile": compile_s, "wall": wall,
            "memory": memory.read(), "error": error,
        }  # fmt: skip
        everyone = group.exchange(f"results of {desc!r}", partial)
        errors = sorted((e["error"] for e in everyone if e["error"]), key=lambda e: e["index"])
        results = self._results(everyone, partial=bool(errors))
        if errors:
            results["error"] = "; ".join(e["message"] for e in errors)
            i = errors[0]["index"]
            first = errors[0]["message"].removeprefix(f"sample {i}: ")
            raise EvaluationInterrupted(f"evaluation stopped at sample {i} of {total}: {first}", results)
        return results

    def _predict(self, samples: list[dict]) -> list:
        prepared = [s.get("prepared") for s in samples]
        if len(samples) == 1:
            keep = self._patch_fn is not None
            return [self.predictor.predict(samples[0]["image"], keep_patches=keep, prepared=prepared[0])]
        return self.predictor.predict_batch([s["image"] for s in samples], prepared=prepared)

    def _account(self, i: int, sample: dict, result, cms, seconds, points, memory, on_image) -> int:
        """Scores one image's result into the running sums; returns 1 (an image done)."""
        seconds.append(result.seconds + sample.get("prepare_seconds", result.preprocess_seconds))
        points += [s.points for s in result.stages[1:]]
        preds = self._score(cms, result, np.asarray(sample["label"]))
        result.close()  # a tiled result's map files
        memory.sample()
        if on_image is not None:
            on_image(i, sample, preds)
        return 1

    def _prepare(self, sample: dict) -> dict:
        """Worker-thread preprocessing of a whole-image sample: its device-ready patches."""
        if self.predictor.tiled:
            return sample
        t = time.perf_counter()
        prepared = prepare_patches(np.asarray(sample["image"]), self.plan)
        return {**sample, "prepared": prepared, "prepare_seconds": time.perf_counter() - t}

    def _results(self, everyone: list[dict], *, partial: bool) -> dict:
        """The results of the whole split from every process's partial sums."""
        done = sum(e["done"] for e in everyone)
        points = np.sum([e["points"] for e in everyone], axis=0) if self.plan.stages else np.zeros(0)
        memories = [e["memory"] for e in everyone]
        peak = max(memories, key=lambda m: m["peak_memory_mb"])
        patch = [e["patch"] for e in everyone if e["patch"] is not None]
        compile_s = [e["compile"] for e in everyone if e["compile"] is not None]
        results = build_results(
            self.dataset,
            self.plan,
            stage_matrices=[np.sum(m, axis=0) for m in zip(*(e["stages"] for e in everyone), strict=True)],
            patch_matrix=np.sum(patch, axis=0) if patch else None,
            num_images=done,
            seconds=[t for e in everyone for t in e["seconds"]],
            compile_seconds=max(compile_s) if compile_s else None,
            points_refined=(points / max(done, 1)).tolist(),
            memory=peak,
            partial=partial,
        )
        wall = max(e["wall"] for e in everyone)
        results["wall_seconds_per_image"] = round(wall / done, 4) if done else None  # with input overlapped
        results["processes"] = len(everyone)
        results["devices_per_process"] = int(self.predictor.mesh.devices.size)
        return results


def same_size_groups(stream: Iterator[tuple[int, Any]], size: int) -> Iterator[list[tuple[int, Any]]]:
    """Consecutive `(i, sample)` of the same image shape, at most `size` per group; a failed sample (an
    exception) comes alone, last."""
    group: list[tuple[int, Any]] = []
    for i, sample in stream:
        failed = isinstance(sample, Exception)
        if group and (failed or len(group) >= size or np.shape(group[0][1]["image"]) != np.shape(sample["image"])):
            yield group
            group = []
        group.append((i, sample))
        if failed:
            break
    if group:
        yield group


def prefetched(source, indices, prepare: Callable[[dict], dict], workers: int) -> Iterator[tuple[int, Any]]:
    """`(i, prepare(source[i]))` in order, up to `workers + 1` samples read ahead by `workers` threads (0: in
    turn). A sample that fails yields `(i, exception)` and ends the stream."""

    def load(i: int) -> dict:
        return prepare(source[i])

    if workers <= 0:
        for i in indices:
            try:
                yield i, load(i)
            except Exception as e:  # noqa: BLE001 - reported with the sample index by the caller
                yield i, e
                return
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="magnet-input") as pool:
        pending = collections.deque()
        ahead = iter(indices)
        for i in itertools.islice(ahead, workers + 1):
            pending.append((i, pool.submit(load, i)))
        while pending:
            i, future = pending.popleft()
            try:
                sample = future.result()
            except Exception as e:  # noqa: BLE001 - reported with the sample index by the caller
                for _, f in pending:
                    f.cancel()
                yield i, e
                return
            nxt = next(ahead, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(load, nxt)))
            yield i, sample


def _progress_bar(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, dynamic_ncols=True)


def save_evaluation_picture(path: Path, sample: dict, preds: dict[str, np.ndarray], dataset: Any) -> None:
    """image | ground truth | coarse | (patch |) MagNet, captioned, with the class legend."""
    from magnet_jax.visualization import figures

    views = {"coarse": preds["coarse"]}
    if "patch" in preds:
        views["patch"] = preds["patch"]
    views["MagNet"] = preds["refined"]
    figures.evaluation_figure(
        sample["image"], np.asarray(sample["label"]), views, dataset.class_names, dataset.palette, path,
        title=str(sample.get("name", "")),
    )
