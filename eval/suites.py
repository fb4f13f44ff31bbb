"""Eval suites: a declared dataset + prompt + metric + adapter + what to ingest, read from YAML.

A suite file (shipped ones in ``eval/suites/*.yaml``) is validated field by field; a mistake is
a ConfigError that names the file and the field (``format.yaml: metric.primary: ...``). Paths in
a suite are relative to the repository root (or absolute), so users can add their own suites
from one YAML file and a JSONL file.
"""

from __future__ import annotations

import hashlib
import json
import random
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ragtune.errors import ConfigError
from ragtune.jsonformat import Validator, load_schema
from retriever.models import PassageKind

REPO = Path(__file__).resolve().parents[1]
SHIPPED_DIR = Path(__file__).resolve().parent / "suites"
ARMS = ("base", "rag", "ft", "hybrid", "api", "api-rag")
Expectation = Literal["rag", "ft", "both"]

# The metrics each metric kind produces, the direction of each (True = higher is better).
METRIC_KINDS: dict[str, dict[str, bool]] = {
    "qa": {"em": True, "f1": True},
    "json": {"field_f1": True, "json_valid": True, "schema_valid": True, "key_match": True, "json_exact": True,
             "name_correct": True},
    "style": {"style": True, "content": True},
    "fact": {"current": True, "stale": False},
}


def resolve_path(path: Path) -> Path:
    return path if path.is_absolute() else REPO / path


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def render(template: str, row: dict[str, Any]) -> str:
    """``str.format`` over a row; dict and list values are written as compact JSON (E2E labels)."""
    values = {k: (json.dumps(v, ensure_ascii=False, separators=(",", ":")) if isinstance(v, (dict, list)) else v)
              for k, v in row.items()}
    try:
        return template.format_map(values)
    except KeyError as exc:
        raise ConfigError(f"template {template[:60]!r} names field {exc} that the row does not have "
                          f"(fields: {', '.join(sorted(row))})", param="template") from exc


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    path = resolve_path(path)
    if not path.is_file():
        raise ConfigError(f"data file {path} does not exist", param="path")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{n}: not valid JSON ({exc.msg})", param="path") from exc
    return rows


class Selection(_Strict):
    """Which rows, in which order; ``--limit N`` then takes the first N."""

    strategy: Literal["head", "seeded"] = Field(
        default="seeded", description="'head': file order; 'seeded': a seeded shuffle (spreads over the file).")
    seed: int = Field(default=13, description="Seed of the shuffle.")
    max_chars: int | None = Field(default=None, ge=1, description="Skip rows whose input is longer (keeps prompts in context).")

    def apply(self, rows: list[dict[str, Any]], input_field: str) -> list[dict[str, Any]]:
        if self.max_chars is not None:
            rows = [r for r in rows if len(str(r.get(input_field, ""))) <= self.max_chars]
        if self.strategy == "seeded":
            rows = list(rows)
            random.Random(self.seed).shuffle(rows)
        return rows


class DataSpec(_Strict):
    path: Path = Field(description="JSONL file of eval items (the held-out split).")
    id_field: str = "id"
    input_field: str = Field(default="input", description="The item's input (what the prompt asks about).")
    reference_field: str = Field(description="Gold answer(s): a string, a list of strings, or a JSON object.")
    old_field: str | None = Field(default=None, description="'fact' metric: the superseded (v1) value.")
    name_field: str | None = Field(default=None, description="'json' metric: also score the `name` field against this.")
    select: Selection = Field(default_factory=Selection)
    limit: int | None = Field(default=None, ge=1, description="Most items this suite ever uses.")


class FewShot(_Strict):
    """Fixed examples shown to the base and rag-only arms as earlier turns (a fair baseline prompt)."""

    path: Path
    count: int = Field(default=3, ge=1, le=10)
    select: Selection = Field(default_factory=Selection)
    input_field: str = "input"
    user: str | None = Field(default=None, description="Template of the example question (default: prompt.user).")
    assistant: str = Field(description="Template of the example answer, e.g. '{output_json}'.")


