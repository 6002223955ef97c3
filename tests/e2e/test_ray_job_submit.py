"""`ray job submit` against a real `ray start --head`: the tiny GRPO run as a Ray job (and its
driver killed and the job resubmitted), its status, their metrics files and their Ray metrics on the node's Prometheus endpoint; a
real Prometheus server scraping the cluster through Ray's service-discovery file; the Ray
dashboard (behind its token login) and a run's report in a headless browser; and run folders
that outlive their jobs (pretraining, then SFT from its `final/`, as two jobs)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import psutil
import pytest
import yaml
from environment import skip_missing

from qwen25_rl.paths import REPO_ROOT
from qwen25_rl.runs import read_metrics

pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.timeout(1500)]
BIN = Path(sys.executable).parent
# Ray writes the cluster's metrics targets here (session folder of its temp dir), for Prometheus'
# file-based service discovery (ray._private.ray_constants.PROMETHEUS_SERVICE_DISCOVERY_FILE).
SERVICE_DISCOVERY = "session_latest/prom_metrics_service_discovery.json"
# Debian's packages (make os-packages): chromium and its chromedriver.
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_group(proc: subprocess.Popen) -> None:
    """End a process started with start_new_session=True and everything in its process group."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            break
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


class Head(NamedTuple):
    address: str  # the dashboard and job API: http://127.0.0.1:<port>
    metrics_port: int  # the node's Prometheus endpoint (--metrics-export-port)
    temp_dir: Path  # --temp-dir: session folders, logs, the Prometheus service-discovery file
    env: dict[str, str]  # the environment for `ray` CLI / SDK calls against this head


@contextmanager
def start_head(home: Path | None = None) -> Iterator[Head]:
    """A head node of our own: `ray start --head --block` in its own process group, so stopping
    it kills exactly its processes (`ray stop` would kill every Ray on the machine). `home`: the
    HOME of the head and so of every job's driver (and where `ray start` keeps the token)."""
    gcs, dash, metrics, agent_http, agent_grpc, runtime_env = (free_port() for _ in range(6))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    if home is not None:
        env["HOME"] = str(home)
    # Ray 2.60's `ray start` turns token authentication on when ~/.ray/auth_token exists (a local
    # `ray.init()` writes one); make sure it does, in the HOME the head will have.
    token = subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], capture_output=True, text=True, timeout=120, env=env)
    assert token.returncode == 0, token.stderr[-2000:]
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    log_path = Path(temp) / "ray-start.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                str(BIN / "ray"),
                "start",
                "--head",
                "--block",
                "--num-cpus=4",
                f"--port={gcs}",
                "--node-ip-address=127.0.0.1",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dash}",
                f"--metrics-export-port={metrics}",
                "--include-dashboard=true",
                "--object-store-memory=400000000",
                f"--temp-dir={temp}",
                "--disable-usage-stats",
                # every port of our own: another Ray on the machine must not make the job agent fail
                f"--dashboard-agent-listen-port={agent_http}",
                f"--dashboard-agent-grpc-port={agent_grpc}",
                f"--runtime-env-agent-port={runtime_env}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    # The job CLI only sends the token when told the cluster uses it.
    head = Head(f"http://127.0.0.1:{dash}", metrics, Path(temp), env | {"RAY_AUTH_MODE": "token"})
    try:
        deadline = time.time() + 180
        while job_cli(head, "list", timeout=60).returncode != 0:
            assert proc.poll() is None and time.time() < deadline, f"ray start --head did not come up:\n{log_path.read_text()[-3000:]}"
            time.sleep(2)
        yield head
    finally:
        kill_group(proc)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_head() -> Iterator[Head]:
    with start_head() as head:
        yield head


def job_cli(head: Head, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ray"), "job", *args, "--address", head.address], capture_output=True, text=True, timeout=timeout, env=head.env
    )


def job_status(head: Head, job_id: str) -> str:
    """The job's status through the SDK, in a process of its own: the SDK reads RAY_AUTH_MODE
    when Ray is first imported, and this test process imported Ray without it."""
    code = "import sys; from ray.job_submission import JobSubmissionClient as C; print(C(sys.argv[1]).get_job_status(sys.argv[2]).value)"
    out = subprocess.run([sys.executable, "-c", code, head.address, job_id], capture_output=True, text=True, timeout=120, env=head.env)
    return (
        out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout.strip() else f"(status query failed: {out.stderr[-300:]})"
    )


