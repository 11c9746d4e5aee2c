"""PATE stage 2 (``freekd pate label``): noisy, accounted labels for public images."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress as RichProgress

from freekd import __version__
from freekd.config import dump_yaml
from freekd.data import ImageDataset, pool_fingerprint
from freekd.errors import FreekdError
from freekd.io import atomic_write, atomic_write_json, atomic_write_text
from freekd.pate.config import PateLabelConfig
from freekd.privacy.accounting import DPSGDAccountant
from freekd.privacy.budget import PrivacyBudget
from freekd.privacy.labeler import BUDGET_FIGURES, Mechanism, NoisyLabeler, mechanism_from_name
from freekd.privacy.ledger import PrivacyLedger, read_ledger
from freekd.privacy.rdp import DEFAULT_ORDERS, epsilon_from_rdp
from freekd.privacy.release import checked_sanitized_release
from freekd.privacy.report import with_figures
from freekd.runlock import has_run_content, locks_run_folder
from freekd.runs import LABELS_FILE, LEDGER_FILE, QUERIES_FILE, RunOptions, load_split
from freekd.teachers.ensemble import load_ensemble
from freekd.train.evaluate import check_input_shape, check_labels_fit

# Aggregators whose data-dependent ε ``freekd pate label`` releases through smooth sensitivity.
SANITIZABLE = ("gnmax", "confident-gnmax")


@locks_run_folder
def run_pate_label(config: PateLabelConfig, options: RunOptions) -> dict[str, Any]:
    """``freekd pate label``: noisy labels for public queries, budgeted, ledgered, accounted.

    Only the labeler touches the teachers; every answer is in ``ledger.jsonl`` (fsynced) before
    it is released. A ledger is never deleted or rewritten: an existing one is continued with
    ``--resume`` (nothing is spent twice) and refused otherwise, ``--overwrite`` included.
    Writes ``labels.npz`` (query indices and labels, −1 where no answer was given),
    ``report.json`` (with ``privacy``) and ``config.yaml``.
    """

    budget, mechanism = checked_mechanism(config)
    out = options.out_dir
    ledger_path = _checked_label_folder(options)
    queries = _load_queries(config, options)
    out.mkdir(parents=True, exist_ok=True)
    prior = _prior_accountant(queries.provenance)
    student_model = _query_student(config, mechanism, queries.pool, options)
    labeler = _open_labeler(config, mechanism, budget, queries, prior, ledger_path)
    _verify_ledger(labeler, queries, student_model)
    if options.resume:
        _refuse_a_spent_budget(out, labeler, budget)
    # After the ledger has been read and checked: a refused (corrupt, edited or foreign) ledger
    # leaves the folder as it was.
    atomic_write_text(out / "config.yaml", dump_yaml(config))
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    labelled = _label_pool(labeler, queries.pool, queries.count, student_model, quiet=options.quiet)
    atomic_write(
        out / LABELS_FILE,
        lambda stream: np.savez(
            stream,
            indices=np.arange(queries.count),
            labels=labelled.labels,
            by_teachers=labelled.by_teachers,
        ),
    )
    privacy = labeler.privacy_report()
    if config.sanitize and mechanism.name in SANITIZABLE and labeler.queries:
        privacy["sanitized"] = _release_label_privacy(
            config, mechanism, queries, labeler, labelled.by_teachers, prior, options
        )
        privacy["sanitized_epsilon"] = privacy["sanitized"]["epsilon"]
        privacy = with_figures(privacy)
    report: dict[str, Any] = {
        "command": "pate label",
        **_labelling_figures(config, queries, labeler, labelled, mechanism.name),
        "privacy": privacy,
        "wall_seconds": round(time.perf_counter() - wall_start, 3),
        "cpu_seconds": round(time.process_time() - cpu_start, 3),
        "seed": config.seed,
        "freekd_version": __version__,
    }
    atomic_write_json(out / "report.json", report)
    return report


@dataclass
class LabelQueries:
    """The query side of a labelling run: the teachers, the public pool and what it costs.

    Attributes:
        ensemble: the teachers (private; only the labeler reads their votes).
        pool: the public query pool.
        provenance: where the queries come from (:func:`_query_provenance`).
        count: how many pool images may be asked about (the first ``count``).
    """

    ensemble: Any
    pool: ImageDataset
    provenance: dict[str, Any]
    count: int


@dataclass
class PoolLabels:
    """What a labelling pass released: a label (−1: none) per available query, and who gave it."""

    labels: np.ndarray
    by_teachers: np.ndarray
    stopped_by_budget: bool


def checked_mechanism(config: PateLabelConfig) -> tuple[PrivacyBudget, Mechanism]:
    """The budget and the noisy aggregator of ``config``, every setting checked (also by
    ``pate.pipeline.check_settings`` before the teachers train)."""

    if not config.teachers:
        raise FreekdError("give the teacher ensemble: --teachers OUT/teachers.pt")
    if config.budget_on not in BUDGET_FIGURES:
        raise FreekdError(f"budget_on must be one of {', '.join(BUDGET_FIGURES)}")
    try:
        budget = PrivacyBudget(epsilon=config.epsilon, delta=config.delta)
    except ValueError as error:
        raise FreekdError(f"{error}; check --epsilon and --delta") from None
    mechanism = mechanism_from_name(
        config.aggregator,
        sigma=config.sigma,
        sigma_threshold=config.sigma_threshold,
        threshold=config.threshold,
        gamma=config.gamma,
        confidence_scale=config.confidence_scale,
        student_threshold=config.student_threshold,
    )
    if config.budget_on == "data-independent":  # a budget that pays for nothing is refused
        orders = np.asarray(DEFAULT_ORDERS, dtype=np.float64)
        one = mechanism.independent_cost(orders, answered=True)
        cost = epsilon_from_rdp(one, orders, delta=config.delta)[0]
        if cost > config.epsilon:
            raise FreekdError(
                f"--epsilon {config.epsilon:g} cannot pay for one answer of {mechanism.name} "
                f"(ε {cost:.3g} at δ {config.delta:g}); raise --epsilon or the noise"
            )
    if mechanism.needs_student and not config.student_model:
        raise FreekdError(
            f"--aggregator {mechanism.name} needs --student-model (a student checkpoint, e.g. "
            "from freekd pate student)"
        )
    return budget, mechanism


def _checked_label_folder(options: RunOptions) -> Path:
    """The ledger's path, once the folder may be used: a ledger is continued, never replaced."""

    out = options.out_dir
    ledger_path = out / LEDGER_FILE
    if ledger_path.exists() and not options.resume:
        raise FreekdError(
            f"{ledger_path} records privacy already spent and is never replaced; continue it "
            "with --resume, or choose another --out"
        )
    if options.resume and not ledger_path.exists():
        raise FreekdError(f"nothing to resume in {out}: no {LEDGER_FILE}; run without --resume")
    if not options.resume and out.exists() and has_run_content(out) and not options.overwrite:
        raise FreekdError(
            f"output folder {out} already exists; pass --overwrite to replace it or choose "
            "another --out"
        )
    return ledger_path


