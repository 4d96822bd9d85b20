"""Chaos: the operator is killed with SIGKILL again and again while bursts of changes land on 50
WasmWorkers and their InferenceModels, and still ends converged.

A seeded script (the same every run; WASMINFER_CHAOS_SEED picks another) creates the workers, patches
their env, vars, route, models and replicas, scales them through /scale, deletes some (in the
background and in the foreground) and re-creates some under the same name, and deletes models while
workers use them: one stays held by its users, one is let go by them, goes, and is created again.
Five times, at a random point inside a burst, the operator is killed while it works (after a random
number of lines of work in its log: applies, condition changes), either following the burst live or
catching up with it after taking the Lease, and a fresh process is started, at once or a step or two
later so that some changes land while none runs.

At the end, within a bounded wait: every worker has been acted on at its current generation and is
Ready; it has exactly one Deployment, Service and ConfigMap, owned by its current uid and carrying
its current spec (replicas, env, route, vars, models), and as many pods as it asks for; no child of
the operator is left without its live worker (children of deleted workers go by garbage collection);
models in use are held, models nobody uses are gone, and each model lists exactly its users; and no
reconcile failed with an unexpected error (an API error retried is expected after a kill). A failure
names the worker, child or model that is wrong and shows the operator's log tail.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_objects import install_crds, let_models_go, model_yaml, worker_yaml
from operator_process import OperatorProcess

from kube import Cluster

pytestmark = pytest.mark.cluster

SEED = int(os.environ.get("WASMINFER_CHAOS_SEED", "12"))
WORKERS = 50
MODELS = ("m0", "m1", "m2")
HELD = "m2"  # deleted while in use; its users keep it until the end
CYCLED = "m1"  # deleted while in use, let go by its users, gone, then created again
CONVERGE_SECONDS = 120.0
WORKER_LABEL = "wasminfer.dev/worker"
FINALIZER = "wasminfer.dev/in-use-protection"
CHILD_KINDS = ("Deployment", "Service", "ConfigMap")


@dataclasses.dataclass
class Step:
    """One action of the script: a kubectl call, or a kill/restart of the operator."""

    burst: str
    kind: str  # apply | delete | scale | delete-model | model-gone | kill | restart
    names: list[str] = dataclasses.field(default_factory=list)
    docs: str = ""
    replicas: int = 0
    foreground: bool = False
    kill_after: int = 0  # kill: lines of work the operator logs after the next step began (or until idle)
    live: bool = False  # kill: the next step starts once the operator leads (else maybe while it waits for the Lease)

    def describe(self) -> str:
        extra = f" x{self.replicas}" if self.kind == "scale" else " (foreground)" if self.foreground else ""
        extra += f" after {self.kill_after} lines of work{' (leading)' if self.live else ''}" if self.kind == "kill" else ""
        shown = ", ".join(self.names[:6]) + (f" +{len(self.names) - 6}" if len(self.names) > 6 else "")
        return f"[{self.burst}] {self.kind} {shown}{extra}"


@dataclasses.dataclass
class Script:
    """The seeded plan of steps, and the state it leaves: what the cluster must converge to."""

    rng: random.Random
    steps: list[Step] = dataclasses.field(default_factory=list)
    specs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # live worker -> spec
    models: dict[str, str] = dataclasses.field(default_factory=dict)  # model -> live | held | gone
    revision: int = 0

    def usable_models(self) -> list[str]:
        return [m for m, state in self.models.items() if state == "live"]

    def spec(self, name: str, keep: list[str] | None = None) -> dict[str, Any]:
        """A fresh random spec; `keep` are models a worker must go on naming (those held for it)."""
        self.revision += 1
        pool = [m for m in self.usable_models() if m not in (keep or [])]
        models = sorted(set(self.rng.sample(pool, self.rng.randint(0, min(2, len(pool))))) | set(keep or []))
        spec: dict[str, Any] = {"models": models, "replicas": self.rng.randint(1, 2), "route": f"/{name}/r{self.revision}"}
        if self.rng.random() < 0.5:
            spec["env"] = [{"name": "CHAOS", "value": f"e{self.revision}"}]
        if self.rng.random() < 0.5:
            spec["vars"] = {"chaos": f"v{self.revision}"}
        return spec

    def held_by(self, name: str) -> list[str]:
        return [m for m in self.specs[name]["models"] if self.models.get(m) == "held"]

    def apply(self, burst: str, names: list[str]) -> Step:
        """A step applying the workers' current specs (server-side apply: what a spec leaves out goes)."""
        return Step(burst, "apply", names=list(names), docs="---\n".join(worker_yaml(n, **self.specs[n]) for n in names))

    def chunks(self, names: list[str], n: int) -> list[list[str]]:
        size = -(-len(names) // n)
        return [names[i : i + size] for i in range(0, len(names), size)]

    def with_kill(self, burst: str, actions: list[list[Step]], restart_later: int = 0) -> None:
        """The burst's actions (groups of steps), with a kill during the first step of a random one
        (not the first); a fresh operator starts right after that step, or `restart_later` groups on."""
        at = self.rng.randint(1, len(actions) - 1)
        restart = Step(burst, "restart")
        for i, group in enumerate(actions):
            if i == at:
                # Every other kill lands in a burst the leader follows live; the others, in the
                # catch-up of a process that took the Lease after the burst's step.
                live = sum(st.kind == "kill" for st in self.steps) % 2 == 0
                self.steps.append(Step(burst, "kill", kill_after=self.rng.randint(1, 25), live=live))
                self.steps.append(group[0])
                if restart_later == 0:
                    self.steps.append(restart)
                self.steps.extend(group[1:])
            else:
                self.steps.extend(group)
            if restart_later and i == at + restart_later:
                self.steps.append(restart)
        if restart_later and at + restart_later >= len(actions):
            self.steps.append(restart)


def build_script(seed: int) -> Script:
    s = Script(random.Random(seed))
    s.models = {m: "live" for m in MODELS}
    s.steps.append(Step("setup", "apply", names=list(MODELS), docs="---\n".join(model_yaml(m) for m in MODELS)))
    names = [f"w{i:02}" for i in range(WORKERS)]

    # 1. create every worker, in five calls
    for n in names:
        s.specs[n] = s.spec(n)
    s.with_kill("create", [[s.apply("create", chunk)] for chunk in s.chunks(names, 5)])

    # 2. patch env, vars, route, models and replicas of 21 workers; the operator comes back a step late
    actions = []
    for chunk in s.chunks(sorted(s.rng.sample(sorted(s.specs), 21)), 3):
        for n in chunk:
            s.specs[n] = s.spec(n)
        actions.append([s.apply("patch", chunk)])
    s.with_kill("patch", actions, restart_later=1)

    # 3. scale 16 workers through /scale, to 0..3
    actions = []
    for chunk, replicas in zip(s.chunks(sorted(s.rng.sample(sorted(s.specs), 16)), 4), s.rng.sample(range(4), 4)):
        for n in chunk:
            s.specs[n]["replicas"] = replicas
        actions.append([Step("scale", "scale", names=chunk, replicas=replicas)])
    s.with_kill("scale", actions)

    # 4. delete 8 workers (2 in the foreground), re-create 5 of the others under the same name, add 3
    doomed = sorted(s.rng.sample(sorted(s.specs), 8))
    foreground, background = doomed[:2], doomed[2:]
    for n in doomed:
        del s.specs[n]
    recreated = sorted(s.rng.sample(background, 5))
    added = [f"x{i}" for i in range(3)]
    for n in recreated + added:
        s.specs[n] = s.spec(n)
    actions = [
        [Step("recreate", "delete", names=background)],
        [Step("recreate", "delete", names=foreground, foreground=True)],
        [s.apply("recreate", recreated[:3])],
        [s.apply("recreate", recreated[3:] + added)],
    ]
    s.with_kill("recreate", actions, restart_later=2)

    # 5. models deleted while in use: HELD stays held by its users; CYCLED's users let it go, it goes,
    # and it is created again and taken up by some workers
    users = [n for n, sp in s.specs.items() if HELD in sp["models"]]
    assert users, f"seed {seed}: no worker uses {HELD}"
    s.models[HELD] = "held"
    cycled_users = sorted(n for n, sp in s.specs.items() if CYCLED in sp["models"])
    s.models[CYCLED] = "held"
    for n in cycled_users:
        s.specs[n] = s.spec(n, keep=[m for m in s.held_by(n) if m != CYCLED])
    s.models[CYCLED] = "gone"
    actions = [[Step("models", "delete-model", names=[HELD])], [Step("models", "delete-model", names=[CYCLED])]]
    actions.append([s.apply("models", cycled_users), Step("models", "model-gone", names=[CYCLED])])
    s.models[CYCLED] = "live"
    actions.append([Step("models", "apply", names=[CYCLED], docs=model_yaml(CYCLED))])
    takers = sorted(s.rng.sample(sorted(s.specs), 6))
    for n in takers:
        s.specs[n] = s.spec(n, keep=s.held_by(n))
        if CYCLED not in s.specs[n]["models"]:
            s.specs[n]["models"] = sorted([*s.specs[n]["models"], CYCLED])
    actions.append([s.apply("models", takers)])
    s.with_kill("models", actions)
    return s


# --- running it ------------------------------------------------------------------------------------


@pytest.fixture
def own_ns(cluster: Cluster) -> Iterator[str]:
    """A namespace no other operator of the test run watches; deleted at the end, its models' finalizers
    taken off first (the operator that would let them go has stopped), so that it does not hang."""
    install_crds(cluster)
    name = cluster.new_namespace("chaos")
    yield name
    let_models_go(cluster, name)
    cluster.delete_namespace(name)


class Chaos:
    """Runs a script's steps against one namespace, killing and restarting its operator."""

    def __init__(self, cluster: Cluster, ns: str, log_path: Path) -> None:
        self.cluster = cluster
        self.ns = ns
        self.log_path = log_path
        self.op: OperatorProcess | None = None
        self.kills = 0
        self.started_at = 0  # log offset at the current process's start
        self.killed_at: list[int] = []  # lines of work each killed process logged after its action began

    def mark(self, text: str) -> None:
        """A line in the operator log, so its tail shows where the script was."""
        with self.log_path.open("a") as f:
            f.write(f"==== chaos {time.strftime('%H:%M:%S')}: {text} ====\n")

    def start(self) -> OperatorProcess:
        ns = self.ns
        self.started_at = self.log_size() if self.log_path.exists() else 0
        self.op = OperatorProcess(self.cluster.kubeconfig, self.log_path, namespaces=[ns], lease_name=f"lease-{ns}", lease_namespace=ns).start()
        self.mark(f"operator started, pid {self.op.pid}")
        return self.op

    def tail(self) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return f"operator log {self.log_path} (last 60 lines):\n" + "\n".join(lines[-60:])

    def kubectl_args(self, step: Step) -> list[str]:
        ns = self.ns
        if step.kind == "apply":
            return ["apply", "--server-side", "--force-conflicts", "--field-manager=chaos-test", "-n", ns, "-f", "-"]
        if step.kind == "delete":
            cascade = "--cascade=foreground" if step.foreground else "--cascade=background"
            return ["delete", "wasmworker", *step.names, "-n", ns, "--wait=false", cascade]
        if step.kind == "scale":
            return ["scale", "wasmworker", *step.names, "-n", ns, f"--replicas={step.replicas}"]
        if step.kind == "delete-model":
            return ["delete", "inferencemodel", *step.names, "-n", ns, "--wait=false"]
        raise AssertionError(f"{step.kind} is not a kubectl step")

    def run_all(self, steps: list[Step]) -> None:
        i = 0
        while i < len(steps):
            if steps[i].kind == "kill":
                self.kill_during(steps[i], steps[i + 1])
                i += 2
            else:
                self.run(steps[i])
                i += 1

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def work_lines(self, offset: int) -> int:
        """Lines the operator logged about this namespace's objects since `offset`: applies,
        condition transitions, finalizers. (Its probe is cached for 10 s: too coarse to time a kill.)"""
        work = re.compile(rf'"message": "(worker|model|release|WasmWorker|InferenceModel) {self.ns}/'.encode())
        with self.log_path.open("rb") as f:
            f.seek(offset)
            return sum(1 for line in f if work.search(line))

    def wait_leading(self, op: OperatorProcess) -> None:
        """Until the process logs that it leads (its probe, cached for 10 s, would say so late)."""
        deadline = time.monotonic() + 60
        while True:
            with self.log_path.open("rb") as f:
                f.seek(self.started_at)
                if any(line.startswith(b'{"message": "leading:') for line in f):
                    return
            assert op.alive() and time.monotonic() < deadline, f"the operator did not lead (log line 'leading: ...')\n{self.tail()}"
            time.sleep(0.05)

    def kill_during(self, kill: Step, action: Step) -> None:
        """SIGKILL once the operator has logged `kill_after` lines of work since `action` began (it
        runs meanwhile), so the kill lands while the operator works on the burst; if it runs out of
        work first, once the action is done and the operator, having led, is quiet for a second."""
        op = self.op
        assert op is not None and op.alive(), f"no operator to kill\n{self.tail()}"
        if kill.live:
            self.wait_leading(op)
        base = self.log_size()
        self.mark(f"{kill.describe()}, during: {action.describe()}")
        proc = subprocess.Popen([str(self.cluster.bin_dir / "kubectl"), *self.kubectl_args(action)], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=self.cluster.env, text=True)
        assert proc.stdin is not None and proc.stderr is not None
        proc.stdin.write(action.docs)
        proc.stdin.close()
        done, changed = 0, time.monotonic()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and op.alive():
            now, seen = time.monotonic(), self.work_lines(base)
            if seen != done:
                done, changed = seen, now
            if done >= kill.kill_after:
                break
            if proc.poll() is not None and now - changed > 1 and self.work_lines(self.started_at) > 0:
                break
            time.sleep(0.02)
        assert op.alive(), f"the operator exited by itself ({op.proc.returncode if op.proc else '?'})\n{self.tail()}"
        running = proc.poll() is None
        op.kill()
        self.kills += 1
        self.killed_at.append(done)
        self.mark(f"kill -9 #{self.kills} (pid {op.pid}) {done} lines of work into the action, action {'running' if running else 'done'}")
        self.op = None
        assert proc.wait(timeout=120) == 0, f"{action.describe()} failed: {proc.stderr.read()}"

    def run(self, step: Step) -> None:
        ns = self.ns
        self.mark(step.describe())
        if step.kind == "model-gone":
            (model,) = step.names
            try:
                self.cluster.wait_until(lambda: not self.cluster.exists("inferencemodel", model, namespace=ns), 60,
                                        f"InferenceModel {model} to go once its users let it go")
            except AssertionError as err:
                raise AssertionError(f"{err}\n{self.tail()}") from None
        elif step.kind == "restart":
            self.start()
        else:
            self.cluster.kubectl(*self.kubectl_args(step), input=step.docs or None)


# --- what converged means --------------------------------------------------------------------------


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind), {})
    return found


