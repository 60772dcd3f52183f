"""``insight index build|add``: a persisted similar-case index of study embeddings (faiss)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from insight.errors import InputError

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "index", help="build or update a similar-case index",
        description="Embed studies with the model's encoder into a faiss index folder (vectors file + JSON "
                    "sidecar of ids, labels and model version), for insight similar. Labels come from a "
                    "labels.csv (columns image, pe) in an input folder, or --labels.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (("build", "index these studies, replacing any index in --index"),
                       ("add", "add (or re-embed) studies as they arrive; a new model version rebuilds the index")):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                            help="image files, DICOM series folders, or folders of images")
        action.add_argument("--index", required=True, type=Path, help="index folder")
        action.add_argument("--model", type=Path, help="checkpoint (default: the index's model, else the demo model)")
        action.add_argument("--labels", type=Path, help="label table (columns image, pe)")
        action.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
        action.set_defaults(func=run)


def resolve_model(model: Path | None, index_dir: Path) -> Path:
    """``--model``, else the model recorded in the index, else the shipped demo model."""
    from insight.cli.predict_cmd import DEFAULT_MODEL
    from insight.retrieval import CaseIndex

    if model is not None:
        return model
    if CaseIndex.exists(index_dir):
        recorded = CaseIndex.open(index_dir).model_path
        if recorded and Path(recorded).is_file():
            return Path(recorded)
    return DEFAULT_MODEL


def run(args: argparse.Namespace) -> int:
    from insight.embeddings import CaseEmbedder
    from insight.retrieval import add_to_index, build_index, gather_images, read_label_table

    if args.index.exists() and not args.index.is_dir():
        raise InputError(f"--index {args.index} exists and is not a folder")
    images, labels = gather_images(args.inputs)
    if args.labels is not None:
        labels.update(read_label_table(args.labels))
    if not images:
        raise InputError("no studies to index")
    model = resolve_model(args.model, args.index)
    embedder = CaseEmbedder.from_checkpoint(model, args.device)
    model_path = str(model.resolve())
    update = (build_index if args.action == "build" else add_to_index)(args.index, embedder, images, labels,
                                                                       model_path=model_path)
    json.dump(update.to_dict(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    logger.info("case index %s: %d cases (%d added, %d re-embedded%s) with model %s in %.1f s", args.index,
                len(update.index), len(update.added), len(update.replaced), ", rebuilt" if update.rebuilt else "",
                update.index.model_version, update.seconds)
    if update.failed:
        logger.error("%d of %d studies could not be indexed", len(update.failed), len(images))
        return 1
    return 0
