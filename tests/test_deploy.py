"""The Slurm scripts and Kubernetes manifests in deploy/: they parse, their shard counts agree with what
``--shard auto`` reads, the serve probes hit /health on the served port, and every vidtempo command in
them is one the CLI accepts."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from vidtempo.cli.commands import build_parser
from vidtempo.features.sharding import NUM_SHARDS_VARIABLE, resolve_shard

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
SLURM_SCRIPTS = sorted((DEPLOY / "slurm").glob("*"))
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def containers(doc: dict) -> list[dict]:
    return doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])


def shell_commands(text: str) -> list[list[str]]:
    """The argument lists of the ``vidtempo`` commands in a shell script (variables replaced by 1)."""
    text = re.sub(r"\\\n\s*", " ", text)  # join continued lines
    commands = []
    for line in text.splitlines():
        match = re.search(r"(?:^|\s)vidtempo\s+(.*)$", line)
        if line.lstrip().startswith("#") or not match:
            continue
        words = re.sub(r"\$\(\([^)]*\)\)|\$\{[^}]*\}|\$\w+", "1", match.group(1)).split(">")[0]
        commands.append(shlex.split(words))
    return commands


def vidtempo_commands() -> list[tuple[str, list[str]]]:
    found = [(path.name, argv) for path in SLURM_SCRIPTS for argv in shell_commands(path.read_text())]
    for path in MANIFESTS:
        for doc in documents(path):
            for container in containers(doc):
                command = container.get("command", [])
                if command[:1] == ["vidtempo"]:
                    found.append((path.name, command[1:]))
                elif command[:2] == ["/bin/bash", "-c"]:
                    found += [(path.name, argv) for argv in shell_commands(command[2])]
    return found


def test_manifests_parse_and_name_their_objects():
    assert {p.name for p in MANIFESTS} >= {"extract-job.yaml", "merge-job.yaml", "train-job.yaml",
                                           "predict-job.yaml", "serve.yaml"}
    for path in MANIFESTS:
        for doc in documents(path):
            assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], path.name
            for container in containers(doc):
                assert container["image"] and container["command"], path.name


@pytest.mark.parametrize("path", SLURM_SCRIPTS, ids=lambda p: p.name)
def test_slurm_scripts_pass_bash_n(path):
    checked = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_indexed_jobs_give_each_pod_its_own_shard():
    indexed = [doc for path in MANIFESTS for doc in documents(path) if doc["spec"].get("completionMode") == "Indexed"]
    assert {doc["metadata"]["name"] for doc in indexed} == {"vidtempo-extract", "vidtempo-predict"}
    for job in indexed:
        completions = job["spec"]["completions"]
        (container,) = containers(job)
        env = {e["name"]: e["value"] for e in container["env"]}
        assert "--shard auto" in " ".join(container["command"])
        shards = {resolve_shard("auto", {"JOB_COMPLETION_INDEX": str(i), NUM_SHARDS_VARIABLE: env[NUM_SHARDS_VARIABLE]})
                  for i in range(completions)}
        assert shards == {(i, completions) for i in range(1, completions + 1)}, job["metadata"]["name"]


@pytest.mark.parametrize("name", ["extract.sbatch", "predict.sbatch"])
def test_slurm_arrays_give_each_task_its_own_shard(name):
    text = (DEPLOY / "slurm" / name).read_text()
    first, last = map(int, re.search(r"^#SBATCH --array=(\d+)-(\d+)$", text, re.M).groups())
    assert "--shard auto" in text
    count = last - first + 1
    shards = {resolve_shard("auto", {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_MIN": str(first),
                                     "SLURM_ARRAY_TASK_COUNT": str(count)}) for task in range(first, last + 1)}
    assert shards == {(i, count) for i in range(1, count + 1)}


def test_serve_is_ready_when_health_answers_on_the_served_port():
    deployment, service = documents(DEPLOY / "k8s" / "serve.yaml")
    assert (deployment["kind"], service["kind"]) == ("Deployment", "Service")
    assert deployment["spec"]["replicas"] > 1
    (container,) = containers(deployment)
    command = container["command"]
    port = int(command[command.index("--port") + 1])
    assert command[command.index("--host") + 1] == "0.0.0.0"
    (http,) = container["ports"]
    assert http["containerPort"] == port
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": http["name"]}
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["ports"][0]["targetPort"] == http["name"]


@pytest.mark.parametrize("where, argv", vidtempo_commands(), ids=lambda v: v if isinstance(v, str) else " ".join(v[:1]))
def test_every_vidtempo_command_is_one_the_cli_accepts(where, argv, capsys):
    try:
        build_parser().parse_args(argv)
    except SystemExit:
        error = capsys.readouterr().err.strip().splitlines()[-1]
        pytest.fail(f"{where}: vidtempo {' '.join(argv)}: {error}")
