"""Tables larger than the driver: read with Ray Data, schema from a bounded sample plus
aggregates, rows prepared and split block by block where they lie.

The driver holds the sample (``SAMPLE_ROWS`` rows) and summaries the size of the columns
(:mod:`raylane.data.aggregates`), never the table. Passes over the data: one summary of every row
(which columns stay, their categories, the class labels), then the prepared rows are materialized
once (Ray's object store, spilling to disk) and summarized per split, and the training split's
medians take :data:`raylane.data.aggregates.MEDIAN_PASSES` more passes.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import ray
import ray.data

from raylane.data.aggregates import (
    SPLIT_COLUMN,
    NumericStats,
    Summary,
    SummaryAggregate,
    dataset_medians,
    overall,
    run_aggregate,
)
from raylane.data.holdout import HoldoutDefinition
from raylane.data.parquet import read_parquet
from raylane.data.read import (
    MAX_INFERRED_CLASSES,
    DataError,
    infer_schema,
    min_rows_per_class,
    prepare_features,
    resolve_pos_label,
)
from raylane.data.sources import Source, resolve
from raylane.data.splits import HOLDOUT, SPLIT_NAMES, TRAIN, VALID, split_codes
from raylane.model.schema import (
    MAX_RECORDED_CATEGORIES,
    MISSING_CATEGORY,
    FeatureSchema,
    Task,
    category_values,
    numeric_codes,
)

log = logging.getLogger(__name__)

SAMPLE_ROWS = 20_000
TARGET_COLUMN = "__target"


@dataclass
class DatasetOptions:
    """What of the config the distributed read needs (``data.*``, ``judging.*``)."""

    path: str | list[str]
    target: str
    task: Task | None = None
    columns: list[str] | None = None
    drop: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    max_categories: int = 200
    valid_fraction: float = 0.2
    holdout_fraction: float = 0.2
    pos_label: object = None
    key_columns: list[str] | None = None
    hash_seed: int = 0


@dataclass
class TrainStats:
    """What the preprocessing is fitted from: the training split's medians and categories."""

    medians: dict[str, float]
    categories: dict[str, list[str]]  # sorted, the missing value "" included when seen
    numeric: dict[str, NumericStats]


@dataclass
class DistributedData:
    schema: FeatureSchema
    source: Source
    dataset: ray.data.Dataset  # prepared features, __target (label or float), __split
    rows: dict[str, int]  # per split
    class_counts: dict[str, dict[str, int]] | None  # per split, per label (classification)
    stats: TrainStats
    holdout_definition: dict
    pos_label: str | None = None

    @property
    def digest(self) -> str:
        return self.source.digest()

    @property
    def pos_index(self) -> int | None:
        if self.pos_label is None:
            return None
        return (self.schema.class_labels or []).index(self.pos_label)


# Read units: Ray's own 128 MiB Parquet units made a 16-file, 10M-row table 2 read tasks, one
# CPU idle once the shorter ended; about 4 per CPU keep that tail short (3 made a 20M-row table
# 11 tasks on 2 CPUs, 18% slower to score) while each task's fixed cost (~0.05 s) stays small
# (benchmarks/README_scale.md).
READ_TASKS_PER_CPU = 4
MIN_READ_UNIT_BYTES, MAX_READ_UNIT_BYTES = 4 << 20, 128 << 20


def cluster_cpus() -> float:
    """The CPUs of the Ray cluster this process is connected to; before it is, this machine's
    (reading would start a local Ray with them)."""
    if ray.is_initialized():
        return ray.cluster_resources().get("CPU", 1)
    return os.cpu_count() or 1


def read_unit_bytes(source_bytes: int, cpus: float) -> int:
    """Bytes per read unit: about :data:`READ_TASKS_PER_CPU` units for every CPU, so the last
    tasks to finish leave the CPUs idle briefly, and none over Ray's own 128 MiB.

    Parquet: ``source_bytes`` are the files' (compressed) sizes, the read units' uncompressed,
    so a read gets at least that many tasks where the row groups allow (Ray never splits one).
    CSV: one block per unit of the files' bytes (:func:`csv_blocks`); a file is read by one
    task, its blocks processed by as many."""
    per_task = source_bytes / max(cpus, 1.0) / READ_TASKS_PER_CPU
    return int(min(MAX_READ_UNIT_BYTES, max(MIN_READ_UNIT_BYTES, per_task)))


def csv_blocks(source_bytes: int, unit_bytes: int) -> int:
    """How many blocks a CSV/TSV source of ``source_bytes`` is read into, one per
    ``unit_bytes`` of its files (at least one)."""
    return max(1, math.ceil(source_bytes / max(unit_bytes, 1)))


