"""Deployment tooling: keeps the KubeRay manifests in step with the repo's configs."""