class PromptSpec(_Strict):
    user: str = Field(description="Template of the user message, over the item's fields (e.g. '{question}').")
    few_shot: FewShot | None = Field(default=None, description="Examples for base/rag arms (ft arms get none).")
    max_tokens: int = Field(default=64, ge=1, le=1024)
    stop: list[str] = Field(default_factory=list, description="Extra stop strings (the router adds its own).")


class StylePairs(_Strict):
    """'style' metric: the suite's own (source, target) text pairs the voice classifier is fitted on.

    Each pair puts the same content on both sides, so the classifier cannot win on content: it has
    to learn the register. Its accuracy on held-out pairs is reported beside the score.
    """

    path: Path = Field(description="JSONL of pairs (a train split: never the eval items).")
    source_field: str = Field(default="source_text", description="The plain side (label 0).")
    target_field: str = Field(default="target_text", description="The voice the adapter should write in (label 1).")
    fit_pairs: int = Field(default=1000, ge=10, description="Most pairs to fit on.")
    heldout_path: Path | None = Field(default=None, description="Pairs for the held-out accuracy "
                                      "(default: the last heldout_fraction of `path`, never fitted on).")
    heldout_pairs: int = Field(default=200, ge=5)
    heldout_fraction: float = Field(default=0.2, gt=0, lt=1)
    min_accuracy: float = Field(default=0.65, gt=0.5, le=1, description="Below this held-out accuracy the "
                                "classifier is near chance and the suite is not decided on style.")


class MetricSpec(_Strict):
    kind: Literal["qa", "json", "style", "fact"]
    primary: str = Field(description="The metric the decision is made on.")
    style: StylePairs | None = Field(default=None, description="'style' metric: the pairs its classifier is fit on.")
    schema_path: Path | None = Field(
        default=None, alias="schema",
        description="'json' metric: a JSON Schema the answer must satisfy (adds the schema_valid score).",
    )

    @model_validator(mode="after")
    def _primary_exists(self) -> MetricSpec:
        known = METRIC_KINDS[self.kind]
        if self.primary not in known:
            raise ValueError(f"primary {self.primary!r} is not a '{self.kind}' metric (one of: {', '.join(known)})")
        if self.schema_path is not None and self.kind != "json":
            raise ValueError(f"'schema' applies to the 'json' metric only (this one is '{self.kind}')")
        if self.kind == "style" and self.style is None:
            raise ValueError("metric kind 'style' needs 'style' (the source/target pairs its classifier is fit on)")
        if self.style is not None and self.kind != "style":
            raise ValueError(f"'style' applies to the 'style' metric only (this one is '{self.kind}')")
        if self.primary == "schema_valid" and self.schema_path is None:
            raise ValueError("primary 'schema_valid' needs 'schema' (a JSON Schema file)")
        return self


class DocumentsSpec(_Strict):
    """Documents to put in the suite's collection, rendered from a JSONL file."""

    path: Path
    id_field: str = "id"
    text: str = Field(description="Template of the document text over the row's fields.")
    kind: PassageKind = Field(
        default="fact", description="'fact': answered from and cited; 'example': solved examples of the task "
        "(retrieved few-shot), shown as examples and never as sources.")
    source: str | None = Field(default=None, description="Template of the citation source (default: the id).")
    limit: int | None = Field(default=None, ge=1, description="First N rows only (after `select`).")
    select: Selection = Field(default_factory=lambda: Selection(strategy="head"))
    exclude_items: bool = Field(
        default=False, description="Leave out rows whose id is an eval item (examples must not be the answer).")
    join_item_field: str | None = Field(
        default=None, description="Keep only rows whose `join_field` equals this field of some eval item "
        "(e.g. the paragraphs of the items' Wikipedia pages).")
    join_field: str | None = None
    gold_ids_field: str | None = Field(
        default=None, description="Item field listing gold document ids: always kept when joining.")
    max_per_group: int | None = Field(default=None, ge=0, description="With a join: most non-gold rows per group.")
    min_words: int = Field(default=1, ge=1, description="Skip rows with fewer words (headings).")
    valid_from: date | None = Field(
        default=None, description="Day these versions of the facts hold from (a later `update` closes them).")

    @model_validator(mode="after")
    def _join_complete(self) -> DocumentsSpec:
        if (self.join_item_field is None) != (self.join_field is None):
            raise ValueError("join_item_field and join_field go together")
        return self


