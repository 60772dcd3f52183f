"""``insight similar``: the indexed studies most similar to a study (cosine similarity of embeddings)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from insight.errors import InputError

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "similar", help="find the most similar indexed studies",
        description="Embed IMAGE with the index's model and list the k most similar studies of the index "
                    "(insight index build), with their scores (cosine similarity, 1 = same study) and labels.")
    parser.add_argument("image", type=Path, metavar="IMAGE", help="image file or DICOM series folder")
    parser.add_argument("--index", required=True, type=Path, help="index folder")
    parser.add_argument("-k", type=int, default=5, help="number of similar studies (default 5)")
    parser.add_argument("--model", type=Path, help="checkpoint (default: the one the index was built with)")
    parser.add_argument("--json", type=Path, help="also write the answer to this JSON file")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from insight.cli.index_cmd import resolve_model
    from insight.embeddings import CaseEmbedder
    from insight.io.atomic import write_json_atomic
    from insight.retrieval import CaseIndex

    if args.k < 1:
        raise InputError(f"-k must be at least 1, got {args.k}")
    index = CaseIndex.open(args.index)
    embedder = CaseEmbedder.from_checkpoint(resolve_model(args.model, args.index), args.device)
    if embedder.model_version != index.model_version:
        raise InputError(f"the index {args.index} holds embeddings of model {index.model_version}, not "
                         f"{embedder.model_version}: rebuild it with insight index add/build --model ...")
    query = embedder.embed_file(args.image)
    answers = index.search(query.vector, args.k)
    answer = {"query": query.name, "source": str(args.image), "model_version": index.model_version,
              "k": args.k, "similar": [a.to_dict() for a in answers]}
    if args.json is not None:
        write_json_atomic(args.json, answer)
    sys.stdout.write(f"{'rank':>4}  {'score':>7}  {'label':<9} case\n")
    for a in answers:
        sys.stdout.write(f"{a.rank:>4}  {a.score:>7.4f}  {str(a.label if a.label is not None else '-'):<9} "
                         f"{a.case_id}\n")
    logger.info("%s: %d similar studies of %d indexed", query.name, len(answers), len(index))
    return 0
