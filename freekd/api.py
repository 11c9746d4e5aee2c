"""The Python API: what each ``freekd`` command does, callable in a few lines.

Each function builds its command's config dataclass exactly as the command line does
(``freekd.config.load_config``: ``config=`` is the ``--config`` file, or a config object or
mapping written in Python; ``overrides=["trainer.lr=0.1"]`` are the ``--set`` strings; keyword
arguments are the flags and fields), runs the command's pipeline into its run folder and returns
a :class:`Run`: the ``report.json`` dict, the trained model and the folder. Errors are
:class:`freekd.errors.FreekdError` with the one-line message the command prints.

    >>> import freekd
    >>> teacher = freekd.train_teacher(data="digits", arch="tiny-cnn", epochs=5, out="runs/t")
    >>> student = freekd.distill(teacher=teacher.out / "model.pt", student="mlp", data="digits")
    >>> student.report["student"]["test_accuracy"], student.model

Keyword arguments every function takes besides its own (``**settings``):

- any field of the command's config dataclass by name (``seed=1``, ``student_kwargs={...}``,
  ``budget_cpu_minutes=15``, ``trainer={"ema_decay": 0.999}``); a mapping changes only its keys,
  a dataclass value sets all its fields (``trainer=TrainerConfig(epochs=3)`` also replaces the
  command's own trainer defaults, e.g. distill's lr 0.01, by ``TrainerConfig``'s); ``epochs``,
  ``batch_size``, ``lr``, ``device`` and ``deterministic`` set ``trainer.*``
  (``shadow.trainer.device`` for ``audit``), as the flags do;
- ``config``: a YAML file (as ``--config``), or a config object or mapping (Python code, so an
  architecture it names by import path is built without ``trust_code``);
- ``overrides``: ``--set`` strings, applied after ``config`` and before the keywords;
- ``out`` (default ``runs/<command>``, as on the command line), ``overwrite``, ``resume``,
  ``quiet`` and ``trust_code``: ``--out``, ``--overwrite``, ``--resume``, ``--quiet``,
  ``--trust-code``.

This module imports torch only when a function runs, so ``import freekd`` stays cheap.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from freekd.config import TRUST_FIELDS, is_import_path, load_config, read_yaml, to_dict
from freekd.errors import FreekdError, check_path_argument

__all__ = ["Run", "audit", "audit_pipeline", "crossmodal", "datafree", "distill", "evaluate"]
__all__ += ["graph_distill", "graph_teacher", "online", "pate", "train_clip", "train_teacher"]

#: Keyword arguments that set a field of the training loop, as ``--epochs`` ... do.
TRAINER_KEYWORDS = ("epochs", "batch_size", "lr", "device", "deterministic")

#: Keyword arguments of the run folder and terminal (``--out`` is each function's own ``out``).
RUN_FLAGS = ("overwrite", "resume", "quiet", "trust_code")


@dataclass(frozen=True)
class Run:
    """What a command left: its report, the trained model and the run folder.

    Attributes:
        report: the dict written to ``out/report.json``.
        model: the trained network loaded back from ``out/model.pt`` in eval mode (a classifier
            that takes [0, 1] images, a CLIP or a one-modality tower); ``None`` for the audits,
            which train no model of their own.
        out: the run folder, with every file the command writes.
    """

    report: dict[str, Any]
    model: Any
    out: Path


@dataclass(frozen=True)
class _Command:
    """How one command is run from Python.

    Attributes:
        name: the command, as the command line spells it.
        config_class: ``module:Class`` of its config dataclass.
        pipeline: ``module:function`` of its ``run_*`` composition root.
        trainer_prefix: the dotted group that ``epochs=`` ... set (``None``: none).
        saves: the kind of ``model.pt`` it writes: ``checkpoint`` (a classifier), ``clip``,
            ``clip-or-tower``, or ``""`` (none).
        model_file: where the model is, in the run folder.
        arch_field: dotted config field naming the saved classifier's architecture.
        resumes_config: ``resume=True`` starts from the run's saved ``config.yaml``, as
            ``--resume`` does.
    """

    name: str
    config_class: str
    pipeline: str
    trainer_prefix: str | None = "trainer"
    saves: str = "checkpoint"
    model_file: str = "model.pt"
    arch_field: str = "student"
    resumes_config: bool = True


def _attribute(spec: str) -> Any:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def _plain(value: Any) -> Any:
    """A config object (dataclass) as the mapping the loader reads; a path as a string."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _keyword_values(command: _Command, keywords: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted config keys → values of the keyword arguments (``None``: not given)."""
    values: dict[str, Any] = {}
    for key, value in keywords.items():
        if key in TRAINER_KEYWORDS and command.trainer_prefix is not None:
            key = f"{command.trainer_prefix}.{key}"
        values[key] = _plain(value)
    return values


