"""infra/: every manifest parses and validates offline, and what it runs matches the real jobs.

A renamed flag, a moved script, a config field that no longer exists or an image that
drifted from the Dockerfile breaks these tests, not a night's archival.
"""

from __future__ import annotations

import re
import shlex
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
K8S_VERSION = "1.33"
sys.path.insert(0, str(ROOT))


def manifests() -> list[tuple[str, dict]]:
    out = []
    for path in sorted((INFRA / "kuberay").glob("*.yaml")):
        out += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return out


def docs_of(kind: str) -> list[dict]:
    return [d for _, d in manifests() if d["kind"] == kind]


def dockerfile(name: str) -> dict:
    text = (INFRA / "docker" / name).read_text()
    return {"from": re.search(r"^FROM\s+(\S+)", text, re.M).group(1),
            "workdir": re.search(r"^WORKDIR\s+(\S+)", text, re.M).group(1), "text": text}


def project_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def pod_specs(doc: dict) -> list[dict]:
    """Every pod template inside a manifest (Ray CRs nest plain Kubernetes pod templates)."""
    spec = doc.get("spec", {})
    if doc["kind"] == "RayCluster":
        return [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    if doc["kind"] in ("RayJob", "RayCronJob"):
        job = spec["jobTemplate"] if doc["kind"] == "RayCronJob" else spec
        return [job["submitterPodTemplate"]] if "submitterPodTemplate" in job else []
    if doc["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]]
    return []


def job_commands() -> list[list[str]]:
    """The `python .../jobs/X.py ...` command lines the manifests run."""
    cmds = []
    for _, doc in manifests():
        spec = doc.get("spec", {})
        if doc["kind"] == "RayJob":
            cmds.append(spec["entrypoint"])
        elif doc["kind"] == "RayCronJob":
            cmds.append(spec["jobTemplate"]["entrypoint"])
        elif doc["kind"] == "CronJob":
            for c in pod_specs(doc)[0]["spec"]["containers"]:
                shell = " ".join(c.get("args", []))
                cmds.append(shell.split(" -- ", 1)[1])
    return [shlex.split(c) for c in cmds]


def test_every_manifest_parses_and_names_itself():
    found = manifests()
    assert {d["kind"] for _, d in found} >= {"RayCluster", "RayJob", "RayCronJob", "CronJob", "ConfigMap", "Service"}
    for name, doc in found:
        assert doc.get("apiVersion") and doc.get("kind"), name
        assert doc["metadata"].get("name") or doc["metadata"].get("generateName"), name


def test_builtin_kinds_and_nested_pod_templates_validate_against_kubernetes_schemas():
    for name, doc in manifests():
        if doc["apiVersion"].startswith("ray.io/"):
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    for name, doc in manifests():
        for i, template in enumerate(pod_specs(doc)):
            wrapper = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"{doc['kind'].lower()}-{i}"},
                       "template": template}
            kubernetes_validate.validate(wrapper, K8S_VERSION, strict=True)