def _load_queries(config: PateLabelConfig, options: RunOptions) -> LabelQueries:
    """The teachers, the query pool (and evaluation set), checked against each other."""

    ensemble = load_ensemble(Path(config.teachers), trust_code=options.trust_code)
    pool = load_split(
        config.query_dataset, default_split="test", root=config.data_root, download=False
    )
    check_input_shape(pool, ensemble.input_shape, who="the teachers")
    check_labels_fit(pool, ensemble.num_classes, who="the teachers")
    provenance = _query_provenance(config, pool)
    lowest_holdout = 0 if config.eval_dataset else 1
    if not lowest_holdout <= config.holdout < len(pool):
        raise FreekdError(
            f"holdout must leave queries (and, without eval_dataset, an evaluation set): "
            f"{config.holdout} of {len(pool)} images in {pool.name}"
        )
    if config.eval_dataset:
        eval_set = load_split(
            config.eval_dataset, default_split="test", root=config.data_root, download=False
        )
        check_input_shape(eval_set, ensemble.input_shape, who="the teachers")
        check_labels_fit(eval_set, ensemble.num_classes, who="the teachers")
    if config.queries < 1:
        raise FreekdError(f"--queries must be positive, got {config.queries}")
    count = min(config.queries, len(pool) - config.holdout)
    return LabelQueries(ensemble, pool, provenance, count)


