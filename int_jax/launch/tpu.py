"""`python -m int_jax.launch.tpu <action> ...`: a TPU VM slice from creation to teardown.

    create    make the slice (on demand, or `--queued` through queued resources)
    setup     clone or update the repository on every worker and install it (+ jax[tpu])
    upload    copy a local run folder to GCS and from there onto every worker
    run       run one int-jax command on all workers at once (JAX multi-controller)
    download  copy a run folder from worker 0 to GCS and from there to this machine
    delete    tear the slice down

Every action takes `--dry-run`: each `gcloud` / `gsutil` command is printed instead
of run. `create` and `run` take the int-jax command after `--` and check its memory
plan on the slice first (`plan_check.py`: `int-jax plan`, printed with its verdict; a
plan that does not fit stops here, before the slice exists or anything runs;
`--skip-plan` skips the check). `run` adds the slice's preset (`presets.TPU_SLICES`:
every chip on fsdp, micro-batches of rows per chip, `model.distributed=True`); on a
TPU VM `jax.distributed.initialize()` finds the coordinator and the process ids by
itself, so every worker runs the same line.

    python -m int_jax.launch.tpu run --name int-v5p --zone us-east5-a --project P \\
        --slice v5p-32 --dry-run -- pipeline --config=configs/experiments/int_rl.py:qwen3_4b_instruct_2507
"""

from __future__ import annotations

import argparse
import shlex
import sys

from int_jax.launch import plan_check
from int_jax.launch.presets import TPU_SLICES, target
from int_jax.launch.shell import Shell, command_words, launcher_parser, remote_int_jax


def _where(a) -> list[str]:
    return [f"--zone={a.zone}", f"--project={a.project}"]


def _ssh(a, worker: str, command: str) -> list[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", a.name, *_where(a), f"--worker={worker}",
            f"--command={command}"]


def _checked(a, sh: Shell) -> list[str]:
    """The command's words with the slice's preset, once its memory plan fits."""
    if not a.command:
        raise SystemExit(f"int_jax.launch.tpu {a.action}: give the int-jax command after `--`, e.g. "
                         "`-- pipeline --config=configs/experiments/int_rl.py:qwen3_4b_instruct_2507`"
                         + (" (its memory plan is checked before the slice is created), or "
                            "--skip-plan" if a.action == "create" else ""))
    return plan_check.prepare(a.command, target(a.slice), distributed=True,
                              skip_plan=a.skip_plan, out=sh.out, who=f"int_jax.launch.tpu {a.action}")


def create(a, sh: Shell) -> None:
    s = TPU_SLICES[a.slice]
    if a.command or not a.skip_plan:
        _checked(a, sh)
    extra = ["--spot"] if a.spot else []
    if a.queued:
        sh.run(["gcloud", "compute", "tpus", "queued-resources", "create", a.name, f"--node-id={a.name}",
                *_where(a), f"--accelerator-type={s.accelerator}", f"--runtime-version={s.runtime}",
                *extra])
    else:
        sh.run(["gcloud", "compute", "tpus", "tpu-vm", "create", a.name, *_where(a),
                f"--accelerator-type={s.accelerator}", f"--version={s.runtime}", *extra])


def setup(a, sh: Shell) -> None:
    repo, url, ref = shlex.quote(a.repo_dir), shlex.quote(a.repo_url), shlex.quote(a.ref)
    script = (f"set -e; [ -d {repo} ] || git clone {url} {repo}; cd {repo} && git fetch -q origin "
              f"&& git checkout -q {ref} && make install && .venv/bin/pip install -q 'jax[tpu]'")
    sh.run(_ssh(a, "all", script))


def upload(a, sh: Shell) -> None:
    remote = f"{a.bucket.rstrip('/')}/{a.run}"
    sh.run(["gsutil", "-m", "rsync", "-r", a.run, remote])
    sh.run(_ssh(a, "all", f"mkdir -p {shlex.quote(a.repo_dir + '/' + a.run)} && gsutil -m rsync -r "
                          f"{shlex.quote(remote)} {shlex.quote(a.repo_dir + '/' + a.run)}"))


def download(a, sh: Shell) -> None:
    remote = f"{a.bucket.rstrip('/')}/{a.run}"
    sh.run(_ssh(a, "0", f"gsutil -m rsync -r {shlex.quote(a.repo_dir + '/' + a.run)} "
                        f"{shlex.quote(remote)}"))
    sh.run(["gsutil", "-m", "rsync", "-r", remote, a.run])


def run(a, sh: Shell) -> None:
    sh.run(_ssh(a, "all", remote_int_jax(a.repo_dir, _checked(a, sh))))


def delete(a, sh: Shell) -> None:
    if a.queued:
        sh.run(["gcloud", "compute", "tpus", "queued-resources", "delete", a.name, *_where(a),
                "--force", "--quiet"])
    else:
        sh.run(["gcloud", "compute", "tpus", "tpu-vm", "delete", a.name, *_where(a), "--quiet"])


ACTIONS = {"create": create, "setup": setup, "upload": upload, "run": run, "download": download,
           "delete": delete}


def parser() -> argparse.ArgumentParser:
    p, subs = launcher_parser("python -m int_jax.launch.tpu", __doc__, ACTIONS)
    for name, s in subs.items():
        s.add_argument("--name", required=True, help="the slice (TPU VM) name")
        s.add_argument("--zone", required=True)
        s.add_argument("--project", required=True)
        s.add_argument("--repo-dir", default="int-jax", help="the checkout on every worker")
        if name in ("create", "run"):
            s.add_argument("--slice", required=True, choices=sorted(TPU_SLICES))
            s.add_argument("--skip-plan", action="store_true", help=plan_check.SKIP_HELP)
        if name in ("create", "delete"):
            s.add_argument("--queued", action="store_true", help="through queued resources")
        if name == "create":
            s.add_argument("--spot", action="store_true")
        if name == "setup":
            s.add_argument("--repo-url", required=True, help="where workers clone the repository from")
            s.add_argument("--ref", default="main", help="branch, tag or commit to check out")
        if name in ("upload", "download"):
            s.add_argument("--run", required=True, help="run folder, e.g. runs/int_rl")
            s.add_argument("--bucket", required=True, help="gs://bucket[/prefix]")
        if name in ("create", "run"):
            s.add_argument("command", nargs=argparse.REMAINDER,
                           help="-- <int-jax command and flags> (whose memory plan is checked)")
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    if a.action in ("create", "run"):
        a.command, dry = command_words(a.command)
        a.dry_run = a.dry_run or dry
    if getattr(a, "bucket", None) and not a.bucket.startswith("gs://"):
        raise SystemExit(f"--bucket must be a gs:// URL, got {a.bucket!r}")
    ACTIONS[a.action](a, Shell(a.dry_run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