def read_dataset(source: Source, columns: list[str] | None = None,
                 read_unit_bytes: int | None = None) -> ray.data.Dataset:
    """The files of ``source`` as a Ray Dataset (read lazily, block by block). CSV columns take
    the types of the first file's first rows, so every file parses alike.

    ``read_unit_bytes``: for Parquet, the most uncompressed bytes one read task reads (Ray's
    default: 128 MiB); for CSV, the file bytes per block (:func:`csv_blocks`). Ray never
    splits a CSV file into read tasks, so left to itself it cuts the few files it is given into
    blocks of about 1 MiB to reach its default parallelism (a 138 MB file: 262 blocks), and
    whatever follows runs one small task per block."""
    if source.format == "parquet":
        return read_parquet(source.paths, read_unit_bytes, filesystem=source.filesystem,
                            columns=columns)
    types = {fld.name: fld.type for fld in source.csv_schema() if str(fld.type) != "null"}
    convert = pacsv.ConvertOptions(column_types=types, include_columns=columns)
    blocks = {} if read_unit_bytes is None else {
        "override_num_blocks": csv_blocks(source.total_bytes, read_unit_bytes)}
    return ray.data.read_csv(source.paths, filesystem=source.filesystem,
                             parse_options=source.csv_parse_options(), convert_options=convert,
                             **blocks)


def _select(frame: pd.DataFrame, options: DatasetOptions) -> pd.DataFrame:
    if options.columns:
        frame = frame[list(dict.fromkeys([*options.columns, options.target]))]
    return frame.drop(columns=[c for c in options.drop if c != options.target
                               and c in frame.columns])


def _label_spelling(target: pd.Series) -> bool:
    """Whether class labels are numbers (spelled as :func:`category_value` spells codes, so a
    block read as float because of a missing value gives the same labels as one read as int)."""
    return numeric_codes(str(target.dtype)) or pd.api.types.is_numeric_dtype(target)


def to_pandas(dataset: ray.data.Dataset) -> pd.DataFrame:
    """A small dataset as pandas reads Arrow (NumPy dtypes, as the small-data path has them)."""
    tables = ray.get(dataset.to_arrow_refs())
    return pa.concat_tables(tables).to_pandas() if tables else pd.DataFrame()


def prepare_block(batch: pa.Table | pd.DataFrame, schema: FeatureSchema, label_numeric: bool,
                  definition: HoldoutDefinition | None, valid_fraction: float) -> pd.DataFrame:
    """One block's prepared feature columns, target and split (rows without a target dropped).
    Without ``definition`` every row is marked training (the first, whole-table summary)."""
    if isinstance(batch, pa.Table):
        batch = batch.to_pandas()
    batch = batch[batch[schema.target].notna()]
    out = prepare_features(batch, schema)
    y = batch[schema.target]
    if schema.task == "classification":
        out[TARGET_COLUMN] = category_values(y, label_numeric)
    else:
        out[TARGET_COLUMN] = pd.to_numeric(y, errors="coerce").to_numpy(dtype=np.float64)
    if definition is None:
        out[SPLIT_COLUMN] = np.full(len(out), TRAIN, dtype=np.int8)
    else:
        out[SPLIT_COLUMN] = split_codes(batch, definition, valid_fraction)
    return out.reset_index(drop=True)


def _summary(dataset: ray.data.Dataset, schema: FeatureSchema, cap: int) -> dict[int, Summary]:
    categorical = [*schema.categorical] + (
        [TARGET_COLUMN] if schema.task == "classification" else [])
    numeric = [*schema.numeric] + ([TARGET_COLUMN] if schema.task == "regression" else [])
    return run_aggregate(dataset, SummaryAggregate(numeric, categorical, cap))


def _final_schema(draft: FeatureSchema, whole: Summary, options: DatasetOptions) -> FeatureSchema:
    """Columns over ``data.max_categories`` left out (unless named categorical), categories and
    nullability from every row, the class labels."""
    columns = []
    for col in draft.columns:
        if col.kind == "numeric":
            stats = whole.numeric[col.name]
            columns.append(col.model_copy(update={"nullable": stats.missing > 0}))
            continue
        stats = whole.categorical[col.name]
        if stats.overflowed and col.name in options.categorical:
            raise DataError(f"data.categorical: column {col.name!r} has more than "
                            f"data.max_categories={options.max_categories} distinct values; "
                            "raise data.max_categories or leave it numeric")
        if stats.overflowed:
            log.warning("leaving out column %r: more than data.max_categories=%d distinct values",
                        col.name, options.max_categories)
            continue
        seen = sorted(v for v in (stats.counts or {}) if v != MISSING_CATEGORY)
        columns.append(col.model_copy(update={
            "nullable": stats.missing > 0, "categories": seen[:MAX_RECORDED_CATEGORIES]}))
    if not columns:
        raise DataError("data: no feature columns left after selection")
    labels = None
    if draft.task == "classification":
        counts = whole.categorical[TARGET_COLUMN]
        if counts.overflowed:
            raise DataError(f"data.target: {options.target!r} has too many distinct values for "
                            "classification; set data.task: regression")
        labels = sorted(counts.counts or {})
        if len(labels) < 2:
            raise DataError(f"data.target: classification needs at least 2 classes; "
                            f"{options.target!r} has only {labels}")
    return FeatureSchema(task=draft.task, target=draft.target, columns=columns,
                         class_labels=labels)


