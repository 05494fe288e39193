"""`alignkit pipeline` (make pipeline), the skeleton: each stage's state (reuse a finished run, resume an interrupted
one, train a missing one), the methods start from run:sft-smol, and a failed stage stops the rest."""

import json

import pytest

import alignkit.cli
from alignkit.cli import main


def test_pipeline_reuses_resumes_trains_and_stops_at_a_failed_stage(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    (runs / "sft-smol").mkdir(parents=True)
    (runs / "sft-smol" / "run.json").write_text(json.dumps({"status": "finished"}))
    (runs / "rm-smol.partial").mkdir()
    assert main(["pipeline", "--runs-root", str(runs), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "sft-smol: reuse\n" in out
    assert f"rm-smol: resume: alignkit train rm-smol output_dir={runs / 'rm-smol'} --no-eval --resume" in out
    for recipe in ("dpo-smol", "kto-smol", "simpo-smol", "grpo-smol-adaptive-kl"):
        assert f"{recipe}: train: alignkit train {recipe} model_name_or_path=run:sft-smol" in out, recipe
    assert "ppo-smol-chat: train: alignkit train ppo-smol-chat output_dir=" in out  # its recipe starts from SFT
    assert f"report: alignkit eval smollm2-135m-instruct --compare {runs / 'sft-smol'} {runs / 'dpo-smol'}" in out
    assert f"report: alignkit eval {runs / 'sft-smol'} --compare {runs / 'dpo-smol'}" in out  # methods vs SFT
    assert f"--out {runs / 'vs-sft'}" in out and f"--out {runs / 'vs-base'}" in out

    calls = []
    monkeypatch.setattr(alignkit.cli, "main", lambda argv: calls.append(argv) or (2 if argv[1] == "kto-smol" else 0))
    assert main(["pipeline", "--runs-root", str(runs), "--lanes", "1"]) == 2
    assert [argv[1] for argv in calls] == ["rm-smol", "dpo-smol", "kto-smol"]  # sft reused; stopped at the failure
    assert "stage kto-smol failed (exit 2); rerun to continue from it" in capsys.readouterr().out


def test_pipeline_ends_with_one_report_of_every_stage(tmp_path, monkeypatch, capsys):
    from test_pipeline_report import _reports

    runs = tmp_path / "runs"
    vs_base, vs_sft = _reports()

    def fake(argv):
        out = argv[argv.index("--out") + 1] if "--out" in argv else None
        if argv[0] == "train":
            run_dir = runs / argv[1]
            run_dir.mkdir(parents=True)
            (run_dir / "run.json").write_text(
                json.dumps(
                    {"status": "finished", "train_seconds": 12.0, "global_step": 3, "model_name_or_path": "smollm2"}
                )
            )
        else:
            rep = vs_base if out.endswith("vs-base") else vs_sft
            (tmp_path / "runs" / out.rsplit("/", 1)[1]).mkdir(parents=True)
            (runs / out.rsplit("/", 1)[1] / "report.json").write_text(json.dumps(rep))
        return 0

    monkeypatch.setattr(alignkit.cli, "main", fake)
    assert main(["pipeline", "--runs-root", str(runs), "--lanes", "1"]) == 0
    text = (runs / "report.md").read_text()
    assert "- `dpo-smol`: trained in 12 s, 3 steps, from run:sft-smol" in text
    assert "- `sft-smol`: trained in 12 s, 3 steps, from smollm2" in text  # the recipe's own start
    assert f"report: {runs / 'report.md'}" in capsys.readouterr().out


def _finished_run(run_dir, **meta):
    run_dir.mkdir(parents=True)
    info = {"status": "finished", "train_seconds": 12.0, "global_step": 3, "model_name_or_path": "smollm2", **meta}
    (run_dir / "run.json").write_text(json.dumps(info))


class _Done:
    """A child process that has already exited with ``code``."""

    def __init__(self, code=0):
        self.code = code

    def poll(self):
        return self.code

    def terminate(self):
        pass

    def wait(self):
        return self.code


def test_pipeline_in_lanes_trains_judge_and_stages_then_reports(tmp_path, monkeypatch, capsys):
    """Two lanes: every missing stage and the suite's judge are trained as child jobs, each stage after what it needs,
    the eval warm-ups go last; then the two comparisons run in this process and the report lists every stage."""
    from test_pipeline_report import _reports

    import alignkit.models
    import alignkit.stage_lanes
    import alignkit.stages

    runs = tmp_path / "runs"
    _finished_run(runs / "sft-smol")  # reused: no job
    vs_base, vs_sft = _reports()

    monkeypatch.setattr(alignkit.models, "resolve_model_path", lambda name, twin=None: f"/models/{name}")
    spawned, evals = [], []

    def spawn(job, log_dir, threads):
        finished = {name for name, _ in spawned}
        assert set(job.after) <= finished | {"sft-smol"}, (job.name, job.after, finished)
        spawned.append((job.name, job.argv))
        if job.argv[0] == "train":
            _finished_run(runs / job.name)
        return _Done(1 if job.name == "warm-kto-smol" else 0)  # a failed warm-up is only reported

    def fake_main(argv):
        out = argv[argv.index("--out") + 1]
        evals.append(argv)
        (runs / out.rsplit("/", 1)[1]).mkdir(parents=True)
        (runs / out.rsplit("/", 1)[1] / "report.json").write_text(json.dumps(vs_base if "vs-base" in out else vs_sft))
        return 0

    monkeypatch.setattr(alignkit.stage_lanes, "_spawn", spawn)
    monkeypatch.setattr(alignkit.stage_lanes.time, "sleep", lambda s: None)
    monkeypatch.setattr(alignkit.cli, "main", fake_main)
    assert main(["pipeline", "--runs-root", str(runs), "--lanes", "2"]) == 0
    names = [name for name, _ in spawned]
    trained = [name for name, argv in spawned if argv[0] == "train"]
    assert trained == ["rm-smol", "rm-judge-smol", "ppo-smol-chat", "dpo-smol", "grpo-smol-adaptive-kl", "kto-smol",
                       "simpo-smol"]  # fmt: skip
    compared = [s.recipe for s in alignkit.stages.STAGES if s.recipe != "rm-smol"]  # the reward model is no policy
    assert names[len(trained) :] == ["warm-base"] + [f"warm-{name}" for name in compared]
    warm_dpo = dict(spawned)["warm-dpo-smol"]
    assert warm_dpo[:3] == ("-m", "alignkit.eval.baseline_warmup", str(runs / "dpo-smol"))
    # replies' perplexity under the comparisons' reference (the base model), not under each method's SFT start
    assert warm_dpo[3:5] == ("--reference", "/models/smollm2-135m-instruct")
    # the comparisons cut the suite to the smallest max_eval_samples of the compared runs: so do warm-ups
    assert warm_dpo[-2:] == ("--max-eval-samples", "64") == dict(spawned)["warm-base"][-2:]
    assert dict(spawned)["warm-base"][2] == "/models/smollm2-135m-instruct"
    assert [argv[argv.index("--out") + 1] for argv in evals] == [str(runs / "vs-base"), str(runs / "vs-sft")]
    out = capsys.readouterr().out
    assert "warm-kto-smol failed (exit 1), not needed" in out
    text = (runs / "report.md").read_text()
    assert "- `dpo-smol`: trained in 12 s, 3 steps, from run:sft-smol" in text
    assert "- `sft-smol`: reused (trained in 12 s earlier)" in text


def test_pipeline_in_lanes_stops_at_a_failed_stage_and_names_its_log(tmp_path, monkeypatch, capsys):
    import alignkit.models
    import alignkit.stage_lanes

    runs = tmp_path / "runs"
    monkeypatch.setattr(alignkit.models, "resolve_model_path", lambda name, twin=None: f"/models/{name}")

    def spawn(job, log_dir, threads):
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / f"{job.name}.log").write_text("step 1\nalignkit: sft-smol.yaml: learning_rate: must be > 0\n")
        return _Done(2 if job.name == "sft-smol" else 0)

    monkeypatch.setattr(alignkit.stage_lanes, "_spawn", spawn)
    monkeypatch.setattr(alignkit.stage_lanes.time, "sleep", lambda s: None)
    monkeypatch.setattr(alignkit.cli, "main", lambda argv: pytest.fail(f"no eval after a failed stage: {argv}"))
    assert main(["pipeline", "--runs-root", str(runs), "--lanes", "2"]) == 2
    out = capsys.readouterr().out
    assert "stage sft-smol failed (exit 2); rerun to continue from it" in out
    assert f"Its log: {runs / '.lanes' / 'sft-smol.log'} (last line: alignkit: sft-smol.yaml: learning_rate" in out


def test_stage_dependencies_cover_what_each_recipe_needs():
    """``Stage.after`` names every stage whose run a stage's recipe needs (its start, the runs its card samples or
    scores with, its reward models), and orders stages that build the same card, so two lanes never build it twice."""
    from alignkit.data.cards import load_card
    from alignkit.pipeline import dataset_runs
    from alignkit.recipe import load_recipe
    from alignkit.run_start import start_run_name
    from alignkit.stages import LANE_ORDER, STAGES
    from alignkit.train import reward_model_needs

    names = {stage.recipe for stage in STAGES}
    assert set(LANE_ORDER) == names
    cards = {}
    for stage in STAGES:
        recipe = load_recipe(stage.recipe, [*stage.overrides, f"output_dir=runs/pipeline/{stage.recipe}"])
        card = load_card(recipe.args.dataset)
        needs = {need.name for need in dataset_runs(card) + reward_model_needs(recipe)}
        start = start_run_name(recipe.model_args.model_name_or_path)
        needs |= {start} if start else set()
        assert needs & names <= set(stage.after), (stage.recipe, needs, stage.after)
        cards[stage.recipe] = {card.name, card.source.get("args", {}).get("pairs")} - {None}
    position = {name: i for i, name in enumerate(LANE_ORDER)}
    for a in STAGES:
        for b in STAGES:
            shared = cards[a.recipe] & cards[b.recipe]
            if a.recipe != b.recipe and shared and position[a.recipe] < position[b.recipe]:
                # one waits for the other, or both wait for a stage that builds the shared card first
                builders = {c for c in set(a.after) & set(b.after) if cards[c] >= shared}
                assert a.recipe in b.after or builders, f"{b.recipe} and {a.recipe} could build {shared} at once"
            if b.recipe in a.after:
                assert position[b.recipe] < position[a.recipe], f"{a.recipe} is listed before {b.recipe}, its need"


def test_pipeline_comparisons_judge_on_every_chat_prompt_of_the_suite():
    """The comparisons cut the suite to the smallest ``max_eval_samples`` of the compared runs; no stage may cut the
    report below the smol suite's chat prompts (issue 12 asks >= 64), as grpo's own recipe cap of 32 once did."""
    from alignkit.eval.suite import load_suite
    from alignkit.recipe import load_recipe
    from alignkit.stages import JUDGED_PROMPTS, STAGES, comparison_cap

    chat = next(ps for ps in load_suite("smol").prompt_sets if ps.name == "chat")
    assert comparison_cap() == JUDGED_PROMPTS == chat.max_prompts >= 64
    grpo = next(s for s in STAGES if s.recipe == "grpo-smol-adaptive-kl")
    assert load_recipe(grpo.recipe, ["output_dir=/tmp/x"]).args.max_eval_samples < JUDGED_PROMPTS  # why it is set
