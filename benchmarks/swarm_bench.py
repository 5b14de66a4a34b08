"""The swarm's goals, measured: speed where users train (the `uplink` preset on a consumer
uplink, 20 Mbit/s and 50 ms, bfloat16 on the wire: uncompressed against its codec, loss
against wall-clock time), quality (loss with lossy codecs against uncompressed, and
where it breaks), speed (time per step with and without compression on emulated links),
twin fidelity (calibrated twin against measured time per step), faults (a replica killed
every 50 steps) and failover (the orchestrator SIGKILLed mid-run, then resumed by a restart
and by a standby: the time from the kill to the successor's first step).

Every run is a real multi-process swarm on this machine: stage workers as processes,
ZeroMQ on loopback, codecs on every tensor, links emulated in the transport. Baselines are
measured in the same invocation, one run after another with nothing else running.

    python benchmarks/swarm_bench.py --out docs/results/swarm [--parts uplink,quality,...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from swarm_failover import failover, failover_report  # beside this file

from swarmpress.bench.machine import machine_info
from swarmpress.swarm.calibrate import calibrate, message_overhead
from swarmpress.swarm.config import CONSUMER_UPLINK, PRESETS, build_config
from swarmpress.swarm.run import load_data, train, with_codec

PARTS = ("uplink", "failover", "quality", "speed", "fidelity", "faults")
# lossy at a range of similarity targets: where training starts to drift
SWEEP = [0.99, 0.95, 0.9, 0.8, 0.5, 0.2, 0.1]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def slim(r: dict) -> dict:
    """A run's figures without the bulky parts."""
    keep = ("label", "final_loss", "train_loss", "steps", "seconds_per_step",
            "median_seconds_per_step", "bytes_on_wire", "raw_bytes", "wire_ratio",
            "time_split", "loss_curve", "step_seconds", "faults", "service_s",
            "step_overhead_s", "service_jitter", "link", "codec", "workers",
            "cpu_per_step")  # fmt: skip
    out = {k: r[k] for k in keep if k in r}
    out["config"] = r["config"]  # enough to calibrate the twin again from swarm.json
    c = r["config"]
    shape = ("stages", "replicas", "microbatch", "microbatches", "dim", "layers", "seq_len",
             "wire_dtype", "router", "stage_layers")  # fmt: skip
    out["shape"] = {k: c.get(k) for k in shape}
    return out


def _cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) so far of this process ("orch") and of each child
    process (a stage worker, by its --name), read from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    t = os.times()
    out = {"orch": t.user + t.system}
    me = os.getpid()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != me:
                continue
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile, or not ours to read
        name = next((cmd[i + 1].decode() for i, a in enumerate(cmd[:-1]) if a == b"--name"),
                    d.name)  # fmt: skip
        out[name] = (int(fields[11]) + int(fields[12])) / tick
    return out


def run(cfg, data, label: str) -> dict:
    """One training run; with `cpu_per_step` (process -> CPU seconds per step, from the
    end of step 1 to the end of the last step: start-up and evaluation left out)."""
    t0 = time.monotonic()
    marks: dict[int, dict[str, float]] = {}
    last = cfg.steps - 1

    def on_step(step: int, _info: dict) -> None:
        if step in (1, last):
            marks[step] = _cpu_seconds()

    r = train(cfg, data, on_step=on_step)
    if len(marks) == 2 and last > 1:
        a, b = marks[1], marks[last]
        r["cpu_per_step"] = {k: (b[k] - a[k]) / (last - 1) for k in b if k in a}
    r["label"] = label
    log(f"{label}: loss {r['final_loss']:.4f}, {r['seconds_per_step']:.3f} s/step, "
        f"wall {time.monotonic() - t0:.0f} s")  # fmt: skip
    return r


# The uplink part's goals (issue 16): compressed at least 2.5x faster per step than
# uncompressed, final eval loss within 1 %.
UPLINK_SPEEDUP_GOAL = 2.5
UPLINK_LOSS_GOAL = 0.01


