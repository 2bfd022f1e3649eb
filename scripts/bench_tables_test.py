"""Tests of scripts/bench-tables against the criterion results in
tests/fixtures/bench-tables. Run with `python3 scripts/bench_tables_test.py`
(CI does)."""

import contextlib
import datetime
import importlib.machinery
import importlib.util
import io
import os
import pathlib
import re
import shutil
import tempfile
import unittest

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "bench-tables" / "criterion"


def load_script():
    path = ROOT / "scripts" / "bench-tables"
    loader = importlib.machinery.SourceFileLoader("bench_tables", str(path))
    spec = importlib.util.spec_from_loader("bench_tables", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


bt = load_script()

# The fixture's rows: a table with two peers, one whose baseline must not
# count as a peer, and one with palisade alone.
LAYOUT = [
    bt.Table(
        "Timeout",
        [
            bt.row("timeout/tower", "tower", "`Timeout`"),
            bt.row("timeout/tower_resilience", "tower-resilience", "`TimeLimiter`"),
            bt.row("timeout/palisade", bt.PALISADE, "`Timeout`", "≤ 5 ns"),
        ],
    ),
    bt.Table(
        "Timeout, armed",
        [
            bt.row("timeout_armed/bare", bt.BASELINE, "inner service alone"),
            bt.row("timeout_armed/tower", "tower", "`Timeout`"),
            bt.row("timeout_armed/palisade", bt.PALISADE, "`Timeout`"),
        ],
    ),
    bt.Table("Throttle", [bt.row("throttle/healthy", bt.PALISADE, "healthy")]),
]

MACHINE = bt.Machine("Test CPU @ 1 GHz", 2, "rustc 1.95.0 (test)")

README = f"""# project

## Performance

Prose before.

{bt.START}
The tables come from scripts/bench-tables.
{bt.END}

Prose after.
"""


def fixture_copy(test):
    """A copy of the fixture whose files all carry one time, as one run's
    would (a checkout gives them whatever times it likes)."""
    directory = pathlib.Path(tempfile.mkdtemp())
    test.addCleanup(shutil.rmtree, directory)
    copy = directory / "criterion"
    shutil.copytree(FIXTURE, copy)
    run = datetime.datetime(2026, 12, 5, 6, 0, tzinfo=datetime.timezone.utc).timestamp()
    for estimates in copy.rglob("estimates.json"):
        os.utime(estimates, (run, run))
    return copy


def tables_of(test, criterion, layout=LAYOUT):
    return bt.render(layout, bt.measure(layout, criterion), MACHINE)


class Rendering(unittest.TestCase):
    def test_each_row_shows_its_median_and_palisade_its_ratio_to_the_best_peer(self):
        tables = tables_of(self, fixture_copy(self))
        # 4.1 / 31.2 (tower, the faster peer): the median, never the mean.
        self.assertIn(
            "| palisade | `Timeout` (`timeout/palisade`) | 4.10 ns | 0.13 | ≤ 5 ns |", tables
        )
        self.assertIn("| tower | `Timeout` (`timeout/tower`) | 31.2 ns |  |  |", tables)
        self.assertIn(
            "| tower-resilience | `TimeLimiter` (`timeout/tower_resilience`) | 120.0 ns |  |  |",
            tables,
        )
        # 109.9 / 98.7: the bare baseline (5 ns) is no peer.
        self.assertIn(
            "| palisade | `Timeout` (`timeout_armed/palisade`) | 109.9 ns | 1.11 |", tables
        )
        self.assertIn(
            "| — | inner service alone (`timeout_armed/bare`) | 5.00 ns |  |", tables
        )

    def test_a_table_without_peers_has_no_ratio_column(self):
        tables = tables_of(self, fixture_copy(self))
        throttle = tables.split("**Throttle**")[1]
        self.assertIn("| library | row | time |\n|---|---|---|\n", throttle)
        self.assertIn("| palisade | healthy (`throttle/healthy`) | 44.8 ns |", throttle)

    def test_the_tables_name_the_machine_the_compiler_and_the_date_of_the_run(self):
        tables = tables_of(self, fixture_copy(self))
        self.assertIn(
            "Measured on 2026-12-05 on Test CPU @ 1 GHz (2 cores), rustc 1.95.0 (test);",
            tables,
        )

    def test_rows_are_found_by_their_id_whatever_the_directory(self):
        # timeout/palisade lies under timeout/palisade/, the others under
        # timeout_tower/ and so on: both are criterion's layouts.
        results = bt.find_results(FIXTURE)
        self.assertEqual(results["timeout/palisade"].parent.parent.name, "palisade")
        self.assertEqual(results["timeout/tower"].parent.parent.name, "timeout_tower")


class Failing(unittest.TestCase):
    def test_a_missing_row_fails_and_names_it(self):
        layout = LAYOUT + [bt.Table("Bulkhead", [bt.row("bulkhead/palisade", bt.PALISADE, "")])]
        with self.assertRaisesRegex(bt.TablesError, r"1 of 8 rows .*: bulkhead/palisade"):
            tables_of(self, fixture_copy(self), layout)

    def test_rows_from_different_runs_fail(self):
        criterion = fixture_copy(self)
        stale = criterion / "timeout_tower" / "new" / "estimates.json"
        day_before = stale.stat().st_mtime - 24 * 3600
        os.utime(stale, (day_before, day_before))
        with self.assertRaisesRegex(bt.TablesError, "more than one run: timeout/tower"):
            tables_of(self, criterion)

    def add_metrics_row(self, criterion, when):
        """A `metrics/` row's result, written at `when` (seconds)."""
        new = criterion / "metrics_retry_off" / "new"
        shutil.copytree(criterion / "throttle_healthy" / "new", new)
        benchmark = new / "benchmark.json"
        benchmark.write_text(benchmark.read_text().replace("throttle/healthy", "metrics/retry/off"))
        os.utime(new / "estimates.json", (when, when))

    def test_a_run_with_the_metrics_feature_fails(self):
        criterion = fixture_copy(self)
        run = (criterion / "timeout_tower" / "new" / "estimates.json").stat().st_mtime
        self.add_metrics_row(criterion, run + 60)
        with self.assertRaisesRegex(bt.TablesError, "measured metrics/retry/off"):
            tables_of(self, criterion)

    def test_metrics_rows_from_an_earlier_run_are_no_matter(self):
        criterion = fixture_copy(self)
        run = (criterion / "timeout_tower" / "new" / "estimates.json").stat().st_mtime
        self.add_metrics_row(criterion, run - 24 * 3600)
        self.assertIn("**Timeout**", tables_of(self, criterion))

    def test_the_script_fails_without_touching_the_readme_when_rows_are_missing(self):
        # The real layout over the fixture's few rows: most are missing.
        readme = pathlib.Path(tempfile.mkdtemp()) / "README.md"
        self.addCleanup(shutil.rmtree, readme.parent)
        readme.write_text(README)
        errors = io.StringIO()
        with contextlib.redirect_stderr(errors):
            code = bt.main(["--criterion", str(fixture_copy(self)), "--readme", str(readme)])
        self.assertEqual(code, 1)
        self.assertIn("have no result", errors.getvalue())
        self.assertIn("bulkhead/palisade", errors.getvalue())
        self.assertEqual(readme.read_text(), README)


class Markers(unittest.TestCase):
    def test_the_tables_replace_what_lies_between_the_markers_and_nothing_else(self):
        once = bt.replace_between_markers(README, "TABLES ONE")
        self.assertEqual(
            once, README.replace("The tables come from scripts/bench-tables.", "TABLES ONE")
        )
        # Rerunning replaces the earlier tables.
        twice = bt.replace_between_markers(once, "TABLES TWO")
        self.assertEqual(twice, once.replace("TABLES ONE", "TABLES TWO"))

    def test_missing_or_misplaced_markers_fail(self):
        with self.assertRaises(bt.TablesError):
            bt.replace_between_markers(README.replace(bt.END, ""), "x")
        with self.assertRaises(bt.TablesError):
            bt.replace_between_markers(f"{bt.END}\n{bt.START}\n", "x")


class Layout(unittest.TestCase):
    """The script's layout and benches/layers.rs name the same rows."""

    def bench_names(self):
        source = (ROOT / "benches" / "layers.rs").read_text()
        # The name a row helper or `bench_function` is given: a literal, or
        # a `format!` whose `{placeholder}` stands for any word.
        names = re.findall(
            r'(?:row|bench_function)\(\s*(?:c,\s*)?(?:&format!\(\s*)?"([^"]+)"', source
        )
        self.assertGreater(len(names), 50, "the pattern finds the bench's rows")
        return {
            name: re.compile(re.sub(r"\\\{\w+\\\}", r"\\w+", re.escape(name)) + r"\Z")
            for name in names
            # The metrics feature's rows stay out of the tables.
            if not name.startswith(bt.METRICS_ROWS)
        }

    def test_every_bench_row_is_in_the_layout_once(self):
        ids = [r.id for table in bt.LAYOUT for r in table.rows]
        self.assertEqual(len(ids), len(set(ids)), "a row appears twice in the layout")
        for name, pattern in self.bench_names().items():
            self.assertTrue(
                any(pattern.match(id) for id in ids), f"{name} is not in the script's LAYOUT"
            )

    def test_every_layout_row_is_in_the_bench(self):
        patterns = self.bench_names().values()
        for table in bt.LAYOUT:
            for r in table.rows:
                self.assertTrue(
                    any(p.match(r.id) for p in patterns),
                    f"{r.id} is in the script's LAYOUT but not in benches/layers.rs",
                )


if __name__ == "__main__":
    unittest.main()
