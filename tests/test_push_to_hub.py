"""Deploying to the Hugging Face Hub (issue 17), offline: a fake HfApi records the calls, and the tests
check the exact files a Space gets (tracked files only, minus what a Space must not carry)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from training import push_to_hub
from training.push_to_hub import SPACE_GITATTRIBUTES, front_matter, main, space_files

ROOT = Path(__file__).resolve().parents[1]
SPACE_README = "---\ntitle: Captions\nsdk: gradio\napp_file: app.py\n---\n\n# Captions\n"
BUNDLE_FILES = ("config.json", "vocab.json", "decoder.weights.h5", "metrics.json")


class FakeHfApi:
    """Records create_repo / create_commit / upload_folder calls; never touches the network."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def create_commit(self, repo_id, operations, **kwargs):
        operations = list(operations)
        self.calls.append(("create_commit", repo_id, {**kwargs, "operations": operations}))
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/1"})()

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs["repo_id"], kwargs))
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{kwargs['repo_id']}/commit/1"})()


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


@pytest.fixture
def project(tmp_path) -> Path:
    """A small git checkout shaped like this project, with untracked junk next to the tracked files."""
    root = tmp_path / "project"
    tracked = {
        "app.py": "print('app')\n", "README.md": SPACE_README, "requirements.txt": "gradio\n", "LICENSE": "MIT\n",
        "captioning/__init__.py": "", "demo/ui.py": "", "demo/examples/cat.jpg": b"\xff\xd8\xff jpeg",
        "tests/test_app.py": "", ".ci/run": "", "training/train.py": "", "docs/screenshot.png": b"\x89PNG",
        "requirements-dev.txt": "", "pyproject.toml": "", ".gitignore": "runs/\n",
        "weights/training.log": "log\n",
        **{f"weights/{v}/{name}": b"{}" for v in push_to_hub.VARIANTS for name in BUNDLE_FILES},
    }
    untracked = {"junk.txt": "x", "runs/learned/ckpt.h5": b"x", "cache/features.npz": b"x",
                 "weights/.staging-learned/config.json": "{}", "weights/learned.old-1/config.json": "{}",
                 "captioning/__pycache__/x.pyc": b"x"}
    for path, content in {**tracked, **untracked}.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(content) if isinstance(content, bytes) else (root / path).write_text(content)
    _git(root, "init", "-q")
    _git(root, "add", "-f", *tracked)
    return root


EXPECTED_SPACE_FILES = sorted([
    "LICENSE", "README.md", "app.py", "captioning/__init__.py", "demo/examples/cat.jpg", "demo/ui.py",
    "requirements.txt", "weights/training.log",
    *(f"weights/{v}/{name}" for v in push_to_hub.VARIANTS for name in BUNDLE_FILES),
])


def test_space_gets_the_tracked_files_minus_the_exclusions(project):
    assert space_files(project) == EXPECTED_SPACE_FILES


def test_a_tracked_cache_or_bytecode_file_still_stays_out(project):
    (project / "cache").mkdir(exist_ok=True)
    _git(project, "add", "-f", "cache/features.npz", "captioning/__pycache__/x.pyc")
    assert space_files(project) == EXPECTED_SPACE_FILES


def test_deploy_creates_a_gradio_space_and_uploads_every_file_in_one_commit(project):
    api = FakeHfApi()
    args = push_to_hub.parse_args(["--space", "someone/captions"])
    assert push_to_hub.main_space(args, root=project, api=api) == 0

    (create, repo, options), (commit, commit_repo, commit_options) = api.calls
    assert (create, repo) == ("create_repo", "someone/captions")
    assert options == {"repo_type": "space", "space_sdk": "gradio", "private": False, "exist_ok": True}
    assert "space_hardware" not in options  # left to the user
    assert (commit, commit_repo, commit_options["repo_type"]) == ("create_commit", "someone/captions", "space")
    uploaded = {op.path_in_repo: op for op in commit_options["operations"]}
    assert sorted(uploaded) == sorted([*EXPECTED_SPACE_FILES, ".gitattributes"])
    assert uploaded["demo/examples/cat.jpg"].path_or_fileobj == str(project / "demo/examples/cat.jpg")
    attributes = uploaded[".gitattributes"].path_or_fileobj.decode()
    assert attributes == SPACE_GITATTRIBUTES
    for pattern in ("*.h5", "*.jpg", "*.png"):
        assert f"{pattern} filter=lfs diff=lfs merge=lfs -text" in attributes.splitlines()