def uplink(steps: int, overhead: float | None = None, repeat: int = 1) -> dict:
    """The `uplink` preset uncompressed (`none`) and with its own codec on activations and
    gradients: the same seed, data and routing (one replica per stage: every micro-batch
    takes the same path), bfloat16 on the wire, the consumer uplink on every worker. Speed
    is the ratio of median seconds per step (step 0 left out); loss the final eval loss.
    `repeat` pairs of runs (none, then compressed): the pair of median speed-up is the one
    reported, every pair's ratio is listed. With `overhead` (the loopback per-message cost)
    the calibrated twin also says what the same two runs would give with compute k times
    faster (a GPU)."""
    cfg = build_config("uplink", steps=steps)
    codec = cfg.codec_activation
    data = load_data(cfg)
    pairs = []
    for i in range(repeat):
        log(f"uplink pair {i + 1}/{repeat}")
        pair = [run(with_codec(cfg, "none"), data, "none"), run(cfg, data, codec)]
        pairs.append((pair[0]["median_seconds_per_step"] / pair[1]["median_seconds_per_step"],
                      pair))  # fmt: skip
    ranked = sorted(pairs, key=lambda p: p[0])
    speedup, runs = ranked[(len(ranked) - 1) // 2]  # the median (the lower one of two)
    none, comp = runs
    wire = [r["bytes_on_wire"] for r in runs]
    raw = [r["raw_bytes"] for r in runs]
    loss_diff = comp["final_loss"] / none["final_loss"] - 1
    out = {
        "repeats": [
            {
                "none_s_per_step": p[0]["median_seconds_per_step"],
                "compressed_s_per_step": p[1]["median_seconds_per_step"],
                "speedup": ratio,
                "loss_diff": p[1]["final_loss"] / p[0]["final_loss"] - 1,
            }
            for ratio, p in pairs
        ],
        "steps": steps,
        "preset": dict(PRESETS["uplink"]),
        "link": CONSUMER_UPLINK,
        "codec": codec,
        "rows": [
            {
                "label": r["label"],
                "median_s_per_step": r["median_seconds_per_step"],
                "mean_s_per_step": r["seconds_per_step"],
                "train_seconds": r["train_seconds"],
                "final_loss": r["final_loss"],
                "train_loss": r["train_loss"],
                "wire_mb": w["total"] / 1e6,
                "act_grad_mb": (w["activation"] + w["gradient"]) / 1e6,
                "act_grad_wire_ratio": (w["activation"] + w["gradient"])
                / max(1, rw["activation"] + rw["gradient"]),
                "service_s": [[s["forward"], s["backward"]] for s in r["service_s"]],
            }
            for r, w, rw in zip(runs, wire, raw, strict=True)
        ],
        "speedup": speedup,
        "loss_diff": loss_diff,
        "speedup_goal": UPLINK_SPEEDUP_GOAL,
        "loss_goal": UPLINK_LOSS_GOAL,
        "met": speedup >= UPLINK_SPEEDUP_GOAL and abs(loss_diff) <= UPLINK_LOSS_GOAL,
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
        "runs": [slim(r) for r in runs],
    }
    if overhead is not None:
        out["message_overhead_s"] = overhead
        out["what_if"] = faster_compute(none, comp, overhead)
    return out


def quality(steps: int) -> dict:
    """Same seed, data and routing; only the codec on activations and gradients. Routing
    is round-robin here, so every run sends each micro-batch to the same replicas and two
    uncompressed runs are bit-identical: any difference is the codec's."""
    cfg = build_config("tiny", steps=steps, router="round-robin")
    data = load_data(cfg)
    runs = [run(with_codec(cfg, "none"), data, "none"),
            run(with_codec(cfg, "none"), data, "none (repeat)")]  # fmt: skip
    for v in SWEEP:
        spec = "lossy" if v == 0.99 else f"lossy:mode=fast:value={v}"
        runs.append(run(with_codec(cfg, spec), data, f"lossy sim {v}"))
    # with IOTA's kind of learned bottleneck at the stage boundary (activations 4x narrower)
    narrow = build_config("tiny", steps=steps, bottleneck=4, router="round-robin")
    runs.append(run(with_codec(narrow, "none"), data, "none, bottleneck 4"))
    runs.append(run(with_codec(narrow, "lossy"), data, "lossy sim 0.99, bottleneck 4"))
    base = runs[0]["final_loss"]
    rows = []
    for r in runs:
        rows.append({
            "label": r["label"],
            "final_loss": r["final_loss"],
            "vs_none": r["final_loss"] / base - 1,
            "mean_loss_last10": statistics.fmean(r["loss_curve"][-10:]),
            "wire_ratio_activation": r["wire_ratio"].get("activation"),
            "wire_ratio_gradient": r["wire_ratio"].get("gradient"),
        })  # fmt: skip
    noise = abs(rows[1]["vs_none"])
    return {"steps": steps, "rows": rows, "run_to_run": noise, "runs": [slim(r) for r in runs]}


SPEED_LINKS = ["100mbit:50ms", "10gbit:1ms", "10mbit:50ms"]


def speed(steps: int) -> dict:
    """none against lossy on each emulated link; ratio of mean seconds per step."""
    rows, runs = [], []
    data = None
    for link in SPEED_LINKS:
        cfg = build_config("tiny", steps=steps, link=link)
        data = data or load_data(cfg)
        a = run(with_codec(cfg, "none"), data, f"none @ {link}")
        b = run(with_codec(cfg, "lossy"), data, f"lossy @ {link}")
        c = run(with_codec(cfg, "auto"), data, f"auto @ {link}")
        runs += [a, b, c]
        rows.append({
            "link": link,
            "none_s_per_step": a["seconds_per_step"],
            "lossy_s_per_step": b["seconds_per_step"],
            "auto_s_per_step": c["seconds_per_step"],
            "speedup": a["seconds_per_step"] / b["seconds_per_step"],
            "auto_speedup": a["seconds_per_step"] / c["seconds_per_step"],
            "auto_chose": sorted({v for w in c["workers"] for v in w["codecs"].values()}),
            "none_wire_mb": a["bytes_on_wire"]["total"] / 1e6,
            "lossy_wire_mb": b["bytes_on_wire"]["total"] / 1e6,
            "compute_s_per_pass": [s["forward"] for s in a["service_s"]],
        })  # fmt: skip
    return {"steps": steps, "rows": rows, "runs": runs}


FIDELITY_EXTRA = [
    {"stages": 3, "replicas": 2, "layers": 3, "link": "20mbit:30ms"},
    {"stages": 2, "replicas": 3, "microbatches": 6, "link": "50mbit:20ms"},
]


GPU_FACTORS = [1, 10, 100]


def what_if(speed_runs: list[dict], overhead: float) -> list[dict]:
    """The twin, calibrated on the 100 Mbit/s runs, with compute k times faster (a GPU) and
    the codec's extra seconds per pass kept as measured here (lossy minus none)."""
    by_label = {r["label"]: r for r in speed_runs}
    return faster_compute(by_label["none @ 100mbit:50ms"], by_label["lossy @ 100mbit:50ms"],
                          overhead)  # fmt: skip


def faster_compute(none: dict, lossy: dict, overhead: float) -> list[dict]:
    """The twin calibrated on an uncompressed and a compressed run of one configuration,
    with compute k times faster (a GPU) and the codec's extra seconds per pass kept as
    measured here (compressed minus uncompressed)."""
    from swarmpress.swarm.calibrate import predict, scenario_from_run
    from swarmpress.twin.scenario import parse_scenario

    sn, sl = scenario_from_run(none, overhead), scenario_from_run(lossy, overhead)
    rows = []
    for k in GPU_FACTORS:
        times = {}
        for name, run_, sc in (("none", none, sn), ("lossy", lossy, sl)):
            m = dict(sc["model"])
            for field in ("layer_forward_s", "layer_backward_s"):
                base = sn["model"][field]
                extra = [max(0.0, a - b) for a, b in zip(sc["model"][field], base, strict=True)]
                m[field] = [b / k + e for b, e in zip(base, extra, strict=True)]
            w = dict(sc["workload"], step_s=sn["workload"]["step_s"] / k)
            scenario = parse_scenario(dict(sc, model=m, workload=w), "what-if")
            times[name] = predict(scenario, run_)["seconds_per_step"]
        rows.append({"compute_speedup": k, "none_s_per_step": times["none"],
                     "lossy_s_per_step": times["lossy"],
                     "speedup": times["none"] / times["lossy"]})  # fmt: skip
    return rows


def fidelity(speed_runs: list[dict], steps: int) -> dict:
    """Calibrate the twin on each measured run and compare its predicted time per step."""
    overhead = message_overhead()
    runs = list(speed_runs)
    data = None
    for extra in FIDELITY_EXTRA:
        cfg = build_config("tiny", steps=steps, **extra)
        data = data or load_data(cfg)
        shape = f"{extra['stages']}x{extra['replicas']}"
        runs.append(run(with_codec(cfg, "none"), data, f"none {shape} @ {extra['link']}"))
        runs.append(run(with_codec(cfg, "lossy"), data, f"lossy {shape} @ {extra['link']}"))
    rows = []
    for r in runs:
        cal = calibrate(r, overhead)
        rows.append({
            "label": r["label"],
            "stages": r["config"]["stages"],
            "replicas": r["config"]["replicas"],
            "link": r["link"]["spec"],
            "measured": cal["measured_seconds_per_step"],
            "predicted": cal["predicted_seconds_per_step"],
            "error": cal["error"],
        })  # fmt: skip
    return {
        "message_overhead_s": overhead,
        "rows": rows,
        "extra_runs": [slim(r) for r in runs[len(speed_runs) :]],
        "what_if_100mbit": what_if(speed_runs, overhead),
    }


def faults(steps: int, every: int) -> dict:
    cfg = build_config("tiny", steps=steps, kill_every=every)
    r = run(cfg, load_data(cfg), f"kill every {every}")
    per_stage = {}
    for stage in range(cfg.stages):
        per_stage[stage] = sum(w["samples_applied"] for w in r["workers"] if w["stage"] == stage)
    return {
        "steps": r["steps"],
        "kill_every": every,
        "faults": r["faults"],
        "samples_applied_per_stage": per_stage,
        "samples_expected_per_stage": cfg.steps * cfg.microbatches,
        "replacements_ready": sum(1 for w in r["workers"] if w["caught_up_from"] and w["ready"]),
        "run": slim(r),
    }


def plots(res: dict, out: Path, parts: list[str]) -> None:
    """The figures of the parts run now (a --merge keeps the others' files as they are)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "uplink" in parts and "uplink" in res:
        from swarmpress.swarm.report import loss_vs_time

        u = res["uplink"]
        fig, ax = plt.subplots(figsize=(8, 4.8))
        labels = ["uncompressed (none)", f"compressed ({u['codec']})"]
        loss_vs_time(ax, u["runs"], labels)
        ax.set_title(f"uplink preset, {u['link']} per worker, bfloat16 on the wire: "
                     f"{u['speedup']:.2f}x per step", fontsize=10)  # fmt: skip
        fig.tight_layout()
        fig.savefig(out / "uplink_loss_vs_time.png", dpi=120)
        plt.close(fig)
    if "quality" in parts and "quality" in res:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for r in res["quality"]["runs"]:
            curve = r["loss_curve"]
            smooth = [statistics.fmean(curve[max(0, i - 4) : i + 1]) for i in range(len(curve))]
            ax.plot(smooth, label=f"{r['label']} (eval {r['final_loss']:.3f})")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (5-step mean)")
        ax.set_title("swarm tiny preset: loss by codec on activations and gradients")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "loss_by_codec.png", dpi=120)
        plt.close(fig)
    if "fidelity" in parts and "fidelity" in res:
        rows = res["fidelity"]["rows"]
        fig, ax = plt.subplots(figsize=(5.5, 5))
        m = [r["measured"] for r in rows]
        p = [r["predicted"] for r in rows]
        ax.scatter(m, p)
        for r in rows:
            ax.annotate(r["label"], (r["measured"], r["predicted"]), fontsize=6)
        hi = max(m + p) * 1.1
        ax.plot([0, hi], [0, hi], "k--", lw=0.8)
        ax.plot([0, hi], [0, 1.15 * hi], "k:", lw=0.6)
        ax.plot([0, hi], [0, 0.85 * hi], "k:", lw=0.6)
        ax.set_xlabel("measured s/step")
        ax.set_ylabel("twin s/step")
        ax.set_title("twin calibrated on the run vs the run (±15 % dotted)")
        fig.tight_layout()
        fig.savefig(out / "twin_fidelity.png", dpi=120)
        plt.close(fig)


def what_if_table(rows: list[dict], label: str) -> list[str]:
    """The twin's what-if rows (compute k times faster) as a table; `label` names the
    compressed column."""
    cells = [
        [f"{r['compute_speedup']}x", f"{r['none_s_per_step']:.3f}",
         f"{r['lossy_s_per_step']:.3f}", f"{r['speedup']:.2f}x"]
        for r in rows
    ]  # fmt: skip
    return table(["compute k", "none s/step", f"{label} s/step", "speed-up"], cells)


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return out + ["| " + " | ".join(r) + " |" for r in rows] + [""]


def pct(x: float) -> str:
    return f"{100 * x:+.2f} %"


def uplink_report(u: dict) -> list[str]:
    p, m = u["runs"][0]["shape"], u["machine"]
    lines = [
        f"## Speed where users train: the uplink preset ({u['steps']} steps, {u['date']})",
        "",
        "![loss against wall-clock time](uplink_loss_vs_time.png)",
        "",
        f"`uplink` preset: every worker behind a consumer uplink ({u['link']}: 20 Mbit/s, "
        f"50 ms one way), {p['wire_dtype']} on the wire, {p['stages']} stages x "
        f"{p['replicas']} replica, dim {p['dim']}, {p['layers']} layers "
        f"(blocks per stage {p.get('stage_layers') or 'dealt evenly'}), "
        f"{p['microbatches']} micro-batches of {p['microbatch']} x {p['seq_len']} tokens per "
        "step. Baseline: the same "
        "preset with `none` on activations and gradients (raw bfloat16 in a checked frame), "
        "same seed, data and routing, run just before, in the same invocation. "
        f"Machine: {m.get('cpu')}, {m.get('cores_usable')} cores (shared VM), CPU only, "
        f"load {m.get('load_average')} at the end.",
        "",
    ]
    rows = [
        [r["label"], f"{r['median_s_per_step']:.3f}", f"{r['mean_s_per_step']:.3f}",
         f"{r['train_seconds']:.0f}", f"{r['final_loss']:.4f}", f"{r['act_grad_mb']:.1f}",
         f"{r['act_grad_wire_ratio']:.3f}", f"{r['wire_mb']:.1f}"]
        for r in u["rows"]
    ]  # fmt: skip
    heads = ["codec", "median s/step", "mean s/step", "training s", "eval loss",
             "act+grad MB", "act+grad wire/raw", "all MB"]  # fmt: skip
    lines += table(heads, rows)
    verdict = "met" if u["met"] else "not met"
    reps = u.get("repeats", [])
    each = ", ".join(f"{r['speedup']:.2f}x ({r['none_s_per_step']:.3f} / "
                     f"{r['compressed_s_per_step']:.3f} s)" for r in reps)  # fmt: skip
    lines += [
        f"Compressed is **{u['speedup']:.2f}x** faster per step (median); final eval loss "
        f"{pct(u['loss_diff'])} against uncompressed. Goal: >= {u['speedup_goal']}x with the "
        f"loss within {100 * u['loss_goal']:.0f} %: {verdict}."
        + (f" The table is the median of {len(reps)} pairs of runs: {each}." if len(reps) > 1
           else ""),
        "",
    ]  # fmt: skip
    lines += cpu_lines(u)
    if u.get("what_if"):
        k1 = next((r for r in u["what_if"] if r["compute_speedup"] == 1), None)
        mn, mc = u["rows"][0]["mean_s_per_step"], u["rows"][1]["mean_s_per_step"]
        against = "" if k1 is None else (
            f" At k = 1 the twin says {k1['none_s_per_step']:.3f} / "
            f"{k1['lossy_s_per_step']:.3f} s/step (uncompressed / compressed) against the "
            f"measured (mean) {mn:.3f} / {mc:.3f}, "
            f"{pct(k1['none_s_per_step'] / mn - 1)} / {pct(k1['lossy_s_per_step'] / mc - 1)}: "
            "its speed-ups are the twin's, not measurements."
        )  # fmt: skip
        lines += [
            "What-if (the twin calibrated on these two runs): compute k times faster, the "
            "codec's extra seconds per pass kept as measured on this CPU." + against,
            "",
        ]
        lines += what_if_table(u["what_if"], "compressed")
    return lines


def cpu_lines(u: dict) -> list[str]:
    """Where the compressed step's time goes: CPU seconds per step of every process, and
    the floor the machine's cores put under the step."""
    cores = u["machine"].get("cores_usable") or 1
    rows, floors = [], {}
    for r in u["runs"]:
        cpu = r.get("cpu_per_step")
        if not cpu:
            return []
        names = sorted(k for k in cpu if k != "orch")
        total = sum(cpu.values())
        floors[r["label"]] = total / cores
        rows.append([r["label"], *(f"{cpu[n]:.3f}" for n in names), f"{cpu['orch']:.3f}",
                     f"{total:.3f}", f"{total / cores:.3f}",
                     f"{r['median_seconds_per_step']:.3f}"])  # fmt: skip
    heads = ["codec", *names, "orchestrator", "total", f"total / {cores} cores",
             "measured s/step"]  # fmt: skip
    comp = u["runs"][1]
    busiest = max((k for k in comp["cpu_per_step"] if k != "orch"),
                  key=comp["cpu_per_step"].get)  # fmt: skip
    return [
        "CPU seconds per step of each process (steps 2 to the last, read from /proc), and "
        "the floor they put under a step on this machine's cores:",
        "",
        *table(heads, rows),
        f"The compressed step is bound by the CPU: its processes need "
        f"{floors[comp['label']]:.3f} s per step even if the {cores} cores were never idle, "
        f"the busiest worker ({busiest}) {comp['cpu_per_step'][busiest]:.3f} s alone, and "
        "the pipeline fills and drains every step; the uncompressed step waits for the link.",
        "",
    ]


def ran(part: dict) -> list[str]:
    """When and on what a part ran, where it says (parts merged from other invocations)."""
    m = part.get("machine")
    if not m:
        return []
    return [f"Run {part.get('date')}: {m.get('cpu')}, {m.get('cores_usable')} cores, load "
            f"{m.get('load_average')} at the end.", ""]  # fmt: skip


def _commands(res: dict) -> list[str]:
    """The commands whose results the report shows: each part's, once, in part order (a
    merge replaces a part, and with it the command that made it)."""
    made = [res[p]["command"] for p in PARTS if "command" in (res.get(p) or {})]
    return list(dict.fromkeys(made)) or [res["command"]]


def report(res: dict) -> str:
    m = res["machine"]
    lines = [
        "# Swarm benchmark",
        "",
        "Commands: " + ", ".join(f"`{c}`" for c in _commands(res)) + "  ",
        f"Machine: {m.get('cpu')}, {m.get('cores_usable')} cores, load "
        f"{m.get('load_average')}; {res['date']} (a part run at another time says so).",
        "",
        "Every run: real stage-worker processes, ZeroMQ on loopback, links emulated in the "
        "transport (uplink serialized at the bandwidth, then the latency), on "
        "pydoc_data.topics tokenized with MiniLM's WordPiece; the tiny preset (2 stages x 2 "
        "replicas, dim 128, 4 layers, seq 128, 4 micro-batches of 4 per step, float32 on "
        "the wire) except in the uplink part.",
        "",
    ]
    if "uplink" in res:
        lines += uplink_report(res["uplink"])
    if "failover" in res:
        section = failover_report(res["failover"])
        lines += [*section[:2], *ran(res["failover"]), *section[2:]]
    if "quality" in res:
        q = res["quality"]
        lines += [f"## Quality ({q['steps']} steps, same seed and data)", "", *ran(q)]
        rows = [
            [r["label"], f"{r['final_loss']:.4f}", pct(r["vs_none"]),
             f"{r['wire_ratio_activation']:.3f}", f"{r['wire_ratio_gradient']:.3f}"]
            for r in q["rows"]
        ]  # fmt: skip
        lines += table(["codec", "eval loss", "vs none", "act wire/raw", "grad wire/raw"], rows)
        lines += [
            f"Two uncompressed runs differ by {pct(q['run_to_run'])} (round-robin routing: the "
            "runs are deterministic).",
            "",
        ]
    if "speed" in res:
        s = res["speed"]
        lines += [f"## Speed ({s['steps']} steps, mean s/step without step 0)", "", *ran(s)]
        rows = [
            [r["link"], f"{r['none_s_per_step']:.3f}", f"{r['lossy_s_per_step']:.3f}",
             f"{r['speedup']:.2f}x", f"{r['auto_s_per_step']:.3f}", f"{r['auto_speedup']:.2f}x",
             ", ".join(r["auto_chose"]), f"{r['none_wire_mb']:.1f}", f"{r['lossy_wire_mb']:.1f}"]
            for r in s["rows"]
        ]  # fmt: skip
        heads = ["link", "none s/step", "lossy s/step", "lossy speed-up", "auto s/step",
                 "auto speed-up", "auto chose", "none MB", "lossy MB"]  # fmt: skip
        lines += table(heads, rows)
    if "fidelity" in res:
        f = res["fidelity"]
        lines += [
            "## Twin fidelity",
            "",
            *ran(f),
            f"Per-message transport cost measured on loopback: "
            f"{1e3 * f['message_overhead_s']:.2f} ms.",
            "",
        ]
        rows = [
            [r["label"], f"{r['stages']}x{r['replicas']}", r["link"], f"{r['measured']:.3f}",
             f"{r['predicted']:.3f}", pct(r["error"])]
            for r in f["rows"]
        ]  # fmt: skip
        heads = ["run", "stages x replicas", "link", "measured s/step", "twin s/step", "error"]
        lines += table(heads, rows)
        ok = sum(abs(r["error"]) <= 0.15 for r in f["rows"])
        lines += [f"{ok} of {len(f['rows'])} configurations within 15 %.", ""]
        lines += [
            "### What-if: the 100 Mbit/s, 50 ms runs with faster compute (calibrated twin)",
            "",
            "Compute (the uncompressed run's service times and optimizer step) divided by k; "
            "the codec's extra seconds per pass kept as measured on this CPU.",
            "",
        ]
        lines += what_if_table(f["what_if_100mbit"], "lossy")
    if "faults" in res:
        f = res["faults"]
        ff = f["faults"]
        lines += [
            f"## Faults ({f['steps']} steps, a replica SIGKILLed every {f['kill_every']} steps)",
            "",
            *ran(f),
            f"- killed {ff['killed']}, micro-batches replayed {ff['replayed']}, replacements "
            f"{ff['replacements']} ({f['replacements_ready']} caught up and served)",
            f"- samples applied per stage: {f['samples_applied_per_stage']} (expected "
            f"{f['samples_expected_per_stage']} each); exactly once: {ff['exactly_once']}",
            "",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/results/swarm"))
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--quick", action="store_true", help="few steps: a smoke run")
    ap.add_argument("--pg", default=os.environ.get("SWARMPRESS_TEST_PG_URL"),
                    help="PostgreSQL URL: failover also keeps the state there")  # fmt: skip
    ap.add_argument("--merge", action="store_true",
                    help="keep the other parts of an existing OUT/swarm.json")  # fmt: skip
    ap.add_argument("--repeat", type=int, default=3,
                    help="uplink part: pairs of runs; the median pair is reported")  # fmt: skip
    a = ap.parse_args()
    if a.repeat < 1:
        ap.error("--repeat takes a count of at least 1")
    parts = [p.strip() for p in a.parts.split(",") if p.strip()]
    if bad := [p for p in parts if p not in PARTS]:
        ap.error(f"unknown parts {bad}; known: {', '.join(PARTS)}")
    q = a.quick
    res: dict = {}
    if a.merge and (a.out / "swarm.json").exists():
        res = json.loads((a.out / "swarm.json").read_text())
    cmd = "python " + " ".join(sys.argv)
    res["command"] = cmd
    if not a.merge or "machine" not in res:  # a merge keeps what the file's parts ran on
        res.update({"date": time.strftime("%Y-%m-%d"), "machine": machine_info()})
    if "uplink" in parts:
        res["uplink"] = uplink(4 if q else 30, message_overhead(), 1 if q else a.repeat)
    if "failover" in parts:  # the orchestrator SIGKILLed mid-run: restart and standby
        res["failover"] = failover(a.pg)
    if "quality" in parts:
        res["quality"] = quality(8 if q else 60)
    speed_runs: list[dict] = []
    if "speed" in parts or "fidelity" in parts:
        sp = speed(5 if q else 25)
        speed_runs = sp.pop("runs")
        sp["runs"] = [slim(r) for r in speed_runs]
        res["speed"] = sp
    if "fidelity" in parts:
        res["fidelity"] = fidelity(speed_runs, 5 if q else 25)
    if "faults" in parts:
        res["faults"] = faults(12 if q else 150, 4 if q else 50)
    for part in parts:  # each part says when, on what and by which command it ran
        res[part].setdefault("machine", machine_info())
        res[part].setdefault("date", time.strftime("%Y-%m-%d"))
        res[part]["command"] = cmd
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "swarm.json").write_text(json.dumps(res, indent=2))
    (a.out / "report.md").write_text(report(res))
    plots(res, a.out, parts)
    print(report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
