"""Smoke tests of the benchmark runners on tiny models: the rows they write, not the speeds they measure."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import checkpoints
import zoo
from benchmarks import memory, peers, profile, report, scaling, step, torch_softs

TINY_SOFTS = ["seq_len=16", "pred_len=8", "d_model=16", "d_core=8", "d_ff=24", "e_layers=1"]
FAST = ["--steps", "1", "--repeats", "1", "--warmup", "1", "--matmul-n", "256"]

STEP_FIELDS = {
    "model": str,
    "mode": str,
    "batch": int,
    "num_params": int,
    "compile_s": float,
    "step_ms": float,
    "examples_per_s": float,
    "peak_mem_mb": float,
    "xla_mem_mb": float,
    "gflop_per_step": float,
    "gflop_per_s": float,
    "peak_gflop_per_s": float,
    "fraction_of_peak": float,
}


def test_step_runner_writes_a_row_per_model_and_mode(tmp_path):
    out = tmp_path / "step.json"
    argv = ["--models", "mixer_ti2_8:4,softs:2", *FAST, "--json", str(out), "--quiet"]
    argv += [f"--set={s}" for s in TINY_SOFTS]
    step.main(argv)
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert [(r["model"], r["mode"], r["batch"]) for r in rows] == [
        ("mixer_ti2_8", "train", 4),
        ("mixer_ti2_8", "infer", 4),
        ("softs", "train", 2),
        ("softs", "infer", 2),
    ]
    for r in rows:
        for field, kind in STEP_FIELDS.items():
            assert isinstance(r[field], kind), (field, r[field])
        assert r["examples_per_s"] == pytest.approx(r["batch"] / (r["step_ms"] / 1e3))
        assert r["gflop_per_s"] == pytest.approx(r["gflop_per_step"] / (r["step_ms"] / 1e3))
        assert r["fraction_of_peak"] == pytest.approx(r["gflop_per_s"] / r["peak_gflop_per_s"])
        assert r["peak_source"].startswith("measured: 256x256 float32 matmul")
    # The overrides reached the forecaster only (the Mixer has no such fields) and are recorded as given.
    softs_params = rows[2]["num_params"]
    assert softs_params == zoo.count_params(zoo.create_model("softs", **step.parse_overrides(TINY_SOFTS)))
    assert rows[0]["num_params"] == zoo.model_info("mixer_ti2_8").num_params
    # A training step costs more FLOPs than the forward pass alone (backward + optimizer).
    assert rows[0]["gflop_per_step"] > 2 * rows[1]["gflop_per_step"]
    machine = data["machine"]
    assert machine["backend"] == jax.default_backend() and machine["cpu_count"] >= 1
    assert machine["command"].startswith("python -m benchmarks.step --models mixer_ti2_8:4,softs:2")
    assert machine["versions"]["jax"] == jax.__version__
    # docs/benchmarks.md's tables are rendered from these files.
    table = report.report(tmp_path)
    assert machine["command"] in table
    for r in rows:
        assert f"| `{r['model']}` | {r['mode']} | {r['batch']} |" in table


def test_isolated_runs_share_the_parents_peak(tmp_path):
    out = tmp_path / "step.json"
    step.main(["--models", "mixer_ti2_8:4,mixer_ti2_8:2", "--modes", "infer", "--isolate", *FAST, "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [(r["model"], r["batch"]) for r in rows] == [("mixer_ti2_8", 4), ("mixer_ti2_8", 2)]
    assert rows[0]["peak_gflop_per_s"] == rows[1]["peak_gflop_per_s"] > 0
    assert all(r["peak_source"] == "measured: 256x256 float32 matmul" for r in rows)
    given = step.main(["--models", "mixer_ti2_8:4", "--modes", "infer", *FAST, "--peak-gflops", "100", "--quiet"])
    assert given[0]["peak_gflop_per_s"] == pytest.approx(100.0)
    assert given[0]["fraction_of_peak"] == pytest.approx(given[0]["gflop_per_s"] / 100.0)


def test_train_step_is_the_trainer_update():
    """The benchmarked step moves every parameter and lowers the loss on its batch (AdamW really runs). The head
    starts at zero, so the trunk receives gradients from the second step on."""
    bench = step.build("mixer_ti2_8", 4)
    runner = step.Runner(bench, "train")
    runner.allocate()
    before = jax.tree.map(np.asarray, runner.state["params"])
    runner.run(2)
    first = float(runner.last)
    after = jax.tree.map(np.asarray, runner.state["params"])
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), before, after))
    assert all(m > 0 for m in moved)
    runner.run(20)
    assert float(runner.last) < first
    assert int(runner.state["step"]) == 22


def test_peers_rows_have_the_ratio_fields(tmp_path):
    out = tmp_path / "peers_tiny.json"
    argv = ["--models", "mixer_ti2_8:4,softs:2", "--rounds", "1", "--steps", "1", "--warmup", "1"]
    rows = peers.main([*argv, *(f"--set={s}" for s in TINY_SOFTS), "--json", str(out)])
    written = json.loads(out.read_text())["rows"]
    assert len(rows) == len(written) == 4
    for r in written:
        assert {"model", "batch", "mode", "ours_per_s", "peer_per_s", "ratio"} <= set(r)
        assert r["ours_per_s"] > 0 and r["peer_per_s"] > 0
        assert r["ratio"] == pytest.approx(r["ours_per_s"] / r["peer_per_s"])
        assert r["threads"] == torch.get_num_threads()
    assert [(r["model"], r["mode"]) for r in written] == [
        ("mixer_ti2_8", "train"),
        ("mixer_ti2_8", "infer"),
        ("softs", "train"),
        ("softs", "infer"),
    ]
    assert written[0]["overrides"]["approximate_gelu"] is False  # timm's exact GELU on our side
    table = report.report(tmp_path)
    assert all(f"**{r['ratio']:.2f}**" in table for r in written)


def test_report_needs_runner_outputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no benchmark JSON files"):
        report.report(tmp_path)


def test_timm_peer_is_timms_registered_mixer():
    import timm

    for name in ("mixer_s16_224", "mixer_b16_224"):
        ours = peers.timm_peer(name, zoo.create_model(name))
        assert str(ours) == str(timm.create_model(name, pretrained=False))
        assert sum(p.numel() for p in ours.parameters()) == zoo.model_info(name).num_params


@pytest.mark.parametrize("num_time_features", [0, 4])
def test_torch_softs_peer_matches_our_softs_in_evaluation(num_time_features):
    cfg = dict(seq_len=16, pred_len=8, d_model=16, d_core=8, d_ff=24, e_layers=2)
    torch.manual_seed(0)
    peer = torch_softs.TorchSOFTS(**cfg).eval()
    variables = checkpoints.convert(
        "softs", {k: v.numpy() for k, v in peer.state_dict().items()}, enc_in=3, num_time_features=num_time_features
    )
    ours = zoo.create_model("softs", **cfg, enc_in=3, num_time_features=num_time_features)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16, 3)).astype(np.float32) * 3 + 1
    x_mark = rng.standard_normal((2, 16, num_time_features)).astype(np.float32) if num_time_features else None
    with torch.no_grad():
        expected = peer(torch.from_numpy(x), None if x_mark is None else torch.from_numpy(x_mark)).numpy()
    got = ours.apply(variables, jnp.asarray(x), None if x_mark is None else jnp.asarray(x_mark))
    assert expected.shape == (2, 8, 3) and np.abs(expected).max() > 0.1
    np.testing.assert_allclose(np.asarray(got), expected, atol=2e-5, rtol=1e-5)


def test_torch_softs_peer_trains_with_sampled_pooling():
    """Training mode draws the pooled core from the channels (each pooled value is one channel's value)."""
    torch.manual_seed(0)
    star = torch_softs.TorchSTAR(8, 4).train()
    x = torch.randn(3, 5, 8)
    core = star.gen2(torch.nn.functional.gelu(star.gen1(x)))
    seen = []
    star.gen3.register_forward_hook(lambda mod, inp, out: seen.append(inp[0][..., 8:].detach()))
    star(x)
    pooled = seen[0]  # [3, 5, 4]: the same drawn value repeated over the 5 channels
    assert torch.equal(pooled, pooled[:, :1].expand_as(pooled))
    assert all(torch.any(torch.isclose(core[b, :, j], pooled[b, 0, j])) for b in range(3) for j in range(4))


def test_peak_table_and_cost_analysis_helpers():
    assert step.table_peak_flops("NVIDIA H100 80GB HBM3", jnp.bfloat16)[0] == pytest.approx(989.4e12)
    assert step.table_peak_flops("NVIDIA H100 PCIe", jnp.float32)[0] == pytest.approx(378e12)
    assert step.table_peak_flops("NVIDIA A100-SXM4-40GB", jnp.float32)[1] == "table: A100 float32"
    assert step.table_peak_flops("TPU v5 lite", jnp.float32)[0] == pytest.approx(197e12)
    assert step.table_peak_flops("cpu") is None

    class Compiled:
        def __init__(self, cost):
            self.cost = cost

        def cost_analysis(self):
            return self.cost

    assert step.cost_flops(Compiled({"flops": 10.0})) == 10.0
    assert step.cost_flops(Compiled([{"flops": 4.0}, {"flops": 6.0}])) == 10.0
    assert step.cost_flops(Compiled(None)) is None
    f = jax.jit(lambda a, b: a @ b).lower(jnp.ones((8, 16)), jnp.ones((16, 4))).compile()
    assert step.cost_flops(f) == pytest.approx(2 * 8 * 16 * 4, rel=0.1)


def test_command_line_parsing():
    assert step.parse_models("mixer_ti2_8, softs:32", 16) == [("mixer_ti2_8", 16), ("softs", 32)]
    with pytest.raises(ValueError, match="unknown model"):
        step.parse_models("mixer_nope", 16)
    assert step.parse_modes(" infer, train") == ["infer", "train"]
    for bad in ("", "train,eval"):
        with pytest.raises(ValueError, match="--modes must be"):
            step.parse_modes(bad)
    got = step.parse_overrides(["enc_in=321", "dropout=0.1", "use_norm=false", "dtype=bfloat16", "x=a"])
    assert got == {"enc_in": 321, "dropout": 0.1, "use_norm": False, "dtype": jnp.bfloat16, "x": "a"}


def test_memory_runner_arguments_and_child_results(capsys):
    assert memory.parse_runs(" softs_etth1,default") == ["softs_etth1", "default"]
    for bad, match in (("", "names no run"), ("default,nope", "unknown run")):
        with pytest.raises(ValueError, match=match):
            memory.parse_runs(bad)
    with pytest.raises(SystemExit) as exit_info:
        memory.main(["--runs", "nope"])
    assert exit_info.value.code == 2 and "unknown run(s) nope; known: default, softs_etth1" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="usage"):
        memory.main(["--child", "out.json"])
    child = {"imports_mib": 270.0, "compiled_mib": 600.5, "steady_mib": None, "end_mib": 610.0, "compiles": 9}
    row = memory.parse_child(json.dumps({**child, "compiled": ["jit(train_step)"], "exit_code": 0}))
    assert row == {**child, "compiled": ["jit(train_step)"]}
    with pytest.raises(ValueError, match="lacks compiled_mib, compiles"):
        memory.parse_child(json.dumps({"imports_mib": 1.0, "steady_mib": 1.0, "end_mib": 1.0, "compiled": []}))
    table = memory.format_table([{"run": "default", "jax_cache": "cold", "peak_mib": 640.4, **row, "wall_s": 30.0}])
    assert table.splitlines()[1].split() == ["default", "cold", "640", "270", "600", "-", "610", "9", "30.0"]
    with pytest.raises(SystemExit) as exit_info:
        memory.main(["--cache", "hot"])
    assert exit_info.value.code == 2 and "--cache: 'hot'" in capsys.readouterr().err