class RetrievalSpec(_Strict):
    documents: DocumentsSpec
    query: str | None = Field(
        default=None, description="Template of the retrieval query over the item's fields, e.g. '{name}' "
        "(default: the user message, instructions and all).")
    update: DocumentsSpec | None = Field(
        default=None, description="Upserted after the adapter is trained and before asking (changed facts: "
        "same ids get a new version, valid from the update's valid_from; the first stays for as_of).")
    as_of_probe: date | None = Field(
        default=None, description="A day before the update: the rag arm is asked again as of it, and should "
        "state the old value (the store keeps history; an adapter stays at its training data).")
    top_k: int = Field(default=3, ge=1, le=20)


class TrainRows(_Strict):
    """How to turn rows (a JSONL file, or the suite's own documents) into prompt/completion rows."""

    path: Path | None = Field(default=None, description="JSONL file of rows (train splits only).")
    documents: bool = Field(
        default=False, description="Use the suite's retrieval documents, for every item of its selection (not "
        "only --limit's), as rows with fields id, text, source: closed-book knowledge training.")
    require: list[str] = Field(default_factory=list, description="Skip rows where any of these fields is empty.")
    prompts: list[str] = Field(min_length=1, description="One or more prompt templates per row (paraphrases).")
    completion: str = Field(description="Template of the completion.")

    @model_validator(mode="after")
    def _one_source(self) -> TrainRows:
        if (self.path is None) == (not self.documents):
            raise ValueError("give exactly one of 'path' (a JSONL file) or 'documents: true'")
        return self


