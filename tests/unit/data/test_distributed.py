"""Read units: how a table's files are cut into Ray Data read tasks and blocks, from their
bytes and the cluster's CPUs (no Ray started)."""

import pytest

from raylane.data.distributed import (
    MAX_READ_UNIT_BYTES,
    MIN_READ_UNIT_BYTES,
    READ_TASKS_PER_CPU,
    csv_blocks,
    read_unit_bytes,
)


def test_read_units_give_every_cpu_several_tasks_within_bounds():
    table = 140 << 20  # 16 files of a 10M-row table
    assert table / read_unit_bytes(table, 2) == pytest.approx(2 * READ_TASKS_PER_CPU, rel=1e-6)
    assert read_unit_bytes(table, 16) < read_unit_bytes(table, 2)  # more CPUs, smaller units
    assert read_unit_bytes(1 << 20, 2) == MIN_READ_UNIT_BYTES  # a small table: a few tasks
    assert read_unit_bytes(1 << 40, 64) == MAX_READ_UNIT_BYTES  # never above Ray's own
    assert read_unit_bytes(table, 0) == read_unit_bytes(table, 1)  # no CPU listed yet


def test_a_csv_source_gets_one_block_per_read_unit():
    one_file = 138 << 20  # one CSV file of 2M rows: Ray reads it with one task
    assert csv_blocks(one_file, read_unit_bytes(one_file, 2)) == 2 * READ_TASKS_PER_CPU
    assert csv_blocks(1000, read_unit_bytes(1000, 2)) == 1  # small: one fused task
    assert csv_blocks(10, 3) == 4 and csv_blocks(0, 3) == 1 and csv_blocks(5, 0) == 5
