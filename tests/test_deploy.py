"""Deployment checks: the Dockerfile, .dockerignore, the Space front matter, the pins, and the app
started exactly the way the image starts it.

No Docker engine runs here, so the image is simulated: the Dockerfile is parsed (with
dockerfile-parse), the files its COPY instructions take from the build context (minus .dockerignore)
are copied into a temporary root, and its CMD and HEALTHCHECK commands run against that copy with
the ENV it sets.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.metadata
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import streamlit as st
import yaml
from dockerfile_parse import DockerfileParser
from dockerfile_parse.util import WordSplitter
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from streamlit import config as st_config
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.runtime.secrets import Secrets
from streamlit.testing.v1 import AppTest
from websockets.sync.client import connect as websocket_connect

from tests.apptest import open_settings

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
FRONT_MATTER = REPO / "docs" / "hf-space-front-matter.yaml"
DEPLOY_DOC = REPO / "docs" / "deploy.md"
APP = REPO / "streamlit_app.py"

# What the app reads at run time, relative to its folder.
RUNTIME_FILES = ("streamlit_app.py", "models.yaml", ".streamlit/config.toml")
RUNTIME_DIRS = ("core", "personas", "ui")

# Colours a Space card accepts (https://huggingface.co/docs/hub/spaces-config-reference).
SPACE_COLORS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
OFFLINE_NOTICE = "built-in offline model"
SERVER_START_TIMEOUT_S = 30
SESSION_TIMEOUT_S = 30


# --- the Dockerfile, as dockerfile-parse reads it ------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One instruction of the Dockerfile (comments left out), with the ENV and ARG in effect there."""

    keyword: str  # upper case: FROM, RUN, COPY, ...
    value: str  # the rest, continuation lines joined
    line: int  # 1-based, where it starts, for messages
    envs: dict[str, str]
    args: dict[str, str]

    def words(self, text: str) -> list[str]:
        """`text` split into words as Docker splits COPY and WORKDIR arguments: quotes removed,
        $VAR and ${VAR} substituted."""
        return list(WordSplitter(text, args=self.args, envs=self.envs).split())

    def expand(self, text: str) -> str:
        """`text` as one word (a WORKDIR path), quotes removed and variables substituted."""
        return WordSplitter(text, args=self.args, envs=self.envs).dequote()


def split_flags(args: str) -> tuple[dict[str, str], str]:
    """`--chown=user --from=x rest` -> ({"chown": "user", "from": "x"}, "rest")."""
    flags: dict[str, str] = {}
    rest = args
    while match := re.match(r"--([a-z-]+)(?:=(\S*))?\s+", rest):
        flags[match[1]] = match[2] or ""
        rest = rest[match.end() :]
    return flags, rest


def exec_form(args: str | None) -> list[str]:
    """The JSON array of an exec-form CMD/HEALTHCHECK/COPY; fails on the shell form."""
    try:
        value = json.loads(args or "")
    except json.JSONDecodeError:
        value = None
    assert isinstance(value, list) and value and all(isinstance(v, str) for v in value), (
        f"expected exec form (a JSON array of strings), got: {args}"
    )
    return value


@dataclass(frozen=True)
class Dockerfile:
    parser: DockerfileParser
    steps: tuple[Step, ...]

    @classmethod
    def load(cls, path: Path) -> Dockerfile:
        parser = DockerfileParser(path=str(path), env_replace=True, cache_content=True)
        assert parser.baseimage, "no FROM"
        assert not parser.is_multistage, "a multi-stage build is not simulated here"
        steps = tuple(
            Step(
                entry["instruction"],
                entry["value"].strip(),
                entry["startline"] + 1,
                context.envs,
                context.args,
            )
            for entry, context in zip(parser.structure, parser.context_structure, strict=True)
            if entry["instruction"] != "COMMENT"
        )
        return cls(parser, steps)

    def all(self, keyword: str) -> list[Step]:
        return [step for step in self.steps if step.keyword == keyword]

    def one(self, keyword: str) -> Step:
        found = self.all(keyword)
        assert len(found) == 1, f"expected exactly one {keyword}, found {len(found)}"
        return found[0]

    def index(self, step: Step) -> int:
        return self.steps.index(step)

    @property
    def env(self) -> dict[str, str]:
        """The ENV the container starts with."""
        return dict(self.parser.envs)

    @property
    def cmd(self) -> list[str]:
        return exec_form(self.parser.cmd)

    @property
    def healthcheck(self) -> list[str]:
        _, rest = split_flags(self.one("HEALTHCHECK").value)
        keyword, _, command = rest.partition(" ")
        assert keyword.upper() == "CMD", f"HEALTHCHECK must run a command, got {rest!r}"
        return exec_form(command.strip())

    @property
    def exposed_port(self) -> int:
        ports = self.one("EXPOSE").value.split()
        assert len(ports) == 1, f"expected one exposed port, got {ports}"
        return int(ports[0].removesuffix("/tcp"))

    def workdir(self, before: Step | None = None) -> PurePosixPath:
        """The WORKDIR in effect for the step `before`, or (None) the image's."""
        workdir = PurePosixPath("/")
        for step in self.steps[: None if before is None else self.index(before)]:
            if step.keyword == "WORKDIR":
                workdir = workdir / step.expand(step.value)
        return workdir


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return Dockerfile.load(DOCKERFILE)


