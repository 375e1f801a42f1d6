"""`dvc exp run` on a machine where git has no user name and email (a new server or container).

`dvc exp run` commits to git (it stashes a changed workspace and commits the experiment),
so there it fails with "Git user name and email must be configured". `make setup` (its
`git-identity` step) gives the repository a local identity; `cxrstn doctor` says what to
run (bench/seeds.py's check: tests/test_bench.py). Each test works in a clone of a tiny DVC
project in tmp_path whose git sees no global or system config.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = ["dvc", "exp", "run", "-S", "n=3"]


def no_identity_env(tmp_path: Path) -> dict[str, str]:
    """This environment, but git (and libgit2, which DVC commits with) finds no user config."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "XDG_CONFIG"))}
    return env | {
        "HOME": str(home),
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_SYSTEM": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site"),
        "DVC_GLOBAL_CONFIG_DIR": str(tmp_path / "dvc-global"),
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }


def run(command: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def origin(tmp_path_factory) -> Path:
    """A one-stage DVC project with a committed run."""
    tmp_path = tmp_path_factory.mktemp("origin")
    env = no_identity_env(tmp_path)
    origin = tmp_path / "origin"
    origin.mkdir()
    (origin / "params.yaml").write_text("n: 1\n")
    stage = {"cmd": "python -c \"import yaml; print(yaml.safe_load(open('params.yaml'))['n'])\""}
    stage |= {"params": ["n"], "outs": ["out.txt"]}
    stage["cmd"] += " > out.txt"
    (origin / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"count": stage}}))
    commit = ["git", "-c", "user.name=origin", "-c", "user.email=origin@example.org", "commit"]
    for command in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["dvc", "repro", "-q"],
        ["git", "add", "-A"],
        [*commit, "-qm", "a committed run"],
    ):
        done = run(command, origin, env)
        assert done.returncode == 0, done.stderr
    return origin


@pytest.fixture
def clone(origin: Path, tmp_path: Path) -> tuple[Path, dict]:
    """A fresh clone of `origin` whose workspace has a changed tracked file (as `dvc.lock`
    is after `make repro` on another CPU), in an environment where git has no identity."""
    env = no_identity_env(tmp_path)
    dest = tmp_path / "clone"
    assert run(["git", "clone", "-q", str(origin), str(dest)], tmp_path, env).returncode == 0
    (dest / "params.yaml").write_text("n: 2\n")
    return dest, env


def git_config(dest: Path, env: dict, key: str) -> str:
    return run(["git", "config", "--local", key], dest, env).stdout.strip()


def test_dvc_exp_run_fails_without_an_identity_and_works_after_make_setup(clone):
    dest, env = clone
    failed = run(EXPERIMENT, dest, env)
    assert failed.returncode == 255
    assert "Git user name and email must be configured" in failed.stderr

    make = ["make", "--no-print-directory", "-s", "-f", str(ROOT / "Makefile"), "git-identity"]
    done = run(make, dest, env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("git had no user name/email, which dvc exp run needs: set ")
    assert "for this repository only" in done.stdout and len(done.stdout.splitlines()) == 1
    assert (git_config(dest, env, "user.name"), git_config(dest, env, "user.email")) == (
        "cxrstn",
        "cxrstn@localhost",
    )

    worked = run(EXPERIMENT, dest, env)
    assert worked.returncode == 0, worked.stderr
    assert (dest / "out.txt").read_text() == "3\n"
    again = run(make, dest, env)
    assert again.returncode == 0 and again.stdout == ""  # set once, then kept


def test_make_setup_keeps_an_identity_git_already_has(clone, tmp_path):
    dest, env = clone
    config = tmp_path / "gitconfig"
    config.write_text("[user]\n\tname = Someone\n\temail = someone@example.org\n")
    make = ["make", "--no-print-directory", "-s", "-f", str(ROOT / "Makefile"), "git-identity"]
    done = run(make, dest, env | {"GIT_CONFIG_GLOBAL": str(config)})
    assert done.returncode == 0 and done.stdout == ""
    assert git_config(dest, env, "user.name") == "" and git_config(dest, env, "user.email") == ""
    # Only the part that is missing is set.
    config.write_text("[user]\n\tname = Someone\n")
    done = run(make, dest, env | {"GIT_CONFIG_GLOBAL": str(config)})
    assert "set user.email 'cxrstn@localhost' for this repository only" in done.stdout
    assert git_config(dest, env, "user.name") == ""


CHECK = "import sys; from cxrstn.cli import git_identity_status as s; print(s(sys.argv[1]))"


def doctor_says(path: Path, env: dict) -> str:
    """`cxrstn doctor`'s git identity line, and whether it is a problem (in a subprocess:
    libgit2 reads HOME once per process)."""
    done = run([sys.executable, "-c", CHECK, str(path)], ROOT, env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_doctor_says_what_to_run(clone):
    dest, env = clone
    said = doctor_says(dest, env)
    assert said.startswith("('NOT SET: user.name and user.email (`dvc exp run` commits to git)")
    assert "run `make setup` (sets one for this repository only)" in said
    assert said.endswith(", True)")
    for key, value in (("user.name", "A Person"), ("user.email", "a@example.org")):
        run(["git", "config", key, value], dest, env)
    assert doctor_says(dest, env) == "('A Person <a@example.org>', False)"
    # Outside a repository the line is a note, not a problem.
    outside = doctor_says(dest.parent, env)
    assert outside.startswith("('not a git repository here") and outside.endswith(", False)")


def test_the_identity_dvc_takes_from_the_environment_counts(clone):
    dest, env = clone
    variables = {f"GIT_{who}_NAME": "Env Person" for who in ("AUTHOR", "COMMITTER")}
    variables |= {f"GIT_{who}_EMAIL": "env@example.org" for who in ("AUTHOR", "COMMITTER")}
    assert doctor_says(dest, env | variables) == "('Env Person <env@example.org>', False)"
    assert run(EXPERIMENT, dest, env | variables).returncode == 0
