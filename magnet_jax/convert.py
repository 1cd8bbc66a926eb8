"""Convert the original MagNet's PyTorch `.pth` checkpoints to magnet-jax weights folders.

Command line (writes a weights checkpoint folder, see `magnet_jax.weights.orbax_io`)::

    python -m magnet_jax.convert --model hrnet18+ocr --num-classes 19 IN.pth OUT_DIR [--overwrite]

Python API (the reading itself lives in `magnet_jax.weights.torch_io`; re-exported here)::

    from magnet_jax.convert import load_torch_checkpoint
    model = load_torch_checkpoint("cityscapes_hrnet.pth", "hrnet18+ocr", 19)  # eval mode
    logits = model(images)            # [B, H, W, 3] normalised -> [B, H, W, 19]
    refiner = load_torch_checkpoint("refine.pth", "refinement", 19)
    logits = refiner(fine, coarse)    # probabilities [B, H, W, 19] each -> [B, H, W, 19]

The file is read with `torch.load(weights_only=True)` and must fit the model exactly
(see `magnet_jax.weights.torch_io` for what is accepted).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from magnet_jax.models import MODEL_NAMES
from magnet_jax.weights import load_torch_checkpoint, save_model_weights

__all__ = ["convert_checkpoint", "load_torch_checkpoint", "main"]


def convert_checkpoint(
    in_path: str | Path, out_dir: str | Path, model_name: str, num_classes: int, *, overwrite: bool = False
) -> Path:
    """Original `.pth` -> weights checkpoint folder (atomic); returns the folder's absolute path."""
    out = Path(out_dir).absolute()
    if out.exists() and not overwrite:  # fail before the (slow) conversion
        raise FileExistsError(f"{out} already exists; refusing to replace it (pass --overwrite)")
    model = load_torch_checkpoint(in_path, model_name, num_classes)
    return save_model_weights(
        model,
        out,
        model_name=model_name,
        num_classes=num_classes,
        overwrite=overwrite,
        source=str(Path(in_path).absolute()),
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m magnet_jax.convert",
        description=(
            "Convert an original MagNet PyTorch checkpoint (.pth) into a magnet-jax weights checkpoint "
            "(orbax folder + metadata JSON). Backbone files (training wrapper: 'model.' prefix, 'loss.*') "
            "and refiner files (plain state dicts) are both accepted; the file is read with "
            "torch.load(weights_only=True) and must fit the model exactly."
        ),
    )
    parser.add_argument("--model", required=True, choices=MODEL_NAMES, help="model the checkpoint holds")
    parser.add_argument("--num-classes", required=True, type=int, help="number of classes it was trained for")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it is a weights checkpoint")
    parser.add_argument("input", metavar="IN.pth", help="original checkpoint file")
    parser.add_argument("output", metavar="OUT_DIR", help="folder to create (must not exist unless --overwrite)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from magnet_jax.allocator import configure_allocator

    configure_allocator()  # JAX is imported but has not allocated yet (see magnet_jax.allocator)
    args = _parser().parse_args(argv)
    try:
        out = convert_checkpoint(args.input, args.output, args.model, args.num_classes, overwrite=args.overwrite)
    except (OSError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out} (model {args.model}, num_classes {args.num_classes}) from {args.input}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