# -- Prometheus ----------------------------------------------------------------------------------


@dataclass
class Prometheus:
    """A `prometheus` server of our own that scrapes a head's metrics targets."""

    url: str | None  # None: it did not come up (`error` says why)
    log: Path
    error: str = ""

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
            body = json.loads(r.read())
        assert body.get("status") == "success", body
        return body["data"]

    def series(self, selector: str) -> list[dict[str, str]]:
        return self.api("series", **{"match[]": selector})


def prometheus_config(service_discovery: Path) -> dict:
    """Scrape every target Ray lists in its service-discovery file, every 2 s. Ray lists the
    node's own IP; on this one machine we scrape the same ports on 127.0.0.1 (relabelled), so
    the test talks to loopback only. A cluster's Prometheus leaves the addresses as they are."""
    return {
        "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
        "scrape_configs": [
            {
                "job_name": "ray",
                "file_sd_configs": [{"files": [str(service_discovery)], "refresh_interval": "2s"}],
                "relabel_configs": [
                    {"source_labels": ["__address__"], "regex": "(.*):(\\d+)", "target_label": "__address__", "replacement": "127.0.0.1:$2"}
                ],
            }
        ],
    }


@pytest.fixture(scope="module")
def prometheus(ray_head, tmp_path_factory) -> Iterator[Prometheus | None]:
    """Debian's `prometheus` (make os-packages) scraping `ray_head`; None where it is not
    installed (the Prometheus test then skips, or fails under CI=true)."""
    exe = shutil.which("prometheus")
    if exe is None:
        yield None
        return
    root = tmp_path_factory.mktemp("prometheus")
    config = root / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(ray_head.temp_dir / SERVICE_DISCOVERY), sort_keys=False))
    port = free_port()
    log_path = root / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [exe, f"--config.file={config}", f"--storage.tsdb.path={root / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Prometheus(f"http://127.0.0.1:{port}", log_path)
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                server = Prometheus(None, log_path, f"prometheus did not come up (exit code {proc.poll()}): {log_path.read_text()[-2000:]}")
                break
            time.sleep(0.5)
        yield server
    finally:
        kill_group(proc)


# -- the GRPO job, watched by every monitoring tool ------------------------------------------------

GRPO_SUBMISSION, GRPO_RUN = "qwen25-grpo-test", "grpo-job"
GRPO_SERIES = f'{{__name__=~"ray_qwen25_rl_grpo_.+",run="{GRPO_RUN}"}}'


@dataclass
class JobOutcome:
    status: str
    logs: str
    seen_gauge: bool  # the gauge was on the node's metrics endpoint while the job ran
    seconds: float  # submission to end
    status_times: dict[str, float] = field(default_factory=dict)  # status -> seconds after submission when first seen


@dataclass
class GrpoJob:
    outcome: JobOutcome
    run_dir: Path
    actors: list[dict[str, Any]]  # `ray list actors` rows of the job's actors (by name grpo/...)
    series: list[dict[str, str]]  # Prometheus series of the run (empty without Prometheus)
    series_seen_s: float | None  # seconds after submission when Prometheus first had them


def user_folder(root: Path) -> Path:
    """A user's folder holding reward.py, actors.py, sandboxes.py and pretrain.py of its own and a
    copy of configs/ (tests/conftest.py's `shadowing_folder`, for a module-scoped job)."""
    folder = root / "user_folder"
    folder.mkdir()
    for name in ("reward", "actors", "sandboxes", "pretrain"):
        (folder / f"{name}.py").write_text(
            f"raise ImportError('the user folder\\'s own {name}.py was imported instead of qwen25_rl.{name}')\n"
        )
    shutil.copytree(REPO_ROOT / "configs", folder / "configs")
    return folder


@pytest.fixture(scope="module")
def grpo_job(ray_head, prometheus, tiny_model_dir, digit_task, grpo_overrides, tmp_path_factory) -> GrpoJob:
    """The tiny GRPO run as a Ray job, submitted once per module from a user's folder whose
    reward.py, actors.py, sandboxes.py and pretrain.py must not shadow the package; while it
    runs, Prometheus is asked for its series."""
    root = tmp_path_factory.mktemp("grpo_job")
    out = root / "runs"
    overrides = grpo_overrides(
        tiny_model_dir,
        digit_task,
        out,
        GRPO_RUN,
        **{
            "rollout.engine": "vllm",
            "policy.strategy": "deepspeed",
            "algorithm.total_steps": 3,
            "optimizer.lr": 1.0e-2,
            "checkpoint.every_n_steps": 3,
            "logging.report": True,  # report.html, for the browser test
        },
    )
    entry = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "qwen25_rl", "grpo", "--config", "configs/tiny/grpo.yaml", *overrides])
    series: list[dict[str, str]] = []
    seen_at: list[float] = []
    t_submit = time.time()

    def ask_prometheus() -> None:
        if prometheus is None or prometheus.url is None or series:
            return
        try:
            series.extend(prometheus.series(GRPO_SERIES))
        except OSError:
            return
        if series:
            seen_at.append(round(time.time() - t_submit, 1))

    outcome = submit_and_wait(ray_head, GRPO_SUBMISSION, entry, user_folder(root), "ray_qwen25_rl_grpo_reward_mean", poll=ask_prometheus)
    # Prometheus scrapes every 2 s: a short job may end between a scrape and our next question.
    deadline = time.time() + 30
    while prometheus is not None and prometheus.url is not None and not series and time.time() < deadline:
        ask_prometheus()
        time.sleep(2)
    return GrpoJob(outcome, out / GRPO_RUN, list_actors(ray_head, "grpo/"), series, seen_at[0] if seen_at else None)


