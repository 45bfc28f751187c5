"""The six DVC stages, in the order dvc.yaml chains them: download, preprocess, split, train, evaluate, analyze.

Each is a thin Click command run by `dvc repro` (`python -m pipeline.stages.NAME`): it reads
params and inputs, calls pipeline.lib, and writes its outputs. Stages never import each other.
"""
