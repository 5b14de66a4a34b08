"""`swarmpress twin ...`: run the digital twin of a training swarm, compare policies and
codecs, list what is built in, and serve the random-routing reference router."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Group
from rich.text import Text

from swarmpress.cli.common import EXIT_FAILED, console, guard
from swarmpress.cli.options import JsonOpt, opt
from swarmpress.cli.output import emit, progress, table

twin_app = typer.Typer(
    help="The digital twin of a training swarm: routing, balancing and codecs vs epoch time.",
    no_args_is_help=True,
)

ScenarioArg = Annotated[
    str, typer.Argument(help="Built-in scenario name (see `twin scenarios`) or a TOML file.")
]
SetOpt = opt(list[str] | None, "--set", "Override a scenario field, e.g. model.bottleneck=1 or "
             "swarm.miners=200 (repeatable).", metavar="KEY=VALUE")  # fmt: skip
ProfilesOpt = opt(Path | None, "--codec-profiles", "Codec profile JSON (default: the "
                  "bench-measured profiles shipped with swarmpress; make one with `twin profiles "
                  "--from-bench`).")  # fmt: skip


def _policies(policy: str, router: str | None, limit: float):
    from swarmpress.twin.policies import parse_policy

    if router:
        from swarmpress.twin.remote import RemotePolicy

        remote = RemotePolicy(router, limit)
        remote.check()
        return remote, remote
    return parse_policy(policy)


def simulate(sc, seed: int, policy: str, router: str | None, codec, record: bool = False):
    from swarmpress.twin.sim import Simulation

    r, b = _policies(policy, router, sc.rules.route_call_limit_s)
    res = Simulation(sc, seed, r, b, codec, record=record).run()
    if router:
        res.policy = f"router {router}"
    return res


def _run_view(sc, seed: int, res) -> Group:
    cols = ("layers", "total epoch time", "max epoch time", "score", "completed", "dropped",
            "simulated s", "wall s", "x real time")  # fmt: skip
    row = (str(res.n_layers), f"{res.total_epoch_time:.1f}", f"{res.max_epoch_time:.1f}",
           f"{res.score:.4f}", str(res.completed), str(res.dropped),
           f"{res.simulated_seconds:.0f}", f"{res.wall_seconds:.2f}",
           f"{res.speedup:.0f}")  # fmt: skip
    parts: list = [table(cols, [row], title=f"{sc.name}, seed {seed}: {res.policy}, codec "
                         f"{res.codec}", right=cols)]  # fmt: skip
    if res.invalid_routes and res.ok:  # Apex: invalid paths fail activations, not tasks
        parts.append(f"[yellow]{res.invalid_routes} routes had invalid hops; their "
                     f"activations failed[/] (first: {res.invalid_route})")  # fmt: skip
    if not res.ok:
        parts.append(f"[red]task failed:[/] {res.reason}")
    return Group(*parts)


RouterUrlOpt = opt(str | None, "--router", "URL of an external router (Apex contract).")
TwinOutOpt = opt(Path | None, "--out", "Write simulation.json, timeline.png and series.png here.")


@twin_app.command("run")
def run_cmd(
    scenario: ScenarioArg,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same result).")] = 0,
    policy: Annotated[
        str, typer.Option("--policy", help="ROUTER[+BALANCER] or `best` (see `twin policies`).")
    ] = "random",
    router: RouterUrlOpt = None,
    codec: Annotated[str, typer.Option("--codec", help="Codec profile on every link.")] = "none",
    profiles: ProfilesOpt = None,
    overrides: SetOpt = None,
    out: TwinOutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Simulate a scenario with one policy and one codec; prints the Apex score and timings."""
    from swarmpress.twin.profiles import get_profile
    from swarmpress.twin.scenario import load_scenario

    sc = load_scenario(scenario, overrides)
    prof = get_profile(codec, profiles)
    with console.status(f"simulating {sc.name} (seed {seed})"):
        res = simulate(sc, seed, policy, router, prof, record=out is not None)
    if out is not None:
        from swarmpress.twin.report import write_outputs

        write_outputs(res, out)
    emit(res.to_json(), as_json, lambda: _run_view(sc, seed, res))
    if not res.ok:
        raise typer.Exit(EXIT_FAILED)