def list_actors(head: Head, name_prefix: str) -> list[dict[str, Any]]:
    """`ray list actors` (alive and dead) whose names start with `name_prefix`."""
    out = subprocess.run(
        [str(BIN / "ray"), "list", "actors", "--address", head.address, "--format", "json", "--limit", "10000"],
        capture_output=True,
        text=True,
        timeout=120,
        env=head.env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return [a for a in json.loads(out.stdout) if (a.get("name") or "").startswith(name_prefix)]


def test_grpo_runs_as_a_submitted_ray_job(grpo_job):
    """Submitted from a user's folder that holds reward.py, actors.py, sandboxes.py and
    pretrain.py of its own: the job's working dir (on the driver's and every worker's sys.path)
    must not shadow the package."""
    status, logs = grpo_job.outcome.status, grpo_job.outcome.logs
    assert status == "SUCCEEDED", f"{status}\n{logs[-4000:]}"
    print(f"GRPO job: {grpo_job.outcome.seconds:.0f} s from submission to end")

    rows = read_metrics(grpo_job.run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all("reward/mean" in r for r in rows)
    assert (grpo_job.run_dir / "checkpoints" / "step_3" / "COMPLETE").is_file()
    # The driver prints one JSON summary line at the end; actor output (streamed to the driver
    # asynchronously, e.g. a progress bar of the final save) may still arrive after it.
    summaries = [json.loads(line) for line in logs.splitlines() if line.startswith('{"run_dir"')]
    assert len(summaries) == 1 and summaries[0]["run_dir"].endswith(GRPO_RUN), logs[-4000:]
    assert grpo_job.outcome.seen_gauge, "the run's Ray metrics never reached the node's Prometheus endpoint"
    assert "was imported instead of" not in logs
    # The dashboard's Actors view and `ray list actors` name the workers by role and rank.
    named = {(a["class_name"], a["name"]) for a in grpo_job.actors}
    print(f"GRPO job actors: {sorted(named)}")
    assert {("PolicyWorker", "grpo/policy-0"), ("RolloutWorker", "grpo/rollout-0")} <= named, named


def test_prometheus_scrapes_the_grpo_job_metrics(grpo_job, prometheus):
    """A real Prometheus server, configured only with Ray's service-discovery file, holds the
    GRPO stage's gauges (`ray_qwen25_rl_grpo_*`) tagged with the job's run name."""
    if prometheus is None:
        skip_missing("prometheus (Debian package prometheus; `make os-packages` installs it)")
    assert prometheus.url is not None, prometheus.error
    names = sorted({s["__name__"] for s in grpo_job.series})
    print(f"Prometheus series of run {GRPO_RUN!r} (first seen {grpo_job.series_seen_s} s after submission): {names}")
    if not names:
        targets = prometheus.api("targets")["activeTargets"]
        pytest.fail(
            f"Prometheus never returned {GRPO_SERIES}; targets: "
            + "; ".join(f"{t['scrapeUrl']} {t['health']} {t['lastError']}" for t in targets)
            + f"\nlog: {prometheus.log}"
        )
    assert {"ray_qwen25_rl_grpo_reward_mean", "ray_qwen25_rl_grpo_step"} <= set(names), names
    assert all(s["run"] == GRPO_RUN for s in grpo_job.series)
    # The values are queryable too: the highest step scraped (Ray exports in intervals, so a
    # 3-step run's last step may end before it is scraped).
    result = prometheus.api("query", query=f'max_over_time(ray_qwen25_rl_grpo_step{{run="{GRPO_RUN}"}}[1h])')["result"]
    assert result and 1.0 <= max(float(r["value"][1]) for r in result) <= 3.0, result


# -- the dashboard and a run report in a browser ---------------------------------------------------


@contextmanager
def headless_chromium(profile: Path) -> Iterator[Any]:
    """Debian's chromium through its chromedriver (selenium): loopback only, always quit."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        skip_missing("selenium (the test extra)")
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        skip_missing(f"{CHROMIUM} and {CHROMEDRIVER} (Debian packages chromium, chromium-driver; `make os-packages` installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        # Only the test's own servers: every other host name fails to resolve.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.set_script_timeout(30)
        yield driver
    finally:
        driver.quit()


def page_text(driver) -> str:
    return driver.execute_script("return document.body ? document.body.innerText : ''")


def wait_for_text(driver, *texts: str, timeout: float = 60) -> str:
    """Wait (bounded) until the page shows every one of `texts`; returns the page's text."""
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, timeout, poll_frequency=0.5).until(lambda d: all(t in page_text(d) for t in texts))
    except Exception as e:  # TimeoutException: say what the page showed instead
        raise AssertionError(f"{driver.current_url} did not show {texts} within {timeout} s; it shows:\n{page_text(driver)[:3000]}") from e
    return page_text(driver)


def test_dashboard_and_report_in_a_browser(grpo_job, ray_head, tmp_path):
    """Headless chromium logs in to the cluster's dashboard with the cluster's token (the way a
    user does: `ray get-auth-token`, pasted into the dashboard's token dialog), finds the GRPO
    job on the Jobs page and its workers on the Actors page, and opens the run's report.html
    from the run folder. Screenshots stay in the test's folder."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"screenshots: {shots}")
    token = subprocess.run([str(BIN / "ray"), "get-auth-token"], capture_output=True, text=True, timeout=60, env=ray_head.env)
    assert token.returncode == 0 and token.stdout.strip(), token.stderr[-2000:]
    with pytest.raises(urllib.error.HTTPError) as refused:  # the cluster does ask for the token
        urllib.request.urlopen(f"{ray_head.address}/api/jobs/", timeout=10)
    assert refused.value.code == 401

    with headless_chromium(tmp_path / "chromium-profile") as driver:
        driver.get(f"{ray_head.address}/#/jobs")
        # Ray 2.60 asks for the token first; it posts it to /api/authenticate, which sets an
        # HttpOnly cookie, and reloads.
        field_ = WebDriverWait(driver, 60).until(
            EC.presence_of_element_located((By.CSS_SELECTOR, "input[placeholder='Enter your authentication token']"))
        )
        assert "Authentication Token Required" in page_text(driver)
        driver.save_screenshot(str(shots / "dashboard-login.png"))
        field_.send_keys(token.stdout.strip() + Keys.ENTER)
        WebDriverWait(driver, 60).until(EC.staleness_of(field_))
        assert any(c["name"] == "ray-authentication-token" for c in driver.get_cookies())

        # Jobs: the job's row carries its submission id, the entrypoint and the outcome.
        wait_for_text(driver, GRPO_SUBMISSION)
        row = driver.find_element(By.XPATH, f"//tr[td[normalize-space(.)='{GRPO_SUBMISSION}']]")
        row_text = row.get_attribute("textContent")
        assert "qwen25_rl grpo --config configs/tiny/grpo.yaml" in row_text and "SUCCEEDED" in row_text, row_text
        driver.save_screenshot(str(shots / "dashboard-jobs.png"))

        driver.get(f"{ray_head.address}/#/jobs/{GRPO_SUBMISSION}")
        text = wait_for_text(driver, "Submission ID", GRPO_SUBMISSION, "Entrypoint", "SUCCEEDED")
        assert f"logging.run_name={GRPO_RUN}" in text
        driver.save_screenshot(str(shots / "dashboard-job.png"))

        # Actors: the run's workers by class and readable name (dead once the job ended).
        driver.get(f"{ray_head.address}/#/actors")
        wait_for_text(driver, "PolicyWorker", "grpo/policy-0", "RolloutWorker", "grpo/rollout-0")
        driver.save_screenshot(str(shots / "dashboard-actors.png"))

        # The run's report, straight from the run folder: titled plots that the browser drew.
        report = grpo_job.run_dir / "report.html"
        assert report.is_file(), sorted(p.name for p in grpo_job.run_dir.iterdir())
        driver.get(report.as_uri())
        assert driver.find_element(By.TAG_NAME, "h1").text.startswith(GRPO_RUN)
        images = driver.find_elements(By.CSS_SELECTOR, "figure img")
        titles = [img.get_attribute("alt") for img in images]
        assert {"Reward", "Response length"} <= set(titles), titles
        drawn = driver.execute_script("return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
        assert drawn and all(drawn), f"{drawn.count(False)} of {len(drawn)} images did not load"
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1400, min(max(height, 1000), 8000))
        driver.save_screenshot(str(shots / "report.png"))
    print(f"screenshots: {sorted(p.name for p in shots.iterdir())} in {shots}")


# -- run folders outlive their jobs -----------------------------------------------------------------

# Tiny budgets over configs/tiny/{pretrain,sft}.yaml: the point is where things land, not learning.
STORAGE_SYNTHETIC = {
    "arithmetic_train": 200,
    "arithmetic_heldout": 20,
    "code_train": 40,
    "code_heldout": 10,
    "max_operand": 5,
    "max_factor": 5,
    "families": "[add, sub]",
}
STORAGE_TRAINER = {
    "trainer.strategy": "ddp",
    "trainer.micro_batch_size": 4,
    "trainer.global_batch_size": 4,
    "trainer.eval_every_n_steps": "null",
    "checkpoint.every_n_steps": "null",
    "logging.tensorboard": "false",
    "logging.report": "false",
}
STORAGE_PRETRAIN = {
    "phases": "[{name: general, steps: 10, seq_len: 128}, {name: long_context, steps: 2, seq_len: 256, rope_theta: 1000000.0, "
    "max_position_embeddings: 4096, global_batch_size: 4}]",
}
STORAGE_SFT = {"trainer.max_steps": 5, "data.max_length": 256}


def stage_entry(stage: str, extra: dict[str, Any]) -> str:
    """`python -m qwen25_rl <stage> --config configs/tiny/<stage>.yaml` with the tiny budgets; the
    config's relative paths (runs/..., runs/tiny-pretrain/final) are left as they are."""
    overrides = {f"data.synthetic.{k}": v for k, v in STORAGE_SYNTHETIC.items()} | STORAGE_TRAINER | extra
    args = [sys.executable, "-m", "qwen25_rl", stage, "--config", f"configs/tiny/{stage}.yaml", *(f"{k}={v}" for k, v in overrides.items())]
    return " ".join(shlex.quote(a) for a in args)


def test_pretrain_then_sft_as_two_jobs_share_the_storage_root(tmp_path):
    """Pretraining and then SFT as two `ray job submit` jobs from a user's project folder (its
    configs/ only): each job runs in its own temporary copy of the folder, so the run folders go
    to the storage root, ~/qwen25-rl by default, and the SFT job finds the pretraining run's
    final/ there by the config's relative path runs/tiny-pretrain/final. The head runs with
    HOME set to a folder of the test's (the job drivers inherit it), so the real home is left
    alone."""
    t0 = time.time()
    home = tmp_path / "home"
    home.mkdir()
    project = tmp_path / "project"
    shutil.copytree(REPO_ROOT / "configs", project / "configs")
    root = home / "qwen25-rl"
    with start_head(home=home) as head:
        t_head = time.time() - t0
        pretrain = submit_and_wait(
            head, "qwen25-storage-pretrain", stage_entry("pretrain", STORAGE_PRETRAIN), project, "ray_qwen25_rl_pretrain_loss"
        )
        assert pretrain.status == "SUCCEEDED", f"{pretrain.status}\n{pretrain.logs[-4000:]}"
        sft = submit_and_wait(head, "qwen25-storage-sft", stage_entry("sft", STORAGE_SFT), project, "ray_qwen25_rl_sft_loss")
        assert sft.status == "SUCCEEDED", f"{sft.status}\n{sft.logs[-4000:]}"
    print(
        f"storage test: head up {t_head:.0f} s, pretrain job {pretrain.seconds:.0f} s, sft job {sft.seconds:.0f} s, "
        f"total {time.time() - t0:.0f} s"
    )

    for run in ("tiny-pretrain", "tiny-sft"):
        assert (root / "runs" / run / "final" / "model.safetensors").is_file(), run
        assert read_metrics(root / "runs" / run / "metrics.jsonl"), run
    assert (root / "runs" / "data" / "synthetic-tiny" / "sft_train.jsonl").is_file()
    # The SFT run names (in its resolved config) the pretraining run's final/ under the root.
    sft_config = yaml.safe_load((root / "runs" / "tiny-sft" / "config.yaml").read_text())
    assert sft_config["model"]["path"] == str(root / "runs" / "tiny-pretrain" / "final")
    assert [r["step"] for r in read_metrics(root / "runs" / "tiny-sft" / "metrics.jsonl") if "loss" in r][-1] == 5
    # Nothing went to the project folder (the jobs only ever saw a copy of it).
    assert sorted(p.name for p in project.iterdir()) == ["configs"]
    # Ray Train's controller exported the stages' gauges (RayGauges, tagged with the run name).
    assert pretrain.seen_gauge and sft.seen_gauge, (pretrain.seen_gauge, sft.seen_gauge)


# -- helpers -----------------------------------------------------------------------------------------


def submit_job(head: Head, submission_id: str, entry: str, workdir) -> None:
    """Submit `entry` (run by bash) as a job from `workdir`, without waiting for it."""
    # The job agent on the node can come up a little after the dashboard: retry, bounded.
    for _ in range(20):
        submit = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", head.address, "--no-wait", "--working-dir", str(workdir)]
            + ["--submission-id", submission_id, "--", "bash", "-c", entry],
            capture_output=True,
            text=True,
            timeout=300,
            env=head.env,
        )
        if "No available agent" not in submit.stderr:
            break
        time.sleep(4)
    assert submit.returncode == 0, submit.stderr[-3000:]


