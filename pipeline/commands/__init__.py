"""The user commands beside the stages, one folder each (`python -m pipeline --help` lists them,
from `pipeline.__main__.COMMANDS`).

They read what the stages wrote and never write a stage's outputs. A module that only one
command uses lives in that command's folder.
"""
