"""The Dockerfile keeps its essentials: CPU torch, a non-root user, one volume, `doppeltweet bot`.

No Docker engine runs in the test environment, so the file is parsed instead of built; these
checks fail as soon as an edit drops one of the promises docs/discord.md makes about the image.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and ``\\`` continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a line continuation"
    return instructions


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form CMD/ENTRYPOINT/VOLUME (shell form is refused)."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def env_values(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """Every ``ENV KEY=value`` pair, later ones winning."""
    values: dict[str, str] = {}
    for keyword, args in instructions:
        if keyword == "ENV":
            for pair in shlex.split(args):
                key, sep, value = pair.partition("=")
                assert sep, f"ENV {args!r}: use the KEY=value form"
                values[key] = value
    return values


@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def test_parser_joins_continuations_and_drops_comments() -> None:
    parsed = parse_dockerfile("# c\nFROM x\nRUN a \\\n    && b\n\nUSER u\n")
    assert parsed == [("FROM", "x"), ("RUN", "a && b"), ("USER", "u")]


def test_image_is_python_311_slim(instructions: list[tuple[str, str]]) -> None:
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    # A build stage compiles llama.cpp's wheel; the image itself is the last stage.
    assert froms[-1] == "python:3.11-slim"
    assert all(image.split()[0] == "python:3.11-slim" for image in froms)


def test_llama_cpp_is_built_portably_in_a_build_stage(
    instructions: list[tuple[str, str]],
) -> None:
    stages = [args.split()[-1] for keyword, args in instructions if keyword == "FROM"][:-1]
    assert stages, "llama-cpp-python is built in a stage of its own"
    builds = [args for keyword, args in instructions if "pip wheel" in args]
    assert len(builds) == 1 and '"llama-cpp-python==0.3.36"' in builds[0]
    assert "-DGGML_NATIVE=OFF" in builds[0] and "march=native" not in builds[0]
    copies = [args for keyword, args in instructions if keyword == "COPY" and "--from" in args]
    assert copies == [f"--from={stages[0]} /wheels /wheels"]


def test_the_image_and_make_install_build_llama_cpp_with_the_same_flags(
    instructions: list[tuple[str, str]],
) -> None:
    build = next(args for keyword, args in instructions if "pip wheel" in args)
    docker_flags = re.search(r'CMAKE_ARGS="([^"]*)"', build)
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8").replace("\\\n", " ")
    make_flags = re.search(r"^LLAMA_CMAKE_ARGS := (.*)$", makefile, re.MULTILINE)
    make_version = re.search(r"^LLAMA_VERSION := (.*)$", makefile, re.MULTILINE)
    assert docker_flags and make_flags and make_version
    assert docker_flags[1].split() == make_flags[1].split()
    # ggml's own threads: OpenMP slows decodes made from several threads (docs/generation.md).
    assert "-DGGML_OPENMP=OFF" in docker_flags[1].split()
    assert f'"llama-cpp-python=={make_version[1].strip()}"' in build


def test_torch_comes_pinned_from_the_cpu_wheel_index_before_the_project(
    instructions: list[tuple[str, str]],
) -> None:
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    torch_runs = [i for i, run in enumerate(runs) if "torch" in run]
    project_runs = [i for i, run in enumerate(runs) if re.search(r"pip install \"?\.", run)]
    assert torch_runs and project_runs, "torch and the project must both be pip-installed"
    assert torch_runs[0] < project_runs[0], "install CPU torch before the project pulls torch"

    torch_run = runs[torch_runs[0]]
    assert f"--index-url {TORCH_CPU_INDEX}" in torch_run
    pin = re.search(r"torch==([0-9][^\"'\s]*)", torch_run)
    assert pin, "pin torch to an exact version"
    version = Version(pin[1])
    assert version.local in (None, "cpu")

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    torch_req = next(
        Requirement(dep)
        for dep in pyproject["project"]["dependencies"]
        if Requirement(dep).name == "torch"
    )
    assert torch_req.specifier.contains(version.public), (
        f"the image's torch {version} is outside pyproject's {torch_req.specifier}"
    )


def test_runs_as_a_non_root_user_created_in_the_image(
    instructions: list[tuple[str, str]],
) -> None:
    users = [(i, args) for i, (keyword, args) in enumerate(instructions) if keyword == "USER"]
    assert users, "the image must switch to a non-root user"
    last_index, user = users[-1]
    assert user.split(":")[0] not in ("root", "0")
    created = [
        i
        for i, (keyword, args) in enumerate(instructions)
        if keyword == "RUN" and re.search(rf"useradd\b.*\b{re.escape(user)}\b", args)
    ]
    assert created and created[0] < last_index
    later = [keyword for keyword, _ in instructions[last_index + 1 :]]
    assert "RUN" not in later and "USER" not in later, "nothing may run as root after USER"


def test_one_volume_holds_the_data_dir(instructions: list[tuple[str, str]]) -> None:
    volumes = [exec_form(args) for keyword, args in instructions if keyword == "VOLUME"]
    assert volumes == [["/data"]]
    env = env_values(instructions)
    assert env["DOPPELTWEET_DATA_DIR"] == "/data"
    assert env["DOPPELTWEET_MODELS_DIR"].startswith("/data/")
    assert env["HF_HOME"].startswith("/data/")
    chowned = [
        args
        for keyword, args in instructions
        if keyword == "RUN" and "chown" in args and "/data" in args
    ]
    assert chowned, "the non-root user must own /data"


def test_default_command_is_doppeltweet_bot(instructions: list[tuple[str, str]]) -> None:
    entrypoints = [exec_form(args) for keyword, args in instructions if keyword == "ENTRYPOINT"]
    cmds = [exec_form(args) for keyword, args in instructions if keyword == "CMD"]
    assert cmds, "the image needs a CMD"
    command = (entrypoints[-1] if entrypoints else []) + cmds[-1]
    assert command == ["doppeltweet", "bot"]


def test_copied_sources_exist_and_are_not_docker_ignored(
    instructions: list[tuple[str, str]],
) -> None:
    ignored = {
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    copies = [
        args.split()
        for keyword, args in instructions
        if keyword in ("COPY", "ADD") and not args.startswith("--from=")
    ]
    assert copies
    for parts in copies:
        for source in parts[:-1]:
            assert not source.startswith("--"), "no COPY --chown needed here"
            assert (ROOT / source).exists(), f"COPY source {source} is missing"
            assert source not in ignored, f"COPY source {source} is in .dockerignore"


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    ignored = set(DOCKERIGNORE.read_text(encoding="utf-8").split())
    for entry in (".env", ".venv", ".git", "data", "models"):
        assert entry in ignored, f".dockerignore must exclude {entry}"