def copy_args(step: Step) -> tuple[dict[str, str], list[str], str]:
    """A COPY's flags, sources and target."""
    flags, rest = split_flags(step.value)
    paths = exec_form(rest) if rest.startswith("[") else step.words(rest)
    assert len(paths) >= 2, f"line {step.line}: COPY needs a source and a target"
    return flags, paths[:-1], paths[-1]


def copy_destination(dockerfile: Dockerfile, step: Step, source: str) -> PurePosixPath:
    """Where a COPY puts the file `source` (not a folder): into the target when it is a folder."""
    _, sources, target = copy_args(step)
    target_path = dockerfile.workdir(step) / target
    into_dir = target.endswith("/") or target in {".", "./"} or len(sources) > 1
    return target_path / PurePosixPath(source).name if into_dir else target_path


def useradd_args(dockerfile: Dockerfile) -> list[str]:
    """The arguments of the one `useradd` the Dockerfile runs (the user's name is the last)."""
    runs = [r for r in dockerfile.all("RUN") if re.search(r"\buseradd\b", r.value)]
    assert len(runs) == 1, "expected one RUN with useradd"
    return re.search(r"\buseradd\s+([^&;|]*)", runs[0].value)[1].split()


def cmd_option(cmd: list[str], name: str) -> str:
    values = [arg.partition("=")[2] for arg in cmd if arg.startswith(f"--{name}=")]
    assert len(values) == 1, f"CMD must set --{name}=... exactly once: {cmd}"
    return values[0]


def healthcheck_url(command: list[str]) -> str:
    urls = re.findall(r"https?://[^\s'\"]+", " ".join(command))
    assert len(urls) == 1, f"HEALTHCHECK should request one URL: {command}"
    return urls[0]


