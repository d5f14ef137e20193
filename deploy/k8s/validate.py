#!/usr/bin/env python3
"""Validates the manifests strictly against the Kubernetes schemas, offline.

Every resource listed by the base kustomization, and the Secret the production overlay
generates (from secrets.env.example), is checked with kubernetes-validate against the oldest
Kubernetes version we support and the newest the schemas know. CI runs it (.ci/run).
"""

import pathlib
import sys

import kubernetes_validate
import yaml

HERE = pathlib.Path(__file__).resolve().parent
# podFailurePolicy (GA in 1.31) is the newest feature the manifests use.
VERSIONS = ["1.31.0", "1.37.0"]


def documents(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def overlay_secret(overlay):
    kustomization = documents(overlay / "kustomization.yaml")[0]
    for resource in kustomization.get("resources", []):
        if not (overlay / resource).exists():
            raise SystemExit(f"{overlay}: resource {resource} does not exist")
    for generator in kustomization.get("secretGenerator", []):
        data = {}
        for env in generator.get("envs", []):
            example = overlay / (env + ".example")
            for line in example.read_text(encoding="utf-8").splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    key, _, value = line.partition("=")
                    data[key.strip()] = value.strip()
        yield {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": generator["name"], "namespace": generator.get("namespace", "invest")},
            "type": "Opaque",
            "stringData": data,
        }


def main():
    base = HERE / "base"
    kustomization = documents(base / "kustomization.yaml")[0]
    resources = [(base / r, d) for r in kustomization["resources"] for d in documents(base / r)]
    for overlay in sorted((HERE / "overlays").iterdir()):
        resources += [(overlay / "kustomization.yaml", s) for s in overlay_secret(overlay)]
    failures = 0
    for path, resource in resources:
        name = f"{resource['kind']}/{resource['metadata']['name']}"
        failed_before = failures
        for version in VERSIONS:
            try:
                kubernetes_validate.validate(resource, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                failures += 1
                print(f"FAIL {path.relative_to(HERE)} {name} (Kubernetes {version}): {e.message} at {list(e.path)}")
            except kubernetes_validate.SchemaNotFoundError as e:
                failures += 1
                print(f"FAIL {path.relative_to(HERE)} {name} (Kubernetes {version}): no schema: {e}")
        if failures == failed_before:
            print(f"ok   {path.relative_to(HERE)} {name}")
    if failures:
        sys.exit(f"{failures} validation failures")
    print(f"{len(resources)} resources valid against Kubernetes {', '.join(VERSIONS)} (strict)")


if __name__ == "__main__":
    main()