def problems(cluster: Cluster, ns: str, s: Script) -> list[str]:
    """Everything that still differs from the converged state the script leaves; empty when done."""
    items = cluster.get_json("wasmworkers,inferencemodels,deployments,services,configmaps,pods", namespace=ns)["items"]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_kind.setdefault(item["kind"], []).append(item)
    workers = {w["metadata"]["name"]: w for w in by_kind.get("WasmWorker", [])}
    out: list[str] = []
    if sorted(workers) != sorted(s.specs):
        out.append(f"workers: {sorted(set(workers) ^ set(s.specs))} should {'not ' if set(workers) - set(s.specs) else ''}exist (script vs cluster)")
    uids = {n: w["metadata"]["uid"] for n, w in workers.items() if not w["metadata"].get("deletionTimestamp")}

    for name, want in sorted(s.specs.items()):
        w = workers.get(name)
        if w is None:
            continue
        gen, st = w["metadata"]["generation"], w.get("status") or {}
        spec = w["spec"]
        if spec.get("replicas") != want["replicas"] or spec.get("route") != want["route"] or spec.get("models", []) != want["models"]:
            out.append(f"worker {name}: spec {spec} is not what the script set ({want})")
        ready = condition(w, "Ready")
        if st.get("observedGeneration") != gen or ready.get("observedGeneration") != gen:
            out.append(f"worker {name}: observedGeneration {st.get('observedGeneration')} / Ready's {ready.get('observedGeneration')}, generation {gen}")
        if ready.get("status") != "True":
            out.append(f"worker {name}: Ready={ready.get('status')} ({ready.get('reason')}: {ready.get('message')})")
        running = [p for p in by_kind.get("Pod", []) if (p["metadata"].get("labels") or {}).get(WORKER_LABEL) == name
                   and not p["metadata"].get("deletionTimestamp")]
        if len(running) != want["replicas"]:
            out.append(f"worker {name}: {len(running)} pods, spec asks for {want['replicas']}")

    # Every child of the operator must be one of the three of a live worker, owned by its current uid.
    seen: dict[tuple[str, str], int] = {}
    for kind in CHILD_KINDS:
        for child in by_kind.get(kind, []):
            meta = child["metadata"]
            labels = meta.get("labels") or {}
            if labels.get("app.kubernetes.io/managed-by") != "wasminfer-operator":
                continue
            worker = labels.get(WORKER_LABEL, "")
            owners = [o["uid"] for o in meta.get("ownerReferences") or []]
            expected_name = f"{worker}-runtime" if kind == "ConfigMap" else worker
            what = f"{kind} {meta['name']}"
            if worker not in uids:
                out.append(f"orphan: {what} (worker {worker!r} no longer exists; owners {owners})")
                continue
            if meta["name"] != expected_name or owners != [uids[worker]] or meta.get("deletionTimestamp"):
                out.append(f"worker {worker}: {what} owned by {owners}, deleting={bool(meta.get('deletionTimestamp'))}; "
                           f"want {kind} {expected_name} owned by [{uids[worker]}] only")
                continue
            seen[(kind, worker)] = seen.get((kind, worker), 0) + 1
            out += check_content(worker, child, s.specs[worker])
    for pod in by_kind.get("Pod", []):
        worker = (pod["metadata"].get("labels") or {}).get(WORKER_LABEL)
        if worker is not None and worker not in uids and not pod["metadata"].get("deletionTimestamp"):
            out.append(f"orphan: Pod {pod['metadata']['name']} of worker {worker!r}, which no longer exists")
    for worker in sorted(uids):
        for kind in CHILD_KINDS:
            if seen.get((kind, worker), 0) != 1:
                out.append(f"worker {worker}: {seen.get((kind, worker), 0)} {kind}(s) owned by its uid, want 1")

    models = {m["metadata"]["name"]: m for m in by_kind.get("InferenceModel", [])}
    for model, state in sorted(s.models.items()):
        m = models.get(model)
        users = sorted(n for n, sp in s.specs.items() if model in sp["models"])
        if state == "gone":
            if m is not None:
                out.append(f"model {model}: should be gone; finalizers {m['metadata'].get('finalizers')}")
            continue
        if m is None:
            out.append(f"model {model}: missing (state {state}, users {users})")
            continue
        meta, st = m["metadata"], m.get("status") or {}
        if FINALIZER not in (meta.get("finalizers") or []):
            out.append(f"model {model}: no {FINALIZER} finalizer")
        if (st.get("workers"), st.get("workerCount")) != (users, len(users)):
            out.append(f"model {model}: status lists {st.get('workerCount')} users {st.get('workers')}, want {users}")
        if bool(meta.get("deletionTimestamp")) != (state == "held"):
            out.append(f"model {model}: deletionTimestamp {meta.get('deletionTimestamp')}, want it {state}")
        deleting = condition(m, "Deleting")
        if state == "held" and not (deleting.get("reason") == "InUse" and ", ".join(users) in deleting.get("message", "")):
            out.append(f"model {model}: Deleting {deleting} should name its users {users}")
    return out