# --- .dockerignore and the files an image gets -----------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore syntax: relative to the context root, `*` and `?` within one path
    segment, `**` across any number of segments."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        else:
            out.append({"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i])))
            i += 1
    return re.compile("".join(out) + r"\Z")


@dataclass(frozen=True)
class DockerIgnore:
    rules: tuple[tuple[bool, re.Pattern[str]], ...]  # (negated, pattern)

    @classmethod
    def load(cls, path: Path) -> DockerIgnore:
        rules = []
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            pattern = str(PurePosixPath(line.removeprefix("!").strip().lstrip("/")))
            assert not re.search(r"[\[\]\\]", pattern), f"matcher here does not support {line!r}"
            rules.append((negated, _pattern_regex(pattern)))
        return cls(tuple(rules))

    def ignores(self, relative: str) -> bool:
        """Last matching rule wins; a rule matching a parent folder covers what is inside it."""
        parts = PurePosixPath(relative).parts
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        ignored = False
        for negated, regex in self.rules:
            if any(regex.match(prefix) for prefix in prefixes):
                ignored = not negated
        return ignored


@pytest.fixture(scope="module")
def dockerignore() -> DockerIgnore:
    return DockerIgnore.load(REPO / ".dockerignore")


def build_context(ignore: DockerIgnore) -> list[str]:
    """Every file `docker build .` would send, as POSIX paths relative to the repository."""
    can_prune = not any(negated for negated, _ in ignore.rules)
    files = []
    for folder, dirs, names in os.walk(REPO):
        relative_folder = Path(folder).relative_to(REPO).as_posix()
        prefix = "" if relative_folder == "." else relative_folder + "/"
        if can_prune:
            dirs[:] = [d for d in dirs if not ignore.ignores(prefix + d)]
        files += [prefix + name for name in names if not ignore.ignores(prefix + name)]
    return sorted(files)


def stage_image(dockerfile: Dockerfile, ignore: DockerIgnore, root: Path) -> Path:
    """Copy what the Dockerfile's COPY instructions would put in the image under `root` (standing
    for the image's /), and create the home of its `useradd -m` user. Returns the WORKDIR."""
    context = build_context(ignore)
    if "-m" in (useradd := useradd_args(dockerfile)):
        (root / "home" / useradd[-1]).mkdir(parents=True, exist_ok=True)
    for step in dockerfile.all("COPY"):
        flags, sources, target = copy_args(step)
        assert "from" not in flags, "COPY --from (another stage or image) is not simulated here"
        target_path = dockerfile.workdir(step) / target
        for source in sources:
            source = source.removeprefix("./").rstrip("/") or "."
            assert not re.search(r"[*?\[]", source), f"wildcard COPY source not simulated: {source}"
            if source == ".":
                pairs = [(f, target_path / f) for f in context]
            elif any(f.startswith(source + "/") for f in context):
                pairs = [
                    (f, target_path / f[len(source) + 1 :]) for f in context if f.startswith(source + "/")
                ]
            else:
                assert source in context, f"COPY source {source} is missing or .dockerignored"
                pairs = [(source, copy_destination(dockerfile, step, source))]
            for relative, destination in pairs:
                staged = root / destination.relative_to("/")
                staged.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / relative, staged)
    app_dir = root / dockerfile.workdir().relative_to("/")
    app_dir.mkdir(parents=True, exist_ok=True)
    return app_dir


@dataclass(frozen=True)
class StagedImage:
    root: Path
    app_dir: Path
    env: dict[str, str]  # the image's ENV, with HOME and DATA_DIR mapped under root

    @property
    def home(self) -> Path:
        return Path(self.env["HOME"])


@pytest.fixture(scope="module")
def staged(dockerfile: Dockerfile, dockerignore: DockerIgnore, tmp_path_factory) -> StagedImage:
    root = tmp_path_factory.mktemp("image")
    app_dir = stage_image(dockerfile, dockerignore, root)
    env = dockerfile.env
    home = root / PurePosixPath(env.get("HOME", "/root")).relative_to("/")
    home.mkdir(parents=True, exist_ok=True)
    # The image's DATA_DIR, created as its RUN does, under root like HOME: never this machine's /data.
    data_dir = root / PurePosixPath(env["DATA_DIR"]).relative_to("/")
    data_dir.mkdir(parents=True, exist_ok=True)
    return StagedImage(root, app_dir, {**env, "HOME": str(home), "DATA_DIR": str(data_dir)})


# --- the Dockerfile ------------------------------------------------------------------------------


def test_base_image_python_is_one_the_requirements_support(dockerfile):
    """The image's Python, not the one running these tests: pyproject.toml and every pinned
    distribution must accept its minor, or `pip install -r requirements.txt` fails in the image."""
    image = dockerfile.parser.baseimage
    match = re.fullmatch(r"python:(\d+)\.(\d+)(?:\.\d+)?-slim(?:-[a-z]+)?(?:@sha256:[0-9a-f]{64})?", image)
    assert match, f"FROM should be python:3.X-slim (a pinned minor), got {image!r}"
    version = (int(match[1]), int(match[2]))
    minor = f"{version[0]}.{version[1]}"

    requires = SpecifierSet(
        tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    )
    assert requires.contains(minor), f"requires-python {requires} excludes the image's Python {minor}"
    lower = [s.version for s in requires if s.operator in (">=", "~=", "==")]
    assert lower and tuple(int(p) for p in lower[0].split(".")[:2]) == version, (
        f"requires-python {requires} should start at the image's Python {version}"
    )
    # The installed distributions are the pinned ones (test_requirements_are_pinned_...).
    unsupported = {
        name: needs
        for name in pinned_requirements()
        if (needs := importlib.metadata.metadata(name).get("Requires-Python"))
        and not SpecifierSet(needs).contains(minor)
    }
    assert not unsupported, f"pins that do not install on the image's Python {minor}: {unsupported}"


def test_runs_as_uid_1000_not_root(dockerfile):
    command = useradd_args(dockerfile)
    assert "-m" in command, "useradd -m: the user needs a home"
    assert command[command.index("-u") + 1] == "1000", "Spaces run the container as UID 1000"
    user = command[-1]

    users = dockerfile.all("USER")
    assert users, "no USER: the container would run as root"
    final_user = users[-1].value.split(":")[0]
    assert final_user not in {"root", "0"}
    assert final_user in {user, "1000"}
    assert not dockerfile.all("ENTRYPOINT"), "an ENTRYPOINT would turn CMD into its arguments"


def test_the_user_owns_its_home_and_the_app(dockerfile):
    """Streamlit looks for ~/.streamlit under HOME; the app's files belong to the user it runs as."""
    command = useradd_args(dockerfile)
    user = command[-1]
    home = command[command.index("-d") + 1] if "-d" in command else f"/home/{user}"
    assert dockerfile.env.get("HOME", home) == home, "HOME is not the home of the user the app runs as"
    for step in dockerfile.all("COPY"):
        owner = copy_args(step)[0].get("chown", "").split(":")[0]
        assert owner in {user, "1000"}, f"line {step.line}: COPY --chown={user}, or root owns the files"


def test_the_user_owns_the_data_dir_a_volume_is_mounted_on(dockerfile):
    """DATA_DIR exists in the image and belongs to the app's user: a Docker volume mounted there
    starts with that owner, so conversations saved there outlive the container."""
    data_dir = dockerfile.env["DATA_DIR"]
    user = useradd_args(dockerfile)[-1]
    [setup] = [r for r in dockerfile.all("RUN") if re.search(r"\buseradd\b", r.value)]
    commands = [command.split() for command in re.split(r"&&|;", setup.value)]
    assert any(words[0] == "mkdir" and data_dir in words for words in commands), setup.value
    chowns = [words for words in commands if words[0] == "chown" and data_dir in words]
    assert any(words[1].split(":")[0] in {user, "1000"} for words in chowns), setup.value


def test_the_docs_give_the_python_range_pyproject_requires():
    """One Python range everywhere: pyproject.toml's requires-python, said the same way in the docs."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requires = SpecifierSet(project["requires-python"])
    supported = [f"3.{minor}" for minor in range(8, 20) if requires.contains(f"3.{minor}")]
    assert len(supported) >= 2 and not requires.contains("3.99"), f"{requires} has no upper end"
    phrase = f"Python {supported[0]} to {supported[-1]}"
    for doc in ("README.md", "docs/deploy.md"):
        text = (REPO / doc).read_text(encoding="utf-8")
        assert phrase in text, f"{doc} should say {phrase!r} (pyproject.toml's requires-python {requires})"
        others = set(re.findall(r"Python (3\.\d+)", text)) - set(supported)
        assert not others, f"{doc} names a Python outside {phrase}: {sorted(others)}"


def test_requirements_installed_before_the_app_is_copied(dockerfile):
    copies = [(step, *copy_args(step)[1:]) for step in dockerfile.all("COPY")]
    app_copy = [step for step, sources, _ in copies if sources in (["."], ["./"])]
    assert len(app_copy) == 1, "expected one COPY . <workdir> of the app"
    requirement_copies = [step for step, sources, _ in copies if "requirements.txt" in sources]
    assert len(requirement_copies) == 1, "requirements.txt must be copied on its own, for layer caching"
    installs = [
        r for r in dockerfile.all("RUN") if re.search(r"pip install .*-r\s+\S*requirements\.txt", r.value)
    ]
    assert len(installs) == 1, "expected one RUN pip install -r requirements.txt"
    order = [dockerfile.index(step) for step in (requirement_copies[0], installs[0], app_copy[0])]
    assert order == sorted(order), "copy requirements.txt, install it, then copy the app"
    copied_to = copy_destination(dockerfile, requirement_copies[0], "requirements.txt")
    installed = dockerfile.workdir(installs[0]) / re.search(r"-r\s+(\S+)", installs[0].value)[1]
    assert copied_to == installed, f"installs {installed}, but requirements.txt is copied to {copied_to}"


def test_expose_cmd_and_healthcheck_agree_on_the_port(dockerfile):
    port = dockerfile.exposed_port
    assert int(cmd_option(dockerfile.cmd, "server.port")) == port
    assert cmd_option(dockerfile.cmd, "server.address") == "0.0.0.0", (
        "the Space's proxy reaches the container from outside: listen on every interface"
    )

    check = dockerfile.healthcheck
    assert check[0] in {"python", "python3"}, "python:*-slim has no curl or wget; use urllib"
    url = urlsplit(healthcheck_url(check))
    assert (url.hostname, url.port, url.path) == ("localhost", port, "/_stcore/health")
    flags, _ = split_flags(dockerfile.one("HEALTHCHECK").value)
    assert "start-period" in flags, "give the app time to start before failures count"


def test_dockerignore_keeps_secrets_and_dev_files_out(dockerignore):
    for path in (
        ".streamlit/secrets.toml",
        "personas/.streamlit/secrets.toml",
        ".env",
        ".git/HEAD",
        "tests/test_deploy.py",
        "artifacts/report.html",
        "core/__pycache__/tokens.cpython-311.pyc",
        ".pytest_cache/v/cache/lastfailed",
        ".ruff_cache/CACHEDIR.TAG",
        ".hypothesis/examples/x",
        ".benchmarks/run.json",
    ):
        assert dockerignore.ignores(path), f"{path} would be copied into the image"


def test_image_gets_every_runtime_file(staged, dockerignore):
    for name in RUNTIME_FILES:
        assert not dockerignore.ignores(name), f"{name} is .dockerignored"
        assert (staged.app_dir / name).is_file(), f"{name} is not copied into the image"
    for folder in RUNTIME_DIRS:
        sources = [p for p in (REPO / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        assert sources, folder
        for source in sources:
            relative = source.relative_to(REPO).as_posix()
            assert (staged.app_dir / relative).is_file(), f"{relative} is not copied into the image"
    assert (staged.app_dir / "requirements.txt").is_file()

    copied = {p.relative_to(staged.root).as_posix() for p in staged.root.rglob("*") if p.is_file()}
    leaked = [p for p in copied if re.search(r"(^|/)(secrets\.toml|\.env|\.git/|tests/|__pycache__/)", p)]
    assert not leaked, f"these must not be in the image: {leaked}"

    settings = tomllib.loads((staged.app_dir / ".streamlit/config.toml").read_text())
    assert settings["browser"]["gatherUsageStats"] is False
    assert settings["server"]["headless"] is True


def test_runtime_files_are_not_gitignored():
    """Community Cloud and Spaces build from the git repository: an ignored file never arrives."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    paths = [*RUNTIME_FILES, *RUNTIME_DIRS, "requirements.txt", "Dockerfile", ".dockerignore"]
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", *paths], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 1, f"gitignored, so not deployed: {result.stdout.split()}"
    assert (
        subprocess.run(
            ["git", "check-ignore", "-q", "--no-index", ".streamlit/secrets.toml"], cwd=REPO, check=False
        ).returncode
        == 0
    ), ".streamlit/secrets.toml must stay gitignored"


# --- the Space front matter ----------------------------------------------------------------------


def test_space_front_matter_matches_the_image(dockerfile):
    text = FRONT_MATTER.read_text(encoding="utf-8")
    meta = yaml.safe_load(text)
    assert meta["sdk"] == "docker"
    assert meta["app_port"] == dockerfile.exposed_port == int(cmd_option(dockerfile.cmd, "server.port"))
    assert meta["title"] and meta["emoji"]
    assert {meta["colorFrom"], meta["colorTo"]} <= SPACE_COLORS
    assert 0 < len(meta["short_description"]) <= 60, "Spaces cap short_description at 60 characters"
    assert "---" not in text, "the file is the YAML only; the --- fences go in README.md"

    # docs/deploy.md shows the same block, fenced, for pasting at the top of README.md.
    assert f"---\n{text}---" in _dedent_blocks(DEPLOY_DOC.read_text(encoding="utf-8"))
    readme = REPO / "README.md"
    if readme.is_file() and readme.read_text(encoding="utf-8").startswith("---\n"):
        block = readme.read_text(encoding="utf-8").split("---\n", 2)[1]
        assert yaml.safe_load(block) == meta, "README.md's front matter differs from the Space's"


def _dedent_blocks(markdown: str) -> str:
    """The Markdown with list-item indentation (3 spaces) removed, so indented code blocks compare."""
    return "\n".join(re.sub(r"^ {3}", "", line) for line in markdown.splitlines())


# --- dependencies --------------------------------------------------------------------------------


#: requirements.txt's line between what the app imports (the roots) and what those depend on.
DEPENDENCIES_MARKER = "# --- what those depend on"


def requirements(text: str) -> list[Requirement]:
    """The requirement lines of `text`, each checked to be pinned with == to one version."""
    found = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==" and "*" not in specifiers[0].version, (
            f"not pinned with ==: {raw!r}"
        )
        assert not requirement.url and not requirement.marker, raw
        found.append(requirement)
    return found


