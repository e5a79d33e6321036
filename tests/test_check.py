"""`tsq sweep check`: the α k-table and its remedy numbers against hand-computed values, each knob state on
hand-made specs, the lookup of cached self-samples and candidates, the JSON shape and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from objectives.tokensqueeze.check import (
    alpha_remedy,
    alpha_threshold,
    check_alpha,
    check_epsilon,
    check_spec,
    distinct_k_vectors,
    k_vector,
    smallest_n_live,
)
from objectives.tokensqueeze.config import TokenSqueezeSpec as Spec
from tsq.cache import Cache
from tsq.config.space import FloatRange, range_grid
from tsq.data.traces import Response
from tsq.recipe import CheckReport


def make_spec(search: dict, **sections) -> Spec:
    return Spec.model_validate({"name": "t", **sections, "study": {"search": search, "n_trials": 4}})


# -- the k-table (docs/method.md, section 1) -----------------------------------------------------------------
def test_k_rows_by_hand():
    # q-dyn, N = 8, α = 1: (1 − c/8)·c = .875, 1.5, 1.875, 2, 1.875, 1.5, .875 → ceil
    assert k_vector(1.0, 8, "q-dyn") == (1, 2, 2, 2, 2, 2, 1)
    # q-fix, N = 8, α = 0.5: ceil(0.5·c), capped at c
    assert k_vector(0.5, 8, "q-fix") == (1, 1, 2, 2, 3, 3, 4)
    assert k_vector(0.9, 8, "shortest") == (1,) * 7
    # the formula taken literally (min_positives 0): α = 0 gives no positive
    assert k_vector(0.0, 8, "q-dyn", min_positives=0) == (0,) * 7


def test_alpha_grid_at_n8_is_one_row_and_at_n32_several():
    grid = range_grid(FloatRange(low=0.05, high=0.5))
    assert len(grid) == 16 and grid[0] == 0.05 and grid[-1] == 0.5
    assert distinct_k_vectors(grid, 8, "q-dyn") == [(1,) * 7]  # max q·c = αN/4 = 2α ≤ 1
    rows = distinct_k_vectors(grid, 32, "q-dyn")
    assert len(rows) > 2
    # at α = 0.5, N = 32: c = 16 gives 0.5·0.5·16 = 4 exactly, the largest k
    assert max(rows[-1]) == 4 and rows[0] == (1,) * 31


def test_remedy_numbers():
    # k = 2 needs max_c α(1 − c/N)c > 1: at α = 0.5, N = 9 (c = 4: 0.5·5/9·4 = 1.11); N = 8 gives exactly 1
    assert smallest_n_live(0.05, 0.5, "q-dyn", start=9) == 9
    # at α = 0.2 (vs 0.05, still k = 1 there): N = 21 (c = 10: 0.2·11/21·10 = 1.048); N = 20 gives 1.0
    assert smallest_n_live(0.05, 0.2, "q-dyn", start=9) == 21
    assert alpha_threshold(0.5, 8, "q-dyn") == pytest.approx(0.5)  # c = 4: k grows once α·2 > 1
    assert alpha_threshold(0.2, 8, "q-fix") == pytest.approx(0.2)  # c = 5 at k = 1: α·5 > 1
    assert alpha_threshold(0.5, 8, "shortest") is None
    text = alpha_remedy(0.05, 0.5, 8, "q-dyn")
    assert (
        text == "raise sampling.n to >= 9 (then α > 0.45 moves k; α = 0.2 needs >= 21) or the range above 0.5"
    )


# -- states, hand-made specs ---------------------------------------------------------------------------------
def test_alpha_inert_at_n8_with_the_remedy_line():
    spec = make_spec({"alpha": {"low": 0.05, "high": 0.5}}, sampling={"n": 8})
    found = check_spec(spec)["alpha"]
    assert (found.state, found.live, found.distinct) == ("inert", False, 1)
    assert found.reason.startswith(
        "every value in [0.05, 0.5] selects k = 1 at sampling.n = 8; raise sampling.n to >= 9"
    )
    assert "or the range above 0.5" in found.reason


def test_alpha_live_at_n32_and_moot_under_shortest():
    found = check_spec(make_spec({"alpha": {"low": 0.05, "high": 0.5}}, sampling={"n": 32}))["alpha"]
    assert found.state == "live" and found.live is True and found.distinct > 2
    shortest = make_spec({"alpha": {"low": 0.05, "high": 0.5}}, selection={"variant": "shortest"})
    assert check_spec(shortest)["alpha"].state == "moot"
    # a categorical variant: α is live under q-fix, and the line says where it is moot
    mixed = make_spec(
        {
            "alpha": {"low": 0.05, "high": 0.5},
            "selection_variant": {"type": "categorical", "choices": ["shortest", "q-fix"]},
        },
        sampling={"n": 8},
    )
    alpha = check_spec(mixed)["alpha"]
    assert alpha.state == "live" and "moot under shortest" in alpha.reason


def test_selection_variants_that_coincide():
    choices = {"type": "categorical", "choices": ["shortest", "q-fix", "q-dyn", "q-dyn-extra-neg"]}
    found = check_spec(make_spec({"selection_variant": choices, "alpha": 0.2}, sampling={"n": 8}))
    variant = found["selection_variant"]
    # q-dyn at α = 0.2, N = 8 is `shortest`; q-fix (k = 2 at c ≥ 6) and the extra negatives differ
    assert variant.state == "live" and variant.distinct == 3
    assert any("shortest = q-dyn" in w for w in variant.warnings)
    two = {"type": "categorical", "choices": ["shortest", "q-dyn"]}
    assert (
        check_spec(make_spec({"selection_variant": two, "alpha": 0.2}, sampling={"n": 8}))[
            "selection_variant"
        ].state
        == "inert"
    )
    assert (
        check_spec(make_spec({"selection_variant": two, "alpha": 0.2}, sampling={"n": 32}))[
            "selection_variant"
        ].state
        == "live"
    )


@pytest.mark.parametrize(
    ("loss", "knob", "state"),
    [
        ("dpo", "lambda", "moot"),
        ("dpo", "eta", "moot"),
        ("sft", "lambda", "moot"),
        ("sft", "eta", "moot"),  # SFT alone has weight 1, not η
        ("sft", "beta", "moot"),
        ("dpo+sft", "lambda", "moot"),
        ("dpo+sft", "eta", "live"),
        ("dpo-l+sft", "lambda", "live"),
        ("dpo", "beta", "live"),
        ("dpo", "lr", "live"),
    ],
)
def test_moot_by_loss(loss, knob, state):
    rng = {"low": 0.1, "high": 2.0} if knob != "lr" else {"low": 1e-4, "high": 1e-3, "log": True}
    found = check_spec(make_spec({knob: rng}, training={"loss": loss}))[knob]
    assert found.state == state
    assert found.live is (state == "live")


def test_moot_only_under_every_loss_the_study_proposes():
    some = {"type": "categorical", "choices": ["dpo", "dpo-l+sft"]}
    lam = check_spec(make_spec({"lambda": {"low": 0.0, "high": 2.0}, "loss": some}))["lambda"]
    assert lam.state == "live" and "moot under dpo" in lam.reason
    none = {"type": "categorical", "choices": ["dpo", "sft"]}
    lam = check_spec(make_spec({"lambda": {"low": 0.0, "high": 2.0}, "loss": none}))["lambda"]
    assert lam.state == "moot" and "dpo/sft" in lam.reason
    fixed = check_spec(make_spec({"eta": {"low": 0.0, "high": 1.0}, "loss": "dpo"}))["eta"]
    assert fixed.state == "moot"  # the loss fixed in study.search wins over training.loss


def test_epsilon_moot_unknown_and_single_values():
    eps = {"low": 0.001, "high": 0.05, "log": True}
    assert check_spec(make_spec({"epsilon": eps}, refinement={"enabled": False}))["epsilon"].state == "moot"
    assert check_spec(make_spec({"epsilon": eps, "refinement": "off"}))["epsilon"].state == "moot"
    unknown = check_spec(make_spec({"epsilon": eps}))["epsilon"]
    assert (unknown.state, unknown.live, unknown.distinct) == ("unknown", None, None)
    one = {"type": "categorical", "choices": ["dpo"]}
    assert check_spec(make_spec({"loss": one}))["loss"].state == "inert"
    assert check_spec(make_spec({"lambda": {"low": 1.0, "high": 1.0}}))["lambda"].state == "inert"
    assert check_spec(make_spec({"lora_r": {"type": "int", "low": 4, "high": 16}}))["lora_r"].state == "live"


def _trace(kls: list[list[float]]):
    from tsq.method.refinement import Candidate, StepCandidates, TraceCandidates

    steps = tuple(
        StepCandidates(
            original=f"step {i} long original",
            n_tokens=10,
            refinable=True,
            candidates=tuple(Candidate(f"s{i} rewrite {j}", 5 - j, kl) for j, kl in enumerate(step)),
        )
        for i, step in enumerate(kls)
    )
    return TraceCandidates(head="", steps=steps, tail="")


def test_epsilon_from_candidates():
    traces = [_trace([[0.06, 0.16], []]), _trace([[0.3]])]  # 3 steps, rewrites at KL 0.06, 0.16, 0.3
    spec = make_spec({"epsilon": {"low": 0.01, "high": 0.05, "log": True}})
    below = check_epsilon(spec, FloatRange(low=0.01, high=0.05, log=True), traces, "")
    assert below.state == "inert" and below.distinct == 1
    assert "rewrites 0 of 3 steps (0%)" in below.reason and "smallest candidate KL is 0.06" in below.reason
    across = check_epsilon(spec, FloatRange(low=0.01, high=0.5, log=True), traces, "")
    # ε passes 0.06 (step 0: rewrite 0), 0.16 (rewrite 1, shorter), 0.3 (trace 2): 4 refinements
    assert across.state == "live" and across.distinct == 4
    assert "2 (67%) at ε = 0.5" in across.reason


def test_epsilon_below_the_noise_floor_warns():
    from tsq.engines.refine import kl_noise_floor

    floor = kl_noise_floor("bfloat16")
    spec = make_spec({"epsilon": {"low": floor / 10, "high": 0.05, "log": True}}, model={"dtype": "bfloat16"})
    assert any("noise floor" in w for w in check_spec(spec)["epsilon"].warnings)
    spec = make_spec({"epsilon": {"low": floor * 10, "high": 0.05, "log": True}}, model={"dtype": "bfloat16"})
    assert not check_spec(spec)["epsilon"].warnings


def test_json_shape():
    spec = make_spec(
        {
            "alpha": {"low": 0.05, "high": 0.5},
            "epsilon": {"low": 0.001, "high": 0.05, "log": True},
            "lambda": {"low": 0.0, "high": 2.0},
            "eta": 0.5,
        },
        training={"loss": "dpo+sft"},
    )
    out = CheckReport(check_spec(spec)).to_json()
    assert list(out) == ["knobs"] and list(out["knobs"]) == ["alpha", "epsilon", "lambda"]  # searched only
    for entry in out["knobs"].values():
        assert {"state", "live", "distinct", "reason"} <= set(entry)
    assert out["knobs"]["alpha"]["state"] == "inert" and out["knobs"]["alpha"]["live"] is False
    assert out["knobs"]["alpha"]["distinct"] == 1
    assert out["knobs"]["epsilon"]["live"] is None and out["knobs"]["lambda"]["state"] == "moot"
    json.dumps(out)


# -- the cache: self-samples and candidates under the keys the pipeline uses ---------------------------------
def _tiny_spec(search: dict, n: int = 8, train: int = 2) -> Spec:
    return make_spec(
        search,
        model={"path": "tiny", "tiny_variant": "test"},
        data={"train": {"n": train}, "eval": {"n": 2}},
        sampling={"n": n, "max_new_tokens": 16},
        refinement={"k": 2, "window": 4, "max_step_tokens": 8},
    )


def _put_samples(spec: Spec, cache: Cache, model_dir: Path, samples: dict[str, list[Response]]) -> dict:
    from dataclasses import asdict

    from tsq.data.formatting import format_prompt
    from tsq.data.loading import load_problem_set
    from tsq.engines.models import load_tokenizer
    from tsq.engines.sample import STAGE, samples_key, sampling_settings

    problems = load_problem_set(spec.data, "train")
    tok = load_tokenizer(model_dir)
    prompts = {p.id: format_prompt(tok, p) for p in problems.problems}
    key = samples_key(model_dir, problems, list(prompts.values()), sampling_settings(spec.sampling), "hf")
    ids = [p.id for p in problems.problems]
    cache.write_bytes(
        STAGE,
        key,
        json.dumps({ids[i]: [asdict(r) for r in rs] for i, rs in enumerate(samples.values())}).encode(),
    )
    return {ids[i]: p for i, p in enumerate(prompts.values())}


def test_alpha_on_cached_samples(tiny_model_dir: Path, tmp_path: Path):
    cache = Cache(tmp_path / "cache")
    # c = 4 of N = 8: q·c = α·2, so k = 1 for α ≤ 0.5 and k = 2 above; incorrect responses are the longest
    lengths = [10, 11, 12, 13, 20, 21, 22, 23]
    rs = [Response(f"r{i}", n, i < 4, "stop") for i, n in enumerate(lengths)]
    all_correct = [Response(f"a{i}", 5, True, "stop") for i in range(8)]  # p = 1: no pair at any α
    spec = _tiny_spec({"alpha": {"low": 0.05, "high": 1.0}})
    _put_samples(spec, cache, tiny_model_dir, {"p0": rs, "p1": all_correct})
    found = check_spec(spec, cache)["alpha"]
    assert found.state == "live" and found.distinct == 2, found.reason
    assert "cached self-samples (2 problems x 8)" in found.reason
    narrow = _tiny_spec({"alpha": {"low": 0.05, "high": 0.5}})
    found = check_spec(narrow, cache)["alpha"]
    assert found.state == "inert" and "the same 4 pairs" in found.reason, found.reason


def test_samples_the_sampler_cached_are_found(tiny_model_dir: Path, tmp_path: Path):
    """The real sampler writes, the check reads: the key is shared, not re-derived."""
    from tsq.data.loading import load_problem_set
    from tsq.engines.generation import backend_from_spec
    from tsq.engines.sample import sample_responses, sampling_settings

    cache = Cache(tmp_path / "cache")
    spec = _tiny_spec({"alpha": {"low": 0.05, "high": 1.0}}, n=4, train=2)
    assert "no cached self-samples" in check_spec(spec, cache)["alpha"].reason
    with backend_from_spec(spec, tiny_model_dir, progress=False) as backend:
        sample_responses(
            backend,
            tiny_model_dir,
            load_problem_set(spec.data, "train"),
            sampling_settings(spec.sampling),
            cache,
        )
    assert "cached self-samples (2 problems x 4)" in check_spec(spec, cache)["alpha"].reason


def test_epsilon_reads_cached_candidates(tiny_model_dir: Path, tmp_path: Path):
    from tsq.engines.candidate_store import CACHE_STAGE, candidates_key
    from tsq.engines.models import model_fingerprint

    cache = Cache(tmp_path / "cache")
    rs = [Response(f"r{i}", n, i < 4, "stop") for i, n in enumerate([10, 11, 12, 13, 20, 21, 22, 23])]
    spec = _tiny_spec(
        {"alpha": {"low": 0.05, "high": 0.5}, "epsilon": {"low": 0.01, "high": 0.05, "log": True}}
    )
    prompts = _put_samples(spec, cache, tiny_model_dir, {"p0": rs, "p1": rs})
    assert check_spec(spec, cache)["epsilon"].state == "unknown"
    # the positive at α = 0.5 is the shortest correct response of each problem ("r0")
    for prompt in prompts.values():
        key = candidates_key(
            model_fingerprint(tiny_model_dir), "torch.float32", "hf", prompt, "r0", spec.refinement
        )
        cache.write_bytes(CACHE_STAGE, key, json.dumps(_trace([[0.06]]).to_json()).encode())
    found = check_spec(spec, cache)["epsilon"]
    assert found.state == "inert" and "rewrites 0 of 2 steps" in found.reason, found.reason


# -- the CLI -------------------------------------------------------------------------------------------------
def _cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TSQ_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "tsq", "sweep", "check", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_cli_text_json_and_bad_spec(tmp_path: Path):
    spec = {
        "name": "chk",
        "sampling": {"n": 8},
        "training": {"loss": "dpo"},
        "study": {"search": {"alpha": {"low": 0.05, "high": 0.5}, "lambda": {"low": 0.0, "high": 2.0}}},
    }
    path = tmp_path / "chk.yaml"
    path.write_text(yaml.safe_dump(spec))
    text = _cli(str(path), home=tmp_path / "home")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.strip().splitlines()
    assert lines[0].startswith("alpha: inert: every value in [0.05, 0.5] selects k = 1 at sampling.n = 8")
    assert lines[1].startswith("lambda: moot:")
    out = _cli(str(path), "--json", home=tmp_path / "home")
    assert out.returncode == 0
    knobs = json.loads(out.stdout)["knobs"]
    assert knobs["alpha"]["live"] is False and knobs["lambda"]["state"] == "moot"
    path.write_text("name: x\nstudy: {search: {alpha: {low: 0.5, high: 0.1}}}\n")
    bad = _cli(str(path), home=tmp_path / "home")
    assert bad.returncode == 2 and bad.stdout == "" and len(bad.stderr.strip().splitlines()) == 1
    assert "study.search.alpha.low" in bad.stderr


def test_alpha_on_samples_where_no_problem_sits_at_a_moving_c():
    # every problem has c = 1 of 8 correct: k = 1 there at any α, though the k-table moves at c = 2..6
    one_right = [Response(f"r{i}", 10 + i, i == 0, "stop") for i in range(8)]
    spec = make_spec({"alpha": {"low": 0.05, "high": 1.0}}, sampling={"n": 8})
    found = check_alpha(spec, FloatRange(low=0.05, high=1.0), {"p0": one_right, "p1": one_right})
    assert found.state == "inert" and found.distinct == 1
    assert "the same 14 pairs" in found.reason  # 7 longer incorrect per problem, max_pairs 64
    assert "k changes only at c = 2, 3, 4, 5, 6 correct of 8" in found.reason
    # half right: k = 2 once α > 0.5, so the pairs differ
    half = [Response(f"r{i}", 10 + i, i < 4, "stop") for i in range(8)]
    found = check_alpha(spec, FloatRange(low=0.05, high=1.0), {"p0": half})
    assert found.state == "live" and found.distinct == 2
    assert "(4 pairs at α = 0.05, 8 at α = 1)" in found.reason