def test_validation_catches_a_broken_pod_template():
    bad = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "x"},
           "template": {"spec": {"containers": [{"name": "a", "image": "i", "resources": {"limitz": {}}}]}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_ray_custom_resources_have_the_fields_kuberay_requires():
    (cluster,) = docs_of("RayCluster")
    assert cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    for g in cluster["spec"]["workerGroupSpecs"]:
        assert g["groupName"] and 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
    for job in docs_of("RayJob") + [d["spec"]["jobTemplate"] for d in docs_of("RayCronJob")]:
        spec = job.get("spec", job)
        assert spec["entrypoint"] and ("clusterSelector" in spec) != ("rayClusterSpec" in spec)
        assert spec["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    for cron in docs_of("RayCronJob") + docs_of("CronJob"):
        assert len(cron["spec"]["schedule"].split()) == 5


def test_images_match_the_dockerfile_and_the_project_version():
    gpu, cpu = dockerfile("Dockerfile"), dockerfile("Dockerfile.cpu")
    ray_tag = gpu["from"].split(":")[1]
    assert gpu["from"].startswith("rayproject/ray:") and ray_tag.endswith("-gpu")
    assert cpu["from"] == gpu["from"].replace("-gpu", "-cpu")
    (cluster,) = docs_of("RayCluster")
    assert ray_tag.split("-")[0] == cluster["spec"]["rayVersion"]
    torch_pin = re.search(r"^TORCH \?= (\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert torch_pin in gpu["text"] and torch_pin in cpu["text"]
    images = {c["image"] for _, d in manifests() for t in pod_specs(d) for c in t["spec"]["containers"]}
    assert images == {f"ghcr.io/tlic/tlic:{project_version()}-gpu"}
    for path in ("pyproject.toml", "codec", "pipeline", "jobs"):
        assert re.search(rf"^COPY .*\b{path}\b", gpu["text"], re.M), path


def test_job_commands_run_real_scripts_with_options_the_job_accepts(tmp_path):
    from jobs import compress_bucket
    from pipeline.config import CompressJobConfig

    workdir = dockerfile("Dockerfile")["workdir"]
    (config_map,) = docs_of("ConfigMap")
    mounted = {"/etc/tlic/" + k: v for k, v in config_map["data"].items()}
    (cluster,) = docs_of("RayCluster")
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    mount = next(m for m in head["containers"][0]["volumeMounts"] if m["mountPath"] == "/etc/tlic")
    volume = next(v for v in head["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    max_gpus = sum(g["maxReplicas"] * int(g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0))
                   for g in cluster["spec"]["workerGroupSpecs"])

    commands = job_commands()
    assert len(commands) == 3  # RayJob, RayCronJob, CronJob
    for argv in commands:
        assert argv[0] == "python" and argv[1].startswith(workdir + "/")
        script = ROOT / argv[1][len(workdir) + 1 :]
        assert script.exists(), f"{argv[1]} is not in the image"
        assert script.name == "compress_bucket.py"
        args = argv[2:]
        for i, a in enumerate(args):  # the mounted ConfigMap file, materialised
            if a in mounted:
                local = tmp_path / Path(a).name
                local.write_text(mounted[a])
                args[i] = str(local)
        cfg = compress_bucket.parse_args(args)
        assert isinstance(cfg, CompressJobConfig)
        assert cfg.replicas * cfg.gpus_per_replica <= max_gpus, "more replicas than the GPU group can ever host"


def test_a_renamed_config_field_would_be_caught(tmp_path):
    from pydantic import ValidationError

    from jobs import compress_bucket

    (config_map,) = docs_of("ConfigMap")
    text = config_map["data"]["compress.yaml"].replace("target_psnr:", "target_pnsr:")
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ValidationError, match="target_pnsr"):
        compress_bucket.parse_args(["--config", str(tmp_path / "c.yaml")])


def test_credentials_come_from_a_secret_never_from_a_manifest():
    secret_names = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
    assert not docs_of("Secret")
    for _, doc in manifests():
        for t in pod_specs(doc):
            for c in t["spec"]["containers"]:
                literal = {e["name"] for e in c.get("env", []) if "value" in e}
                assert not literal & secret_names, f"{doc['kind']}: credentials written into {c['name']}"
                if doc["kind"] == "RayCluster":  # driver, replicas and fetch tasks all reach S3
                    assert {"secretRef": {"name": "tlic-s3"}} in c["envFrom"]
    for cm in docs_of("ConfigMap"):
        for text in cm["data"].values():
            data = yaml.safe_load(text)
            assert "storage" not in data or not {"access_key", "secret_key"} & set(data["storage"])


def test_a_crashed_nightly_run_is_retried_and_the_retry_waits_out_its_lease():
    """Issue 28 item 5: backoffLimit 0 and no lease wait made one crash cost the night (the retry exited 5)."""
    from pipeline.config import CompressJobConfig

    (cron,) = docs_of("CronJob")
    assert cron["spec"]["jobTemplate"]["spec"]["backoffLimit"] >= 2
    (cm,) = [d for d in docs_of("ConfigMap") if "compress.yaml" in d.get("data", {})]
    cfg = yaml.safe_load(cm["data"]["compress.yaml"])
    assert cfg["wait_for_lease_s"] >= CompressJobConfig.model_fields["lease_ttl_s"].default * 2
