"""Upload the trained bundles to a Hugging Face Hub model repository.

    python -m training.push_to_hub --repo USER/NAME [--weights weights] [--private]

The demo downloads them from there when started with CAPTION_WEIGHTS_REPO=USER/NAME
(for example as a Space secret or variable). Needs a token with write access:
`huggingface-cli login`, or HF_TOKEN in the environment, or --token.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from captioning.bundle import CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE

log = logging.getLogger("training.push_to_hub")

VARIANTS = ("learned", "fasttext", "word2vec")
REQUIRED_FILES = (CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE)
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", required=True, help="Hub model repository, USER/NAME (created if missing)")
    parser.add_argument("--weights", default="weights", help="folder holding learned/, fasttext/, word2vec/ "
                                                             "(default: %(default)s)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS,
                        help="bundles to upload (default: all three)")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--token", help="Hub token (default: the logged-in one, or HF_TOKEN)")
    parser.add_argument("--message", default="Upload caption model bundles", help="commit message")
    args = parser.parse_args(argv)
    if not REPO_ID.match(args.repo):
        parser.error(f"--repo must look like USER/NAME, not {args.repo!r}")
    return args


def check_bundles(weights: Path, variants) -> list[str]:
    """Problems that make the upload pointless (missing folders or files); empty when all is well."""
    problems = []
    for variant in variants:
        folder = weights / variant
        if not folder.is_dir():
            problems.append(f"{folder}: no such folder (train it with python -m training.train --variant {variant})")
            continue
        problems += [f"{folder / name}: file is missing" for name in REQUIRED_FILES if not (folder / name).is_file()]
    return problems


def push(weights: Path, repo: str, variants=VARIANTS, private: bool = False, token: str | None = None,
         message: str = "Upload caption model bundles", api=None) -> str:
    """Create ``repo`` if needed and upload the bundles' folders into it; returns the commit URL."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    api.create_repo(repo_id=repo, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(folder_path=str(weights), repo_id=repo, repo_type="model",
                               allow_patterns=[f"{v}/*" for v in variants],
                               ignore_patterns=["**/.staging-*", "**/*.old-*"], commit_message=message)
    return str(getattr(commit, "commit_url", commit))


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = parse_args(argv)
    weights = Path(args.weights)
    problems = check_bundles(weights, args.variants)
    if problems:
        print("error: nothing uploaded:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    url = push(weights, args.repo, args.variants, args.private, args.token, args.message)
    log.info("uploaded %s from %s to https://huggingface.co/%s (%s)", ", ".join(args.variants), weights,
             args.repo, url)
    print(f"Start the demo with CAPTION_WEIGHTS_REPO={args.repo} to use these models.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