def _open_labeler(
    config: PateLabelConfig,
    mechanism: Mechanism,
    budget: PrivacyBudget,
    queries: LabelQueries,
    prior: Any,
    ledger_path: Path,
) -> NoisyLabeler:
    """The only reader of the teachers' votes, continuing the ledger at ``ledger_path``."""

    header = NoisyLabeler.ledger_header(
        mechanism, budget, seed=config.seed, budget_on=config.budget_on
    )
    header["queries"] = {"dataset": queries.pool.name, "holdout": config.holdout}
    prior_rdp = None if prior is None else prior.rdp()
    if prior_rdp is not None:
        header.update(_recorded_prior(ledger_path, prior_rdp))
    return NoisyLabeler(
        queries.ensemble.votes,
        mechanism,
        budget=budget,
        ledger=PrivacyLedger(ledger_path, header=header),
        seed=config.seed,
        num_classes=queries.ensemble.num_classes,
        budget_on=config.budget_on,
        prior=prior_rdp,
        prior_record=None if prior is None else queries.provenance["privacy"],
    )


def _recorded_prior(ledger_path: Path, prior_rdp: Any) -> dict[str, Any]:
    """The ledger header's ``prior_rdp``: the RDP the query model had spent before any answer,
    kept in the ledger (not only in the report) so that a student checks its inheritance
    against it: an edited report must not shrink it. A ledger being resumed keeps the curve it
    recorded (recomputed, it may differ in the last bits with another numpy or Opacus), and one
    written before session 41, which has none, is resumed without it."""
    curve = [float(value) for value in prior_rdp]
    if not ledger_path.is_file():
        return {"prior_rdp": curve}
    header, _ = read_ledger(ledger_path)
    recorded = header.get("prior_rdp")
    if recorded is None:
        return {}
    numbers = isinstance(recorded, list) and all(
        isinstance(value, int | float) and not isinstance(value, bool) for value in recorded
    )
    if numbers and len(recorded) == len(curve) and np.allclose(recorded, curve, rtol=1e-9, atol=0):
        return {"prior_rdp": recorded}
    return {"prior_rdp": curve}  # the ledger refuses the resume, naming prior_rdp


def _query_student(
    config: PateLabelConfig, mechanism: Mechanism, pool: ImageDataset, options: RunOptions
) -> Any:
    """Interactive-GNMax's student model (public), or None for the other aggregators."""

    if not mechanism.needs_student:
        return None
    from freekd.checkpoint import load_model

    assert config.student_model is not None
    student_model = load_model(config.student_model, trust_code=options.trust_code)
    check_input_shape(pool, student_model.input_shape, who="the student model")
    return student_model


def _refuse_a_spent_budget(out: Path, labeler: NoisyLabeler, budget: PrivacyBudget) -> None:
    """A resumed labelling whose last run stopped at its budget, and whose report accounts for
    every answer in the ledger, has nothing left to spend: it is refused, not re-run."""
    try:
        report = json.loads((out / "report.json").read_text(encoding="utf-8"))
        finished = report["stopped_by_budget"] is True
        accounted = report["privacy"]["queries"] == labeler.queries
    except (OSError, ValueError, KeyError, TypeError):
        return  # no (readable) report: the run was interrupted; resuming completes it
    if finished and accounted:
        raise FreekdError(
            f"the privacy budget of {out} (ε {budget.epsilon:g}) is spent: {labeler.labelled} "
            f"labels were released and are final; train on them (freekd pate student --labels "
            f"{out}) or label with a larger budget in another --out"
        )


def _student_probabilities(student_model: Any, images: torch.Tensor) -> torch.Tensor | None:
    """Interactive-GNMax's student's softmax outputs on ``images`` (None without a student)."""
    if student_model is None:
        return None
    with torch.no_grad():  # public: the student saw public data and released labels
        return student_model(images).softmax(dim=1)  # type: ignore[no-any-return]