def test_profile_attributes_step_time_to_kinds_of_operations():
    result = profile.profile("mixer_ti2_8", 8, steps=2, warmup=1)
    kinds = result["kinds"]
    assert set(kinds) == set(profile.KINDS)
    assert kinds["matmul"] > 0 and kinds["elementwise"] > 0 and kinds["reduction"] > 0
    assert result["total_ms"] == pytest.approx(sum(kinds.values()))
    # Every dense layer's forward product is found, attributed to its layer with the block index folded.
    matmuls = {o["op_name"] for o in result["ops"] if o["kind"] == "matmul"}
    for layer in ("token_mixing/Dense_0", "token_mixing/Dense_1", "channel_mixing/Dense_0", "channel_mixing/Dense_1"):
        assert any(f"MixerBlock_*/{layer}/dot_general" in n and "transpose" not in n for n in matmuls), layer
    rows = profile.grouped(result["ops"])
    assert sum(g["count"] for g in rows) == len(result["ops"])
    assert [g["ms"] for g in rows] == sorted((g["ms"] for g in rows), reverse=True)
    assert "matmul" in profile.format_report(result, 5)


def test_profile_classifies_hlo_instructions():
    hlo = """HloModule m

%fused_dot (p0: f32[4,8], p1: f32[8,2]) -> f32[4,2] {
  %p0 = f32[4,8]{1,0} parameter(0)
  %p1 = f32[8,2]{1,0} parameter(1)
  ROOT %dot.1 = f32[4,2]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%fused_move (p0: f32[4,8]) -> f32[8,4] {
  %p0 = f32[4,8]{1,0} parameter(0)
  ROOT %t = f32[8,4]{1,0} transpose(%p0), dimensions={1,0}
}

%fused_pair (p0: f32[4,8]) -> (f32[4,8], f32[4,8]) {
  %p0 = f32[4,8]{1,0} parameter(0)
  %e = f32[4,8]{1,0} exponential(%p0)
  %n = f32[4,8]{1,0} negate(%p0)
  ROOT %tuple = (f32[4,8]{1,0}, f32[4,8]{1,0}) tuple(%e, %n)
}

ENTRY %main (a: f32[4,8], b: f32[8,2]) -> f32[4,2] {
  %a = f32[4,8]{1,0} parameter(0)
  %b = f32[8,2]{1,0} parameter(1)
  %mm = f32[4,2]{1,0} fusion(%a, %b), kind=kCustom, calls=%fused_dot, metadata={op_name="jit(f)/Block_3/Dense_0/dot"}
  %mv = f32[8,4]{1,0} fusion(%a), kind=kLoop, calls=%fused_move
  %pair = (f32[4,8]{1,0}, f32[4,8]{1,0}) fusion(%a), kind=kLoop, calls=%fused_pair
  %r = f32[4]{0} reduce(%a, %b), dimensions={1}, to_apply=%add
  ROOT %out = f32[4,2]{1,0} copy(%mm)
}
"""
    got = profile.classify(hlo)
    assert {k: v["kind"] for k, v in got.items()} == {
        "mm": "matmul",
        "mv": "transpose/copy",
        "pair": "elementwise",
        "r": "reduction",
        "out": "transpose/copy",
    }
    assert got["mm"]["op_name"] == "Block_*/Dense_0/dot" and got["pair"]["shape"].startswith("(f32[4,8]")


