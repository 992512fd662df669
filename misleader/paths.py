"""The one path convention every stage reads and writes (relative to the repository root)."""

import os


def _tagged(stem, tag):
    return f"{stem}-{tag}" if tag else stem


def teacher_path(dataset, arch, tag=None):
    return os.path.join("Defense", "cache", "teacher", _tagged(f"{dataset}-{arch}", tag) + ".pt")


def member_path(dataset, arch, tag=None):
    return os.path.join("Defense", "cache", "defense", _tagged(f"{dataset}-{arch}", tag) + ".pt")


def misinfo_path(dataset, arch, tag=None):
    """The misinformation model of the adaptive-misinformation API defense (Defense/train_misinformation.py)."""
    return os.path.join("Defense", "cache", "misinfo", _tagged(f"{dataset}-{arch}", tag) + ".pt")


def ensemble_path(dataset, tag=None):
    return os.path.join("Defense", "ensemble", _tagged(dataset, tag) + ".pt")


def attack_path(dataset, victim, student, seed, tag=None):
    return os.path.join("DFME", "cache", _tagged(f"{dataset}-{victim}-{student}-seed{seed}", tag) + ".pt")


def victim_checkpoint(spec, dataset, teacher_model, ensemble_tag=None, teacher_tag=None):
    """--victim ensemble / teacher / PATH -> (checkpoint path, the stage that makes it or None, label)."""
    if spec == "ensemble":
        return ensemble_path(dataset, ensemble_tag), "train.sh / Defense/ensemble.py", \
            "ensemble" + (f"-{ensemble_tag}" if ensemble_tag else "")
    if spec == "teacher":
        return teacher_path(dataset, teacher_model, teacher_tag), "teacher.sh / Defense/train_teacher.py", "teacher"
    return spec, None, os.path.splitext(os.path.basename(spec))[0]


RESULTS_CSV = os.path.join("results", "results.csv")
