"""The model registry: promotion with aliases (``champion``, ``challenger``; never the deprecated
stages), the figures it compares, and registering a run's model once.

Runs on several machines may promote versions of one registered model at the same moment: each
promotion (and each registration with it) holds the model's promotion lock
(:mod:`pipelines.tracking.lease`), reads the champion afresh inside it, and checks after setting the
alias that the alias says what it decided."""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag
from mlflow.exceptions import MlflowException

from pipelines.tracking.comparison import ANY_IMPROVEMENT, PAIRED_BOOTSTRAP, PromotionRule, compare
from pipelines.tracking.lease import PromotionLock
from pipelines.tracking.params import MAX_TAG_VALUE_LENGTH, _finite, _now_ms, _truncate
from pipelines.tracking.store import _client, _quoted
from pipelines.tracking.tracker import register_model

_logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclasses.dataclass(frozen=True)
class PromotionDecision:
    """What :func:`promote` decided, and from which figures."""

    promoted: bool
    champion_version_before: str | None
    champion_value_before: float | None
    candidate_value: float
    reason: str
    model_name: str = ""
    version: str = ""
    metric_name: str = ""
    alias: str = CHAMPION  # the alias the candidate got: champion or challenger
    comparison: dict[str, Any] = dataclasses.field(default_factory=dict)  # the paired bootstrap's figures

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def metric_tag(metric_name: str) -> str:
    """The model-version tag that holds a version's figure for ``metric_name``."""
    return f"metric.{metric_name}"


def version_metric(client: MlflowClient, model_name: str, version: str, metric_name: str) -> float | None:
    """A registered version's figure for ``metric_name``: its tag, else its run's last value."""
    mv = client.get_model_version(model_name, str(version))
    tagged = (mv.tags or {}).get(metric_tag(metric_name))
    if tagged is not None:
        try:
            return float(tagged)
        except ValueError:
            pass
    if mv.run_id:
        try:
            value = client.get_run(mv.run_id).data.metrics.get(metric_name)
        except MlflowException:
            value = None
        if value is not None:
            return float(value)
    return None


def _current_champion(client: MlflowClient, model_name: str):
    try:
        return client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None


def _fmt_any(value: Any) -> str:
    return _fmt(value) if isinstance(value, float) else str(value)


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.6g}"


def promote(
    client_or_uri: MlflowClient | str,
    model_name: str,
    version: str | int,
    metric_name: str,
    value: float,
    greater_is_better: bool,
    log_to_run: bool = True,
    rule: PromotionRule | None = None,
) -> PromotionDecision:
    """Gives ``version`` the alias ``champion`` if it beats the current champion by ``rule`` (default:
    any improvement of the figure), else ``challenger`` (holding the model's promotion lock: see
    :func:`_promote`)."""
    client = _client(client_or_uri)
    with PromotionLock(client, model_name) as lock:
        return _promote(client, lock, model_name, version, metric_name, value, greater_is_better, log_to_run, rule)


class PromotionConflict(RuntimeError):
    """Another process changed the aliases while this one held the promotion lock (or the lock was lost)."""


def _set_alias(client: MlflowClient, lock: PromotionLock, model_name: str, alias: str, version: str) -> None:
    """Sets ``alias`` if the lock is still ours, and reads it back."""
    if not lock.still_held():
        raise PromotionConflict(f"lost the promotion lock of {model_name!r} before setting @{alias}; "
                                f"nothing was changed: run again")
    client.set_registered_model_alias(model_name, alias, version)
    now = str(client.get_model_version_by_alias(model_name, alias).version)
    if now != version:
        raise PromotionConflict(f"@{alias} of {model_name!r} is version {now} right after it was set to "
                                f"{version}: something changes aliases without the promotion lock")


