"""The pieces of scripts/bench-speculative.sh that run without a server: the editing workload
generator (scripts/editing_prompts.py) and the report (scripts/speculative_report.py), on a
small corpus and hand-made epas-loadtest reports."""

import importlib.util
import json
import re
import subprocess
import sys
from argparse import Namespace

from epas_testing import ROOT

SCRIPTS = ROOT / "scripts"
# The report scripts import their shared helpers from scripts/, as they do when run.
sys.path.insert(0, str(SCRIPTS))


def load(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


editing = load("editing_prompts")
report = load("speculative_report")

SPEECH = " ".join(
    f"Sentence number {i} tells the Congress about the economy and the economy again. "
    f"Our families deserve better schools, and the economy must grow for families."
    for i in range(40)
)
CORPUS = f"{SPEECH}\n\n{SPEECH.replace('Sentence', 'Remark')}\n"


def test_prompts_are_seeded_and_each_kind_ends_inside_the_text_to_copy(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(CORPUS)
    run = lambda seed: subprocess.run(
        [sys.executable, SCRIPTS / "editing_prompts.py", "--corpus", corpus, "--count", "6",
         "--words", "40", "--seed", str(seed)],
        capture_output=True, text=True, check=True).stdout
    first, again, other = run(1), run(1), run(2)
    assert first == again
    assert first != other
    prompts = [json.loads(line) for line in first.splitlines()]
    assert len(prompts) == 6

    for i, kind in enumerate(("corrections", "replace", "quote") * 2):
        prompt = prompts[i]
        passage, instruction = prompt.split("\n\n", 1)
        tail = prompt.rsplit("\n", 1)[-1]
        assert len(passage.split()) >= 40
        if kind == "corrections":
            assert instruction.startswith("The same text with the spelling corrected:\n")
            assert tail.split() == passage.split()[:3]
            assert prompt.count("\n") == 3
        elif kind == "replace":
            word, stand_in = re.search(r'every "(\w+)" replaced by "(\w+)"', instruction).groups()
            assert word in re.findall(r"\w+", passage)
            assert word not in editing.FUNCTION_WORDS and word != stand_in
            edited = re.sub(rf"\b{word}\b", stand_in, passage)
            assert tail == " ".join(edited.split()[:3])
        else:
            assert "quoting its first three sentences" in instruction
            assert tail == 'Summary: The passage opens: "' + " ".join(passage.split()[:3])


def test_typos_swap_neighbouring_inner_letters():
    rng = editing.random.Random(0)
    text = "Our families deserve better schools and stronger communities in every state"
    typo = editing.with_typos(text, rng, typos=3)
    changed = [(a, b) for a, b in zip(text.split(), typo.split()) if a != b]
    assert len(changed) == 3
    for a, b in changed:
        assert sorted(a) == sorted(b) and a[0] == b[0] and a[-1] == b[-1]
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        assert len(diff) == 2 and diff[1] == diff[0] + 1
    assert typo.split()[:3] == text.split()[:3]


def test_a_corpus_without_long_enough_speeches_is_an_error(tmp_path):
    corpus = tmp_path / "short.txt"
    corpus.write_text("Too short. Far too short.\n")
    out = subprocess.run(
        [sys.executable, SCRIPTS / "editing_prompts.py", "--corpus", corpus, "--words", "50"],
        capture_output=True, text=True)
    assert out.returncode == 1
    assert "no speech of the corpus has 50 words" in out.stderr


def loadtest_report(tps, failed=0, drafted=None, accepted=0):
    run = {"overall": {"output_throughput": tps, "failed": failed}}
    if drafted is not None:
        run["speculation"] = {"by_ratio": {}, "overall": {
            "drafts": 1, "draft_tokens": drafted, "accepted_tokens": accepted,
            "acceptance_rate": accepted / drafted if drafted else None}}
    return {"runs": [run]}


def test_the_report_takes_medians_ratios_and_acceptance_and_writes_its_section(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    # Three rounds of editing c=1 (with: 90, 100, 130; without: 50, 45, 60) and one of SOTU c=1.
    for rnd, w, wo in ((1, 90, 50), (2, 100, 45), (3, 130, 60)):
        (runs / f"r{rnd}-editing-c1-with.json").write_text(
            json.dumps(loadtest_report(w, drafted=100, accepted=80)))
        (runs / f"r{rnd}-editing-c1-without.json").write_text(
            json.dumps(loadtest_report(wo, drafted=0)))
    (runs / "r1-sotu-c1-with.json").write_text(json.dumps(loadtest_report(96, drafted=10)))
    (runs / "r1-sotu-c1-without.json").write_text(
        json.dumps(loadtest_report(100, failed=2, drafted=5)))
    (runs / "notes.txt").write_text("not a run")
    args = Namespace(out=str(tmp_path), command="bash scripts/bench-speculative.sh 3 2 16 2",
                     server="epas serve --speculative ngram", revision="abc", load="1 / 2",
                     seconds="42")
    text = report.report(args)
    rows = {line.split("|")[1].strip() + " " + line.split("|")[2].strip(): line
            for line in text.splitlines() if line.startswith("| ") and "---" not in line}
    # Medians 100 and 50: 2x, which meets ">= 2x"; per-round ratios 1.80, 2.22, 2.17.
    assert "| 100.0 (90-130) | 50.0 (45-60) | 2.00x | 1.80-2.22 | >= 2x | yes | 80.0% (300) |" \
        in rows["editing 1"]
    # 96 / 100 = 0.96: not within 3%; nothing kept of 10 draft tokens.
    assert "| 0.96x |" in rows["SOTU 1"] and "| within 3% | no | 0.0% (10) |" in rows["SOTU 1"]
    assert "SOTU c=1: 5 draft tokens in the runs with" in text
    assert "SOTU c=1: 2 failed requests" in text
    assert "editing c=16: no runs" in text and "SOTU c=16: no runs" in text
    assert "median of 3 interleaved round(s)" in text

    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text("# Benchmarks\n\n## Other\n\nkept\n")
    section = lambda t: report.write_section(bench, "bench-speculative",
                                             "scripts/bench-speculative.sh", t)
    section(text)
    section(text.replace("2.00x", "2.50x"))
    written = bench.read_text()
    assert written.startswith("# Benchmarks\n\n## Other\n\nkept\n\n<!-- bench-speculative:begin")
    assert written.count("bench-speculative:begin") == 1
    assert "2.50x" in written and "2.00x" not in written
    assert written.endswith("<!-- bench-speculative:end -->\n")
