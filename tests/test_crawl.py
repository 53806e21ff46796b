"""Crawls on Dask (`index --workers N`, `--scheduler ADDRESS`): the same index as one
process, each unique layer downloaded once, killed workers and interrupted crawls
losing nothing, a registry's 429 pausing every worker."""

import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from harness.canon import canonical
from harness.catalog import push_catalog
from harness.daskcluster import DaskCluster, worker_pids
from harness.shaper import ShapingProxy
from harness.wait import wait_until

from layerslayer.cli import cli
from layerslayer.crawl import CrawlStatus

LAYSLAYER = [sys.executable, "-m", "layerslayer"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def catalog(registry):
    refs, digests = push_catalog(registry, "crawl", images=16, bases=2, base_files=20, base_bytes=1_500_000)
    return refs, digests


def through(proxy, refs):
    return [ref.replace(ref.split("/", 1)[0], proxy.host, 1) for ref in refs]


def layer_gets(proxy, digests):
    return {d: proxy.count(f"/blobs/{d}$", method="GET", status=200) for d in digests}


@pytest.fixture
def whole(catalog, make_fault_proxy, tmp_path):
    "The index one process builds, through a proxy (the images' registry is the proxy's host)."
    def build(proxy):
        db = tmp_path / "whole.db"
        result = run("index", db, *through(proxy, catalog[0]), "--quiet")
        assert result.exit_code == 0, result.output
        return canonical(db)
    return build


@pytest.mark.slow
def test_crawl_equals_one_process_and_fetches_each_layer_once(registry, catalog, make_fault_proxy, whole, tmp_path):
    refs, digests = catalog
    proxy = make_fault_proxy(registry)
    db = tmp_path / "crawl.db"
    result = run("index", db, *through(proxy, refs), "--workers", "2", "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Indexed 16 images, 16 platforms, layers: 19 indexed, 17 reused, 0 failed")
    assert set(layer_gets(proxy, digests).values()) == {1}
    assert not list((tmp_path / "crawl.db.shards").glob("*.db*"))  # merged, then cleaned up
    assert canonical(db) == whole(proxy)


@pytest.mark.slow
def test_killed_workers_lose_nothing(registry, catalog, whole, tmp_path, rng):
    refs, digests = catalog
    proxy = ShapingProxy(registry, rtt=0.02, bandwidth=1e6).start()
    try:
        db = tmp_path / "crawl.db"
        process = subprocess.Popen([*LAYSLAYER, "index", str(db), *through(proxy, refs), "--workers", "3", "--quiet"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)

        def workers_while_one_streams() -> list[int]:
            assert process.poll() is None, "the crawl ended before three workers were killed"
            streaming = [r for r in proxy.records if "/blobs/" in r.path and r.bytes_sent and r.status == 200
                         and r.bytes_sent < 1_000_000]
            return worker_pids(process.pid) if streaming else []

        try:
            kills = 0
            deadline = time.monotonic() + 120
            while kills < 3:
                # Kill a worker while it streams a layer.
                pids = wait_until(workers_while_one_streams, max(0.0, deadline - time.monotonic()))
                os.kill(rng.choice(pids), signal.SIGKILL)
                kills += 1
                time.sleep(1.0)  # kills a second apart, not three at once
            out, err = process.communicate(timeout=240)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        assert kills == 3
        assert process.returncode == 0, err.decode()
        assert out.decode().startswith("Indexed 16 images")
        assert min(layer_gets(proxy, digests).values()) >= 1
        assert canonical(db) == whole(proxy)
    finally:
        proxy.stop()


@pytest.mark.slow
def test_interrupted_crawl_resumes(registry, catalog, whole, tmp_path):
    refs, digests = catalog
    proxy = ShapingProxy(registry, rtt=0.02, bandwidth=3e6).start()
    try:
        db = tmp_path / "crawl.db"
        args = [*LAYSLAYER, "index", str(db), *through(proxy, refs), "--workers", "2", "--quiet"]
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            wait_until(lambda: sum(v > 0 for v in layer_gets(proxy, digests).values()) >= 6, 120,
                       what="six layers fetched")
        finally:
            os.killpg(process.pid, signal.SIGKILL)  # the coordinator and its whole cluster
            process.wait()
        before = layer_gets(proxy, digests)
        assert 6 <= sum(v > 0 for v in before.values()) < len(digests)
        result = subprocess.run(args, capture_output=True, timeout=240)
        assert result.returncode == 0, result.stderr.decode()
        after = layer_gets(proxy, digests)
        again = [d for d in digests if after[d] > before[d]]
        # Only what had not committed anywhere is downloaded again.
        assert len(again) < len(digests) - 3
        assert canonical(db) == whole(proxy)
    finally:
        proxy.stop()


@pytest.mark.slow
def test_a_429_pauses_every_worker(registry, catalog, tmp_path):
    refs, digests = catalog
    proxy = ShapingProxy(registry, rtt=0.05, bandwidth=2e6).start()
    try:
        proxy.fail(429, r"/blobs/", times=1, retry_after=3)
        missing = f"{proxy.host}/crawl/missing:v1"
        result = run("index", tmp_path / "crawl.db", *through(proxy, refs), missing, "--workers", "3", "--quiet")
        assert result.exit_code == 1, result.output
        assert result.stderr == f"{missing}: image not found: {missing}\n"  # and the other images went on
        limited = [r for r in proxy.records if r.status == 429]
        assert len(limited) == 1
        t0 = limited[0].time
        # Every worker hears of it within its half-second refresh, then waits out the 3 s.
        during = [r for r in proxy.records if t0 + 1.2 < r.time < t0 + 2.9]
        assert during == [], [(r.path, r.time - t0) for r in during]
        assert [r for r in proxy.records if r.time > t0 + 2.9]
    finally:
        proxy.stop()


@pytest.mark.slow
def test_crawl_on_a_cluster_started_with_dask_commands(registry, catalog, make_fault_proxy, whole, tmp_path):
    refs, digests = catalog
    proxy = make_fault_proxy(registry)
    cluster = DaskCluster(workers=2, workdir=tmp_path).start()
    try:
        db = tmp_path / "crawl.db"
        result = run("index", db, *through(proxy, refs), "--scheduler", cluster.address, "--quiet")
        assert result.exit_code == 0, result.output
        assert set(layer_gets(proxy, digests).values()) == {1}
        assert canonical(db) == whole(proxy)
    finally:
        cluster.stop()


def test_crawl_option_errors(tmp_path):
    result = run("index", tmp_path / "x.db", "localhost:5000/a", "--scheduler", "tcp://10.1.2.3:8786", "-u", "me", "-p", "pw")
    assert result.exit_code == 2 and "never sent to a remote scheduler" in result.output
    assert run("index", tmp_path / "x.db", "a", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1").exit_code == 2
    assert run("index", tmp_path / "x.db", "a", "--shard-dir", tmp_path).exit_code == 2


def test_status_line():
    status = CrawlStatus(images_total=300, images_done=150, layers_done=40, layers_queued=100,
                         layer_bytes=50_000_000, bytes_queued=100_000_000, bytes_done_queued=50_000_000, failures=2,
                         paused={"registry-1.docker.io": 12.4})
    status.started -= 30
    assert status.as_line() == (
        "images 150/300 (5.0/s), layers 40 done, 60 to go, 50.0 MB (1.7 MB/s), ETA 30s, 2 failed, "
        "rate limited by registry-1.docker.io: waiting 12s"
    )


def test_pause_for_docker_hub_and_429_headers():
    from layerslayer.pacing import pause_for

    assert pause_for(429, {"Retry-After": "7"}) == 7
    assert pause_for(429, {}) == 1.0
    assert pause_for(200, {"RateLimit-Remaining": "76;w=21600", "RateLimit-Limit": "100;w=21600"}) == 0
    # Docker Hub: no reset header; one request comes back into the 6-hour window every 216 s.
    assert pause_for(200, {"RateLimit-Remaining": "0;w=21600", "RateLimit-Limit": "100;w=21600"}) == 216
    assert pause_for(200, {"RateLimit-Remaining": "0", "RateLimit-Reset": "30"}) == 30
    assert 9 <= pause_for(200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(time.time()) + 10)}) <= 10