@pytest.mark.parametrize("readme, problem", [
    ("# no front matter\n", "'sdk: gradio'"),
    (SPACE_README.replace("sdk: gradio", "sdk: docker"), "'sdk: gradio' (it says 'docker')"),
    (SPACE_README.replace("app_file: app.py", "app_file: main.py"), "'app_file: app.py'"),
    (SPACE_README.replace("app_file: app.py", "app_file: app.py\nshort_description: side by side: three"),
     "not valid YAML"),  # an unquoted ': ' in a value; the Hub's validate-yaml refuses the commit
])
def test_deploy_refuses_a_readme_without_the_space_front_matter(project, capsys, readme, problem):
    (project / "README.md").write_text(readme)
    api = FakeHfApi()
    assert push_to_hub.main_space(push_to_hub.parse_args(["--space", "someone/captions"]), root=project, api=api) == 2
    assert problem in capsys.readouterr().err
    assert api.calls == []


def test_deploy_refuses_when_a_bundle_is_incomplete(project, capsys):
    _git(project, "rm", "-q", "--cached", "weights/word2vec/decoder.weights.h5")
    api = FakeHfApi()
    assert push_to_hub.main_space(push_to_hub.parse_args(["--space", "someone/captions"]), root=project, api=api) == 2
    assert "weights/word2vec/decoder.weights.h5" in capsys.readouterr().err
    assert api.calls == []


def test_this_repository_is_a_deployable_space():
    """The real checkout: its README front matter is a Space's, and its Space holds the app and the weights."""
    files = space_files(ROOT)
    assert push_to_hub.space_problems(ROOT, files) == []
    assert {"app.py", "requirements.txt", "README.md", "weights/word2vec/decoder.weights.h5"} <= set(files)
    assert any(f.startswith("demo/examples/") for f in files)
    assert not any(f.startswith(("tests/", ".venv/", "runs/", "cache/")) for f in files)
    assert not (ROOT / ".gitattributes").exists(), "LFS attributes belong in the Space only"
    assert front_matter((ROOT / "README.md").read_text())["sdk"] == "gradio"
    from huggingface_hub import metadata_load  # the Hub client's reading of it, which validates the YAML too

    assert metadata_load(ROOT / "README.md")["app_file"] == "app.py"


def test_model_repo_upload_is_unchanged(project):
    api = FakeHfApi()
    assert main(["--repo", "someone/caption-models", "--weights", str(project / "weights")], api=api) == 0
    (create, repo, options), (upload, upload_repo, upload_options) = api.calls
    assert (create, repo, options["repo_type"], options["exist_ok"]) == ("create_repo", "someone/caption-models",
                                                                         "model", True)
    assert (upload, upload_repo) == ("upload_folder", "someone/caption-models")
    assert upload_options["folder_path"] == str(project / "weights")
    assert upload_options["allow_patterns"] == [f"{v}/*" for v in push_to_hub.VARIANTS] + [
        "familiarity.h5", "neighbour_captions.json", "ensemble_metrics.json", "seed_runs.json"]
    assert {"**/.staging-*", "**/*.old-*"} <= set(upload_options["ignore_patterns"])


class UnreachableHub(FakeHfApi):
    """The Hub as seen offline: every call fails the way the client's HTTP layer does."""

    def create_repo(self, repo_id, **kwargs):
        raise OSError("[Errno -2] Name or service not known")


def test_an_unreachable_hub_is_one_line(project, capsys):
    assert main(["--repo", "someone/caption-models", "--weights", str(project / "weights")], api=UnreachableHub()) == 1
    assert push_to_hub.main_space(push_to_hub.parse_args(["--space", "someone/captions"]), root=project,
                                  api=UnreachableHub()) == 1
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and all(e.startswith("error: the upload failed, nothing was published") for e in errors)
    assert "Name or service not known" in errors[0] and "run the command again" in errors[1]


@pytest.mark.parametrize("argv", [[], ["--space", "no-slash"], ["--repo", "a/b", "--space", "c/d"]])
def test_bad_arguments_are_refused(argv):
    with pytest.raises(SystemExit) as info:
        push_to_hub.parse_args(argv)
    assert info.value.code == 2
