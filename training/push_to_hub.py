"""Deploy the demo as a Hugging Face Space, or upload the trained bundles to a model repository.

    python -m training.push_to_hub --space USER/NAME [--private]     # the demo, weights included
    python -m training.push_to_hub --repo USER/NAME [--weights weights] [--private]   # bundles only

--space creates the Space (Gradio SDK; hardware is left to you, the free CPU tier fits)
and uploads what the app needs, through the Hub's upload API, which stores binary
files (weights, photos) in Xet/LFS itself.  A plain `git push` of this repository is
refused by the Hub: it holds binary files outside LFS/Xet.  The files are the ones git
tracks, minus SPACE_EXCLUDED, so untracked junk (runs/, cache/, .venv/) never ships.

--repo uploads the bundles to a model repository; the demo downloads them from there
when started with CAPTION_WEIGHTS_REPO=USER/NAME (for example as a Space variable).
Needs a token with write access: `hf auth login`, or HF_TOKEN in the environment, or --token.
"""

from __future__ import annotations

import argparse
import fnmatch
import logging
import subprocess
import sys
from pathlib import Path

from captioning.bundle import ASIDE_MARK, REQUIRED_FILES, STAGING_PREFIX, TRASH_PREFIX
from captioning.variants import VARIANTS
from demo.models import REPO_ID, weights_patterns

log = logging.getLogger("training.push_to_hub")

ROOT = Path(__file__).resolve().parents[1]

# What a Space must carry to run the app, and what it must not: tracked paths matching these
# (fnmatch on the path, or any of its folders) stay out.
SPACE_EXCLUDED = (
    "tests/*", ".ci/*", "requirements-dev.txt",  # the test suite and CI: not run on a Space
    "training/*", "tools/*", "evaluation/*",       # training, evaluation sets, benchmarks: the app uses none
    "docs/*",                                      # the README screenshot: only the code repository shows it
    "pyproject.toml", ".gitignore",                # tool settings for development
    ".venv/*", "runs/*", "cache/*", ".git/*", "*/__pycache__/*", "*.pyc", ".gradio/*",  # never, even if tracked
)
SPACE_REQUIRED = ("app.py", "requirements.txt", "README.md")
# The Space README's front matter must say this, or the Hub will not run app.py with Gradio.
SPACE_FRONT_MATTER = {"sdk": "gradio", "app_file": "app.py"}
# The .gitattributes the Hub puts in every new repository: binaries go to LFS/Xet.  It is written
# into the Space only; this project's own repository keeps its files in plain git.
SPACE_GITATTRIBUTES = "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in (
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.keras",
    "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
    "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*",
    "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
    "*.jpg", "*.jpeg", "*.png", "*.gif", "*.webp",
))
GITATTRIBUTES = ".gitattributes"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--space", help="Hub Space, USER/NAME: deploy the demo there (created if missing)")
    target.add_argument("--repo", help="Hub model repository, USER/NAME: upload the bundles (created if missing)")
    parser.add_argument("--weights", default="weights", help="folder holding learned/, fasttext/, word2vec/ "
                                                             "(default: %(default)s)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS,
                        help="bundles to upload (default: all three)")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--token", help="Hub token (default: the logged-in one, or HF_TOKEN)")
    parser.add_argument("--message", help="commit message")
    args = parser.parse_args(argv)
    option, repo = ("--space", args.space) if args.space else ("--repo", args.repo)
    if not REPO_ID.match(repo):
        parser.error(f"{option} must look like USER/NAME, not {repo!r}")
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
    """Create ``repo`` if needed and upload the bundles' folders into it, with the files beside them
that the app reads (the familiarity and consensus references, the ensemble's scores); returns the commit URL."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    api.create_repo(repo_id=repo, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(folder_path=str(weights), repo_id=repo, repo_type="model",
                               allow_patterns=weights_patterns(variants),
                               ignore_patterns=[f"**/{STAGING_PREFIX}*", f"**/*{ASIDE_MARK}*", f"**/{TRASH_PREFIX}*"],
                               commit_message=message)
    return str(getattr(commit, "commit_url", commit))


# -- the Space -------------------------------------------------------------------------------
def tracked_files(root: Path) -> list[str]:
    """Paths git tracks under ``root`` that exist on disk (a tracked file deleted locally is skipped)."""
    listing = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], capture_output=True, check=True).stdout
    return [path for path in listing.decode("utf-8").split("\0") if path and (root / path).is_file()]


def excluded_from_space(path: str) -> bool:
    return any(fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch("/" + path, "*/" + pattern)
               for pattern in SPACE_EXCLUDED)


def space_files(root: Path) -> list[str]:
    """The tracked files a Space of this project carries, sorted."""
    return sorted(path for path in tracked_files(root) if not excluded_from_space(path))


class FrontMatterError(ValueError):
    """A README's leading ``---`` block is not valid YAML: the Hub refuses the commit that carries it."""