def _promote(
    client: MlflowClient,
    lock: PromotionLock,
    model_name: str,
    version: str | int,
    metric_name: str,
    value: float,
    greater_is_better: bool,
    log_to_run: bool = True,
    rule: PromotionRule | None = None,
) -> PromotionDecision:
    """:func:`promote` with the lock held.

    Rules: the first version (no champion yet) wins; a NaN/inf candidate never wins; a tie does not
    win; a champion with no recorded figure loses to any finite candidate. The candidate's figure is
    stored as the version tag ``metric.<metric_name>`` (plus ``promotion.*`` tags), and with
    ``log_to_run`` the decision is logged to the candidate's run (:func:`log_promotion_decision`).
    Re-promoting the current champion is a no-op that reports it as promoted. The champion is read
    with the lock held, and each alias is read back after it is set (:class:`PromotionConflict`).
    """
    version = str(version)
    candidate = float(value) if value is not None else math.nan
    champion = _current_champion(client, model_name)
    champ_version = str(champion.version) if champion is not None else None
    champ_value = version_metric(client, model_name, champ_version, metric_name) if champ_version else None

    comparison: dict = {}
    if champ_version == version:
        promoted, reason = True, f"version {version} is already the champion"
    elif not _finite(candidate):
        promoted, reason = False, f"candidate {metric_name}={_fmt(candidate)} is not a finite number"
    elif champion is None:
        promoted, reason = True, f"no champion yet: version {version} ({metric_name}={_fmt(candidate)}) is the first"
    elif not _finite(champ_value):
        promoted, reason = True, (
            f"champion version {champ_version} has no finite {metric_name} figure "
            f"({_fmt(champ_value)}); candidate {_fmt(candidate)} takes over"
        )
    else:
        promoted, reason, comparison = _against_champion(client, rule, champion, metric_name, candidate, champ_value,
                                                         greater_is_better)

    alias = CHAMPION if promoted else CHALLENGER
    client.set_model_version_tag(model_name, version, metric_tag(metric_name), repr(candidate))
    client.set_model_version_tag(model_name, version, "promotion.decision", alias)
    client.set_model_version_tag(model_name, version, "promotion.reason", _truncate(reason, MAX_TAG_VALUE_LENGTH))
    for key, figure in comparison.items():
        client.set_model_version_tag(model_name, version, f"promotion.{key}", _fmt_any(figure))
    if promoted:
        _set_alias(client, lock, model_name, CHAMPION, version)
        try:
            if str(client.get_model_version_by_alias(model_name, CHALLENGER).version) == version:
                client.delete_registered_model_alias(model_name, CHALLENGER)
        except MlflowException:
            pass
    else:
        _set_alias(client, lock, model_name, CHALLENGER, version)

    decision = PromotionDecision(
        promoted=promoted,
        champion_version_before=champ_version,
        champion_value_before=champ_value,
        candidate_value=candidate,
        reason=reason,
        model_name=model_name,
        version=version,
        metric_name=metric_name,
        alias=alias,
        comparison=comparison,
    )
    _logger.info("promotion of %s version %s: %s (%s)", model_name, version, alias, reason)
    if log_to_run:
        run_id = client.get_model_version(model_name, version).run_id
        if run_id:
            log_promotion_decision(client, run_id, decision)
    return decision


def _by_figure(metric_name: str, candidate: float, champ_version: str, champ_value: float,
               greater_is_better: bool) -> tuple[bool, str]:
    """``any_improvement``: a strictly better figure wins; a tie does not."""
    better = "higher" if greater_is_better else "lower"
    if (candidate > champ_value) if greater_is_better else (candidate < champ_value):
        return True, (f"{metric_name} {_fmt(candidate)} beats champion version {champ_version} "
                      f"({_fmt(champ_value)}; {better} is better)")
    if candidate == champ_value:
        return False, f"{metric_name} {_fmt(candidate)} ties champion version {champ_version}; ties do not promote"
    return False, (f"{metric_name} {_fmt(candidate)} does not beat champion version {champ_version} "
                   f"({_fmt(champ_value)}; {better} is better)")


def _against_champion(client, rule: PromotionRule | None, champion, metric_name: str, candidate: float,
                      champ_value: float, greater_is_better: bool) -> tuple[bool, str, dict]:
    """A finite candidate against a champion with a finite figure, by ``rule``: a paired bootstrap on
    the held-out items they share, or (``any_improvement``, or a side without per-item statistics,
    such as a champion registered before rnnflow logged them) the figures."""
    champ_version = str(champion.version)
    if rule is None or rule.rule != PAIRED_BOOTSTRAP:
        return (*_by_figure(metric_name, candidate, champ_version, champ_value, greater_is_better), {})
    verdict = compare(client, rule, champion.run_id, champ_version)
    comparison = {"rule": rule.rule, "confidence": rule.confidence, **verdict.figures}
    if verdict.better is not None:
        return verdict.better, verdict.reason, comparison
    if verdict.figures:  # comparable in principle, but too few shared items
        return False, f"not compared: {verdict.reason}; not promoted", comparison
    promoted, reason = _by_figure(metric_name, candidate, champ_version, champ_value, greater_is_better)
    return promoted, f"{reason} (by figure: {verdict.reason})", {**comparison, "rule": ANY_IMPROVEMENT}