def check_content(worker: str, child: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    """The child carries the worker's current spec (the parts the script changes)."""
    kind = child["kind"]
    if kind == "Deployment":
        out = []
        if child["spec"]["replicas"] != spec["replicas"]:
            out.append(f"worker {worker}: Deployment replicas {child['spec']['replicas']}, spec {spec['replicas']}")
        (runtime,) = [c for c in child["spec"]["template"]["spec"]["containers"] if c["name"] == "runtime"]
        env = [e for e in runtime.get("env") or [] if e["name"] == "CHAOS"]
        if env != spec.get("env", []):
            out.append(f"worker {worker}: Deployment env CHAOS {env}, spec {spec.get('env', [])}")
        return out
    if kind == "ConfigMap":
        (cfg,) = yaml.safe_load(child["data"]["runtime.yaml"])["workers"]
        got = (cfg["route"], (cfg.get("vars") or {}).get("chaos"), cfg["wasi_nn"]["models"])
        want = (spec["route"], spec.get("vars", {}).get("chaos"), spec["models"])
        if got != want:
            return [f"worker {worker}: ConfigMap route/vars.chaos/models {got}, spec {want}"]
    return []


def test_operator_killed_repeatedly_during_bursts_converges_with_every_child_once_and_no_orphans(
    cluster: Cluster, own_ns: str, tmp_path: Path
) -> None:
    ns = own_ns
    script = build_script(SEED)
    chaos = Chaos(cluster, ns, tmp_path / "operator.log")
    print(f"seed {SEED}: {len(script.steps)} steps, {sum(st.kind == 'kill' for st in script.steps)} kills")
    started = time.monotonic()
    chaos.wait_leading(chaos.start())
    try:
        chaos.run_all(script.steps)
        op = chaos.op
        assert op is not None, "the script ends with an operator running"
        scripted = time.monotonic()

        deadline = scripted + CONVERGE_SECONDS
        left = problems(cluster, ns, script)
        while left and time.monotonic() < deadline:
            assert op.alive(), f"the operator exited ({op.proc.returncode if op.proc else '?'})\n{chaos.tail()}"
            time.sleep(1)
            left = problems(cluster, ns, script)
        converged = time.monotonic()
        shown = "\n".join(left[:40]) + (f"\n... and {len(left) - 40} more" if len(left) > 40 else "")
        assert not left, f"not converged {CONVERGE_SECONDS:.0f} s after the script (seed {SEED}):\n{shown}\n{chaos.tail()}"
        failures = [ln for ln in chaos.log_path.read_text(errors="replace").splitlines() if "reconcile failed" in ln]
        assert not failures, "unexpected reconcile errors:\n" + "\n".join(failures[:5]) + "\n" + chaos.tail()
        print(f"kills {chaos.kills} ({chaos.killed_at} lines of work into their actions); script {scripted - started:.1f} s, "
              f"converged {converged - scripted:.1f} s later, total {converged - started:.1f} s; {len(script.specs)} workers")
    finally:
        if chaos.op is not None:
            chaos.op.stop()
