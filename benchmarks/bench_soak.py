"""Soak benchmark: the served champion under 64 connections of one-row traffic for 10 minutes.

Not in CI. Serves the way ``make serve`` does (``raylane.deploy.local``: ``ray start --head`` with
the RayService's cluster env, HAProxy ingress, then ``serve/config.yaml`` as shipped: autoscaling
1-4, micro-batching, prediction log on at its sample rate), the model being the credit XGBoost
champion that ``benchmarks/bench_serve.py`` trains and registers in a temporary MLflow registry.
``wrk`` runs in consecutive segments (60 s each by default) for per-minute throughput, p50/p99
and errors (non-2xx, socket errors incl. timeouts); every ~10 s the RSS and USS of the Serve
replica processes (found with Ray's state API), the HAProxy manager actor, the haproxy process and
the Serve controller are sampled with psutil.

    python -m benchmarks.bench_soak --minutes 10     # `make bench-soak`; ~12 minutes on 2 cores
    python -m benchmarks.bench_soak --minutes 1 --out /tmp/soak.json

Writes ``benchmarks/results/soak-<date>.json`` and a plot next to it (``--out`` moves both).
Starts its own Ray cluster in a private state directory and stops exactly that at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

from benchmarks.bench_serve import ROOT, ensure_wrk, free_port, run_wrk, train_and_register
from raylane.deploy import local

REPLICA_CLASS = "ServeReplica:"  # ServeReplica:<app>:<deployment>
ACTOR_ROLES = {"HAProxyManager": "haproxy_manager", "ProxyActor": "proxy_actor",
               "ServeController": "controller"}
ROLES = ("replica", "haproxy", "haproxy_manager", "proxy_actor", "controller", "gcs_server",
         "raylet")
DAEMONS = {"haproxy": "haproxy", "gcs_server": "gcs_server", "raylet": "raylet"}
MIB = 2**20


# ---------------------------------------------------------------- memory sampling


def _memory(pid: int) -> dict | None:
    """RSS and USS (MiB) of ``pid``, None if it is gone."""
    import psutil  # Ray's vendored copy: importable once ray is

    try:
        info = psutil.Process(pid).memory_full_info()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return {"rss_mib": round(info.rss / MIB, 2), "uss_mib": round(info.uss / MIB, 2)}


def sample_memory(dashboard: str, state_dir: Path) -> dict:
    """One sample: every alive Serve replica, proxy manager and controller actor (state API) and
    the cluster's haproxy, gcs_server and raylet processes, with their RSS and USS; the replica
    actors by state (ALIVE, PENDING_CREATION, ...)."""
    import psutil
    from ray.util.state import list_actors

    actors = list_actors(address=dashboard, limit=1000, raise_on_missing_output=False)
    procs, replica_states = [], {}
    for actor in actors:
        name = actor.class_name or ""
        role = "replica" if name.startswith(REPLICA_CLASS) else ACTOR_ROLES.get(name)
        if role == "replica":
            replica_states[actor.state] = replica_states.get(actor.state, 0) + 1
        if role and actor.state == "ALIVE" and actor.pid:
            procs.append({"role": role, "pid": actor.pid, "class_name": name})
    for pid in local.processes_of(state_dir):
        try:
            role = DAEMONS.get(psutil.Process(pid).name())
        except psutil.NoSuchProcess:
            continue
        if role:
            procs.append({"role": role, "pid": pid})
    sampled = [{**p, **mem} for p in procs if (mem := _memory(p["pid"]))]
    return {"replica_states": replica_states, "processes": sampled}


class Sampler(threading.Thread):
    """Samples memory every ``period`` s until stopped; ``t`` is seconds since ``t0``."""

    def __init__(self, dashboard: str, state_dir: Path, t0: float, period: float) -> None:
        super().__init__(daemon=True)
        self.args, self.t0, self.period = (dashboard, state_dir), t0, period
        self.samples: list[dict] = []
        self.errors: list[str] = []
        self.stopped = threading.Event()

    def sample(self) -> None:
        t = time.monotonic() - self.t0
        try:
            self.samples.append({"t": round(t, 1), **sample_memory(*self.args)})
        except Exception as exc:  # a slow dashboard must not end the soak; say so in the output
            self.errors.append(f"t={t:.0f}s: {type(exc).__name__}: {exc}"[:300])

    def run(self) -> None:
        while not self.stopped.wait(max(0.0, self.period - (time.monotonic() - self.t0)
                                        % self.period)):
            self.sample()


# ---------------------------------------------------------------- analysis


def _series(samples: list[dict], role: str) -> dict[int, list[tuple[float, float, float]]]:
    """(t, rss, uss) per pid of ``role``."""
    out: dict[int, list[tuple[float, float, float]]] = {}
    for s in samples:
        for p in s["processes"]:
            if p["role"] == role:
                out.setdefault(p["pid"], []).append((s["t"], p["rss_mib"], p["uss_mib"]))
    return out


def memory_growth(samples: list[dict], role: str, end_s: float, window: float = 60.0,
                  settle_s: float = 120.0) -> dict:
    """Per process of ``role`` seen under load: mean RSS/USS in its first ``window`` s under load
    vs the last ``window`` s of the run, the difference, and a least-squares slope over its
    samples from ``settle_s`` after its first one (MiB per 10 minutes): a replica's first
    prediction-log flush (``flush_interval_s``: 60) adds its write buffers once, not per minute."""
    out = {}
    under_load = [s for s in samples if 0 < s["t"] <= end_s]
    for pid, points in _series(under_load, role).items():
        t = np.array([p[0] for p in points])
        first_t = t[0]
        first, last = t < first_t + window, t >= end_s - window
        entry = {"first_s": float(first_t), "last_s": float(t[-1]), "samples": len(t)}
        for k, col in (("rss", 1), ("uss", 2)):
            v = np.array([p[col] for p in points])
            entry[f"{k}_first_mib"] = round(float(v[first].mean()), 2)
            entry[f"{k}_last_mib"] = round(float(v[last].mean()), 2) if last.any() else None
            entry[f"{k}_growth_mib"] = (round(entry[f"{k}_last_mib"] - entry[f"{k}_first_mib"], 2)
                                        if last.any() else None)
            tail = t >= first_t + settle_s
            entry[f"{k}_slope_mib_per_10min"] = (
                round(float(np.polyfit(t[tail], v[tail], 1)[0]) * 600, 2)
                if tail.sum() >= 3 else None)
        out[str(pid)] = entry
    return out


def summarize(segments: list[dict], samples: list[dict], end_s: float) -> dict:
    """Totals, errors, p99 drift and memory growth from the segments and memory samples."""
    sock = {k: sum(s["socket_error_counts"][k] for s in segments)
            for k in ("connect", "read", "write", "timeout")}
    requests = sum(s["requests"] for s in segments)
    errors = sum(s["non_2xx"] for s in segments) + sum(sock.values())
    alive = [s["replica_states"].get("ALIVE", 0) for s in samples if 0 < s["t"] <= end_s]
    first, last = segments[0], segments[-1]
    return {
        "requests": requests, "errors": errors, "non_2xx": sum(s["non_2xx"] for s in segments),
        "socket_errors": sock, "error_rate": errors / max(1, requests),
        "req_s_mean": requests / sum(s["duration_s"] for s in segments),
        "req_s_first_last": [first["req_s"], last["req_s"]],
        "p50_ms_first_last": [first["p50_ms"], last["p50_ms"]],
        "p99_ms_first_last": [first["p99_ms"], last["p99_ms"]],
        "p99_ms_min_max": [min(s["p99_ms"] for s in segments),
                           max(s["p99_ms"] for s in segments)],
        "replicas_alive_min_max": [min(alive, default=0), max(alive, default=0)],
        "replica_states_end": samples[-1]["replica_states"] if samples else {},
        "memory": {role: memory_growth(samples, role, end_s) for role in ROLES},
    }


# ---------------------------------------------------------------- plot


def plot(result: dict, path: Path) -> None:
    """Memory (RSS, USS) over time; p50/p99 and throughput per segment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples, segments = result["samples"], result["segments"]
    fig, (ax_mem, ax_delta, ax_lat, ax_rps) = plt.subplots(4, 1, figsize=(9, 12), sharex=True)
    for i, (pid, points) in enumerate(sorted(_series(samples, "replica").items())):
        t = [p[0] / 60 for p in points]
        ax_mem.plot(t, [p[1] for p in points], color=f"C{i}", alpha=0.45, label=f"{pid} RSS")
        ax_mem.plot(t, [p[2] for p in points], color=f"C{i}", label=f"{pid} USS")
    ax_mem.set_ylabel("MiB")
    ax_mem.set_title("Serve replica memory (RSS faint, USS solid)")
    ax_mem.legend(fontsize=7, ncol=4)
    roles = (("replica", "-"), ("haproxy_manager", "-."), ("proxy_actor", "-."), ("haproxy", ":"),
             ("controller", "--"))
    color = 0
    for role, style in roles:
        for pid, points in sorted(_series(samples, role).items()):
            t = [p[0] / 60 for p in points]
            ax_delta.plot(t, [p[2] - points[0][2] for p in points], style, color=f"C{color}",
                          label=f"{role} {pid}")
            color += 1
    ax_delta.axhline(0, color="grey", lw=0.5)
    ax_delta.set_ylabel("MiB")
    ax_delta.set_title("USS change since each process's first sample")
    ax_delta.legend(fontsize=6, ncol=4)
    mid = [(s["start_s"] + s["end_s"]) / 120 for s in segments]
    ax_lat.plot(mid, [s["p50_ms"] for s in segments], "o-", label="p50")
    ax_lat.plot(mid, [s["p99_ms"] for s in segments], "s-", label="p99")
    ax_lat.set_ylabel("ms")
    ax_lat.set_ylim(bottom=0)
    ax_lat.legend()
    ax_lat.set_title(f"latency per {segments[0]['duration_s']} s segment (wrk --latency)")
    width = segments[0]["duration_s"] / 60 * 0.8
    ax_rps.bar(mid, [s["req_s"] for s in segments], width=width, label="req/s")
    errs = [s["non_2xx"] + sum(s["socket_error_counts"].values()) for s in segments]
    for x, s, e in zip(mid, segments, errs, strict=True):
        ax_rps.annotate(f"{e} err", (x, s["req_s"]), ha="center", va="bottom", fontsize=7)
    ax_rps.set_ylabel("req/s")
    ax_rps.set_xlabel("minutes under load")
    twin = ax_rps.twinx()
    twin.step([s["t"] / 60 for s in samples], [s["replica_states"].get("ALIVE", 0)
                                               for s in samples], "k-", where="post", lw=1)
    twin.set_ylabel("replicas alive")
    twin.set_ylim(0, 5)
    ax_rps.set_title(f"throughput ({result['connections']} connections, one row)")
    fig.suptitle(f"raylane soak {result['started_utc']} ({result['machine']['cpus']} CPUs)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- run


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    import ray

    return {"cpus": os.cpu_count(), "cpu_model": cpu, "memory_gib": round(mem / 2**30, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "ray": ray.__version__, "wrk": wrk.strip()}


def soak_config(tmp: Path, port: int) -> Path:
    """``serve/config.yaml`` as shipped, on ``port`` (the one thing changed)."""
    cfg = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    cfg["http_options"]["port"] = port
    path = tmp / "serve.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def autoscaling_events(state_dir: Path) -> list[str]:
    """The Serve controller's up/downscaling decisions and resource warnings, from its log."""
    keys = ("Upscaling", "Downscaling", "resources")
    lines = [line.strip()[:300] for log in state_dir.glob("session_*/logs/serve/controller_*.log")
             for line in log.read_text(errors="replace").splitlines()
             if any(k in line for k in keys)]
    return list(dict.fromkeys(lines))  # Ray's session_latest link lists each log twice


def prediction_log_rows(directory: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in directory.rglob("*.parquet"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--segment-s", type=int, default=60, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--sample-s", type=float, default=10, help="memory sampling period")
    parser.add_argument("--n-estimators", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default benchmarks/results/soak-<date>.json); the "
                        "plot is written beside it as .png")
    parser.add_argument("--replot", type=Path, metavar="JSON",
                        help="recompute the summary and the plot of a results JSON, no run")
    args = parser.parse_args()
    if args.replot:
        result = json.loads(args.replot.read_text())
        result["summary"] = summarize(result["segments"], result["samples"],
                                      result["segments"][-1]["end_s"])
        args.replot.write_text(json.dumps(result, indent=2, default=str))
        plot(result, args.replot.with_suffix(".png"))
        print(json.dumps(result["summary"], indent=2))
        return
    out = args.out or ROOT / "benchmarks" / "results" / f"soak-{time.strftime('%Y-%m-%d')}.json"
    n_segments = max(1, round(args.minutes * 60 / args.segment_s))

    ensure_wrk()
    tmp = Path(tempfile.mkdtemp(prefix="raylane-bench-soak-"))
    state_dir = Path(tempfile.mkdtemp(prefix="rlsoak", dir="/tmp"))  # short: unix sockets
    print(f"workdir {tmp}, Ray state {state_dir}", flush=True)
    setup = train_and_register(tmp, args.n_estimators, sklearn_peer=False)
    port = free_port()
    config = soak_config(tmp, port)
    # the replicas inherit the environment of `ray start`: their prediction log goes to tmp
    os.environ["RAYLANE_PREDICTION_LOG"] = str(tmp / "prediction_log")
    os.environ["RAY_AUTH_MODE"] = "token"  # the state API client, as Ray's CLIs
    local.DASHBOARD_PORT = free_port()  # not 8265: leave a `make serve` on this machine alone
    dashboard = f"http://127.0.0.1:{local.DASHBOARD_PORT}"
    result: dict = {"machine": machine(), "connections": args.connections,
                    "wrk_threads": args.wrk_threads, "segment_s": args.segment_s,
                    "sample_s": args.sample_s, "serve_config": "serve/config.yaml (port changed)",
                    "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                    "loadavg_start": os.getloadavg()}
    body = json.dumps({"records": [setup["row"]]}).encode()
    url = f"http://127.0.0.1:{port}/predict"
    try:
        if local.start(config, setup["uri"], state_dir, timeout=300) != 0:
            raise SystemExit("could not start serving (see above)")
        t0 = time.monotonic()
        result["load_started_utc"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        sampler = Sampler(dashboard, state_dir, t0, args.sample_s)
        sampler.sample()  # t = 0: idle, before the first request
        sampler.start()
        segments = []
        for i in range(n_segments):
            start = time.monotonic() - t0
            seg = run_wrk(url, body, args.connections, args.segment_s, tmp, args.wrk_threads)
            seg.update(start_s=round(start, 1), end_s=round(time.monotonic() - t0, 1),
                       duration_s=args.segment_s)
            segments.append(seg)
            print(f"segment {i + 1}/{n_segments}: {seg['req_s']:.0f} req/s p50 "
                  f"{seg['p50_ms']} p99 {seg['p99_ms']} ms non-2xx {seg['non_2xx']} "
                  f"{seg['socket_errors'] or 'no socket errors'}", flush=True)
        end_s = time.monotonic() - t0
        sampler.stopped.set()
        sampler.join(60)
        sampler.sample()  # after the load
        result.update(
            segments=segments, samples=sampler.samples, sampler_errors=sampler.errors,
            serve_status_end=local._status(dashboard, {**os.environ}),
            autoscaling_events=autoscaling_events(state_dir),
            prediction_log_rows=prediction_log_rows(tmp / "prediction_log"),
            summary=summarize(segments, sampler.samples, end_s),
        )
    finally:
        local.stop(state_dir)
        shutil.rmtree(tmp, ignore_errors=True)
    result["finished_utc"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    result["loadavg_end"] = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    plot(result, out.with_suffix(".png"))
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