def pinned_requirements() -> dict[str, str]:
    return {
        requirement.name: next(iter(requirement.specifier)).version
        for requirement in requirements((REPO / "requirements.txt").read_text(encoding="utf-8"))
    }


def installed_tree(roots: list[Requirement]) -> dict[str, str]:
    """Every distribution pip installs for `roots` (their requirements, with the extras asked for,
    on this Python), by canonical name, with the version installed here."""
    extras_of: dict[str, set[str]] = {}
    versions: dict[str, str] = {}
    pending = [(root.name, set(root.extras)) for root in roots]
    while pending:
        name, extras = pending.pop()
        key = canonicalize_name(name)
        if key in versions and extras <= extras_of[key]:
            continue
        extras_of.setdefault(key, set()).update(extras)
        versions[key] = importlib.metadata.version(name)
        for line in importlib.metadata.requires(name) or []:
            requirement = Requirement(line)
            wanted = requirement.marker is None or any(
                requirement.marker.evaluate({"extra": extra}) for extra in extras_of[key] | {""}
            )
            if wanted:
                pending.append((requirement.name, set(requirement.extras)))
    return versions


def test_requirements_pin_the_whole_installed_tree_at_the_tested_versions():
    """requirements.txt is the lock: every distribution the app's requirements pull in, and
    nothing else, at the version installed where the tests run."""
    text = (REPO / "requirements.txt").read_text(encoding="utf-8")
    assert DEPENDENCIES_MARKER in text
    roots = requirements(text.split(DEPENDENCIES_MARKER, 1)[0])
    assert "streamlit" in {root.name for root in roots}
    pins = {canonicalize_name(name): version for name, version in pinned_requirements().items()}
    installed = installed_tree(roots)
    unpinned = {name: version for name, version in sorted(installed.items()) if name not in pins}
    assert not unpinned, f"installed for the app but not pinned in requirements.txt: {unpinned}"
    stale = sorted(set(pins) - set(installed))
    assert not stale, f"pinned but nothing the app needs requires them: {stale}"
    mismatched = {name: (pin, installed[name]) for name, pin in pins.items() if installed[name] != pin}
    assert not mismatched, f"pins differ from what is installed (pin, installed): {mismatched}"


