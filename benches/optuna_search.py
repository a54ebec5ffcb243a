"""Optuna's TPESampler behind a line protocol, so `cargo bench --bench search` can run it on
the same test functions, noise and budgets as dbsweep's `method: bayes`.

Each request is one JSON line on stdin, each answer one JSON line on stdout:

- {"op": "study", "seed": s, "space": [{"name": .., "low": .., "high": .., "log": bool}]}
  starts a study with `TPESampler(seed=s)` (default settings) -> {"ok": true}
- {"op": "ask"} -> {"trial": n, "params": [value per space entry]}
- {"op": "tell", "trial": n, "value": v} -> {"ok": true}
- {"op": "version"} -> {"optuna": "x.y.z"}

The bench's functions and noise stay in Rust: this script only proposes points.
"""

import json
import sys

import optuna


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = None
    space = {}
    names = []
    trials = {}
    for line in sys.stdin:
        req = json.loads(line)
        op = req["op"]
        if op == "version":
            out = {"optuna": optuna.__version__}
        elif op == "study":
            sampler = optuna.samplers.TPESampler(seed=req["seed"])
            study = optuna.create_study(sampler=sampler, direction="minimize")
            names = [p["name"] for p in req["space"]]
            space = {
                p["name"]: optuna.distributions.FloatDistribution(p["low"], p["high"], log=p["log"])
                for p in req["space"]
            }
            trials = {}
            out = {"ok": True}
        elif op == "ask":
            trial = study.ask(space)
            trials[trial.number] = trial
            out = {"trial": trial.number, "params": [trial.params[n] for n in names]}
        elif op == "tell":
            study.tell(trials.pop(req["trial"]), req["value"])
            out = {"ok": True}
        else:
            out = {"error": f"unknown op {op}"}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