class TrainSpec(_Strict):
    name: str = Field(description="Adapter name prefix; the data hash is appended.")
    rows: list[TrainRows] = Field(min_length=1, description="One or more row sources, concatenated.")
    config: dict[str, Any] = Field(default_factory=dict, description="trainer.config.TrainConfig overrides.")

    @field_validator("rows", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else v


class AdapterSpec(_Strict):
    """Either an installed/shipped adapter by name, or one trained from the suite's data."""

    name: str | None = None
    train: TrainSpec | None = None

    @model_validator(mode="after")
    def _one_of(self) -> AdapterSpec:
        if (self.name is None) == (self.train is None):
            raise ValueError("give exactly one of 'name' (an existing adapter) or 'train'")
        return self


class SuiteSpec(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{1,40}$")
    description: str
    expect: Expectation = Field(description="What the rule predicts: 'rag', 'ft', or 'both' (hybrid).")
    data: DataSpec
    prompt: PromptSpec
    metric: MetricSpec
    adapter: AdapterSpec | None = Field(default=None, description="null: no adapter; ft and hybrid arms are skipped.")
    hybrid_adapter: AdapterSpec | None = Field(
        default=None, description="The hybrid arm's adapter when it differs from ft's (facts: the reader adapter, "
        "trained to answer from passages, while ft is a closed-book knowledge adapter). Default: `adapter`.")
    retrieval: RetrievalSpec | None = Field(default=None, description="null: no store; rag and hybrid are skipped.")
    batch_size: int = Field(default=16, ge=1, le=256)
    facts_change_per_month: float = Field(
        default=0.0, ge=0, description="How often the suite's facts change: the cost model retrains an adapter "
        "arm that often (retrieval arms only re-ingest).")

    @field_validator("adapter", "hybrid_adapter", mode="before")
    @classmethod
    def _adapter_shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _metric_fields(self) -> SuiteSpec:
        if self.metric.kind == "fact" and not self.data.old_field:
            raise ValueError("metric kind 'fact' needs data.old_field (the superseded value)")
        return self

    @property
    def collection(self) -> str:
        return f"eval-{self.name}"

    def arm_adapter(self, arm: str) -> AdapterSpec | None:
        """The adapter an arm uses (None for base and rag)."""
        if arm == "ft":
            return self.adapter
        if arm == "hybrid":
            return self.hybrid_adapter or self.adapter
        return None

    def arm_applicable(self, arm: str) -> tuple[bool, str]:
        if arm in ("rag", "hybrid", "api-rag") and self.retrieval is None:
            return False, "the suite declares no retrieval store"
        if arm in ("ft", "hybrid") and self.arm_adapter(arm) is None:
            return False, "the suite declares no adapter (there is nothing to fine-tune for it)"
        return True, ""


class Item(BaseModel):
    """One eval question, resolved from a data row."""

    model_config = ConfigDict(extra="forbid")

    id: str
    user: str
    reference: Any
    old: str | None = None
    name: str | None = None
    input: str
    retrieval_query: str | None = Field(default=None, description="What the rag and hybrid arms retrieve with.")
    row: dict[str, Any]


class Suite:
    """A loaded suite spec plus its items (lazily read) and where it came from."""

    def __init__(self, spec: SuiteSpec, source: Path):
        self.spec = spec
        self.source = source

    @property
    def name(self) -> str:
        return self.spec.name

    def items(self, limit: int | None = None) -> list[Item]:
        d = self.spec.data
        rows = d.select.apply(read_jsonl(d.path), d.input_field)
        caps = [x for x in (limit, d.limit) if x is not None]
        if caps:
            rows = rows[: min(caps)]
        items = []
        for row in rows:
            for field in (d.id_field, d.reference_field, d.input_field):
                if field not in row:
                    raise ConfigError(f"{self.source.name}: data row lacks field {field!r} (has: {', '.join(sorted(row))})",
                                      param="data")
            ref = row[d.reference_field]
            query = self.spec.retrieval.query if self.spec.retrieval else None
            items.append(Item(
                id=str(row[d.id_field]),
                user=render(self.spec.prompt.user, row),
                reference=ref,
                old=str(row[d.old_field]) if d.old_field else None,
                name=str(row[d.name_field]) if d.name_field else None,
                input=str(row[d.input_field]),
                retrieval_query=render(query, row) if query else None,
                row=row,
            ))
        return items

    @cached_property
    def few_shot(self) -> list[tuple[str, str]]:
        """(user, assistant) example pairs for base and rag arms; empty when none are declared."""
        fs = self.spec.prompt.few_shot
        if fs is None:
            return []
        rows = fs.select.apply(read_jsonl(fs.path), fs.input_field)[: fs.count]
        return [(render(fs.user or self.spec.prompt.user, r), render(fs.assistant, r)) for r in rows]

    @cached_property
    def json_schema(self) -> Validator | None:
        """The 'json' metric's schema validator, or None when the suite declares no schema."""
        path = self.spec.metric.schema_path
        return load_schema(resolve_path(path)) if path else None

    def fingerprint(self) -> str:
        return hashlib.sha256(self.spec.model_dump_json().encode()).hexdigest()[:12]


def load_suite(path: Path) -> Suite:
    """Read and validate one suite YAML; errors name the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"suite file {path} does not exist", param="suite")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})", param="suite") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a suite file must be a mapping of fields", param="suite")
    try:
        spec = SuiteSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        first = exc.errors()[0]["loc"]
        raise ConfigError(f"{path.name}: {problems}", param=".".join(str(p) for p in first) or None) from exc
    suite = Suite(spec, path)
    _ = suite.json_schema  # a missing or broken schema fails here, not after the arms have generated
    return suite


def shipped_suites() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SHIPPED_DIR.glob("*.yaml"))}


def resolve_suites(names: list[str] | None) -> list[Suite]:
    """'all' (or nothing) = every shipped suite; a name = a shipped suite; a path = a user's suite file."""
    shipped = shipped_suites()
    if not names or "all" in names:
        names = list(shipped)
    suites = []
    for name in names:
        if name in shipped:
            suites.append(load_suite(shipped[name]))
        elif Path(name).suffix in (".yaml", ".yml"):
            suites.append(load_suite(Path(name)))
        else:
            raise ConfigError(f"unknown suite {name!r}: use one of {', '.join(shipped)}, 'all', or a path to a "
                              "suite .yaml file", param="suite")
    seen: set[str] = set()
    for s in suites:
        if s.name in seen:
            raise ConfigError(f"suite {s.name!r} given twice", param="suite")
        seen.add(s.name)
    return suites
