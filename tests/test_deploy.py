"""deploy/ for Ray: the manifests parse, hang together, and run real vqmon commands with valid configs."""
from __future__ import annotations

import inspect
import os
import re
import shlex

import pytest
import yaml

from monitor import config, storage
from monitor.cli.commands import cmd_batch, cmd_live
from monitor.cli.parser import build_parser
from monitor.archive import list_jobs

DEPLOY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy")


def docs(name: str) -> list[dict]:
    with open(os.path.join(DEPLOY, name), encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def by_kind(name: str) -> dict[str, dict]:
    return {d["kind"]: d for d in docs(name)}


def vqmon_command(line: str):
    """Parse an entrypoint with vqmon's own argument parser (an unknown flag or subcommand exits)."""
    argv = shlex.split(line)
    assert argv[0] == "vqmon"
    return build_parser().parse_args(argv[1:])


def pod_templates(cluster_spec: dict) -> list[dict]:
    return [cluster_spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"]
                                                                  for g in cluster_spec["workerGroupSpecs"]]


def check_cluster_spec(spec: dict, image: str) -> None:
    assert spec["rayVersion"] and spec["headGroupSpec"]["rayStartParams"]
    for pod in pod_templates(spec):
        volumes = {v["name"] for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            assert c["image"] == image
            assert {m["name"] for m in c.get("volumeMounts", [])} <= volumes
            assert c["resources"]["requests"] and c["resources"]["limits"]
    for group in spec["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert group["rayStartParams"]["num-gpus"] == limits["nvidia.com/gpu"]
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def dockerfile_image_tag() -> str:
    text = open(os.path.join(DEPLOY, "Dockerfile"), encoding="utf-8").read()
    assert re.search(r"^FROM nvidia/cuda:\S+", text, re.M)
    for src in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for path in src.split():
            assert os.path.exists(os.path.join(DEPLOY, "..", path)), path
    return re.search(r"-t (\S+) \.", text)[1]


def test_raycluster():
    tag = dockerfile_image_tag().split(":")[1]
    cluster = by_kind("kuberay/raycluster.yaml")
    assert cluster["RayCluster"]["apiVersion"] == "ray.io/v1"
    image = cluster["RayCluster"]["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    assert image.endswith(f":{tag}")
    check_cluster_spec(cluster["RayCluster"]["spec"], image)
    assert "ReadWriteMany" in cluster["PersistentVolumeClaim"]["spec"]["accessModes"]


def test_batch_rayjob_reads_a_bucket_with_credentials_from_a_secret():
    image = by_kind("kuberay/raycluster.yaml")["RayCluster"]["spec"]["headGroupSpec"]["template"]["spec"][
        "containers"][0]["image"]
    job = by_kind("kuberay/rayjob-batch.yaml")["RayJob"]
    check_cluster_spec(job["spec"]["rayClusterSpec"], image)
    args = vqmon_command(job["spec"]["entrypoint"])
    assert args.func is cmd_batch and args.source.startswith("s3://") and args.out.startswith("s3://")
    assert config.parse_duration(args.time_limit) > 0 and not args.local
    text = open(os.path.join(DEPLOY, "kuberay", "rayjob-batch.yaml"), encoding="utf-8").read()
    [secret] = re.findall(r"kubectl create secret generic (\S+)", text)
    for pod in pod_templates(job["spec"]["rayClusterSpec"]):  # the driver and every actor read the buckets
        for c in pod["containers"]:
            assert c["envFrom"] == [{"secretRef": {"name": secret}}]
            assert not [e for e in c.get("env", []) if e["name"].startswith("AWS_") and "value" in e]
    keys = re.findall(r"--from-literal=(\w+)=", text)
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(keys)
    documented = inspect.getdoc(storage)
    assert all(k in documented for k in keys)  # the names monitor/storage.py (and pyarrow under it) read


def test_live_manifest_runs_vqmon_live_with_a_valid_mounted_config():
    cluster = by_kind("kuberay/raycluster.yaml")["RayCluster"]
    live = by_kind("kuberay/live.yaml")
    job = live["RayJob"]
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == cluster["metadata"]["name"]
    args = vqmon_command(job["spec"]["entrypoint"])
    assert args.func is cmd_live and not args.detach  # the job's driver holds the Supervisor
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    [cm_volume] = [v for v in head["volumes"] if v.get("configMap", {}).get("name") == live["ConfigMap"]["metadata"]["name"]]
    [mount] = [m for m in head["containers"][0]["volumeMounts"] if m["name"] == cm_volume["name"]]
    folder, key = os.path.split(args.config)
    assert folder == mount["mountPath"] and key in live["ConfigMap"]["data"]
    cfg = config.parse(yaml.safe_load(live["ConfigMap"]["data"][key]), source="live.yaml ConfigMap")
    assert 0 < cfg.ray.num_gpus < 1 and cfg.streams


def test_example_configs_and_cluster_launcher():
    cfg = config.load(os.path.join(DEPLOY, "live.example.yaml"))
    otel = next(s for s in cfg.sinks if s.type == "otel")
    assert len(cfg.streams) == 4 and cfg.ray.num_gpus == 0.25 and otel.options.prometheus is None
    jobs = list_jobs(os.path.join(DEPLOY, "batch-manifest.example.csv"))
    assert [j.stream_id for j in jobs] == ["show-101-1080p", "show-101-720p", "trailer-4k"]
    assert jobs[0].ref and jobs[0].ref == jobs[1].ref and jobs[2].ref is None

    [launcher] = docs("cluster.yaml")
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type", "docker"):
        assert key in launcher
    assert launcher["head_node_type"] in launcher["available_node_types"]
    assert launcher["docker"]["image"].endswith(":" + dockerfile_image_tag().split(":")[1])
    for src in launcher["file_mounts"].values():
        assert os.path.exists(os.path.join(DEPLOY, "..", src)), src
    commands = re.findall(r'(?:-- |")(vqmon [^"\n]+)', open(os.path.join(DEPLOY, "cluster.yaml")).read())
    assert len(commands) == 3  # the usage lines at the top: batch job, live, status
    for line in commands:
        vqmon_command(line)


@pytest.mark.parametrize("line", ["vqmon batch", "vqmon live --nope"])
def test_the_entrypoint_check_rejects_bad_commands(line):
    with pytest.raises(SystemExit):
        vqmon_command(line)