def submit_and_wait(head: Head, submission_id: str, entry: str, workdir, gauge: str, poll: Callable[[], None] | None = None) -> JobOutcome:
    """Submit `entry` as a job from `workdir`, poll its status (the node's metrics endpoint for
    `gauge`, and `poll` if given) until it ends."""
    t_submit = time.time()
    submit_job(head, submission_id, entry, workdir)
    seen_gauge = False
    seen_status: dict[str, float] = {}  # status -> seconds after submission when first seen
    deadline = time.time() + 900
    status = ""
    while time.time() < deadline:
        status = job_status(head, submission_id)
        if not seen_gauge:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{head.metrics_port}/metrics", timeout=5).read().decode()
                seen_gauge = gauge in text
            except OSError:
                pass
        if poll is not None:
            poll()
        if status not in seen_status:
            seen_status[status] = round(time.time() - t_submit, 1)
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(3)
    seconds = time.time() - t_submit
    logs = job_cli(head, "logs", submission_id).stdout
    print(f"job {submission_id}: status first seen (s after submit): {seen_status}\n{logs}")
    return JobOutcome(status, logs, seen_gauge, seconds, seen_status)


# -- a killed driver, its job submitted again ------------------------------------------------------


def job_info(head: Head, job_id: str) -> dict[str, Any]:
    """The job's status, driver pid and driver exit code through the SDK (in a process of its
    own, for the same reason as `job_status`); {} when the query fails."""
    code = (
        "import json, sys; from ray.job_submission import JobSubmissionClient as C; i = C(sys.argv[1]).get_job_info(sys.argv[2]); "
        "print(json.dumps({'status': i.status.value, 'driver_exit_code': i.driver_exit_code, "
        "'driver_pid': int(i.driver_info.pid) if i.driver_info and i.driver_info.pid else None}))"
    )
    out = subprocess.run([sys.executable, "-c", code, head.address, job_id], capture_output=True, text=True, timeout=120, env=head.env)
    lines = out.stdout.strip().splitlines()
    return json.loads(lines[-1]) if out.returncode == 0 and lines else {}


