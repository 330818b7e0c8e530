"""What the forge's workflows (.github/workflows/) run: the rollout, the training report on a
pull request, the manifests' rendering and diff, the image's version checks."""