def front_matter(readme: str) -> dict:
    """A README's leading ``---`` block parsed as YAML, as the Hub parses it ({} when there is none);
    :class:`FrontMatterError` when it is not valid YAML (an unquoted ``: `` in a value, say)."""
    from huggingface_hub.repocard import REGEX_YAML_BLOCK  # the Hub client's own pattern for the block
    import yaml

    block = REGEX_YAML_BLOCK.search(readme)
    if block is None:
        return {}
    try:
        fields = yaml.safe_load(block.group(2))
    except yaml.YAMLError as exc:
        raise FrontMatterError(" ".join(str(exc).split())) from None
    if not isinstance(fields, dict):
        raise FrontMatterError(f"a YAML mapping of 'key: value' lines, not {type(fields).__name__}")
    return fields


def space_problems(root: Path, files: list[str]) -> list[str]:
    """Why these files would not make a working Space; empty when all is well."""
    problems = [f"{name}: not tracked by git, so it would not be uploaded" for name in SPACE_REQUIRED
                if name not in files]
    problems += check_bundles(root / "weights", VARIANTS)
    problems += [f"{root / path}: a tracked bundle folder without this file" for path in
                 (f"weights/{v}/{name}" for v in VARIANTS for name in REQUIRED_FILES) if path not in files]
    if "README.md" in files:
        try:
            fields = front_matter((root / "README.md").read_text(encoding="utf-8"))
        except FrontMatterError as exc:
            return [*problems, f"README.md: the front matter is not valid YAML, and the Hub refuses it ({exc})"]
        problems += [f"README.md: the front matter must say '{key}: {value}' (it says {fields.get(key)!r})"
                     for key, value in SPACE_FRONT_MATTER.items() if fields.get(key) != value]
    return problems


def space_operations(root: Path, files: list[str]) -> list:
    """One CommitOperationAdd per file, plus the Space's .gitattributes."""
    from huggingface_hub import CommitOperationAdd

    return ([CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(root / path)) for path in files]
            + [CommitOperationAdd(path_in_repo=GITATTRIBUTES, path_or_fileobj=SPACE_GITATTRIBUTES.encode())])


def push_space(root: Path, space: str, files: list[str], private: bool = False, token: str | None = None,
               message: str = "Deploy the captioning demo", api=None) -> str:
    """Create the Space if needed (Gradio SDK, default hardware) and upload ``files`` from ``root`` in one
    commit; returns the commit URL."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    api.create_repo(repo_id=space, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    commit = api.create_commit(repo_id=space, repo_type="space", operations=space_operations(root, files),
                               commit_message=message)
    return str(getattr(commit, "commit_url", commit))


def upload_failed(exc: Exception) -> int:
    """One line for a failed upload (the Hub unreachable, a refused commit, no token). Uploads are one
    commit each, so nothing was half-published: the same command can simply be run again."""
    reason = (str(exc).strip().splitlines() or [""])[0][:300]
    print(f"error: the upload failed, nothing was published ({type(exc).__name__}: {reason}); "
          "check the network and the token (hf auth login or HF_TOKEN), then run the command again",
          file=sys.stderr)
    return 1


def main_space(args, root: Path = ROOT, api=None) -> int:
    files = space_files(root)
    problems = space_problems(root, files)
    if problems:
        print("error: nothing uploaded:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    try:
        url = push_space(root, args.space, files, args.private, args.token,
                         args.message or "Deploy the captioning demo", api=api)
    except Exception as exc:  # noqa: BLE001 - offline, refused, no token: one line, not the client's traceback
        return upload_failed(exc)
    log.info("uploaded %d files to the Space %s (%s)", len(files) + 1, args.space, url)
    print(f"The Space builds and starts at https://huggingface.co/spaces/{args.space} (a few minutes).")
    return 0


def main(argv=None, api=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = parse_args(argv)
    if args.space:
        return main_space(args, api=api)
    weights = Path(args.weights)
    problems = check_bundles(weights, args.variants)
    if problems:
        print("error: nothing uploaded:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    try:
        url = push(weights, args.repo, args.variants, args.private, args.token,
                   args.message or "Upload caption model bundles", api=api)
    except Exception as exc:  # noqa: BLE001 - as in main_space
        return upload_failed(exc)
    log.info("uploaded %s from %s to https://huggingface.co/%s (%s)", ", ".join(args.variants), weights,
             args.repo, url)
    print(f"Start the demo with CAPTION_WEIGHTS_REPO={args.repo} to use these models.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