def versions_from_run(client_or_uri: MlflowClient | str, model_name: str, run_id: str) -> list:
    """The versions of ``model_name`` registered from run ``run_id`` (oldest first)."""
    client = _client(client_or_uri)
    found = client.search_model_versions(f"name={_quoted(model_name)} and run_id={_quoted(run_id)}")
    return sorted(found, key=lambda mv: int(mv.version))


def register_once(
    tracking_uri: str,
    model_uri: str,
    run_id: str,
    model_name: str,
    metric_name: str,
    value: float,
    greater_is_better: bool,
    rule: PromotionRule | None = None,
) -> tuple[str, dict[str, Any], bool]:
    """Registers ``model_uri`` (logged by run ``run_id``) as a version of ``model_name`` and
    :func:`promote`\ s it — unless ``model_name`` already has a version from that run, which is then
    reported as it is (and promoted, if a crash left it without a decision). Safe to repeat.

    The check, the registration and the promotion hold the model's promotion lock, so two processes
    registering the same run add one version between them. A request that the client retried after
    the server had carried it out (a connection lost mid-answer) can still create a second version of
    the run: the extra versions are deleted, and the first one kept.

    Returns ``(version, decision as a dict, registered_now)``.
    """
    client = _client(tracking_uri)
    with PromotionLock(client, model_name) as lock:
        existing = versions_from_run(client, model_name, run_id)
        if not existing:
            register_model(model_uri, model_name, tracking_uri)
            version = _one_version_of_run(client, model_name, run_id)
            decision = _promote(client, lock, model_name, version, metric_name, value, greater_is_better, rule=rule)
            return version, decision.to_dict(), True
        return _registered_before(client, lock, existing, model_name, metric_name, value, greater_is_better, rule)


def _one_version_of_run(client: MlflowClient, model_name: str, run_id: str) -> str:
    """The version registered from ``run_id``; versions beyond the first (a retried registration) deleted."""
    first, *extra = versions_from_run(client, model_name, run_id)
    for mv in extra:
        _logger.warning("deleting version %s of %s: a second registration of run %s (a retried request)",
                        mv.version, model_name, run_id)
        client.delete_model_version(model_name, str(mv.version))
    return str(first.version)


def _registered_before(client, lock, existing, model_name, metric_name, value, greater_is_better, rule):
    mv = existing[0]
    version = str(mv.version)
    tags = mv.tags or {}
    if "promotion.decision" not in tags:  # registered, then stopped before the decision
        decision = _promote(client, lock, model_name, version, metric_name, value, greater_is_better, rule=rule)
        return version, decision.to_dict(), False
    aliases = ", ".join(f"@{a}" for a in (client.get_model_version(model_name, version).aliases or [])) or "no alias"
    decision = {
        "promoted": tags.get("promotion.decision") == CHAMPION,
        "alias": tags.get("promotion.decision"),
        "reason": f"{tags.get('promotion.reason', '')}; it holds {aliases} now",
        "model_name": model_name,
        "version": version,
        "metric_name": metric_name,
        "candidate_value": float(value),
    }
    return version, decision, False


def log_promotion_decision(client_or_uri: MlflowClient | str, run_id: str, decision: PromotionDecision) -> None:
    """Records a promotion decision on a run: tags ``promotion.*`` (decision, reason, versions,
    metric) and metrics ``promotion.candidate_value`` / ``promotion.champion_value`` (finite ones).

    Tags, not params, so that re-running a promotion does not clash with immutable params.
    """
    client = _client(client_or_uri)
    tags = {
        "promotion.decision": decision.alias,
        "promotion.promoted": str(decision.promoted).lower(),
        "promotion.reason": decision.reason,
        "promotion.model_name": decision.model_name,
        "promotion.version": decision.version,
        "promotion.metric": decision.metric_name,
        "promotion.champion_version_before": decision.champion_version_before or "none",
        "promotion.champion_value": _fmt(decision.champion_value_before),
        "promotion.candidate_value": _fmt(decision.candidate_value),
        **{f"promotion.{key}": _fmt_any(v) for key, v in decision.comparison.items()},
    }
    ts = _now_ms()
    metrics = [
        Metric(key, float(v), ts, 0)
        for key, v in (
            ("promotion.candidate_value", decision.candidate_value),
            ("promotion.champion_value", decision.champion_value_before),
            *((f"promotion.{key}", decision.comparison.get(key)) for key in
              ("candidate", "champion", "difference", "ci_low", "ci_high", "p_better", "n_items")),
        )
        if isinstance(v, (int, float)) and not isinstance(v, bool) and _finite(v)
    ]
    client.log_batch(
        run_id,
        metrics=metrics,
        tags=[RunTag(k, _truncate(v, MAX_TAG_VALUE_LENGTH)) for k, v in tags.items()],
    )
