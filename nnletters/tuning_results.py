"""What a study found: the leaderboard, trials.csv, best.yaml and report/tune.html.

Everything is read from the Optuna storage (the trials' user attrs carry their figures and
resolved config), so ``nnletters tune --status`` works from any machine that reaches the
storage; the pictures of curves need the run folders too.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import Any

from nnletters.fileio import write_text
from nnletters.tuning import Sweep, _safe, counted, open_study


def status(sweep: Sweep, log: Callable[[str], None] = print) -> str:
    """Write trials.csv, best.yaml and report/tune.html into the sweep folder (when it
    exists); -> the leaderboard text."""
    if sweep.study is None:
        sweep.study = _only_study(sweep)
    study = open_study(sweep, create=False)
    rows = trial_rows(study)
    lines = [f"study {study.study_name} in {_safe(sweep.storage_url)}: "
             + ", ".join(f"{n} {state}" for state, n in _states(rows).items()),
             leaderboard(rows)]
    if sweep.out is not None and sweep.out.is_dir():
        write_text(sweep.out / "trials.csv", trials_csv(rows))
        best = next((r for r in rows if r["state"] == "COMPLETE"), None)
        if best is not None and best["config"]:
            write_text(sweep.out / "best.yaml", best_yaml(best))
            lines.append(f"best: trial {best['trial']} ({best['folder']}); its config is "
                         f"{sweep.out / 'best.yaml'}")
        from nnletters.tuning_report import write_tune_report

        lines.append(f"wrote {sweep.out / 'trials.csv'} and "
                     f"{write_tune_report(sweep.out, rows, study)}")
    return "\n".join(lines)


def _only_study(sweep: Sweep) -> str:
    """The name of the one study in the storage (default: the sweep folder's study.db)."""
    import optuna

    from nnletters.tuning import TuneError, open_storage

    if sweep.storage is None and not (sweep.out / "study.db").exists():
        raise TuneError(f"{sweep.out}: no study.db here; give the sweep folder, or "
                        "--storage URL --study NAME")
    storage = open_storage(sweep.storage_url)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if len(names) != 1:
        raise TuneError(f"{_safe(sweep.storage_url)}: holds {len(names)} studies "
                        f"({', '.join(names)}); choose one with --study")
    return names[0]


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One dict per counted trial, best first: COMPLETE by value, then PRUNED, RUNNING,
    WAITING, FAIL."""
    order = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "WAITING": 3, "FAIL": 4}
    rows = [_row(t) for t in study.get_trials(deepcopy=False) if counted(t)]
    return sorted(rows, key=lambda r: (order[r["state"]], -(r["value"] or 0.0), r["trial"]))


def _row(t: Any) -> dict[str, Any]:
    a = t.user_attrs
    seconds = a.get("seconds")
    if seconds is None and t.datetime_start and t.datetime_complete:
        seconds = round((t.datetime_complete - t.datetime_start).total_seconds(), 1)
    epochs = a.get("epochs") or ([a["pruned_epoch"]] if "pruned_epoch" in a else [])
    return {"trial": t.number, "folder": a.get("folder", ""), "state": t.state.name,
            "value": t.value if t.value is not None else _pruned_value(t),
            "spread": a.get("spread"), "test_accuracy": a.get("test_accuracy"),
            "epochs": max(epochs) if epochs else None, "seconds": seconds,
            "params": dict(t.params), "error": a.get("error", ""),
            "log_params": {k: bool(getattr(d, "log", False))
                           for k, d in t.distributions.items()},
            "stop_reason": a.get("stop_reason") or "", "config": a.get("config"),
            "finished": t.datetime_complete.isoformat() if t.datetime_complete else "",
            "resumed": any(k.startswith("resumed_from") and v for k, v in a.items()),
            "baseline": bool(a.get("baseline"))}


def _pruned_value(t: Any) -> float | None:
    """A pruned trial's best reported val_accuracy (Optuna keeps no value for it)."""
    return max(t.intermediate_values.values()) if t.intermediate_values else None


def _states(rows: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r["state"].lower()] = out.get(r["state"].lower(), 0) + 1
    return out


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.2f}"


def _param(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v).replace(" ", "")


def leaderboard(rows: list[dict[str, Any]]) -> str:
    """The table: trial, parameters, value +- spread, test accuracy, epochs, seconds, state."""
    keys = list(dict.fromkeys(k for r in rows for k in r["params"]))
    head = ["trial", *keys, "val %", "+-", "test %", "epochs", "seconds", "state"]
    body = [[str(r["trial"]), *(_param(r["params"].get(k, "")) for k in keys),
             _pct(r["value"]), _pct(r["spread"]) if r["spread"] else "",
             _pct(r["test_accuracy"]), str(r["epochs"] or ""),
             f"{r['seconds']:.0f}" if r["seconds"] is not None else "",
             r["state"].lower() + (f": {r['error']}" if r["error"] else "")
             + (" (resumed)" if r["resumed"] else "") + (" (base)" if r["baseline"] else "")]
            for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=False)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=False)).rstrip()
                     for line in (head, *body))


def trials_csv(rows: list[dict[str, Any]]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r["params"]))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["trial", "folder", "state", "value", "spread", "test_accuracy", "epochs",
                "seconds", "finished", *keys, "stop_reason", "error"])
    for r in rows:
        w.writerow([r["trial"], r["folder"], r["state"], r["value"], r["spread"],
                    r["test_accuracy"], r["epochs"], r["seconds"], r["finished"],
                    *(r["params"].get(k, "") for k in keys), r["stop_reason"], r["error"]])
    return buf.getvalue()


def best_yaml(best: dict[str, Any]) -> str:
    """The winning trial's resolved config, with a header saying where it came from."""
    params = json.dumps(best["params"])
    return (f"# nnletters tune: the best trial, {best['trial']} ({best['folder']}), "
            f"val {_pct(best['value'])}%\n# parameters: {params}\n" + best["config"])
