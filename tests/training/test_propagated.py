"""The propagated objective (training/objectives/propagated.py): chain states that carry an unbiased estimate of their own score.

Checked in float64 against independent computations: the change-of-variables score with the exact
Jacobian and log-determinant (autograd), the closed form of wrapped Brownian motion, and the exact
marginal of the chain on the 2-torus (``ChainMarginal``).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from kuramoto_diffusion.codecs import ImageCodec
from kuramoto_diffusion.config import TrainConfig
from kuramoto_diffusion.data.torus import open_torus_source
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.metrics.chain_marginal import ChainMarginal
from kuramoto_diffusion.processes import (
    EuclideanConfig,
    EuclideanVPProcess,
    ForwardProcess,
    KuramotoConfig,
    KuramotoProcess,
    PhaseAmplitudeConfig,
    PhaseAmplitudeProcess,
)
from kuramoto_diffusion.training import ChainPool, Trainer, resimulate_states
from kuramoto_diffusion.training.chain_pool import resimulate_states_and_scores
from kuramoto_diffusion.training.objectives import (
    compile_propagated_steps,
    kernel_draw,
    propagated_chain_step,
    propagated_draw,
    propagation_schedule,
    resolve_objective,
)
from kuramoto_diffusion.training.objectives import propagated as propagated_module
from test_objectives import COUPLING_CONFIGS, COUPLING_IDS, anchor_of, window_of
from test_training import FixedImages, run_config


def random_phases(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return (torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1) * 3.1


def exact_propagated_score(process: KuramotoProcess, x: torch.Tensor, t: int, estimate: torch.Tensor) -> torch.Tensor:
    """M⁻ᵀ (e − ∇ log |det M|) with the full Jacobian M = I + ∂drift/∂x and the exact log-determinant (one example)."""
    size = x.numel()

    def step_jacobian(state: torch.Tensor) -> torch.Tensor:
        drift = lambda y: process.drift(y.reshape(x.shape), t).reshape(-1)  # noqa: E731
        return torch.eye(size, dtype=x.dtype) + torch.autograd.functional.jacobian(drift, state, create_graph=True)

    state = x.reshape(-1).clone().requires_grad_(True)
    jacobian = step_jacobian(state)
    (log_det_gradient,) = torch.autograd.grad(torch.linalg.slogdet(jacobian)[1], state)
    right = estimate.reshape(-1) - log_det_gradient
    return torch.linalg.solve(jacobian.detach().T, right).reshape(x.shape)


@pytest.mark.parametrize("coupling", ["global", "local"])
def test_propagate_score_is_the_change_of_variables_score_to_second_order(coupling):
    # The exact score of u = x + drift(x) is M⁻ᵀ(e − ∇ log|det M|). propagate_score takes log|det M| to first
    # order in the drift, so its error must shrink like K²: halving the coupling quarters it.
    x = random_phases((1, 1, 4, 5), seed=1)
    estimate = random_phases((1, 1, 4, 5), seed=2)
    errors = []
    for scale in (1.0, 0.5):
        settings = dict(coupling_range=(3e-5 * scale, 0.03 * scale))
        process = KuramotoProcess(coupling=coupling, neighbourhood=3, **settings)
        exact = exact_propagated_score(process, x, 90, estimate)
        approximate = process.propagate_score(x, 90, estimate)
        errors.append(float((approximate - exact).norm() / exact.norm()))
    assert errors[0] < 2e-3
    assert 3.0 < errors[0] / errors[1] < 5.0


@pytest.mark.parametrize("config", COUPLING_CONFIGS, ids=COUPLING_IDS)
def test_the_closed_form_propagation_equals_the_autograd_definition(config):
    process = KuramotoProcess(config)
    x, estimate = random_phases((3, 2, 6, 7), seed=6), random_phases((3, 2, 6, 7), seed=7)
    t = torch.tensor([3, 50, 99])
    generic = ForwardProcess.propagate_score(process, x, t, estimate)
    torch.testing.assert_close(process.propagate_score(x, t, estimate), generic, rtol=0, atol=1e-13)
    # average_transpose is the transpose of the averaging matrix (reflect padding makes it non-symmetric).
    field = random_phases((1, 1, 6, 7), seed=8)
    transpose = torch.autograd.functional.jacobian(
        lambda v: process.average_transpose(v.reshape(field.shape)).expand_as(field).reshape(-1), field.reshape(-1)
    )
    average = torch.autograd.functional.jacobian(
        lambda v: _average(process, v.reshape(field.shape)).expand_as(field).reshape(-1), field.reshape(-1)
    )
    torch.testing.assert_close(transpose, average.T, rtol=0, atol=1e-14)
    if config.coupling == "local" and config.padding == "reflect":
        assert not torch.allclose(average, average.T)


def _average(process: KuramotoProcess, field: torch.Tensor) -> torch.Tensor:
    """The neighbourhood average A·field (``neighbourhood_mean`` averages cos θ and sin θ with it)."""
    if process.config.coupling == "global":
        return field.mean(dim=tuple(range(1, field.dim())), keepdim=True)
    return process._local_average(field)


def test_more_inverse_rounds_converge_to_the_first_order_log_determinant():
    # With many rounds only the log-determinant's first-order term differs from the exact solve.
    process = KuramotoProcess(coupling="local", neighbourhood=3)
    x, estimate = random_phases((1, 1, 4, 4), seed=3), random_phases((1, 1, 4, 4), seed=4)
    two, many = process.propagate_score(x, 80, estimate), process.propagate_score(x, 80, estimate, inverse_terms=30)
    state = x.clone().requires_grad_(True)
    (first_order,) = torch.autograd.grad(process.drift_derivative(state, 80).sum(), state)
    jacobian = torch.eye(16, dtype=torch.float64) + torch.autograd.functional.jacobian(
        lambda y: process.drift(y.reshape(x.shape), 80).reshape(-1), x.reshape(-1)
    )
    solved = torch.linalg.solve(jacobian.T, (estimate - first_order).reshape(-1)).reshape(x.shape)
    torch.testing.assert_close(many, solved, rtol=0, atol=1e-12)
    assert float((two - solved).abs().max()) < 1e-4 * float(solved.abs().max())  # two rounds: O(|KJ|³)


def test_without_drift_the_estimate_is_the_data_anchored_score_of_brownian_motion():
    # Coupling and reference pull 0: the chain is wrapped Brownian motion, M = I and the bound a_t = 0, so the
    # weights β_s = V_s / V_{s+1} (V the accumulated σ²) make e_t = −(Σ_k σ_k z_k) / V_t exactly: the score of
    # x_t given x_0, DDPM's target.
    process = KuramotoProcess(coupling="global", steps=30, coupling_range=(0.0, 0.0), ref_strength=0.0)
    generator = torch.Generator().manual_seed(0)
    x0 = random_phases((64, 3), seed=5)
    x, estimate, displacement = x0, torch.zeros_like(x0), torch.zeros_like(x0)
    for step in range(30):
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float64)
        x, estimate, scale = propagated_draw(process, x, torch.full((64,), step), estimate, noise)
        displacement = displacement + float(process.transition_scale(step)) * noise
        accumulated = float(process.noise_variance(0, step + 1))
        # (up to the wrapped normal's images at ±2π in the one-step score, < 1e-8 at these σ)
        torch.testing.assert_close(estimate, -displacement / accumulated, rtol=0, atol=1e-7)
        torch.testing.assert_close(scale, torch.full((64, 1), math.sqrt(accumulated), dtype=torch.float64))
        torch.testing.assert_close(torch.cos(x - x0), torch.cos(displacement), rtol=0, atol=1e-12)


@pytest.fixture(scope="module")
def paper_chain() -> ChainMarginal:
    process = KuramotoProcess(KuramotoConfig(coupling="global", steps=100))
    return ChainMarginal(process, open_torus_source("wrapped-mixture"), 64, keep=[10, 25, 50, 75, 100])


def regression_slope(target: torch.Tensor, truth: torch.Tensor) -> tuple[float, float]:
    """Least-squares slope of target on truth, and its standard error (from the per-example products)."""
    products = ((target - truth) * truth).sum(1)
    norm = float((truth * truth).sum(1).mean())
    return 1.0 + float(products.mean()) / norm, float(products.std()) / math.sqrt(len(products)) / norm


def test_the_carried_estimate_is_unbiased_for_the_exact_marginal_score(paper_chain):
    # E[e_t | x_t] = ∇ log p_t(x_t): the least-squares slope of e_t on the exact score is 1 within its error,
    # at every t; the merged-Euler window of 10 steps, drawn from the same chain, is measurably too small late.
    process, density = paper_chain.process, paper_chain.data
    generator = torch.Generator().manual_seed(0)
    count = 10_000
    x = density.sample(count, generator, dtype=torch.float64)
    estimate = torch.zeros_like(x)
    history = {0: x}
    for step in range(100):
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float64)
        x, estimate, _ = propagated_draw(process, x, torch.full((count,), step), estimate, noise)
        history[step + 1] = x
        if step + 1 in paper_chain.keep:
            slope, error = regression_slope(estimate, paper_chain.score_at(step + 1, x))
            assert abs(slope - 1.0) < 4 * error + 0.01, (step + 1, slope, error)
            assert error < 0.02
    start = torch.full((count,), 90)
    noise = torch.randn(x.shape, generator=generator, dtype=torch.float64)
    merged, target, _ = kernel_draw(process, history[90], start, torch.full((count,), 10), noise)
    slope, error = regression_slope(target, paper_chain.score_at(100, merged))
    assert slope + 4 * error < 0.9


def test_the_pool_with_estimates_walks_the_same_chains():
    # Carrying the estimates changes nothing about the states: the same noise makes the same chains, so the
    # training distribution is the chain's exact marginal.
    process = KuramotoProcess(coupling="local", neighbourhood=3, steps=12)
    source = FixedImages(4)

    def pool(carry: bool) -> ChainPool:
        data_generator = torch.Generator().manual_seed(1)
        data_fn = lambda n: (ImageCodec.for_process(process).encode(source.sample_batch(n, data_generator)), None)  # noqa: E731
        return ChainPool(
            process, 24, data_fn, torch.Generator().manual_seed(0), carry=propagated_chain_step if carry else None
        )

    plain, carrying = pool(False), pool(True)
    torch.testing.assert_close(plain.states, carrying.states, rtol=0, atol=1e-6)
    for _ in range(15):  # past T: every chain restarts once
        plain.advance()
        carrying.advance()
    torch.testing.assert_close(plain.states, carrying.states, rtol=0, atol=1e-5)
    assert torch.equal(plain.t, carrying.t)
    assert bool((carrying.estimates[carrying.t == 0] == 0).all())  # restarted chains carry zeros (β_0 = 0)
    assert bool(carrying.estimates[carrying.t > 0].abs().sum(dim=(1, 2, 3)).gt(0).all())
    states, steps, conditions, estimates = carrying.draw(5)
    assert estimates is not None and estimates.shape == states.shape
    restored = pool(True)
    restored.load_state_dict(carrying.state_dict())
    assert torch.equal(restored.estimates, carrying.estimates)
    with pytest.raises(ValueError, match="score estimates do not fit"):
        pool(False).load_state_dict(carrying.state_dict())


def test_resimulation_with_estimates_reaches_the_same_states():
    process = KuramotoProcess(coupling="local", neighbourhood=3, steps=12)
    x0 = ImageCodec.for_process(process).encode(FixedImages(6).images[:6].repeat(2, 1, 1, 1)[:6])
    t = torch.tensor([0, 1, 5, 11, 3, 7])
    states = resimulate_states(process, x0, t, torch.Generator().manual_seed(3))
    carried, estimates = resimulate_states_and_scores(
        process, x0, t, torch.Generator().manual_seed(3), propagated_chain_step
    )
    torch.testing.assert_close(states, carried, rtol=0, atol=1e-6)
    assert bool((estimates[0] == 0).all()) and bool((estimates[1:] != 0).any(dim=(1, 2, 3)).all())


def test_the_contraction_bound_covers_the_synchronised_jacobian():
    # At the synchronised state θ = ψ_ref the step's Jacobian is K·(A − I) − K·κ_ref·I; with circular padding A
    # is a circulant average whose smallest eigenvalue approaches the kernel's minimum frequency response.
    process = KuramotoProcess(coupling="local", neighbourhood=5, padding="circular")
    theta = torch.zeros(1, 1, 20, 20, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(
        lambda y: process.drift(y.reshape(theta.shape), 60).reshape(-1), theta.reshape(-1)
    )
    fastest = -float(torch.linalg.eigvalsh((jacobian + jacobian.T) / 2).min())
    bound = process.contraction_bound(60)
    assert fastest <= bound * (1 + 1e-9) and fastest > 0.97 * bound
    assert bound == pytest.approx(
        float(process.coupling_strength(60)) * (1.25 + 1.5), rel=1e-3
    )  # box 5: min response −¼
    global_process = KuramotoProcess(coupling="global")
    assert global_process.contraction_bound(60) == pytest.approx(float(global_process.coupling_strength(60)) * 2.5)


def test_the_weights_start_at_the_data_and_stay_below_one():
    schedule = propagation_schedule(KuramotoProcess(coupling="local", steps=100))
    assert float(schedule.weight[0]) == 0.0 and float(schedule.variance[0]) == 0.0
    assert bool((schedule.weight[1:] > 0).all()) and bool((schedule.weight < 1).all())
    # The carried noise stays bounded in the fastest-contracting pattern: β_s / (1 − a_s) < 1.
    process = KuramotoProcess(coupling="local", steps=100)
    growth = [float(schedule.weight[s]) / (1 - process.contraction_bound(s)) for s in range(100)]
    assert max(growth) < 1


def test_propagated_objectives_train_and_resume_exactly(tmp_path):
    process = KuramotoConfig(coupling="local", neighbourhood=3, steps=20)
    for objective, draws in (("propagated-antithetic", 2),):  # antithetic pairs and draws on top of the estimates
        whole = Trainer(
            run_config(process, steps=6, objective=objective, draws=draws, checkpoint_every=3),
            FixedImages(),
            tmp_path / f"{objective}-whole",
        )
        whole.start()
        assert whole.objective.window == 1 and whole.pool is not None and whole.pool.estimates is not None
        whole.train()
        first = Trainer(
            run_config(process, steps=3, objective=objective, draws=draws, checkpoint_every=3),
            FixedImages(),
            tmp_path / f"{objective}-resumed",
        )
        first.start()
        first.train()
        resumed = Trainer.resume(tmp_path / f"{objective}-resumed", FixedImages(), train_steps=6)
        resumed.train()
        for a, b in zip(whole.model.network.state_dict().values(), resumed.model.network.state_dict().values()):
            assert torch.equal(a, b)


def test_propagated_starting_states_take_one_step_and_carry_estimates(tmp_path):
    for forward_states in ("pool", "resimulate"):
        trainer = Trainer(
            run_config(
                KuramotoConfig(coupling="local", neighbourhood=3, steps=20),
                objective="propagated",
                forward_states=forward_states,
            ),
            FixedImages(),
            tmp_path / forward_states,
        )
        trainer.start()
        start = trainer.objective.starting_states(16, trainer.noise_generator)
        assert torch.equal(start.stride, torch.ones_like(start.stride))
        assert start.estimates is not None and start.estimates.shape == start.x.shape
        assert bool((start.estimates[start.t == 0] == 0).all())


def test_objectives_that_do_not_fit_are_refused():
    kuramoto = KuramotoProcess(steps=100)
    assert window_of("propagated", 0, kuramoto) == 1 and window_of("propagated", 1, kuramoto) == 1
    with pytest.raises(UserError, match="use window 1 \\(or 0\\)"):
        window_of("propagated", 10, kuramoto)
    with pytest.raises(UserError, match="strides are already exact"):
        window_of("propagated", 0, EuclideanVPProcess(EuclideanConfig(steps=20)))
    with pytest.raises(UserError, match="no contraction bound"):
        window_of("propagated", 0, PhaseAmplitudeProcess(PhaseAmplitudeConfig()))
    with pytest.raises(UserError, match="use anchor 0"):
        anchor_of("propagated", 25, 1, kuramoto)
    with pytest.raises(UserError, match="draws must be even"):
        TrainConfig(objective="propagated-antithetic", draws=1)


def test_auto_is_the_propagated_objective_where_the_process_supports_it(tmp_path):
    assert TrainConfig().objective == "auto"
    assert resolve_objective("auto", KuramotoProcess(coupling="local")) == "propagated"
    assert resolve_objective("auto", EuclideanVPProcess()) == "markov"  # DDPM's ε-loss
    assert resolve_objective("auto", PhaseAmplitudeProcess(PhaseAmplitudeConfig())) == "markov"
    assert resolve_objective("antithetic", KuramotoProcess()) == "antithetic"
    assert resolve_objective("auto", KuramotoProcess(), window=10) == "markov"  # a merged window asks for markov
    assert resolve_objective("auto", KuramotoProcess(), anchor=25) == "markov"
    # The run's saved config names the objective it resolved to, so a resume or a reader sees what was trained.
    trainer = Trainer(
        run_config(KuramotoConfig(coupling="local", neighbourhood=3, steps=20), steps=1),
        FixedImages(),
        tmp_path / "run",
    )
    assert trainer.train_config.objective == "propagated" and trainer.config.training.objective == "propagated"
    euclidean = Trainer(run_config(EuclideanConfig(steps=20), steps=1), FixedImages(), tmp_path / "euclidean")
    assert euclidean.train_config.objective == "markov"


def test_a_run_saved_before_the_objective_setting_resumes_with_its_own_loss(tmp_path):
    import json

    from kuramoto_diffusion.config_file import CONFIG_NAME, load_run_config

    trainer = Trainer(
        run_config(KuramotoConfig(coupling="local", neighbourhood=3, steps=20), steps=1, objective="markov"),
        FixedImages(),
        tmp_path / "run",
    )
    trainer.start()
    path = tmp_path / "run" / CONFIG_NAME
    data = json.loads(path.read_text())
    del data["training"]["objective"]  # as written before the setting existed
    path.write_text(json.dumps(data))
    _, loaded = load_run_config(path)
    assert loaded.training.objective == "markov"


def _draw_inputs(batch: int, steps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x, estimate, noise = (random_phases((batch, 1, 8, 9), seed=seed + k) for k in range(3))
    t = torch.randint(0, steps, (batch,), generator=torch.Generator().manual_seed(seed))
    t[0] = 0  # a row whose weight β_0 is 0 beside rows that carry
    return x, t, estimate, noise


def test_a_compiled_process_draws_through_its_compiled_arithmetic_and_keeps_the_checks(monkeypatch):
    # torch.compile replaced by a recorder: the dispatch and the eager checks, without the compiler's time (the
    # compiled arithmetic itself is checked against the eager one in the slow test below).
    calls = []

    def recording_compile(function, **options):
        assert options == {"dynamic": True}

        def recorded(*args):
            calls.append(args[0])
            return function(*args)

        return recorded

    monkeypatch.setattr(propagated_module.torch, "compile", recording_compile)
    monkeypatch.setattr(propagated_module, "_COMPILED_DRAWS", {})
    process = KuramotoProcess(coupling="local", neighbourhood=3, steps=20)
    x, t, estimate, noise = _draw_inputs(5, 20, seed=3)
    eager = propagated_draw(process, x, t, estimate, noise)
    assert calls == []
    compile_propagated_steps(process)
    compiled = propagated_draw(process, x, t, estimate, noise)
    assert calls == [process]
    for a, b in zip(eager, compiled):
        assert torch.equal(a, b)
    with pytest.raises(UserError, match="NaN"):
        propagated_draw(process, x.clone().fill_(float("nan")), t, estimate, noise)
    assert len(calls) == 1  # the checks ran before the compiled arithmetic
    other = KuramotoProcess(coupling="global", steps=20)
    propagated_draw(other, x, t, estimate, noise)
    assert len(calls) == 1  # only the process that was compiled


def test_training_with_compile_compiles_the_pools_chain_step(tmp_path, monkeypatch):
    compiled = []
    monkeypatch.setattr(propagated_module, "compile_propagated_steps", compiled.append)
    for flag in (False, True):
        config = run_config(KuramotoConfig(coupling="local", neighbourhood=3, steps=20), objective="propagated")
        config = dataclasses.replace(config, training=dataclasses.replace(config.training, compile=flag))
        trainer = Trainer(config, FixedImages(), tmp_path / str(flag))
        trainer.objective.prepare(trainer.noise_generator, fill=False)
        assert compiled == ([trainer.process] if flag else [])


@pytest.mark.slow
@pytest.mark.parametrize("coupling", ["global", "local"])
def test_the_compiled_chain_step_is_the_eager_one_in_float64(coupling, monkeypatch):
    monkeypatch.setattr(propagated_module, "_COMPILED_DRAWS", {})
    process = KuramotoProcess(coupling=coupling, neighbourhood=3, steps=50)
    cases = [_draw_inputs(batch, 50, seed=batch) for batch in (7, 12)]
    cases.append((cases[0][0], torch.zeros(7, dtype=torch.long), *cases[0][2:]))  # every row at s = 0
    eager = [propagated_draw(process, *case) for case in cases]
    compile_propagated_steps(process)
    for case, expected in zip(cases, eager):  # batch sizes and the s = 0 branch after one compile
        for a, b in zip(propagated_draw(process, *case), expected):
            assert a.dtype == torch.float64
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