@twin_app.command("compare")
def compare_cmd(
    scenario: ScenarioArg,
    policies: Annotated[
        str, typer.Option("--policies", help="Comma-separated policies.")
    ] = "random,round-robin,least-loaded,capacity-aware,best",
    codecs: Annotated[
        str, typer.Option("--codecs", help="Comma-separated codec profiles.")
    ] = "none",
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds per configuration (median).")] = 5,
    profiles: ProfilesOpt = None,
    overrides: SetOpt = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write the comparison PNG.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Several policies and/or codecs on the same seeds: one table, one plot."""
    from swarmpress.twin.profiles import get_profile
    from swarmpress.twin.scenario import load_scenario

    sc = load_scenario(scenario, overrides)
    combos = [(p.strip(), c.strip()) for p in policies.split(",") for c in codecs.split(",")]
    rows = []
    with progress("simulating", total=len(combos) * seeds) as steps:
        for pol, cod in combos:
            prof = get_profile(cod, profiles)
            runs = []
            for seed in range(seeds):
                runs.append(simulate(sc, seed, pol, None, prof))
                steps.advance()
            totals = [r.total_epoch_time for r in runs if r.ok] or [float("nan")]
            rows.append({
                "label": pol if len(codecs.split(",")) == 1 else f"{pol} / {cod}",
                "policy": pol, "codec": cod, "seeds": seeds,
                "median_total_epoch_time": statistics.median(totals),
                "min_total_epoch_time": min(totals), "max_total_epoch_time": max(totals),
                "median_score": statistics.median(r.score for r in runs),
                "failed": sum(not r.ok for r in runs),
                "median_speedup": statistics.median(r.speedup for r in runs),
                "runs": [r.to_json() for r in runs],
            })  # fmt: skip
    base = rows[0]["median_total_epoch_time"]
    for r in rows:
        r["vs_first"] = r["median_total_epoch_time"] / base - 1 if base else 0.0
    if plot is not None:
        from swarmpress.twin.report import compare_plot

        compare_plot(rows, plot)
    cols = ("policy / codec", "total epoch time", "vs first", "score", "failed", "x real time")
    cells = [(r["label"], f"{r['median_total_epoch_time']:.1f}", f"{100 * r['vs_first']:+.1f} %",
              f"{r['median_score']:.4f}", str(r["failed"]), f"{r['median_speedup']:.0f}")
             for r in rows]  # fmt: skip
    emit(rows, as_json, lambda: table(cols, cells, title=f"{sc.name}: median over {seeds} seeds",
                                      right=cols))  # fmt: skip


@twin_app.command("policies")
def policies_cmd(as_json: JsonOpt = False) -> None:
    """The built-in routing and balancing policies (`best` names the strongest pair)."""
    from swarmpress.twin.policies import BALANCERS, BEST, DESCRIPTIONS, ROUTERS

    info = {
        "routing": [{"name": n, "description": DESCRIPTIONS[n]} for n in ROUTERS],
        "balancing": [{"name": n, "description": DESCRIPTIONS[n]} for n in BALANCERS],
        "best": {"routing": BEST[0], "balancing": BEST[1], "spec": "+".join(BEST)},
    }
    rows = [(kind, p["name"], p["description"]) for kind in ("routing", "balancing")
            for p in info[kind]]  # fmt: skip
    emit(info, as_json, lambda: Group(
        table(("kind", "name", "description"), rows,
              title="twin policies (--policy ROUTER[+BALANCER])"),
        Text(f"best = {info['best']['spec']}"),
    ))  # fmt: skip


@twin_app.command("scenarios")
def scenarios_cmd(as_json: JsonOpt = False) -> None:
    """The built-in scenarios."""
    from swarmpress.twin.scenario import builtin_names, load_scenario

    info = [{"name": n, "description": load_scenario(n).description} for n in builtin_names()]
    rows = [(s["name"], s["description"]) for s in info]
    emit(info, as_json, lambda: table(("name", "description"), rows, title="built-in scenarios"))


@twin_app.command("profiles")
def profiles_cmd(
    from_bench: Annotated[
        Path | None, typer.Option("--from-bench", help="Make profiles from a bench --json file.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the profiles JSON here.")] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="With --from-bench: the corpus model whose figures become the profiles "
            "(default SmolLM2-135M-Instruct, the Llama a pipeline ships; 'minilm' works).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List codec profiles (ratio, speed, break-even per role), or make them from a bench run."""
    from swarmpress.twin.profiles import from_bench as make
    from swarmpress.twin.profiles import load_profiles

    if from_bench is not None:
        with guard(f"cannot read bench results {from_bench}", ValueError, KeyError):
            data = make(from_bench) if model is None else make(from_bench, model=model)
        text = json.dumps(data, indent=1) + "\n"
        if out:
            out.write_text(text)
        else:
            print(text, end="")
        return
    profiles = load_profiles()
    roles = ("activation", "gradient", "weight_delta")
    rows = [(name, role, f"{r.ratio:.3f}", f"{r.compress_bps / 1e6:.0f}",
             f"{r.decompress_bps / 1e6:.0f}", f"{r.break_even_bps() * 8 / 1e6:.0f}")
            for name, p in profiles.items()
            for role, r in ((x, p.role(x)) for x in roles)]  # fmt: skip
    cols = ("codec", "role", "ratio", "encode MB/s", "decode MB/s", "break-even Mbit/s")
    emit({k: v.to_json() for k, v in profiles.items()}, as_json, lambda: table(cols, rows),
         default=str)  # fmt: skip


@twin_app.command("serve-baseline")
def serve_baseline_cmd(
    port: Annotated[int, typer.Option("--port", help="HTTP port.")] = 8000,
    host: Annotated[str, typer.Option("--host", help="Interface.")] = "127.0.0.1",
    seed: Annotated[int, typer.Option("--seed", help="Routing seed.")] = 0,
) -> None:
    """A random-routing reference server speaking the Apex routing contract."""
    import uvicorn

    from swarmpress.twin.baseline_server import create_app

    console.print(f"baseline router at http://{host}:{port}/ (random routing, even balancing)")
    uvicorn.run(create_app(seed), host=host, port=port, log_level="warning")
