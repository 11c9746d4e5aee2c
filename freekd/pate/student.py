"""PATE stage 3 (``freekd pate student``): a student trained on the released labels."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from freekd.checkpoint import model_from_checkpoint, read_checkpoint, weights_checksum
from freekd.data import AUGMENTATIONS, DATASETS, ImageDataset, pool_fingerprint
from freekd.errors import FreekdError
from freekd.methods import Method, Supervised
from freekd.methods.semi import LabelsAndTeacher, VirtualAdversarial
from freekd.models import ImageClassifier, count_parameters
from freekd.pate.config import PateStudentConfig
from freekd.privacy.labeler import mechanism_from_name, spent_curves
from freekd.privacy.ledger import read_ledger
from freekd.privacy.rdp import epsilon_from_rdp
from freekd.privacy.report import inherit
from freekd.runlock import locks_run_folder
from freekd.runs import (
    LABELS_FILE,
    LEDGER_FILE,
    RunOptions,
    build_student,
    check_params,
    common_report,
    finish_run,
    first_line,
    load_split,
    loader_source,
    resolve_augmentation,
    resolved_params,
    run_training,
    setup_run,
)
from freekd.teachers import Teacher, load_teacher
from freekd.train import BatchSource, DistInfo, SemiSupervisedSource

# How ``freekd pate student`` uses the public pool's unanswered images.
SEMI_SUPERVISED = ("vat", "teacher", "none")
#: Each mode's method class, for its hyperparameters (``semi_supervised_kwargs``).
SEMI_SUPERVISED_METHODS: dict[str, type[Method]] = {
    "vat": VirtualAdversarial,
    "teacher": LabelsAndTeacher,
}


def _read_label_folder(labels_path: Path, report_path: Path) -> tuple[dict[str, Any], Any, Any]:
    """``report.json`` and the (indices, labels) arrays of a ``pate label`` folder, checked:
    a damaged file fails in one line instead of a traceback."""

    fix = "give the --out folder of `freekd pate label` as it was written"
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FreekdError(
            f"{report_path} is not a JSON report ({first_line(error)}); {fix}"
        ) from None
    queries = report.get("queries") if isinstance(report, dict) else None
    if (
        not isinstance(queries, dict)
        or not isinstance(queries.get("dataset"), str)
        or not isinstance(queries.get("holdout"), int)
        or not isinstance(report.get("privacy"), dict)
    ):
        raise FreekdError(f"{report_path} has no queries (dataset, holdout) and privacy; {fix}")
    try:
        with np.load(labels_path, allow_pickle=False) as data:
            indices, labels = data["indices"], data["labels"]
    except (KeyError, ValueError, OSError, EOFError, TypeError) as error:
        raise FreekdError(
            f"{labels_path} holds no integer arrays indices and labels ({first_line(error)}); {fix}"
        ) from None
    if (
        indices.ndim != 1
        or labels.shape != indices.shape
        or indices.dtype.kind not in "iu"
        or labels.dtype.kind not in "iu"
    ):
        raise FreekdError(
            f"{labels_path}: indices {indices.shape} {indices.dtype} and labels {labels.shape} "
            f"{labels.dtype} must be 1-D integer arrays of one length; {fix}"
        )
    return report, indices, labels


def _check_against_ledger(folder: Path, privacy: dict[str, Any], labels: Any) -> None:
    """The label folder's ``report.json`` privacy record and ``labels.npz`` agree with its
    ledger, the record of what was spent: the student inherits that record, so an edited
    report (a smaller ε) or label file must not pass on (the ledger itself is re-derived from
    the teachers' votes when labelling resumes).

    Raises:
        FreekdError: the ledger is missing or damaged, or the report or labels disagree with it.
    """
    path = folder / LEDGER_FILE
    header, entries = read_ledger(path)
    fix = "a label folder is never edited; label again or restore it from a backup"
    try:
        mechanism = mechanism_from_name(str(header["mechanism"]), **dict(header["parameters"]))
        budget = dict(header["budget"])
        orders = np.asarray(privacy["orders"], dtype=np.float64)
        # Ledgers from before session 41 hold no prior: their report's is all there is.
        prior_rdp = header.get("prior_rdp", privacy.get("prior_rdp"))
        if privacy.get("prior_rdp") != prior_rdp:
            raise FreekdError(
                f"{folder}/report.json's prior_rdp (the RDP its query model had spent before any "
                f"answer) is not its ledger's; {fix}"
            )
        prior = np.asarray(prior_rdp or np.zeros_like(orders), dtype=np.float64)
        if prior.shape != orders.shape:
            raise ValueError(f"prior_rdp has {prior.size} values for {orders.size} orders")
        independent, dependent = spent_curves(mechanism, orders, entries, path, prior=prior)
        expected = {
            "delta": budget["delta"],
            "kind": budget["on"],
            "data_independent_epsilon": epsilon_from_rdp(
                independent, orders, delta=budget["delta"]
            )[0],
            "data_dependent_epsilon": epsilon_from_rdp(dependent, orders, delta=budget["delta"])[0],
        }
    except (KeyError, TypeError, ValueError) as error:
        raise FreekdError(f"{path} or its report.json is damaged ({error!r:.80}); {fix}") from None
    expected["epsilon"] = expected[
        "data_independent_epsilon"
        if budget["on"] == "data-independent"
        else "data_dependent_epsilon"
    ]
    for key, value in expected.items():
        given = privacy.get(key)
        same = given == value or (
            isinstance(given, int | float) and isinstance(value, float) and np.isclose(given, value)
        )
        if not same:
            raise FreekdError(
                f"{folder}/report.json says privacy {key} {given!r}, its ledger gives {value!r}; "
                f"{fix}"
            )
    recorded = np.full(len(labels), -1, dtype=np.int64)
    for entry in entries:
        if entry["query"] >= len(labels):
            raise FreekdError(f"{path} answers query {entry['query']}, beyond labels.npz; {fix}")
        recorded[entry["query"]] = entry["label"]
    if not np.array_equal(np.asarray(labels, dtype=np.int64), recorded):
        raise FreekdError(f"{folder}/labels.npz holds labels its ledger did not release; {fix}")


@locks_run_folder
def run_pate_student(config: PateStudentConfig, options: RunOptions) -> dict[str, Any]:
    """``freekd pate student``: train a student on the answered queries; report its privacy.

    The student sees only public images and the released labels, so it inherits the labels'
    (ε, δ) as post-processing. It is evaluated on the pool's held-out part.
    """
    data = _labelled_pool(config)
    params = semi_supervised_params(config)
    dist, device = setup_run(config.seed, config.trainer, options)
    if config.init_student:
        student = _initial_student(config, data)
    else:
        student = build_student(
            config.student,
            dict(config.student_kwargs),
            train_set=data.train_set,
            num_classes=data.pool.num_classes,
            mean=None,
            std=None,
            setting="--student",
        )
    privacy = inherit(
        data.label_report["privacy"],
        "the student is post-processing of the released labels: it saw public images and "
        "noisy labels only"
        if config.semi_supervised != "teacher" and not config.init_student
        else "the student is post-processing of the released labels and of the DP query model "
        "they compose: it saw the synthetic pool, noisy labels and that model's outputs"
        + (" and started from a model made from it alone" if config.init_student else ""),
    )
    method, source = _method_and_source(
        config, student, data, params, dist=dist, device=device, trust_code=options.trust_code
    )
    result = run_training(
        method,
        source,
        eval_set=data.eval_set,
        trainer_config=config.trainer,
        config=config,
        options=options,
        device=device,
        dist=dist,
        description=f"PATE student {config.student}",
        privacy=lambda state: privacy,
    )
    queries = data.label_report["queries"]
    report = {
        "command": "pate student",
        "student": {
            "test_accuracy": result.state.metrics["eval_accuracy"],
            "arch": config.student,
            "parameters": count_parameters(student.net),
        },
        "trained_on": len(data.train_set),
        "init_student": config.init_student,
        "semi_supervised": _semi_supervised_record(config, data, params),
        "eval_dataset": config.eval_dataset
        or queries.get("eval_dataset")
        or f"{data.pool.name} (last {queries['holdout']} images)",
        "queries_source": queries.get("source"),
        "privacy": privacy,
        **common_report(config, result),
    }
    finish_run(report, options, dist)
    return report


@dataclass
class LabelledPool:
    """The public pool of a ``pate label`` folder, split as the student uses it.

    Attributes:
        label_report: the labelling run's ``report.json``.
        pool: the whole query pool.
        train_set: the answered queries with their released labels.
        eval_set: the held-out part of the pool, or the labelling run's ``eval_dataset``.
        public: how many pool images precede the held-out part (VAT's unlabelled images).
    """

    label_report: dict[str, Any]
    pool: ImageDataset
    train_set: ImageDataset
    eval_set: ImageDataset
    public: int


def _labelled_pool(config: PateStudentConfig) -> LabelledPool:
    """Read the ``pate label`` folder and split its pool; a damaged folder fails in one line."""

    folder = Path(config.labels)
    labels_path, report_path = folder / LABELS_FILE, folder / "report.json"
    for path in (labels_path, report_path):
        if not path.exists():
            raise FreekdError(
                f"{path} does not exist; give the --out folder of `freekd pate label`"
            )
    label_report, indices, labels = _read_label_folder(labels_path, report_path)
    answered = labels >= 0
    if not answered.any():
        raise FreekdError(f"{labels_path} holds no answered query; label with a larger budget")
    queries = label_report["queries"]
    pool_spec = _given_or_registered(
        queries["dataset"], config.queries_from, "query pool", "--queries-from"
    )
    pool = load_split(pool_spec, default_split="test", root=config.data_root, download=False)
    given_file = bool(config.queries_from) and pool_spec.partition(":")[0] not in DATASETS
    _check_pool(pool, queries.get("pool_fingerprint"), given=given_file)
    if len(indices) and not 0 <= int(indices.min()) <= int(indices.max()) < len(pool):
        raise FreekdError(
            f"{labels_path} names query {int(indices.max())} but {pool.name} holds {len(pool)} "
            "images; the labels belong to another query set"
        )
    _check_against_ledger(folder, label_report["privacy"], labels)
    train_set = ImageDataset(
        pool.images[torch.as_tensor(indices[answered])],
        torch.as_tensor(labels[answered]),
        list(pool.classes),
        f"{pool.name} (PATE-labelled)",
    )
    public = len(pool) - int(queries["holdout"])
    if config.eval_dataset or queries.get("eval_dataset"):
        eval_spec = _given_or_registered(
            str(queries.get("eval_dataset")), config.eval_dataset, "eval data", "--eval-data"
        )
        eval_set = load_split(
            eval_spec, default_split="test", root=config.data_root, download=False
        )
    else:
        eval_set = pool.subset(torch.arange(public, len(pool)))
    return LabelledPool(label_report, pool, train_set, eval_set, public)


def _initial_student(config: PateStudentConfig, data: LabelledPool) -> ImageClassifier:
    """The model ``init_student`` names, as the student's starting weights: free only when it is
    post-processing of the model the labels composed (its privacy record is private, names
    that model's weights and has the labels' ``composed_with`` ε and δ), e.g. that DP
    teacher's own data-free student."""

    path = str(config.init_student)
    composed = data.label_report["privacy"].get("composed_with")
    if not isinstance(composed, dict):
        raise FreekdError(
            "init_student needs labels of queries synthesized from a DP teacher (their privacy "
            "composes it); these labels compose no model, so a starting model would cost "
            "privacy they do not account for; drop init_student"
        )
    checkpoint = read_checkpoint(Path(path))  # weights only; an import-path arch is refused
    model = model_from_checkpoint(checkpoint, source=f"init_student {path}")
    record = checkpoint.get("privacy")
    made_from = record.get("inherited_from_weights_sha256") if isinstance(record, dict) else None
    # The record must name the very weights the labels composed (hyperparameters alone could
    # be another teacher's), and carry their figures.
    if (
        not isinstance(record, dict)
        or record.get("private") is not True
        or made_from is None
        or made_from != data.label_report["queries"].get("query_model_weights_sha256")
        or record.get("epsilon") != composed.get("epsilon")
        or record.get("delta") != composed.get("delta")
    ):
        raise FreekdError(
            f"{path} is not post-processing of the DP model these labels compose (its privacy "
            "record does not name that model's weights), so its cost is not in their (ε, δ); "
            "start from that model's own data-free student, or drop init_student"
        )
    if model.num_classes != data.pool.num_classes or model.input_shape != data.pool.input_shape:
        raise FreekdError(
            f"{path} takes {model.input_shape} images into {model.num_classes} classes, the "
            f"pool {data.pool.input_shape} into {data.pool.num_classes}; give a model of the pool"
        )
    if config.student_kwargs and dict(config.student_kwargs) != model.metadata()["arch_kwargs"]:
        raise FreekdError(
            f"{path} was built with {model.metadata()['arch_kwargs']}, not student_kwargs "
            f"{dict(config.student_kwargs)}; drop student_kwargs (the model keeps its own)"
        )
    if model.arch != config.student:
        raise FreekdError(
            f"{path} is a {model.arch}, the student a {config.student}; pass --student {model.arch}"
        )
    return model.train()


def _given_or_registered(recorded: str, given: str | None, what: str, flag: str) -> str:
    """The data a label report names, opened only as a registered name (``mnist:test``) or as
    the user gives it: a path read from a file is never opened (it could name any file)."""

    if given:
        return given
    if recorded.partition(":")[0] in DATASETS:
        return recorded
    raise FreekdError(
        f"the labels' {what} is the path {recorded}, and freekd opens no path read from a "
        f"report; pass {flag} {recorded} if that is the file"
    )


def _check_pool(pool: ImageDataset, recorded: object, *, given: bool) -> None:
    """The pool must be the one labelled: its fingerprint (pixels and labels) is in the label
    report; a file the user gives is refused without one, since nothing else ties them."""

    if not isinstance(recorded, str):
        if given:
            raise FreekdError(
                "the labels do not record which pool they were made on (written before freekd "
                "recorded it); label the pool again with freekd pate label"
            )
        return
    if pool_fingerprint(pool.images, pool.labels) != recorded:
        raise FreekdError(
            f"{pool.name} is not the pool these labels were made on (its images differ from "
            "the label report's fingerprint); pass the query pool that was labelled"
        )


def semi_supervised_params(config: PateStudentConfig) -> dict[str, Any]:
    """``semi_supervised_kwargs``, checked against the chosen way of using the unlabelled pool
    (also by ``pate run`` and ``audit pipeline`` before their first stage trains)."""

    if config.semi_supervised not in SEMI_SUPERVISED:
        raise FreekdError(
            f"unknown semi_supervised {config.semi_supervised!r}; known: "
            f"{', '.join(SEMI_SUPERVISED)}"
        )
    # Checked in place: config.yaml then holds the numbers the method ran with.
    params = config.semi_supervised_kwargs
    if config.semi_supervised in SEMI_SUPERVISED_METHODS:
        what = f"semi_supervised {config.semi_supervised}"
        check_params(SEMI_SUPERVISED_METHODS[config.semi_supervised], params, what=what)
    elif params:
        raise FreekdError("semi_supervised_kwargs needs semi_supervised: vat or teacher")
    if bool(config.distill_teacher.path) != (config.semi_supervised == "teacher"):
        raise FreekdError(
            "semi_supervised teacher and distill_teacher.path go together: give both (--set "
            "semi_supervised=teacher --set distill_teacher.path=MODEL) or neither"
        )
    return params


def _semi_supervised_record(
    config: PateStudentConfig, data: LabelledPool, params: dict[str, Any]
) -> dict[str, Any]:
    """The report's ``semi_supervised``: the method and, with VAT, its unlabelled images."""

    if config.semi_supervised not in SEMI_SUPERVISED_METHODS:
        return {"method": config.semi_supervised}
    record = {
        "method": config.semi_supervised,
        "unlabelled_images": data.public,
        "source": f"{data.pool.name}, first {data.public:,} images (the query pool)",
        "params": resolved_params(SEMI_SUPERVISED_METHODS[config.semi_supervised], params),
    }
    if config.semi_supervised == "teacher":
        record["teacher"] = config.distill_teacher.path
        record["teacher_weights_sha256"] = data.label_report["queries"].get(
            "query_model_weights_sha256"
        )
    return record


def _method_and_source(
    config: PateStudentConfig,
    student: ImageClassifier,
    data: LabelledPool,
    params: dict[str, Any],
    *,
    dist: DistInfo,
    device: torch.device,
    trust_code: bool,
) -> tuple[Method, BatchSource]:
    """VAT or the query model's soft targets on the answered queries plus the unlabelled pool,
    or cross-entropy on the answers."""

    if config.semi_supervised == "none":
        return Supervised(student), loader_source(
            data.train_set, config.trainer, seed=config.seed, dist=dist
        )
    if dist.enabled:
        raise FreekdError(
            f"semi_supervised {config.semi_supervised} runs in one process; use "
            "semi_supervised none"
        )
    unlabelled = data.pool.subset(torch.arange(data.public))
    augment_name = resolve_augmentation(config.trainer.augment, data.pool.input_shape)
    method: Method
    if config.semi_supervised == "teacher":
        teacher = _query_model(config, data, trust_code=trust_code).to(device)
        method = LabelsAndTeacher(student, teacher, **params)
    else:
        method = VirtualAdversarial(student, **params)
    source = SemiSupervisedSource(
        data.train_set,
        unlabelled,
        batch_size=config.trainer.batch_size,
        labelled_batch_size=config.labelled_batch_size,
        seed=config.seed,
        augment=None if augment_name == "none" else AUGMENTATIONS.get(augment_name),
    )
    return method, source


def _query_model(config: PateStudentConfig, data: LabelledPool, *, trust_code: bool) -> Teacher:
    """``distill_teacher``, loaded, once it is shown to be the DP model the labelling run
    composed: its soft targets are then post-processing of a release the labels' (ε, δ) holds.

    Three records must agree (each file is checked, none trusted alone): the label report's
    query model (``queries``: private, its weights' SHA-256, its privacy record, which the
    labels' privacy ``composed_with``), the ``freekd datafree`` report beside the query pool
    (its teacher's SHA-256 and privacy record), and the weights of the model given.
    """

    queries = data.label_report["queries"]
    fix = "label a pool of `freekd datafree --save-queries` from a DP teacher, or use vat"
    if queries.get("query_model_private") is not True:
        raise FreekdError(
            "semi_supervised teacher needs labels of queries synthesized from a DP teacher, "
            f"whose cost the labels compose; these queries are not ({queries.get('source')}); "
            f"{fix}"
        )
    expected = queries.get("query_model_weights_sha256")
    if not isinstance(expected, str):
        raise FreekdError(
            "the labels do not record their query model's weights (written before freekd "
            "recorded them); re-run freekd datafree --save-queries and freekd pate label"
        )
    if not config.queries_from:
        raise FreekdError(
            "semi_supervised teacher needs the synthetic query pool the labels were made on; "
            "pass --queries-from OUT/queries.npz of that freekd datafree run"
        )
    run_report = Path(config.queries_from).parent / "report.json"
    try:
        run = json.loads(run_report.read_text(encoding="utf-8"))
        run_teacher, run_privacy = run["teacher"], run["privacy"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise FreekdError(
            f"cannot read the query pool's datafree report {run_report} ({first_line(error)}); "
            f"keep the pool's folder as freekd datafree wrote it"
        ) from None
    composed = data.label_report["privacy"].get("composed_with")
    if (
        not isinstance(run_teacher, dict)
        or run_teacher.get("weights_sha256") != expected
        or run_privacy != queries.get("privacy")
        or run_privacy != composed
    ):
        raise FreekdError(
            f"the labels' record of their query model does not match {run_report}; the labels "
            "belong to another pool: label this pool again"
        )
    teacher = load_teacher(config.distill_teacher, trust_code=trust_code)
    if weights_checksum(teacher.state_dict()) != expected:
        raise FreekdError(
            f"{config.distill_teacher.path} is not the model these queries were synthesized "
            f"from ({queries.get('query_model') or 'recorded in the labels'}), so its privacy "
            "cost is not in the labels' (ε, δ); give that model as distill_teacher.path"
        )
    if teacher.num_classes != data.pool.num_classes:
        raise FreekdError(
            f"{config.distill_teacher.path} has {teacher.num_classes} classes, the query pool "
            f"{data.pool.num_classes}; give the query model as distill_teacher.path"
        )
    return teacher