def _verify_ledger(labeler: NoisyLabeler, queries: LabelQueries, student_model: Any) -> None:
    """Before a resumed run writes anything: every answer its ledger records is re-derived from
    the teachers' votes (``NoisyLabeler.verify``), and none lies beyond the queries it asks."""
    recorded = labeler.unverified
    if recorded and recorded[-1] >= queries.count:
        raise FreekdError(
            f"{labeler.ledger.path} records an answer to query {recorded[-1]}, beyond the "
            f"{queries.count} this run asks about; resume with the original --queries"
        )
    for start in range(0, len(recorded), 256):
        indices = recorded[start : start + 256]
        images = queries.pool.batch(torch.tensor(indices)).images
        probabilities = _student_probabilities(student_model, images)
        labeler.verify(indices, images, student_probabilities=probabilities)


def _label_pool(
    labeler: NoisyLabeler, pool: ImageDataset, count: int, student_model: Any, *, quiet: bool
) -> PoolLabels:
    """Ask about the first ``count`` pool images in order, until done or the budget stops it."""

    labels = np.full(count, -1, dtype=np.int64)
    by_teachers = np.zeros(count, dtype=bool)
    stopped = False
    with RichProgress(disable=quiet, transient=True) as progress:
        task = progress.add_task(f"labelling ({labeler.mechanism.name})", total=count)
        for start in range(0, count, 256):
            indices = list(range(start, min(start + 256, count)))
            images = pool.batch(torch.tensor(indices)).images
            probabilities = _student_probabilities(student_model, images)
            result = labeler.label(indices, images, student_probabilities=probabilities)
            labels[start : start + len(indices)] = result.labels.numpy()
            by_teachers[start : start + len(indices)] = result.by_teachers.numpy()
            progress.update(task, advance=result.reached)
            if result.stopped_by_budget:
                stopped = True
                break
    return PoolLabels(labels, by_teachers, stopped)


def _labelling_figures(
    config: PateLabelConfig,
    queries: LabelQueries,
    labeler: NoisyLabeler,
    labelled: PoolLabels,
    aggregator: str,
) -> dict[str, Any]:
    """The report's account of the queries: where from, how many asked and answered, by whom."""

    labels, by_teachers = labelled.labels, labelled.by_teachers
    answered = labels >= 0
    truth = queries.pool.labels[: queries.count].numpy()
    synthetic = queries.provenance["source"] != "public unlabelled set"
    return {
        "queries": {
            **queries.provenance,
            "dataset": queries.pool.name,
            # Which images were labelled, whatever file they are in: the student checks it.
            "pool_fingerprint": pool_fingerprint(queries.pool.images, queries.pool.labels),
            "asked": labeler.queries,
            "available": queries.count,
            "holdout": config.holdout,
            "eval_dataset": config.eval_dataset,
        },
        "aggregator": aggregator,
        "answered": int(answered.sum()),
        "answered_by_teachers": int(by_teachers.sum()),
        "answered_by_student": int((answered & ~by_teachers).sum()),
        "student_model": config.student_model,
        # Synthetic queries have no ground truth: their stored labels are the query model's.
        "label_accuracy": float((labels[answered] == truth[answered]).mean())
        if answered.any() and not synthetic
        else None,
        "agreement_with_query_model": float((labels[answered] == truth[answered]).mean())
        if answered.any() and synthetic
        else None,
        "stopped_by_budget": labelled.stopped_by_budget,
    }


def _query_provenance(config: PateLabelConfig, pool: ImageDataset) -> dict[str, Any]:
    """Where the queries come from and what they cost (DESIGN.md, privacy model).

    A ``queries.npz`` written by ``freekd datafree --save-queries`` is a synthetic pool: its
    images are post-processing of that run's teacher, so they carry its privacy record. A DP
    teacher's guarantee is composed with the PATE answers (worst case: it was trained on the
    same private data); a teacher without one is refused unless ``queries_public`` says it is a
    public model.
    """

    path = Path(config.query_dataset)
    run_report = path.parent / "report.json"
    if not (path.is_file() and path.name == QUERIES_FILE and run_report.exists()):
        return {"source": "public unlabelled set"}
    try:
        run = json.loads(run_report.read_text())
    except (OSError, ValueError) as error:
        raise FreekdError(f"cannot read {run_report} ({error}); re-run freekd datafree") from None
    if not isinstance(run, dict) or run.get("command") != "datafree":
        return {"source": "public unlabelled set"}
    try:
        privacy = dict(run.get("privacy") or {})
        teacher = dict(run["teacher"])
        source = {
            "source": f"synthesized by freekd datafree ({run['method']['name']}) from "
            f"{teacher.get('path', 'its teacher')} (data-free PATE)",
            "query_model": teacher.get("path"),
            "query_model_weights_sha256": teacher.get("weights_sha256"),
            "query_model_private": bool(privacy.get("private")),
            "privacy": privacy,
        }
    except (KeyError, TypeError, ValueError) as error:
        raise FreekdError(
            f"{run_report} is not a complete datafree report (no {error}); re-run freekd datafree"
        ) from None
    if not privacy.get("private") and not config.queries_public:
        raise FreekdError(
            f"{path} was synthesized from a teacher without a DP record, which may have seen the "
            "private data; train that teacher with --dp, or pass --set queries_public=true if it "
            "is a public model"
        )
    return source


