"""Compliance rules as data (``configs/compliance/*.yaml``): which evidence answers which
requirement, and the legal document it comes from.

When the law changes (the new cybersecurity law takes effect on 1 July 2026) the province
adds a file with a later ``effective_from``, not code. The evidence export applies the file
in force on the period's last day (``in_force``) and records its hash and legal basis in the
manifest. Files are read by the one bounded YAML reader and validated completely: unknown
keys are errors naming the file and the key path.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec

from agent.configerror import ConfigError, humanise
from collector.fields import load_yaml

SCHEMA_VERSION: Final = 1
MAX_FILE_BYTES: Final = 1_000_000
DEFAULT_DIR: Final = Path(__file__).resolve().parents[1] / "configs" / "compliance"

# The facts an agent (or the plan targets) can answer, and which way each threshold points.
Fact = Literal[
    "antivirus_protected_share",  # computers protected ÷ computers reporting antivirus ≥ t
    "antivirus_unprotected_days",  # longest unprotected stretch of any computer ≤ t days
    "antivirus_signature_age_days",  # newest signatures of every computer ≤ t days old
    "antivirus_centrally_managed_share",  # where known: managed ÷ reporting ≥ t
    "firewall_enabled_share",  # computers with the firewall on ÷ reporting ≥ t
    "patch_age_days",  # where known: days since the last patch ≤ t
    "unit_silent_days",  # longest silence of a unit ≤ t days
    "plan_goals_attained",  # plan goals (configs/targets) met: share ≥ t
]
AT_MOST: Final = frozenset(
    {"antivirus_unprotected_days", "antivirus_signature_age_days", "patch_age_days",
     "unit_silent_days"}
)  # fmt: skip

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
RuleId = Annotated[str, msgspec.Meta(pattern=r"\A[a-z0-9][a-z0-9-]{0,63}\Z")]


class ComplianceError(ConfigError):
    """A compliance rules file problem: the file, the key path, what is wrong."""


class _Strict(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class LegalBasis(_Strict, frozen=True):
    """A legal document a rule comes from. ``confirmed: false`` marks a reference whose
    number, article or date still has to be checked against the official text."""

    id: RuleId
    document: Text  # Vietnamese title, e.g. "Luật An toàn thông tin mạng"
    document_en: Text
    number: Annotated[str, msgspec.Meta(max_length=100)] | None = None  # e.g. 86/2015/QH13
    article: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    date: dt.date | None = None  # signed / passed
    effective: dt.date | None = None
    confirmed: bool = True
    note: Annotated[str, msgspec.Meta(max_length=2000)] | None = None


class Evidence(_Strict, frozen=True):
    """The fact that answers a rule and its threshold (direction: see ``AT_MOST``)."""

    fact: Fact
    threshold: Annotated[float, msgspec.Meta(ge=0, le=100_000)]

    def __post_init__(self) -> None:
        if self.fact not in AT_MOST and self.threshold > 1:
            raise ValueError(f"threshold: {self.fact} is a share, 0..1 (write 95 % as 0.95)")

    @property
    def at_most(self) -> bool:
        return self.fact in AT_MOST


class Rule(_Strict, frozen=True):
    id: RuleId
    text: Text  # Vietnamese
    text_en: Text
    evidence: Evidence
    legal_basis: Annotated[list[RuleId], msgspec.Meta(min_length=1, max_length=16)]


class RuleSet(_Strict, frozen=True):
    version: Annotated[int, msgspec.Meta(ge=1, le=SCHEMA_VERSION)]
    framework: RuleId
    title: Text
    title_en: Text
    effective_from: dt.date
    legal_basis: Annotated[list[LegalBasis], msgspec.Meta(min_length=1, max_length=64)]
    rules: Annotated[list[Rule], msgspec.Meta(min_length=1, max_length=256)]


@dataclass(frozen=True, slots=True)
class Rules:
    """One validated rules file, with where it came from (its hash goes into manifests)."""

    file: str
    path: Path
    data: RuleSet

    def basis(self, basis_id: str) -> LegalBasis:
        return next(b for b in self.data.legal_basis if b.id == basis_id)

    def threshold(self, fact: str, default: float) -> float:
        """The threshold of the first rule answered by ``fact`` (findings use it)."""
        for rule in self.data.rules:
            if rule.evidence.fact == fact:
                return rule.evidence.threshold
        return default


def parse_rules(data: Any, file: str = "<compliance>", path: Path | None = None) -> Rules:
    """Validate parsed YAML; raise ComplianceError naming the key path."""
    if not isinstance(data, dict):
        raise ComplianceError(file, "", "expected a mapping with version, framework, rules")
    try:
        rules = msgspec.convert(data, RuleSet, strict=False)
    except msgspec.ValidationError as exc:
        where, message = humanise(exc, data, RuleSet)
        raise ComplianceError(file, where, message) from None
    known = {b.id for b in rules.legal_basis}
    seen: set[str] = set()
    for index, basis in enumerate(rules.legal_basis):
        if basis.id in seen:
            raise ComplianceError(file, f"legal_basis[{index}].id", f"duplicate {basis.id!r}")
        seen.add(basis.id)
    seen = set()
    for index, rule in enumerate(rules.rules):
        if rule.id in seen:
            raise ComplianceError(file, f"rules[{index}].id", f"duplicate {rule.id!r}")
        seen.add(rule.id)
        for ref in rule.legal_basis:
            if ref not in known:
                raise ComplianceError(
                    file,
                    f"rules[{index}] ({rule.id}).legal_basis",
                    f"unknown reference {ref!r} (one of {', '.join(sorted(known))})",
                )
    return Rules(file, path or Path(file), rules)


def load_rules(path: str | Path) -> Rules:
    """Load and validate one rules file."""
    path = Path(path)
    data, file = load_yaml(
        path,
        ComplianceError,
        empty_hint="expected version:, framework:, rules:",
        max_bytes=MAX_FILE_BYTES,
    )
    return parse_rules(data, file, path)


def load_all(directory: str | Path = DEFAULT_DIR) -> list[Rules]:
    """Every ``*.yaml`` of a directory, oldest ``effective_from`` first; two files in force
    from the same day are an error (which one applies would be a guess)."""
    files = sorted(Path(directory).glob("*.yaml"))
    if not files:
        raise ComplianceError(str(directory), "", "no compliance rules files (*.yaml)")
    loaded = sorted((load_rules(f) for f in files), key=lambda r: r.data.effective_from)
    for before, after in itertools.pairwise(loaded):
        if before.data.effective_from == after.data.effective_from:
            raise ComplianceError(
                after.file,
                "effective_from",
                f"{after.data.effective_from} is also the effective_from of {before.file}",
            )
    return loaded


def in_force(rule_sets: Sequence[Rules], day: dt.date) -> Rules:
    """The rules file in force on ``day`` (the latest ``effective_from`` not after it)."""
    valid = [r for r in rule_sets if r.data.effective_from <= day]
    if not valid:
        first = min(r.data.effective_from for r in rule_sets)
        raise ComplianceError("", "effective_from", f"no rules in force on {day} (first {first})")
    return valid[-1]
