"""The documentation's generated parts and its checks: every figure in README.md and docs/ is
written here, from the code, the reference records or the committed benchmark figures, between
two markers; and a lint finds a figure typed by hand in prose.

`python -m tests.docs_pages` rewrites every generated block (`--screenshots` also photographs the
published site for docs/images/); `tests/test_docs.py` fails while a block is stale, while a page
holds a bare figure, or while the docs site has a broken link.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from bench.core.vocabulary import FLOOR_ROWS
from bench.report.numbers import format_p, format_signed
from bench.results.record import schema_rows
from tests.structure import ROOT, import_graph, wing_diagram

REFERENCE = ROOT / "reference"
DEFAULT_SET = REFERENCE / "default-v8"
REAL_SET = REFERENCE / "real-v1"
# What `python -m pytest benchmarks/ --benchmark-only --benchmark-json=...` wrote on the
# development machine: the performance page's figures come from it, never from memory.
BENCHMARK_FIGURES = ROOT / "benchmarks" / "figures.json"


# --- blocks generated from the code ----------------------------------------------------------------
def record_schema() -> str:
    """The table of a record's keys, from the fields of `bench.results.record.Record`."""
    lines = ["| key | content |", "|---|---|"]
    lines += [f"| `{key}` | {text} |" for key, text in schema_rows()]
    return "\n".join(lines)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def claim_definitions() -> str:
    """The table of the claims and their tests, from `bench.report.claims.CLAIMS`."""
    from bench.report.claims import CLAIMS

    lines = ["| claim | source | part | primary | secondary |", "|---|---|---|---|---|"]
    for claim in CLAIMS:
        for index, part in enumerate(claim.parts):
            tests = {
                role: "; ".join(
                    t.describe() + (f" ({t.note})" if t.note else "")
                    for t in claim.tests
                    if t.part == part and t.role == role
                )
                for role in ("primary", "secondary")
            }
            head = (claim.statement, claim.source) if index == 0 else ("", "")
            cells = [*head, part, tests["primary"], tests["secondary"] or "–"]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def catalogue_counts() -> str:
    """How many methods, datasets, metrics and profiles the registries hold, from the catalogue."""
    from bench.plan.catalogue import load_catalogue
    from bench.plan.profiles import PROFILES

    catalogue = load_catalogue()
    parts = {
        "methods": len(catalogue.methods),
        "datasets": len(catalogue.datasets),
        "metrics": len(catalogue.metrics),
        "profiles": len(PROFILES.names()),
    }
    return "Registered today: " + ", ".join(f"{n} {what}" for what, n in parts.items()) + "."


def browser_tests() -> str:
    """How many tests drive Chromium (and are skipped without it), as pytest collects them."""
    import subprocess
    import sys

    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "tests/test_report_browser.py"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=300,
    ).stdout  # fmt: skip
    count = sum("::" in line for line in collected.splitlines())
    return f"{count} tests"


EXAMPLES = ROOT / "examples"


def example_source(name: str) -> str:
    """A plugin of `examples/`, verbatim: the guide shows the code the tests run."""
    path = EXAMPLES / f"{name}.py"
    return f"```python\n# {path.relative_to(ROOT)}\n{path.read_text().rstrip()}\n```"


def readme_section(heading: str) -> str:
    """A section of README.md for the docs site's home page, its links made relative to docs/:
    the landing page and the home page say the same, written once."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {heading}\n") + len(f"## {heading}\n")
    end = text.find("\n## ", start)
    section = text[start : end if end != -1 else len(text)].strip("\n")
    section = _MARKER.sub("", section)  # a block copied into another keeps its text only
    return section.replace("](docs/", "](")


def readme_commands() -> str:
    """README's two commands, for the docs site's home page."""
    text = (ROOT / "README.md").read_text()
    start = text.index("```bash\n")
    return text[start : text.index("```\n", start + 8) + 3]


# --- blocks generated from the reference records ---------------------------------------------------
def _claim_cell(row: Any) -> str:
    """The verdict called, and how it came about where it is not the records' own."""
    called = f"**{row.claim_verdict}**"
    if row.claim_verdict != row.verdict_on_records:
        called += f" ({row.verdict_on_records} on these seeds)"
    stability = (
        ""
        if row.verdict_stability != row.verdict_stability
        else (f"; stable in {row.verdict_stability:.0%} of seed resamples")
    )
    return f"{called}{stability}; under the paper's metrics: {row.paper_verdict}"