def _prior_accountant(provenance: dict[str, Any]) -> Any:
    """The DP-SGD accountant of a synthetic pool's teacher, or None when the queries are free."""

    privacy = provenance.get("privacy") or {}
    if not privacy.get("private"):
        return None
    mechanisms = privacy.get("mechanisms") or []
    if len(mechanisms) != 1 or mechanisms[0].get("name") != "dpsgd":
        raise FreekdError(
            "the queries' teacher has a privacy record freekd cannot compose "
            f"({[m.get('name') for m in mechanisms]}); only one DP-SGD run is supported"
        )
    record = mechanisms[0]
    try:
        accountant = DPSGDAccountant(
            sample_rate=float(record["sample_rate"]),
            noise_multiplier=float(record["noise_multiplier"]),
            steps=int(record["steps"]),
        )
        accountant.rdp()  # its values are checked here, before a ledger exists
    except (KeyError, TypeError, ValueError, ArithmeticError) as error:
        raise FreekdError(
            f"the queries' teacher has a damaged DP-SGD record ({error!r:.80}); re-run freekd "
            "datafree from a teacher trained with --dp"
        ) from None
    return accountant


def _release_label_privacy(
    config: PateLabelConfig,
    mechanism: Mechanism,
    queries: LabelQueries,
    labeler: NoisyLabeler,
    by_teachers: np.ndarray,
    prior: Any,
    options: RunOptions,
) -> dict[str, Any]:
    """The smooth-sensitivity release of a labelling run's data-dependent ε.

    The votes of the asked queries are computed again (in memory only: they are private); with
    a resumed run that covers the queries of earlier sessions too. The order is the best one of
    the composed data-dependent curve unless ``sanitize_order`` fixes it.
    """

    asked, ensemble, pool = labeler.queries, queries.ensemble, queries.pool
    report = labeler.privacy_report()
    order = config.sanitize_order
    if order is None:
        _, order = epsilon_from_rdp(
            np.asarray(report["data_dependent_rdp"]), report["orders"], delta=config.delta
        )
    parameters = mechanism.parameters()
    chunks = []
    with RichProgress(disable=options.quiet, transient=True) as progress:
        task = progress.add_task("smooth sensitivity: votes", total=asked)
        for start in range(0, asked, 256):
            images = pool.batch(torch.arange(start, min(start + 256, asked))).images
            with torch.no_grad():
                chunks.append(ensemble.votes(images).cpu().numpy())
            progress.update(task, advance=len(images))
    votes = np.concatenate(chunks) if chunks else np.zeros((0, ensemble.num_classes))
    return checked_sanitized_release(
        votes,
        sigma=parameters["sigma"],
        delta=config.delta,
        teachers=int(votes[0].sum()) if len(votes) else 0,
        sigma_threshold=parameters.get("sigma_threshold"),
        threshold=parameters.get("threshold", 0.0),
        answered=np.asarray(by_teachers[:asked], dtype=bool),
        noise=config.sanitize_sigma,
        beta=config.sanitize_beta,
        order=order,
        seed=config.seed,
        prior=None
        if prior is None
        else lambda lam: float(dataclasses.replace(prior, orders=(lam,)).rdp()[0]),
    ) | {"order_from_data": config.sanitize_order is None}
