"""The user commands beside the stages: `python -m pipeline bench | export | params | predict | report |
share | study | verify`.

They read what the stages wrote and never write a stage's outputs. A module that only one
command uses lives in that command's folder.
"""