def _trust_flags(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The trust flags a Python config object switches on, as dotted keys.

    An object written in Python is the user's own code, like a flag typed on the command line:
    its ``trust_pickle`` counts as given, where a file's would be refused.
    """
    flags: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flags.update(_trust_flags(value, f"{prefix}{key}."))
        elif key in TRUST_FIELDS and value is True:
            flags[f"{prefix}{key}"] = True
    return flags


@dataclass(frozen=True)
class _Sources:
    """Where a run's settings come from, lowest precedence first (as on the command line)."""

    config: Any  # --config: a YAML file, or a config object or mapping written in Python
    overrides: Any  # --set: a list of key=value strings (checked by load_config)
    keywords: dict[str, Any]  # the flags


def _resolve(command: _Command, sources: _Sources, options: Any) -> Any:
    """The command's config dataclass, checked exactly as the command line checks it."""
    values = _keyword_values(command, sources.keywords)
    path: Path | None = None
    base: Any = None
    trust_code = options.trust_code
    if isinstance(sources.config, str | Path):
        path = Path(sources.config)
    elif sources.config is not None:
        base = _plain(sources.config)
        if not isinstance(base, Mapping):
            raise FreekdError(
                "config= takes a YAML file, a config object or a mapping, not "
                f"{type(sources.config).__name__}"
            )
        # Python code, not a file: an import path it names is the user's own choice.
        values = {**_trust_flags(base), **values}
        trust_code = True
    saved = options.out_dir / "config.yaml"
    if base is None and command.resumes_config and options.resume and saved.exists():
        from freekd.train.resume import saved_settings

        base = saved_settings(_attribute(command.config_class), read_yaml(saved))
    return load_config(
        _attribute(command.config_class),
        path,
        overrides=sources.overrides,
        values=values,
        base=dict(base) if base is not None else None,
        trust_code=trust_code,
    )


def _load_model(command: _Command, config: Any, report: dict[str, Any], options: Any) -> Any:
    """The model a run saved, loaded back in eval mode (``None`` when it saves none)."""
    path = options.out_dir / command.model_file
    if not command.saves or not path.exists():
        return None
    if command.saves == "clip-or-tower" and "direction" in report:  # a one-tower teacher
        from freekd.crossmodal.towers import load_tower

        return load_tower(path, trust_code=options.trust_code)
    if command.saves == "graph":
        from freekd.graph.models import load_graph_model

        return load_graph_model(path)
    if command.saves != "checkpoint":
        from freekd.crossmodal.clip import load_clip

        return load_clip(path)
    from freekd.checkpoint import load_model

    arch: Any = config
    for part in command.arch_field.split("."):
        arch = getattr(arch, part)
    # The config was accepted for this run, so the architectures it names are trusted.
    named = arch if isinstance(arch, list) else [arch]
    trusted = any(is_import_path(name) for name in named)
    return load_model(path, trust_code=options.trust_code or trusted)


def _run(command: _Command, out: str | Path, settings: dict[str, Any]) -> Run:
    """Resolve the config, run the pipeline in ``out`` and load back what it trained."""
    from freekd.runs import RunOptions

    flags = {key: settings.pop(key, False) for key in RUN_FLAGS}
    for key, value in flags.items():  # "false" is a true string: it overwrote a run
        if not isinstance(value, bool):
            raise FreekdError(f"{key} must be True or False, got {value!r}")
    if not isinstance(out, str | os.PathLike):
        raise FreekdError(f"out must be a folder path (str or Path), got {out!r}")
    config, overrides = settings.pop("config", None), settings.pop("overrides", None)
    sources = _Sources(config, [] if overrides is None else overrides, settings)  # checked later
    options = RunOptions(Path(out), **flags)
    resolved = _resolve(command, sources, options)
    pipeline: Callable[..., dict[str, Any]] = _attribute(command.pipeline)
    report = pipeline(resolved, options)
    return Run(
        report=report, model=_load_model(command, resolved, report, options), out=options.out_dir
    )


def _given(keywords: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted config keys of the named keyword arguments a caller gave (``None``: not given)."""
    return {key: _plain(value) for key, value in keywords.items() if value is not None}


def _teacher(teacher: Any, key: str = "teacher") -> dict[str, Any]:
    """A teacher given as a file path, or as a ``TeacherSourceConfig`` / mapping."""
    if teacher is None:
        return {}
    if isinstance(teacher, str | os.PathLike):
        return {f"{key}.path": os.fspath(teacher)}
    if callable(teacher):  # a network in memory: runs start from files, as on the command line
        check_path_argument(teacher, key)
    return {key: teacher}


_TEACHER = _Command(
    "teacher train",
    "freekd.supervised.config:TeacherTrainConfig",
    "freekd.supervised.pipeline:run_teacher_train",
    arch_field="arch",
)
_DISTILL = _Command(
    "distill", "freekd.distill.config:DistillConfig", "freekd.distill.pipeline:run_distill"
)
_ONLINE = _Command(
    "online",
    "freekd.online.config:OnlineConfig",
    "freekd.online.pipeline:run_online",
    arch_field="archs",
)
_GRAPH_TEACHER = _Command(
    "graph teacher",
    "freekd.graph.config:GraphTeacherConfig",
    "freekd.graph.pipeline:run_graph_teacher",
    saves="graph",
)
_GRAPH_DISTILL = _Command(
    "graph distill",
    "freekd.graph.config:GraphDistillConfig",
    "freekd.graph.pipeline:run_graph_distill",
    saves="graph",
)
_DATAFREE = _Command(
    "datafree", "freekd.datafree.config:DataFreeConfig", "freekd.datafree.pipeline:run_datafree"
)
_AUDIT = _Command(
    "audit",
    "freekd.audit.config:AuditConfig",
    "freekd.audit.pipeline:run_audit",
    trainer_prefix="shadow.trainer",
    saves="",
)
_AUDIT_PIPELINE = _Command(
    "audit pipeline",
    "freekd.audit.config:AuditPipelineConfig",
    "freekd.audit.threat_model:run_audit_pipeline",
    trainer_prefix=None,
    saves="",
)
_PATE = _Command(
    "pate run",
    "freekd.pate.config:PateRunConfig",
    "freekd.pate.pipeline:run_pate",
    trainer_prefix=None,
    model_file="student/model.pt",
    arch_field="student.student",
    resumes_config=False,
)
_CLIP = _Command(
    "crossmodal teacher",
    "freekd.crossmodal.config:CrossModalTeacherConfig",
    "freekd.crossmodal.pipeline:run_crossmodal_teacher",
    saves="clip",
)
_CROSSMODAL = _Command(
    "crossmodal distill",
    "freekd.crossmodal.config:CrossModalDistillConfig",
    "freekd.crossmodal.pipeline:run_crossmodal_distill",
    saves="clip-or-tower",
)


def train_teacher(
    *,
    data: str | Path | None = None,
    arch: str | None = None,
    out: str | Path = "runs/teacher",
    **settings: Any,
) -> Run:
    """``freekd teacher train``: a supervised classifier (``dp={"enabled": True, ...}``: DP-SGD).

    Args:
        data: training data (``--dataset``): a registry name[:split], a ``.npz`` file or an image
            folder.
        arch: architecture (``--arch``): a freekd name, ``torchvision:NAME`` or
            ``package.module:Class``.
        out: the run folder.
        **settings: fields of ``TeacherTrainConfig`` and the run keywords (module docstring).
    """
    return _run(_TEACHER, out, {**_given({"dataset": data, "arch": arch}), **settings})


def distill(
    *,
    teacher: Any = None,
    student: str | None = None,
    data: str | Path | None = None,
    method: str | None = None,
    out: str | Path = "runs/distill",
    **settings: Any,
) -> Run:
    """``freekd distill``: a student distilled from a teacher on real data (classic KD).

    Args:
        teacher: the teacher file (any of the four kinds), or a ``TeacherSourceConfig`` or
            mapping for a file that needs ``arch``, ``input_shape`` ...
        student: student architecture (``--student``).
        data: transfer data (``--dataset``); ``eval_dataset=`` is the held-out data.
        method: a registered method (``--method``: ``kd``, ``kd-at``, ...); its parameters go in
            ``overrides`` (``["method.params.temperature=2"]``).
        out: the run folder.
        **settings: fields of ``DistillConfig`` and the run keywords (module docstring).
    """
    given = _given({"student": student, "dataset": data, "method.name": method})
    return _run(_DISTILL, out, {**_teacher(teacher), **given, **settings})


def online(
    *,
    data: str | Path | None = None,
    method: str | None = None,
    archs: list[str] | str | None = None,
    out: str | Path = "runs/online",
    **settings: Any,
) -> Run:
    """``freekd online``: networks that teach each other while they train (DML, ONE).

    Args:
        data: training data (``--dataset``); a share of it (``validation_fraction``) chooses
            the deployable network; ``eval_dataset=`` is the test data.
        method: ``dml`` (default) or ``one``; its parameters go in ``overrides``
            (``["method.params.branches=4"]``).
        archs: the architecture, or one per DML peer (``--arch``); ``peers=K`` for K copies.
        out: the run folder.
        **settings: fields of ``OnlineConfig`` (``peers=4``, ``baseline=False`` ...) and the
            run keywords.

    Returns:
        The run; ``model`` is the best single network on the validation part (``model.pt``).
    """
    names = [archs] if isinstance(archs, str) else archs
    given = _given({"dataset": data, "method.name": method, "archs": names})
    return _run(_ONLINE, out, {**given, **settings})


def graph_teacher(
    *,
    data: str | None = None,
    arch: str | None = None,
    setting: str | None = None,
    out: str | Path = "runs/graph-teacher",
    **settings: Any,
) -> Run:
    """``freekd graph teacher``: a GNN (or MLP) trained on a Planetoid graph.

    Args:
        data: ``cora`` (default) or ``citeseer`` (``--dataset``).
        arch: ``gcn`` (default), ``sage``, ``gcn-small`` or ``mlp``.
        setting: ``transductive`` (default) or ``inductive``.
        out: the run folder.
        **settings: fields of ``GraphTeacherConfig`` (``data_root=...``) and the run keywords.

    Returns:
        The run; ``model`` is a ``GraphNetwork`` (``model(x, edge_index)``).
    """
    given = _given({"dataset": data, "arch": arch, "setting": setting})
    return _run(_GRAPH_TEACHER, out, {**given, **settings})


def graph_distill(
    *,
    teacher: str | Path | None = None,
    student: str | None = None,
    method: str | None = None,
    out: str | Path = "runs/graph-distill",
    **settings: Any,
) -> Run:
    """``freekd graph distill``: a graph teacher distilled into an MLP or a smaller GNN.

    Args:
        teacher: the teacher's ``model.pt`` (from ``graph_teacher``).
        student: ``mlp`` (default), ``gcn-small``, ``gcn`` or ``sage``.
        method: ``glnn`` (default), ``kd`` or ``lsp``; parameters in ``overrides``.
        out: the run folder.
        **settings: fields of ``GraphDistillConfig`` (``baseline=False`` ...) and the run
            keywords.

    Returns:
        The run; ``report["student"]``, ``report["baseline"]``, ``report["inference"]``.
    """
    if teacher is not None:
        check_path_argument(teacher, "teacher")
    given = _given({"teacher": teacher, "student": student, "method.name": method})
    return _run(_GRAPH_DISTILL, out, {**given, **settings})


def datafree(
    *,
    teacher: Any = None,
    student: str | None = None,
    method: str | None = None,
    eval_data: str | Path | None = None,
    out: str | Path = "runs/datafree",
    **settings: Any,
) -> Run:
    """``freekd datafree``: a student distilled from the teacher alone, on synthetic inputs.

    Args:
        teacher: the teacher file, or a ``TeacherSourceConfig`` or mapping.
        student: student architecture; default: a smaller model of the teacher's family, else
            ``shallow-cnn`` for a one-convolution teacher, else a general student smaller than
            the teacher (``models.students``).
        method: the synthesizer, as ``--method`` (``auto``, ``zskt``, ``dafl``, ``cmi`` ...);
            the student-side rule is the ``method=`` field, given through ``overrides``.
        eval_data: labelled real data used only to report accuracy (``--eval-data``).
        out: the run folder.
        **settings: fields of ``DataFreeConfig`` (``budget_cpu_minutes=15``,
            ``proxy_dataset="mnist:train"``, ``save_queries=9000`` ...) and the run keywords.
    """
    given = _given({"student": student, "eval_dataset": eval_data, "synthesizer.name": method})
    return _run(_DATAFREE, out, {**_teacher(teacher), **given, **settings})


def audit(
    *,
    model: Any = None,
    members: str | Path | None = None,
    non_members: str | Path | None = None,
    attacks: list[str] | None = None,
    out: str | Path = "runs/audit",
    **settings: Any,
) -> Run:
    """``freekd audit``: membership-inference attacks on a model and its empirical ε lower bound.

    The report's ``epsilon_lower_bound["consistent"]`` is ``False`` when the bound exceeds the
    model's claimed ε (the command then exits with status 1; here the caller checks it).

    Args:
        model: the audited model file, or a ``TeacherSourceConfig`` or mapping.
        members: examples the model trained on (a dataset spec).
        non_members: examples it did not train on, from the same distribution.
        attacks: attack names (default: all that the shadow models allow).
        out: the run folder.
        **settings: fields of ``AuditConfig`` (``shadow={"models": 4}``, ``random_split=True``
            ...) and the run keywords.
    """
    given = _given({"members": members, "non_members": non_members, "attacks": attacks})
    return _run(_AUDIT, out, {**_teacher(model, "model"), **given, **settings})


def audit_pipeline(*, out: str | Path = "runs/audit-pipeline", **settings: Any) -> Run:
    """``freekd audit pipeline``: a teacher and its students by every path, each audited.

    Args:
        out: the run folder.
        **settings: fields of ``AuditPipelineConfig`` (``paths=["kd"]``, ``pool=2000`` ...) and
            the run keywords.
    """
    return _run(_AUDIT_PIPELINE, out, settings)


def pate(*, config: Any, out: str | Path = "runs/pate", **settings: Any) -> Run:
    """``freekd pate run``: the three PATE stages, teachers → labels → student.

    Args:
        config: a YAML file with sections ``teachers:``, ``label:``, ``student:`` (see
            ``configs/pate/``), or a ``PateRunConfig`` or mapping.
        out: the run folder (``teachers/``, ``labels/``, ``student/`` inside).
        **settings: fields of ``PateRunConfig`` (``student={"trainer": {"epochs": 2}}``) and the
            run keywords; ``resume=True`` skips the finished stages and continues the ledger.
    """
    return _run(_PATE, out, {"config": config, **settings})


def train_clip(
    *, pairs: str | Path | None = None, out: str | Path = "runs/clip-teacher", **settings: Any
) -> Run:
    """``freekd crossmodal teacher``: a small open_clip CLIP on image–caption pairs.

    Args:
        pairs: labelled images whose classes become templated captions, or a folder of images
            with ``captions.csv`` / ``captions.jsonl``.
        out: the run folder.
        **settings: fields of ``CrossModalTeacherConfig`` and the run keywords.
    """
    return _run(_CLIP, out, {**_given({"pairs": pairs}), **settings})


def crossmodal(
    *,
    teacher: str | Path | None = None,
    student: str | None = None,
    method: str | None = None,
    pairs: str | Path | None = None,
    out: str | Path = "runs/clip-student",
    **settings: Any,
) -> Run:
    """``freekd crossmodal distill``: a CLIP student, or a tower of the teacher's other modality.

    Args:
        teacher: a CLIP ``model.pt``, or one tower: an image classifier's ``model.pt``,
            ``clip-image:PATH``, ``clip-text:PATH`` or ``minilm``.
        student: the image student's architecture for a text teacher (``student_arch``); an
            open_clip model config goes in ``student={...}``.
        method: ``auto`` (default: ``relational`` at weight 2 for a CLIP teacher,
            ``contrastive`` for one tower), ``relational``, ``contrastive``, ``feature`` or
            ``icl``.
        pairs: labelled images for templated pairs, or your own pairs folder.
        out: the run folder.
        **settings: fields of ``CrossModalDistillConfig`` (``baseline=False`` ...) and the run
            keywords.
    """
    given = _given(
        {"teacher": teacher, "student_arch": student, "pairs": pairs, "method.name": method}
    )
    return _run(_CROSSMODAL, out, {**given, **settings})


def evaluate(
    model: str | Path,
    data: str | Path,
    *,
    device: str = "auto",
    batch_size: int = 512,
    data_root: str | None = None,
    trust_code: bool = False,
    **source: Any,
) -> dict[str, Any]:
    """``freekd eval``: accuracy of any loadable model on labelled data.

    Args:
        model: a model file (any of the four kinds of teacher file).
        data: labelled data, e.g. ``"mnist:test"``.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        batch_size: evaluation batch size.
        data_root: torchvision-format data root.
        trust_code: build an architecture the file names by import path.
        **source: fields of ``TeacherSourceConfig`` for a file that is not a freekd checkpoint
            (``arch``, ``input_shape``, ``mean``, ``std``, ``trust_pickle`` ...).

    Returns:
        ``{"accuracy", "n", "loss", "dataset", "model"}``.
    """
    from freekd.config import TeacherSourceConfig, from_dict
    from freekd.evaluation import run_eval

    check_path_argument(model, "model")
    config = from_dict(TeacherSourceConfig, {"path": os.fspath(model), **source})
    return run_eval(
        config,
        str(data),
        data_root=data_root,
        device=device,
        batch_size=batch_size,
        trust_code=trust_code,
    )