def test_scaling_sweeps_write_rows_tables_and_plots(tmp_path):
    # Few points (each is a fresh process): two per sweep, three for the channel sweep's least-squares line.
    argv = ["--vision", "mixer_ti2_8", "--img-sizes", "8,16", "--vision-batch", "2", "--forecasters", "softs"]
    argv += ["--channels", "3,6,12", "--lookback", "16", "--horizon", "8", "--lookbacks", "16,32"]
    argv += ["--lookback-channels", "3", "--forecast-batch", "2", "--steps", "1", "--repeats", "1", "--warmup", "0"]
    rows = scaling.main([*argv, "--json", str(tmp_path / "scaling.json"), "--plots", str(tmp_path)])
    got = [(r["sweep"], r["model"], r["x"]) for r in rows]
    assert got == [
        ("tokens", "mixer_ti2_8", 16),
        ("tokens", "mixer_ti2_8", 64),
        ("channels", "softs", 3),
        ("channels", "softs", 6),
        ("channels", "softs", 12),
        ("lookback", "softs", 16),
        ("lookback", "softs", 32),
    ]
    # The swept setting reached the model: more tokens or channels cost more FLOPs per example.
    for sweep in ("tokens", "channels"):
        flops = [r["gflop_per_example"] for r in rows if r["sweep"] == sweep]
        assert flops == sorted(flops) and flops[0] < flops[-1]
    for name in ("scaling_vision_tokens.png", "scaling_forecast_channels.png", "scaling_forecast_lookback.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = report.report(tmp_path)
    assert "| channels | examples/s |" in table and "x channels (least squares, R^2 = " in table


def test_linear_fit_is_least_squares():
    a, b, r2 = scaling.linear_fit([1, 2, 3, 4], [3.0, 5.0, 7.0, 9.0])
    assert (a, b, r2) == pytest.approx((1.0, 2.0, 1.0))
    x, y = np.arange(10.0), np.array([0.0, 2, 1, 3, 2, 4, 3, 5, 4, 6])
    a, b, r2 = scaling.linear_fit(x, y)
    np.testing.assert_allclose([b, a], np.polyfit(x, y, 1))
    assert 0 < r2 < 1


def test_depthwise_benchmark_checks_both_derivatives_and_rejects_bad_cases(capsys):
    from benchmarks import depthwise

    rows = depthwise.main(["--shapes", "2x9x7x3:5", "--repeats", "1"])
    assert [r["kernel"] for r in rows] == [5] and rows[0]["autodiff_ms"] > 0 and rows[0]["written_out_ms"] > 0
    with pytest.raises(SystemExit) as exit_info:
        depthwise.main(["--shapes", "2x9x7:4"])
    assert exit_info.value.code == 2 and "BATCHxHEIGHTxWIDTHxCHANNELS:K" in capsys.readouterr().err


def test_scan_benchmark_autodiff_baseline_equals_the_scan():
    from benchmarks import scan as bench_scan
    from zoo.layers.scan import selective_scan

    inputs = {k: jnp.asarray(v) for k, v in bench_scan.make_inputs(2, 9, 4, 3).items()}
    np.testing.assert_allclose(
        bench_scan.autodiff_scan(**inputs), selective_scan(**inputs, method="sequential"), rtol=1e-5, atol=1e-6
    )
    rows = bench_scan.main(["--lengths", "9", "--methods", "sequential,autodiff", "--no-torch", "--repeats", "1"])
    assert rows[0]["autodiff_backward_ms"] > 0 and rows[0]["sequential_backward_xla_mb"] >= 0
    with pytest.raises(SystemExit):
        bench_scan.main(["--methods", "fft", "--no-torch"])


def test_scan_benchmark_compares_block_sizes(capsys):
    from benchmarks import scan as bench_scan
    from zoo.layers import scan as scan_lib

    inputs = {k: jnp.asarray(v) for k, v in bench_scan.make_inputs(5, 6, 24, 4).items()}
    default_layout, want = scan_lib._layout(5, 24, 4), scan_lib.selective_scan(**inputs, method="sequential")
    with bench_scan.step_elements(32):  # 8 columns: 3 channel groups, 5 blocks of one row
        assert scan_lib._layout(5, 24, 4) == (1, 8) != default_layout
        got = jax.jit(lambda a: scan_lib.selective_scan(**a, method="sequential"))(inputs)
    assert scan_lib._layout(5, 24, 4) == default_layout
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)

    argv = ["--lengths", "7", "--batch", "3", "--width", "8", "--no-torch", "--repeats", "1"]
    rows = bench_scan.main([*argv, "--methods", "sequential@256,sequential"])
    assert rows[0]["sequential@256_backward_ms"] > 0 and rows[0]["sequential_backward_ms"] > 0
    for bad in ("parallel@256", "sequential@x", "sequential@0"):
        with pytest.raises(SystemExit):
            bench_scan.main([*argv, "--methods", bad])
        assert bad in capsys.readouterr().err