def test_every_third_party_import_is_a_requirement():
    """A module the app imports but requirements.txt does not name fails only after deploying."""
    pinned = {name.lower().replace("_", "-") for name in pinned_requirements()}
    distributions = importlib.metadata.packages_distributions()
    local = {"streamlit_app", *RUNTIME_DIRS}
    missing = {}
    code = sorted(path for folder in RUNTIME_DIRS for path in (REPO / folder).rglob("*.py"))
    for path in [APP, *code]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top in local or top == "__future__":
                    continue
                owners = {d.lower().replace("_", "-") for d in distributions.get(top, [])}
                if not owners & pinned:
                    missing[f"{path.name}: {module}"] = sorted(owners)
    assert not missing, f"imported, but their distribution is not in requirements.txt: {missing}"


# --- the image's CMD and HEALTHCHECK, run for real -----------------------------------------------


def free_ports(count: int) -> list[int]:
    """Distinct ports nothing listens on (all bound at once, then released)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


@dataclass
class RunningApp:
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def image_cmd(dockerfile: Dockerfile, port: int) -> list[str]:
    """The Dockerfile's CMD with two changes. There is no Docker engine here, so the command runs
    on this machine instead of in a container: it gets a free port instead of 8501 (which may be
    taken), and 127.0.0.1 instead of 0.0.0.0, because a test must not listen on every interface of
    the machine it runs on. In the image, 0.0.0.0 is right: it is what the Space's proxy reaches."""
    image_port = cmd_option(dockerfile.cmd, "server.port")
    swaps = {
        f"--server.port={image_port}": f"--server.port={port}",
        "--server.address=0.0.0.0": "--server.address=127.0.0.1",
    }
    command = [swaps.get(arg, arg) for arg in dockerfile.cmd]
    assert sum(arg in swaps for arg in dockerfile.cmd) == 2, dockerfile.cmd
    # The same interpreter as the tests: the streamlit script next to sys.executable.
    beside = Path(sys.executable).with_name(command[0])
    command[0] = str(beside) if beside.exists() else shutil.which(command[0]) or command[0]
    return [*command, "--browser.serverAddress", "127.0.0.1"]