def stage_driver(pid: int | None, run_name: str) -> psutil.Process | None:
    """The job's Python driver: the process the SDK names if its command line runs the stage for
    `run_name`, else the one process whose command line does (not the `bash -c` around it)."""
    marker = f"logging.run_name={run_name}"

    def runs_stage(p: psutil.Process) -> bool:
        try:
            cmd = p.cmdline()
        except psutil.Error:
            return False
        return bool(cmd) and Path(cmd[0]).name.startswith("python") and "qwen25_rl" in cmd and marker in cmd

    if pid is not None and psutil.pid_exists(pid) and runs_stage(psutil.Process(pid)):
        return psutil.Process(pid)
    found = [p for p in psutil.process_iter() if runs_stage(p)]
    return found[0] if len(found) == 1 else None


@pytest.mark.chaos
def test_a_killed_driver_resubmitted_resumes_with_no_step_done_twice_or_skipped(
    ray_head, tiny_model_dir, digit_task, grpo_overrides, tmp_path
):
    """The tiny GRPO run (hf rollouts, DDP policy) as a job whose driver is SIGKILLed once its
    step_2 checkpoint exists: the job ends FAILED (or STOPPED); the same entrypoint submitted
    again (a new submission id) resumes from the newest checkpoint, ends SUCCEEDED with driver
    exit code 0, with one metrics row for each of the steps 1..N and the final model written."""
    steps, run_name = 8, "resubmitted-job"
    out = tmp_path / "runs"
    run = out / run_name
    overrides = grpo_overrides(
        tiny_model_dir,
        digit_task,
        out,
        run_name,
        **{
            "rollout.engine": "hf",
            "policy.strategy": "ddp",
            "algorithm.total_steps": steps,
            "checkpoint.every_n_steps": 2,
            "algorithm.prompts_per_step": 4,
            "rollout.samples_per_prompt": 4,
        },
    )
    entry = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "qwen25_rl", "grpo", "--config", "configs/tiny/grpo.yaml", *overrides])
    project = tmp_path / "project"
    shutil.copytree(REPO_ROOT / "configs", project / "configs")

    first = "qwen25-resubmit-1"
    submit_job(ray_head, first, entry, project)
    marker = run / "checkpoints" / "step_2" / "COMPLETE"
    driver, pid = None, None
    deadline = time.time() + 600
    while time.time() < deadline:
        if pid is None:
            pid = job_info(ray_head, first).get("driver_pid")
        if marker.exists():
            driver = stage_driver(pid, run_name)
            break
        assert job_status(ray_head, first) in ("PENDING", "RUNNING"), job_cli(ray_head, "logs", first).stdout[-4000:]
        time.sleep(0.2)
    assert driver is not None, f"no step_2 checkpoint or no driver process found (SDK pid {pid})"
    t_kill = time.time()
    driver.send_signal(signal.SIGKILL)
    done_at_kill = max((r["step"] for r in read_metrics(run / "metrics.jsonl")), default=0)
    assert done_at_kill < steps, "the run ended before its driver was killed"

    status = ""
    while time.time() < t_kill + 180:
        status = job_status(ray_head, first)
        if status in ("FAILED", "STOPPED", "SUCCEEDED"):
            break
        time.sleep(1)
    t_ended = time.time()
    assert status in ("FAILED", "STOPPED"), status
    assert job_info(ray_head, first).get("driver_exit_code") != 0

    second = submit_and_wait(ray_head, "qwen25-resubmit-2", entry, project, "ray_qwen25_rl_grpo_reward_mean")
    assert second.status == "SUCCEEDED", f"{second.status}\n{second.logs[-4000:]}"
    info = job_info(ray_head, "qwen25-resubmit-2")
    assert info.get("driver_exit_code") == 0, info
    assert "resumed from" in second.logs and "step_" in second.logs, second.logs[-4000:]
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    assert all("reward/mean" in r for r in rows)
    assert (run / "final" / "model.safetensors").is_file() and (run / "final" / "COMPLETE").is_file()
    summaries = [json.loads(line) for line in second.logs.splitlines() if line.startswith('{"run_dir"')]
    assert len(summaries) == 1 and summaries[0]["run_dir"].endswith(run_name), second.logs[-4000:]
    print(
        f"driver killed after step {done_at_kill} (step_2 saved); job {status} {t_ended - t_kill:.1f}s after the kill; "
        f"resubmitted job {second.seconds:.1f}s from submission to SUCCEEDED ({second.status_times})"
    )
