"""Resolve --victim {ensemble,teacher,PATH} to a model through the one path convention."""

import os

from misleader import checkpoint, paths
from misleader.ensemble import load_ensemble
from misleader.errors import UserError


def resolve_victim(spec, info, teacher_model, ensemble_tag=None, teacher_tag=None):
    """Return (model, label, path). 'ensemble' and 'teacher' read the Defense stage's outputs directly."""
    if spec == "ensemble":
        path, made_by, label = paths.ensemble_path(info.name, ensemble_tag), "train.sh / Defense/ensemble.py", \
            "ensemble" + (f"-{ensemble_tag}" if ensemble_tag else "")
    elif spec == "teacher":
        path, made_by, label = paths.teacher_path(info.name, teacher_model, teacher_tag), "teacher.sh / Defense/train_teacher.py", \
            "teacher"
    else:
        path, made_by, label = spec, None, os.path.splitext(os.path.basename(spec))[0]
    ck = checkpoint.load(path, made_by=made_by)
    checkpoint.check(ck, path, num_classes=info.num_classes, in_channels=info.in_channels, dataset=info.name)
    if ck["kind"] == "ensemble":
        return load_ensemble(ck), label, path
    if ck["kind"] == "classifier":
        if spec == "teacher":
            checkpoint.check(ck, path, arch=teacher_model)
        return checkpoint.build_classifier(ck), label, path
    raise UserError(f"{path} holds a '{ck['kind']}' checkpoint, not a classifier or an ensemble")