def launch_app(
    dockerfile: Dockerfile, staged: StagedImage, port: int, log: Path, **extra_env: str
) -> RunningApp:
    """Run the image's CMD in its WORKDIR with only the image's ENV (plus PATH and `extra_env`):
    nothing of this process's environment, so no OPENAI_API_KEY unless given."""
    env = {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8", **staged.env, **extra_env}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            image_cmd(dockerfile, port), cwd=staged.app_dir, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    return RunningApp(process, port, log)


def wait_until_healthy(app: RunningApp) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline and app.process.poll() is None:
        try:
            with urllib.request.urlopen(f"{app.url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    stop_app(app)
    pytest.fail(f"the app did not become healthy; its log:\n{app.log_text()}")


def stop_app(app: RunningApp) -> None:
    if app.process.poll() is None:
        app.process.terminate()
        try:
            app.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            app.process.kill()
            app.process.wait(timeout=10)


def browser_session(app: RunningApp) -> list[ForwardMsg]:
    """What a browser tab receives: open Streamlit's websocket, ask for a script run (the first
    thing the page does), and collect the messages until the run finishes."""
    messages = []
    with websocket_connect(
        f"ws://127.0.0.1:{app.port}/_stcore/stream",
        subprotocols=["streamlit"],
        open_timeout=10,
        max_size=None,
    ) as ws:
        request = BackMsg()
        request.rerun_script.query_string = ""
        ws.send(request.SerializeToString())
        deadline = time.monotonic() + SESSION_TIMEOUT_S
        while True:
            message = ForwardMsg()
            message.ParseFromString(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            messages.append(message)
            if message.WhichOneof("type") == "script_finished":
                break
    assert messages[-1].script_finished == ForwardMsg.FINISHED_SUCCESSFULLY, messages[-1]
    exceptions = [
        m.delta.new_element.exception
        for m in messages
        if m.WhichOneof("type") == "delta" and m.delta.new_element.WhichOneof("type") == "exception"
    ]
    assert not exceptions, f"the app raised: {exceptions}"
    return messages


@dataclass(frozen=True)
class Apps:
    without_key: RunningApp
    with_key: RunningApp


# Distinctive, so finding it anywhere (a log line, a message to the browser) is no coincidence.
ENV_KEY = "sk-deploytest-" + "Zq7" * 12


@pytest.fixture(scope="module")
def apps(dockerfile, staged, tmp_path_factory) -> Iterator[Apps]:
    """Two copies of the image's app, started side by side to save time: without a key, and with
    OPENAI_API_KEY in its environment (as a Space secret arrives)."""
    logs = tmp_path_factory.mktemp("logs")
    ports = free_ports(2)
    started = Apps(
        launch_app(dockerfile, staged, ports[0], logs / "without-key.log"),
        launch_app(dockerfile, staged, ports[1], logs / "with-key.log", OPENAI_API_KEY=ENV_KEY),
    )
    try:
        wait_until_healthy(started.without_key)
        wait_until_healthy(started.with_key)
        yield started
    finally:
        stop_app(started.without_key)
        stop_app(started.with_key)


def test_image_cmd_serves_the_app_and_passes_its_healthcheck(apps, dockerfile, staged):
    app_without_key = apps.without_key
    # A fresh HOME (the image's, under the staged root) and no secrets.toml anywhere it looks.
    assert staged.home.is_relative_to(staged.root)
    assert not (staged.home / ".streamlit" / "secrets.toml").exists()
    assert not (staged.app_dir / ".streamlit" / "secrets.toml").exists()

    with urllib.request.urlopen(f"{app_without_key.url}/_stcore/health", timeout=5) as response:
        assert response.read() == b"ok"
        cookie = " ".join(response.headers.get_all("Set-Cookie") or [])
    if dockerfile.env.get("STREAMLIT_SERVER_XSRF_COOKIE_SAME_SITE") == "none":
        assert "SameSite=None" in cookie and "Secure" in cookie, f"the image's ENV did not apply: {cookie}"
    with urllib.request.urlopen(f"{app_without_key.url}/", timeout=5) as response:
        assert response.status == 200
        assert response.headers.get_content_type() == "text/html"
        assert b"<html" in response.read().lower()

    # The HEALTHCHECK's own command, pointed at this server's port, then at a closed one.
    check = dockerfile.healthcheck
    image_port = f"localhost:{dockerfile.exposed_port}"
    assert any(image_port in arg for arg in check)

    def run_check(port: int) -> subprocess.CompletedProcess:
        command = [arg.replace(image_port, f"localhost:{port}") for arg in check]
        command[0] = sys.executable  # the image's `python`
        return subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)

    healthy = run_check(app_without_key.port)
    assert healthy.returncode == 0, healthy.stderr
    down = run_check(free_ports(1)[0])
    assert down.returncode != 0, "the health check passes with nothing listening"


def test_image_cmd_runs_the_page_on_the_offline_model_without_secrets(apps, staged):
    app_without_key = apps.without_key
    session = b"".join(m.SerializeToString() for m in browser_session(app_without_key))
    assert OFFLINE_NOTICE.encode() in session
    assert b"Connected to" not in session
    log = app_without_key.log_text()
    assert "Traceback" not in log, log
    # The store opened in the image's DATA_DIR (a mounted volume), not in the app folder.
    assert (Path(staged.env["DATA_DIR"]) / "dashboard.db").is_file()
    assert not (staged.app_dir / "data").exists()


def test_image_cmd_never_logs_or_shows_the_key(apps):
    app = apps.with_key
    try:
        session = b"".join(m.SerializeToString() for m in browser_session(app))
        with urllib.request.urlopen(f"{app.url}/", timeout=5) as response:
            page = response.read()
    finally:
        stop_app(app)  # so the log below includes the shutdown
    assert b"key from environment" in session, "the page did not pick up OPENAI_API_KEY"
    assert OFFLINE_NOTICE.encode() not in session
    assert ENV_KEY.encode() not in session, "the key was sent to the browser"
    assert ENV_KEY.encode() not in page
    log = app.log_text()
    assert "Uvicorn server started" in log or "You can now view" in log, log
    assert ENV_KEY not in log, "the key is in the server log"
    assert ENV_KEY[-12:] not in log, "the end of the key is in the server log"


# --- the page in-process: secrets.toml present or not ------------------------------------------


@pytest.fixture
def page_env(clean_env):
    """No deployer setting of the developer's, the offline model at once, a temporary database."""
    return clean_env


def test_page_starts_without_a_secrets_file(page_env, monkeypatch, tmp_path):
    """As on a Space: no secrets.toml anywhere. A fresh `st.secrets` (Streamlit's own class)
    reading from paths that do not exist stands for that, whatever this machine has."""
    previous = st_config.get_option("secrets.files")
    st_config.set_option(
        "secrets.files", [str(tmp_path / "home" / "secrets.toml"), str(tmp_path / "app" / "secrets.toml")]
    )
    try:
        secrets = Secrets()
        assert not secrets.load_if_toml_exists()
        monkeypatch.setattr(st, "secrets", secrets)
        at = AppTest.from_file(str(APP), default_timeout=60).run()
    finally:
        st_config.set_option("secrets.files", previous)
    assert not at.exception, [e.value for e in at.exception]
    assert any(OFFLINE_NOTICE in info.value for info in at.sidebar.info)
    assert not at.sidebar.success


def test_page_connects_with_a_key_in_secrets(page_env):
    key = "sk-secrets-" + "Lm4" * 12
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.secrets["OPENAI_API_KEY"] = key
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    connected = [s.value for s in at.sidebar.success]
    assert len(connected) == 1 and "from secrets" in connected[0], connected
    assert "api.openai.com" in connected[0]
    assert not any(OFFLINE_NOTICE in info.value for info in at.sidebar.info)
    shown = open_settings(at).text_input(key="api_key").value
    assert shown == "", "the deployer's key must not be shown to visitors"


class _KeyCatcher(BaseHTTPRequestHandler):
    """A server a visitor controls: it records the Authorization header it is sent."""

    seen: list[str]

    def do_POST(self) -> None:
        type(self).seen.append(self.headers.get("Authorization", ""))
        body = json.dumps({"error": {"message": "no", "type": "invalid_request_error"}}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_deployer_key_is_not_sent_to_a_visitor_base_url(page_env):
    handler = type("Catcher", (_KeyCatcher,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    key = "sk-deployer-" + "Xy8" * 12
    try:
        at = AppTest.from_file(str(APP), default_timeout=60)
        at.secrets["OPENAI_API_KEY"] = key
        at.run()
        open_settings(at).text_input(key="base_url").input(
            f"http://127.0.0.1:{server.server_address[1]}/v1"
        ).run()
        at.chat_input(key="chat_input").set_value("hello").run()
    finally:
        server.shutdown()
        server.server_close()
    assert not any(key in header for header in handler.seen), (
        "the deployer's key went to the visitor's server"
    )