def load_distributed(options: DatasetOptions) -> DistributedData:
    """Read, infer, split and summarize the table ``options.path`` names, on Ray Data."""
    source = resolve(options.path)
    # CSV: Ray's own cut of a file into ~1 MiB blocks made a 2M-row file's read and summaries
    # 3x slower. Parquet keeps Ray's units here: with 4 per CPU the read was faster, but the
    # data-parallel search's rounds slower (benchmarks/README_scale.md).
    unit = None if source.format == "parquet" else read_unit_bytes(source.total_bytes,
                                                                   cluster_cpus())
    raw = read_dataset(source, read_unit_bytes=unit)
    sample = to_pandas(raw.limit(SAMPLE_ROWS))
    if options.target not in sample.columns:
        raise DataError(f"data.target: column {options.target!r} not in the data; columns are "
                        f"{list(sample.columns)}")
    for key, names in (("data.columns", options.columns or []), ("data.drop", options.drop)):
        missing = [c for c in names if c not in sample.columns]
        if missing:
            raise DataError(f"{key}: columns {missing} are not in {source.spec}")
    sample = _select(sample[sample[options.target].notna()], options)
    keep = list(sample.columns)
    # Kinds and dtypes from the sample; which columns overflow is decided on every row below.
    draft = infer_schema(sample, options.target, options.task, options.categorical,
                         max_categories=10**9)
    label_numeric = _label_spelling(sample[options.target])
    raw = raw.select_columns(keep)
    cap = max(options.max_categories, MAX_INFERRED_CLASSES)
    whole = overall(_summary(raw.map_batches(
        prepare_block, batch_format="pyarrow",
        fn_kwargs={"schema": draft, "label_numeric": label_numeric, "definition": None,
                   "valid_fraction": options.valid_fraction}), draft, cap))
    schema = _final_schema(draft, whole, options)
    key = tuple(sorted(options.key_columns or [*schema.feature_names, schema.target]))
    missing_keys = [c for c in key if c not in keep]
    if missing_keys:
        raise DataError(f"judging.key_columns: columns {missing_keys} are not in the data")
    definition = HoldoutDefinition(fraction=options.holdout_fraction, key_columns=key,
                                   hash_seed=options.hash_seed)
    dataset = raw.map_batches(
        prepare_block, batch_format="pyarrow",
        fn_kwargs={"schema": schema, "label_numeric": label_numeric, "definition": definition,
                   "valid_fraction": options.valid_fraction},
    ).materialize()
    by_split = _summary(dataset, schema, cap)
    rows = {SPLIT_NAMES[code]: by_split[code].rows if code in by_split else 0
            for code in (TRAIN, VALID, HOLDOUT)}
    empty = [name for name, n in rows.items() if n == 0]
    if empty:
        raise DataError(f"data: the {', '.join(empty)} split is empty; the table has "
                        f"{whole.rows} rows (data.valid_fraction, data.holdout_fraction)")
    class_counts = None
    pos_label = None
    if schema.task == "classification":
        class_counts = {SPLIT_NAMES[code]: dict(by_split[code].categorical[TARGET_COLUMN].counts
                                                or {}) for code in by_split}
        _check_classes(schema, class_counts, options)
        pos_label = _pos_label(schema, class_counts["train"], options.pos_label)
    train = by_split[TRAIN]
    numeric_stats = {c: train.numeric[c] for c in schema.numeric}
    medians = dataset_medians(dataset, numeric_stats, TRAIN) if numeric_stats else {}
    categories = {c: sorted(train.categorical[c].counts or {}) for c in schema.categorical}
    return DistributedData(
        schema=schema, source=source, dataset=dataset, rows=rows, class_counts=class_counts,
        stats=TrainStats(medians=medians, categories=categories, numeric=numeric_stats),
        holdout_definition={**definition.as_dict(), "rows": rows["holdout"],
                            "judging_rows": rows["holdout"], "new_rows": 0},
        pos_label=pos_label,
    )


def _check_classes(schema: FeatureSchema, counts: dict[str, dict[str, int]],
                   options: DatasetOptions) -> None:
    minimum = min_rows_per_class(options.valid_fraction, options.holdout_fraction)
    for split in ("train", "validation", "holdout"):
        absent = [c for c in schema.class_labels or [] if not counts.get(split, {}).get(c)]
        if absent:
            raise DataError(f"data.target: classes {absent} of {options.target!r} are missing "
                            f"from the {split} split; each class needs rows in every split "
                            f"(at least {minimum} rows)")


def _pos_label(schema: FeatureSchema, train_counts: dict[str, int],
               given: object) -> str | None:
    """As :func:`raylane.data.read.resolve_pos_label`, from the training split's class counts."""
    labels = schema.class_labels or []
    if len(labels) == 2 and given is None:
        first, second = (train_counts.get(c, 0) for c in labels)
        return labels[0] if first < second else labels[1]
    return resolve_pos_label(np.arange(len(labels)), schema, given)