def test_mlp_variants_compute_the_same_step_and_gradients(tmp_path):
    from benchmarks import mlp_variants

    # The `wgrad` product's derivatives are autodiff's of a plain matmul (the layout changes, not the numbers).
    x = jax.random.normal(jax.random.key(0), (3, 5, 8))
    w = jax.random.normal(jax.random.key(1), (8, 6))
    dims = (((2,), (0,)), ((), ()))
    loss = lambda f: lambda a, b: jnp.sum(jnp.sin(f(a, b)))
    want = jax.grad(loss(jnp.matmul), argnums=(0, 1))(x, w)
    for rule in (mlp_variants._matmul, mlp_variants._matmul_jvp):
        product = lambda a, b, r=rule: mlp_variants.wgrad_dot_general(a, b, dims, rule=r)
        got = jax.grad(loss(product), argnums=(0, 1))(x, w)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="forward-mode"):  # why the library does not use the custom VJP
        jax.jvp(lambda b: mlp_variants.wgrad_dot_general(x, b, dims), (w,), (w,))

    out = tmp_path / "variants.json"
    argv = ["--model", "mixer_ti2_8", "--batch", "4", "--rounds", "1", "--steps", "1"]
    rows = mlp_variants.main([*argv, "--gelu-shape", "64,32", "--gemm", "16,8,4", "--json", str(out)])
    steps = [r for r in rows if "variant" in r]
    assert [r["variant"] for r in steps] == list(mlp_variants.VARIANTS)
    np.testing.assert_allclose([r["loss"] for r in steps], steps[0]["loss"], rtol=1e-5)
    assert {r["gelu"] for r in rows if "gelu" in r} == {"erf", "erfc", "tanh"}
    assert all(r["max_abs_error"] < (1e-3 if r["gelu"] == "tanh" else 2e-6) for r in rows if "gelu" in r)
    assert [r["gemm"] for r in rows if "gemm" in r] == [[16, 8, 4]]
    assert json.loads(out.read_text())["rows"] == json.loads(json.dumps(rows))
    with pytest.raises(SystemExit):
        mlp_variants.main(["--variants", "erf,nope"])


def test_scan_benchmark_caps_the_reference_and_plots(tmp_path):
    from benchmarks import scan

    argv = ["--lengths", "8,16", "--methods", "sequential", "--repeats", "1", "--torch-max-length", "8"]
    rows = scan.main([*argv, "--plot", str(tmp_path / "scan.png"), "--json", str(tmp_path / "scan.json")])
    assert "torch_backward_ms" in rows[0] and "torch_backward_ms" not in rows[1]
    assert scan.format_row(rows[1], ["sequential"], True).endswith("| - |")
    assert (tmp_path / "scan.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "scan.json").read_text()) == json.loads(json.dumps(rows))