def claim_verdicts(reference: Path = DEFAULT_SET) -> str:
    """The table of a reference set's verdicts: every primary test, part by part."""
    import pandas as pd

    table = pd.read_csv(reference / "claims.csv")
    lines = [
        "| claim | part | primary test | dataset | mean difference [95 % interval] | p_holm "
        "| smallest detectable Δ | test | part | claim |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    shown_claim, shown_part = None, None
    for row in table[table.role == "primary"].itertuples():
        claim = f"{row.claim}" if row.claim != shown_claim else ""
        claim_verdict = _claim_cell(row) if row.claim != shown_claim else ""
        part_verdict = row.part_verdict if (row.claim, row.part) != shown_part else ""
        part = row.part if (row.claim, row.part) != shown_part else ""
        shown_claim, shown_part = row.claim, (row.claim, row.part)
        relation = {"higher": ">", "lower": "<", "not_worse": "≥"}[row.expect]
        margin = f" − {row.margin:g}" if row.expect == "not_worse" else ""
        test = f"`{row.method}` {relation} `{row.baseline}`{margin} on `{row.metric}`"
        interval = (
            f"{format_signed(row.mean_diff)} "
            f"[{format_signed(row.ci95_low)}, {format_signed(row.ci95_high)}]"
        )
        cells = [
            claim, part, test, row.dataset, interval, format_p(row.p_holm),
            f"{row.mde_80:.3g}", row.test_verdict, part_verdict, claim_verdict,
        ]  # fmt: skip
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def explanation_floors() -> str:
    """Per reference dataset and explainer: the strongest floor of Spearman agreement with the
    teacher, the other-teacher level and the students' range of method means, so a reader sees
    how much of an agreement figure any model would get."""
    import pandas as pd

    lines = [
        "| set | dataset | explainer | strongest floor | another teacher | students (method means) "
        "| students above the floor |",
        "|---|---|---|---|---|---|---|",
    ]
    for reference in (REAL_SET, DEFAULT_SET):
        table = pd.read_csv(reference / "leaderboard.csv")
        metrics = sorted(
            m for m in table.metric.unique() if m.startswith("expl_spearman_") and "excess" not in m
        )
        for (dataset, metric), rows in table[table.metric.isin(metrics)].groupby(
            ["dataset", "metric"]
        ):
            floors = rows[rows.method.isin(FLOOR_ROWS)]
            students = rows[rows.role == "student"]
            if floors.empty or students.empty:
                continue
            strongest = floors.loc[floors["mean"].idxmax()]
            other = rows[rows.method == "other_teacher"]["mean"]
            level = f"{other.iloc[0]:.3f}" if len(other) else "–"
            above = int((students["mean"] > strongest["mean"]).sum())
            cells = [
                f"`{reference.name}`", dataset, metric.removeprefix("expl_spearman_"),
                f"{strongest['mean']:.3f} (`{strongest.method}`)", level,
                f"{students['mean'].min():.3f} – {students['mean'].max():.3f}",
                f"{above} of {len(students)}",
            ]  # fmt: skip
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


SWEEP = ("002", "003", "", "005", "006", "008", "010")


def dissection_table(reference: Path = DEFAULT_SET, dataset: str = "concept_shapes") -> str:
    """Per model on the concept probe: detectors at the default IoU threshold, the threshold
    sweep, the mean best IoU and what the detectors detect, means over seeds."""
    import pandas as pd

    table = pd.read_csv(reference / "leaderboard.csv")
    table = table[(table.dataset == dataset) & (table.profile == "default")]
    cell = table.set_index(["method", "metric"])
    lines = [
        "| model | seeds | accuracy | detectors | sweep 0.02 … 0.10 | mean best IoU "
        "| part / shape / colour / texture / background |",
        "|---|---|---|---|---|---|---|",
    ]
    order = table[table.metric == "concept_detectors"].sort_values(["role", "method"])
    for row in order.itertuples():

        def mean(metric: str, digits: int = 1, method: str = row.method) -> str:
            return f"{cell.loc[(method, metric), 'mean']:.{digits}f}"

        sweep = " / ".join(
            mean(f"concept_detectors_iou{s}" if s else "concept_detectors") for s in SWEEP
        )
        kinds = " / ".join(
            mean(f"detectors_{k}") for k in ("part", "shape", "colour", "texture", "background")
        )
        cells = [
            f"`{row.method}`", row.n, f"{mean('accuracy', 3)}",
            f"{row.mean:.1f} ± {row.std:.1f}", sweep, mean("mean_best_iou", 3), kinds,
        ]  # fmt: skip
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def reference_costs() -> str:
    """Per reference set and dataset: its student runs, their median and total time and the CPUs
    and thread counts they ran on, read from the records."""
    import statistics

    from bench.results.folder import ResultsFolder

    lines = [
        "| set | profile | dataset | student runs | median run | all student runs | ran on |",
        "|---|---|---|---|---|---|---|",
    ]
    for reference in (REAL_SET, DEFAULT_SET):
        groups: dict[tuple[str, str], list[Any]] = {}
        for record in ResultsFolder(reference).iter_records():
            if record.role == "student" and record.status == "ok":
                groups.setdefault((record.profile, record.dataset["name"]), []).append(record)
        for (profile, dataset), records in sorted(groups.items()):
            times = [r.timings["total"] for r in records]
            machines = sorted(
                {
                    f"{r.environment['cpu']}, {r.environment['torch_threads']} thread(s)"
                    for r in records
                }
            )
            cells = [
                f"`{reference.name}`", profile, dataset, len(records),
                _seconds(statistics.median(times)), _minutes(sum(times)), "; ".join(machines),
            ]  # fmt: skip
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def default_cost(reference: Path = DEFAULT_SET) -> str:
    """How long README's first line takes: what the `default` profile's records in its reference
    set took, students and reference rows apart, and the least wall time on two processes."""
    from bench.results.folder import ResultsFolder
    from bench.run.cost_priors import record_seconds

    seconds = {"student": 0.0, "reference": 0.0}
    machines = set()
    for record in ResultsFolder(reference).iter_records("default"):
        if record.ok and record.timings:
            seconds["student" if record.role == "student" else "reference"] += record_seconds(
                record
            )
            machines.add(
                f"{record.environment['cpu']}, {record.environment['torch_threads']} thread(s)"
            )
    total = seconds["student"] + seconds["reference"]
    return (
        f"How long the first line runs: the records of `reference/{reference.name}` "
        f"({'; '.join(sorted(machines))} per run, beside other work) hold "
        f"{_minutes(seconds['student'])} of student runs and {_minutes(seconds['reference'])} of "
        f"teachers and their control rows: about {_minutes(total / 2)} on two cores "
        "(`--jobs` defaults to the cores). `--profile smoke` runs the whole suite in seconds."
    )


def reference_status(reference: Path = REAL_SET) -> str:
    """Per dataset of a reference set: the planned student runs done (`bench.report.completeness`),
    the teachers' mean test accuracy and the range of the students' mean test accuracy over the
    methods (its `leaderboard.csv`): the figures that move while a set is being built."""
    import pandas as pd

    from bench.plan.catalogue import load_catalogue
    from bench.report.completeness import completeness
    from bench.results.folder import ResultsFolder

    board = pd.read_csv(reference / "leaderboard.csv")
    accuracy = board[board.metric == "accuracy"]
    lines = [
        "| dataset | student runs done / planned | teachers' accuracy | students' accuracy |",
        "|---|---|---|---|",
    ]
    for status in completeness(ResultsFolder(reference).iter_records(), load_catalogue):
        here = accuracy[(accuracy.profile == status.profile) & (accuracy.dataset == status.dataset)]
        teachers = here[here.role == "teacher"]
        students = here[here.role == "student"]["mean"]
        cells = [
            status.dataset,
            f"{status.done} / {status.planned}",
            f"{teachers['mean'].iloc[0]:.3f} (mean of {int(teachers['n'].iloc[0])})"
            if len(teachers) == 1
            else "–",
            f"{students.min():.3f}–{students.max():.3f} (method means)" if len(students) else "–",
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


# --- blocks generated from the committed benchmark figures -----------------------------------------
def _seconds(value: float) -> str:
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.2f} ms"
    return f"{value * 1e6:.1f} µs"


def _info(extra: dict[str, Any]) -> str:
    shown = []
    for key, value in extra.items():
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        shown.append(f"{key} {text}")
    return "; ".join(shown) or "–"


def benchmark_figures(path: Path = BENCHMARK_FIGURES) -> str:
    """The benchmarks' medians and the ratios they measured side by side, from the JSON file
    pytest-benchmark wrote, with the machine and the date it ran on."""
    figures = json.loads(path.read_text())
    machine = figures["machine_info"]
    cpu = machine.get("cpu", {}).get("brand_raw", "unknown CPU")
    lines = [
        f"Measured {figures['datetime'][:10]} on {cpu} ({machine.get('cpu', {}).get('count', '?')}"
        f" cores), Python {machine.get('python_version', '?')}, in one run of "
        "`python -m pytest benchmarks/ --benchmark-only --benchmark-json=benchmarks/figures.json`.",
        "",
        "| benchmark | case | median | rounds | figures it measured beside it |",
        "|---|---|---|---|---|",
    ]
    for entry in figures["benchmarks"]:
        module = entry["fullname"].split("::")[0].removeprefix("benchmarks/")
        case = entry["name"].removeprefix("test_")
        cells = [
            f"`{module}`", case, _seconds(entry["stats"]["median"]),
            entry["stats"]["rounds"], _info(entry.get("extra_info", {})),
        ]  # fmt: skip
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


@dataclass(frozen=True)
class GeneratedBlock:
    """A block of a document between two markers, written by `generate` and never by hand."""

    path: Path
    name: str
    generate: Callable[[], str]

    @property
    def begin(self) -> str:
        return f"<!-- {self.name}: generated by `python -m tests.docs_pages`; do not edit -->"

    @property
    def end(self) -> str:
        return f"<!-- {self.name}: end -->"

    def documented(self) -> str:
        text = self.path.read_text()
        return text[text.index(self.begin) + len(self.begin) : text.index(self.end)].strip("\n")

    def write(self) -> None:
        text = self.path.read_text()
        head, tail = text[: text.index(self.begin)], text[text.index(self.end) :]
        self.path.write_text(f"{head}{self.begin}\n{self.generate()}\n{tail}")


DOCS = ROOT / "docs"

BLOCKS = (
    GeneratedBlock(
        DOCS / "architecture.md", "wings", lambda: f"```\n{wing_diagram(import_graph())}\n```"
    ),
    GeneratedBlock(ROOT / "README.md", "default cost", default_cost),
    GeneratedBlock(ROOT / "README.md", "counts", catalogue_counts),
    GeneratedBlock(ROOT / "README.md", "browser tests", browser_tests),
    GeneratedBlock(
        ROOT / "README.md", "example soft_target", lambda: example_source("soft_target")
    ),
    *(
        GeneratedBlock(DOCS / "plugins.md", f"example {name}", partial(example_source, name))
        for name in ("soft_target", "treeshap_gradients", "iris_dataset")
    ),
    GeneratedBlock(DOCS / "index.md", "what it is", partial(readme_section, "What it is")),
    GeneratedBlock(DOCS / "index.md", "commands", readme_commands),
    GeneratedBlock(DOCS / "index.md", "what you get", partial(readme_section, "What you get")),
    GeneratedBlock(DOCS / "index.md", "contents", partial(readme_section, "Documentation")),
    GeneratedBlock(DOCS / "results.md", "record schema", record_schema),
    GeneratedBlock(DOCS / "results.md", "claims", claim_definitions),
    GeneratedBlock(DOCS / "results.md", "real claim verdicts", lambda: claim_verdicts(REAL_SET)),
    GeneratedBlock(DOCS / "results.md", "claim verdicts", claim_verdicts),
    GeneratedBlock(DOCS / "metrics.md", "floors", explanation_floors),
    GeneratedBlock(DOCS / "metrics.md", "dissection", dissection_table),
    GeneratedBlock(DOCS / "reproducibility.md", "benchmarks", benchmark_figures),
    GeneratedBlock(DOCS / "reproducibility.md", "reference costs", reference_costs),
    GeneratedBlock(REAL_SET / "README.md", "status", reference_status),
)


# --- the lint: no figure typed by hand -------------------------------------------------------------
# A measured figure looks like a number with a unit of time, size, share or speed, or a number
# with two or more decimals. Settings and definitions look the same, so the lint knows them by
# name: each entry says why it is not a measurement.
DEFINITIONS = {
    "95 %": "the confidence level of every interval",
    "80 %": "the power of the smallest detectable effect, and the verdict-stability threshold",
    "20 %": "the share of features the top-k agreement compares, and the test split",
    "16 %": "the validation split",
    "64 %": "the training split",
    "5 %": "the significance level",
    "0.5 %": "NetDissect's top quantile of activations",
    "0.05": "the significance level, and the CIFAR-100 recipe's learning rate",
    "0.01": "the light students' learning rate, and the non-inferiority margin",
    "0.001": "MetaQuantus's minor perturbations",
    "0.99": "Tf-KD's virtual teacher's probability of the label",
    "0.0009": "mlkd's class-correlation weight",
    "73.33": "RepDistiller's published KD accuracy, quoted",
    "10 s": "the download timeout per connection",
    "1 s": "the redraw interval of the status line",
    "4 ×": "Grad-CAM's smallest stage, a definition",
    "8 ×": "the patch size of image agreement",
    "2 ×": "a shape, not a measurement",
    "100 %": "full coverage, a definition",
    "0.25": "2/2³, the smallest two-sided p of three paired seeds",
    "1 %": "concept_shapes' top quantile of activations",
    "0.04": "NetDissect's IoU threshold",
    "0.02": "the low end of the IoU sweep",
    "0.10": "the high end of the IoU sweep",
    "25 %": "the progress display's tolerance in its test",
    "2.59": "the Ray version that made token authentication the default",
}
_UNIT = r"(?:ms|s|min|minutes|seconds|h|hours|%|×|GB|MB|GiB|MiB|kB|GFLOP/s|GFLOP)"
_FIGURE = re.compile(rf"(?<![\w.\-/])(?:\d[\d ]*(?:\.\d+)?\s?{_UNIT}(?!\w)|\d+\.\d{{2,}}\b)")
_GENERATED = re.compile(r"<!-- (.+?): generated by .*?<!-- \1: end -->", re.S)
_MARKER = re.compile(r"<!-- [^\n]*?: (?:generated by [^\n]*|end) -->\n")


def prose(text: str) -> str:
    """What a reader takes as typed text: no generated block, code, comment or link target."""
    text = _GENERATED.sub("", text)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.sub(r"\]\([^)]*\)", "]", text)


def bare_figures(text: str) -> list[str]:
    """The figures in a page's prose that are neither generated nor a named definition."""
    found = (m.group(0).strip() for m in _FIGURE.finditer(prose(text)))
    return [figure for figure in found if figure not in DEFINITIONS]


def pages() -> list[Path]:
    """README.md and every page of the docs site (the leaderboard is generated HTML)."""
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


# The pictures of the published site the docs show: (file, window width, height).
SCREENSHOTS = (
    ("leaderboard.png", 1400, 1000),  # README's picture
    ("index-1400.png", 1400, 900),
    ("index-390.png", 390, 844),
)


def take_screenshots(chromium: str = "chromium") -> None:
    """Photograph `docs/leaderboard/index.html` into `docs/images/` with headless Chromium, at a
    desktop's and a phone's width (`tests/test_report_browser.py` checks both layouts)."""
    import subprocess

    site = (DOCS / "leaderboard" / "index.html").as_uri()
    for name, width, height in SCREENSHOTS:
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--screenshot={DOCS / 'images' / name}", f"--window-size={width},{height}", site],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip


# The terminal capture of `run`'s status line: (file, terminal width, frames kept).
STATUS_CAPTURE = ("status-80.txt", 80, 4)


def capture_status_line() -> None:
    """Run the smoke profile in a tmux terminal of 80 columns and keep a few of its screens, as
    the user sees them: the status line must be redrawn in place, never wrap or pile up."""
    import subprocess
    import tempfile
    import time

    name, width, kept = STATUS_CAPTURE
    session = f"xkd-capture-{os.getpid()}"
    with tempfile.TemporaryDirectory() as results:
        command = (
            f"{sys.executable} -m bench run --all --profile smoke --results {results}; sleep 5"
        )
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", session, "-x", str(width), "-y", "8", command],
            check=True, env={**os.environ, "TERM": "xterm-256color"},
        )  # fmt: skip
        screens: list[str] = []
        while (
            subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode
            == 0
        ):
            shown = subprocess.run(
                ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True
            ).stdout.rstrip()
            if shown and (not screens or shown != screens[-1]):
                screens.append(shown)
            time.sleep(1.5)
    picked = [screens[round(i * (len(screens) - 1) / (kept - 1))] for i in range(kept)]
    ruler = "-" * width
    (DOCS / "images" / name).write_text(
        f"{ruler}\n" + f"\n{ruler}\n".join(picked) + f"\n{ruler}\n", encoding="utf-8"
    )


if __name__ == "__main__":
    for block in BLOCKS:
        block.write()
    if "--screenshots" in sys.argv:
        take_screenshots()
        capture_status_line()
