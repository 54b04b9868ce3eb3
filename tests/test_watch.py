"""Tests for memoryd.watch: the debouncing rule with a fake clock, then the real
watchdog observer on real folders.

Integration tests never assert on how long something took: they wait
generously for the expected batch and only use short debounce periods so the
file stays fast.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from watchdog.observers.api import BaseObserver
from watchdog.observers.inotify import InotifyObserver
from watchdog.observers.polling import PollingObserver

from memoryd.watch import FolderWatcher, ObserverFactory, SlugDebouncer, Snapshot, WatchBatch, slug_for_path

DEBOUNCE_S = 0.2
MAX_WAIT_S = 1.0
PATIENCE_S = 10.0
QUIET_S = 4 * DEBOUNCE_S


# -- fixtures and helpers ---------------------------------------------------


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeDisk:
    """Snapshots per slug that a test edits by hand; counts the snapshots taken."""

    def __init__(self) -> None:
        self.files: dict[str, dict[str, tuple[int, int]]] = {}
        self.calls = 0

    def __call__(self, slug: str) -> Snapshot:
        self.calls += 1
        return dict(self.files.get(slug, {}))

    def write(self, slug: str, size: int) -> None:
        self.files.setdefault(slug, {})[f"{slug}/f"] = (size, size * 1000)


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a thread running, as watchdog's own suite does."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not leaked, f"threads left running: {leaked}"


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "conversations", tmp_path / "summaries"


@pytest.fixture
def watcher(roots: tuple[Path, Path]) -> Iterator[FolderWatcher]:
    with FolderWatcher(*roots, debounce_s=DEBOUNCE_S, max_wait_s=MAX_WAIT_S) as w:
        yield w


def debouncer(disk: FakeDisk, clock: FakeClock, *, debounce_s: float = 1.0, max_wait_s: float = 5.0) -> SlugDebouncer:
    return SlugDebouncer(disk, debounce_s=debounce_s, max_wait_s=max_wait_s, clock=clock)


def wait_for(w: FolderWatcher, slugs: set[str], *, rescan: bool = False) -> list[WatchBatch]:
    """Collect batches until every slug in ``slugs`` (and a rescan, if asked) was seen."""
    batches: list[WatchBatch] = []
    seen: set[str] = set()
    deadline = time.monotonic() + PATIENCE_S
    while not (slugs <= seen and (not rescan or any(b.rescan for b in batches))):
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {slugs} (rescan={rescan}); got {batches}"
        batch = w.get(timeout=left)
        if batch is not None:
            batches.append(batch)
            seen.update(batch.slugs)
    return batches


def drain(w: FolderWatcher, seconds: float = QUIET_S) -> list[WatchBatch]:
    """Every batch that arrives within ``seconds``."""
    batches: list[WatchBatch] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        batch = w.get(timeout=left)
        if batch is not None:
            batches.append(batch)
    return batches


def slugs_of(batches: list[WatchBatch]) -> list[str]:
    return [slug for batch in batches for slug in batch.slugs]


def make_slug(root: Path, slug: str, text: str = '{"role": "user", "content": "hi"}\n') -> Path:
    folder = root / slug
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "messages.jsonl").write_text(text)
    return folder


class Background:
    """Runs ``work(stop_event)`` in a thread; records when it finished."""

    def __init__(self, work: Callable[[threading.Event], None]) -> None:
        self.stop = threading.Event()
        self.finished_at: float | None = None
        self._work = work
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        self._work(self.stop)
        self.finished_at = time.monotonic()

    def __enter__(self) -> Background:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join()


# -- slug_for_path -------------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "is_directory", "expected"),
    [
        ("conversations/s1", True, "s1"),
        ("conversations/s1/messages.jsonl", False, "s1"),
        ("conversations/s1/deep/er.json", False, "s1"),
        ("summaries/s2/l1.json", False, "s2"),
        ("conversations", True, None),
        ("conversations/README.md", False, None),
        ("conversations/.tmp-copy/messages.jsonl", False, None),
        ("conversations/.git", True, None),
        ("elsewhere/s1/messages.jsonl", False, None),
        ("conversations-old/s1", True, None),
    ],
)
def test_slug_for_path(tmp_path: Path, relative: str, is_directory: bool, expected: str | None) -> None:
    """A slug is the first visible folder below either root; anything else maps to None."""
    roots = [tmp_path / "conversations", tmp_path / "summaries"]
    assert slug_for_path(tmp_path / relative, roots, is_directory=is_directory) == expected


# -- SlugDebouncer, fake clock ---------------------------------------------------


def test_debouncer_waits_for_quiet_period() -> None:
    """Events closer together than debounce_s keep postponing the first check."""
    clock, disk = FakeClock(), FakeDisk()
    d = debouncer(disk, clock)
    for _ in range(3):
        d.touch("a")
        clock.advance(0.9)
        assert d.collect() == []
    assert disk.calls == 0
    assert d.next_due() == pytest.approx(clock.now + 0.1)


def test_debouncer_emits_after_two_equal_snapshots_a_settle_interval_apart() -> None:
    """The first check only records a snapshot; the next one, settle_s later without events, emits."""
    clock, disk = FakeClock(), FakeDisk()
    disk.write("a", 10)
    d = debouncer(disk, clock)
    d.touch("a")
    clock.advance(1.0)
    assert d.collect() == []
    assert d.pending() == ["a"]
    clock.advance(d.settle_s / 2)
    assert d.collect() == []
    clock.advance(d.settle_s / 2)
    assert d.collect() == ["a"]
    assert d.pending() == []
    assert d.next_due() is None


def test_debouncer_event_after_first_check_restarts_quiet_period() -> None:
    """An event between the first check and its settle confirmation postpones emission by a quiet period."""
    clock, disk = FakeClock(), FakeDisk()
    d = debouncer(disk, clock)
    d.touch("a")
    clock.advance(1.0)
    assert d.collect() == []
    clock.advance(0.1)
    disk.write("a", 20)
    d.touch("a")
    clock.advance(d.settle_s)
    assert d.collect() == []
    clock.advance(1.0)
    assert d.collect() == []  # the file moved: a fresh snapshot, confirmed only after another settle interval
    clock.advance(d.settle_s)
    assert d.collect() == ["a"]


def test_debouncer_rearms_while_snapshot_moves() -> None:
    """A file whose size changes between checks, without any event, is waited for."""
    clock, disk = FakeClock(), FakeDisk()
    d = debouncer(disk, clock)
    d.touch("a")
    for size in range(1, 4):
        disk.write("a", size)
        clock.advance(1.0)
        assert d.collect() == []
    clock.advance(1.0)
    assert d.collect() == ["a"]


def test_debouncer_max_wait_bounds_noise_that_does_not_change_files() -> None:
    """Constant events cannot delay a stable slug much past max_wait_s: a settle check emits it."""
    clock, disk = FakeClock(), FakeDisk()
    disk.write("a", 10)
    d = debouncer(disk, clock, debounce_s=1.0, max_wait_s=5.0)
    emitted_at = None
    for _ in range(200):
        d.touch("a")
        clock.advance(0.05)
        if d.collect() == ["a"]:
            emitted_at = clock.now
            break
    assert emitted_at is not None
    assert 100.0 + 5.0 <= emitted_at <= 100.0 + 5.0 + d.settle_s + 0.1
    assert d.settle_s == 0.25


def test_debouncer_waits_past_max_wait_while_files_keep_moving() -> None:
    """Past max_wait_s a file still growing is not emitted; it is once it stops."""
    clock, disk = FakeClock(), FakeDisk()
    d = debouncer(disk, clock, debounce_s=1.0, max_wait_s=5.0)
    for size in range(1, 201):
        disk.write("a", size)
        d.touch("a")
        clock.advance(0.05)
        assert d.collect() == []
    clock.advance(d.settle_s)
    assert d.collect() == []
    clock.advance(d.settle_s)
    assert d.collect() == ["a"]


def test_debouncer_slugs_are_independent() -> None:
    """Each slug has its own burst; results come sorted."""
    clock, disk = FakeClock(), FakeDisk()
    d = debouncer(disk, clock)
    d.touch("c")
    d.touch("b")
    clock.advance(0.6)
    d.touch("a")
    clock.advance(0.4)
    d.collect()
    clock.advance(1.0)
    assert d.collect() == ["b", "c"]
    assert d.pending() == ["a"]
    clock.advance(1.0)
    assert d.collect() == ["a"]


def test_debouncer_event_during_snapshot_is_not_lost() -> None:
    """An event racing a successful check keeps the slug pending instead of being dropped."""
    clock, disk = FakeClock(), FakeDisk()
    d = debouncer(disk, clock)

    def snapshot_with_racing_event(slug: str) -> Snapshot:
        d.touch(slug)
        return disk(slug)

    d.touch("a")
    clock.advance(1.0)
    d.collect()
    d._snapshot = snapshot_with_racing_event
    clock.advance(1.0)
    assert d.collect() == []
    assert d.pending() == ["a"]


def test_debouncer_touch_reports_new_burst() -> None:
    """touch() is True only for the first event of a burst, so waiters are woken sparingly."""
    d = debouncer(FakeDisk(), FakeClock())
    assert d.touch("a") is True
    assert d.touch("a") is False


@pytest.mark.parametrize(("debounce_s", "max_wait_s"), [(0.0, 1.0), (1.0, 0.0), (-1.0, 1.0)])
def test_debouncer_rejects_non_positive_durations(debounce_s: float, max_wait_s: float) -> None:
    """A zero or negative period would spin; it is refused at construction."""
    with pytest.raises(ValueError, match="must be > 0"):
        SlugDebouncer(FakeDisk(), debounce_s=debounce_s, max_wait_s=max_wait_s)


# -- FolderWatcher, real observer ------------------------------------------------


def test_start_creates_missing_roots(tmp_path: Path) -> None:
    """Roots that do not exist yet are created, so a fresh install is watched."""
    conv, summ = tmp_path / "a" / "conversations", tmp_path / "b" / "summaries"
    with FolderWatcher(conv, summ, debounce_s=DEBOUNCE_S, max_wait_s=MAX_WAIT_S):
        assert conv.is_dir()
        assert summ.is_dir()


def test_exit_joins_all_threads(roots: tuple[Path, Path]) -> None:
    """Leaving the context stops and joins every thread the watcher started."""
    before = set(threading.enumerate())
    with FolderWatcher(*roots, debounce_s=DEBOUNCE_S, max_wait_s=MAX_WAIT_S) as w:
        assert set(threading.enumerate()) - before
        make_slug(roots[0], "s1")
        wait_for(w, {"s1"})
    assert set(threading.enumerate()) == before


def test_get_returns_none_when_stopped(roots: tuple[Path, Path]) -> None:
    """A get() blocked without timeout returns None as soon as another thread stops the watcher."""
    w = FolderWatcher(*roots, debounce_s=DEBOUNCE_S, max_wait_s=MAX_WAIT_S)
    w.start()
    result: list[WatchBatch | None] = []
    consumer = threading.Thread(target=lambda: result.append(w.get()))
    consumer.start()
    time.sleep(0.1)
    w.stop()
    consumer.join(PATIENCE_S)
    assert not consumer.is_alive()
    assert result == [None]
    assert w.get(timeout=0) is None


def test_folder_copied_file_by_file_yields_slug_once(roots: tuple[Path, Path]) -> None:
    """A folder filled over longer than debounce_s is emitted once, after the last file."""
    conv = roots[0]
    with FolderWatcher(*roots, debounce_s=0.5, max_wait_s=5.0) as w:

        def copy(_stop: threading.Event) -> None:
            folder = conv / "2025-06-25__copied"
            folder.mkdir()
            for i in range(8):
                (folder / f"part{i}.json").write_text(f'{{"level": 1, "content": "{i}"}}')
                time.sleep(0.1)

        with Background(copy) as copier:
            batches = wait_for(w, {"2025-06-25__copied"})
            arrived = time.monotonic()
        assert copier.finished_at is not None
        assert arrived >= copier.finished_at
        assert slugs_of(batches) == ["2025-06-25__copied"]
        assert slugs_of(drain(w, 1.5)) == []


def test_file_appended_for_longer_than_debounce_yields_final_state_once(roots: tuple[Path, Path]) -> None:
    """Appends spaced under debounce_s, lasting longer than it but under max_wait_s, give one batch once done."""
    folder = make_slug(roots[0], "growing", "")
    with FolderWatcher(*roots, debounce_s=0.5, max_wait_s=5.0) as w:

        def append(_stop: threading.Event) -> None:
            with (folder / "messages.jsonl").open("a") as f:
                for i in range(12):
                    f.write(f'{{"role": "user", "content": "{i}"}}\n')
                    f.flush()
                    time.sleep(0.1)

        with Background(append) as writer:
            batches = wait_for(w, {"growing"})
            arrived = time.monotonic()
        assert writer.finished_at is not None
        assert arrived >= writer.finished_at
        assert slugs_of(batches) == ["growing"]
        assert slugs_of(drain(w, 1.5)) == []


def test_noise_past_max_wait_still_delivers_slug(roots: tuple[Path, Path]) -> None:
    """Events that never pause but leave the files unchanged deliver the slug while they go on."""
    folder = make_slug(roots[0], "noisy")
    target = folder / "messages.jsonl"
    st = target.stat()
    with FolderWatcher(*roots, debounce_s=DEBOUNCE_S, max_wait_s=MAX_WAIT_S) as w:

        def fidget(stop: threading.Event) -> None:
            while not stop.wait(0.05):
                os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))

        with Background(fidget) as noise:
            wait_for(w, {"noisy"})
            assert noise.finished_at is None


def test_edit_yields_slug(watcher: FolderWatcher, roots: tuple[Path, Path]) -> None:
    """Editing a file of an existing slug emits that slug."""
    folder = make_slug(roots[0], "edited")
    wait_for(watcher, {"edited"})
    with (folder / "messages.jsonl").open("a") as f:
        f.write('{"role": "assistant", "content": "hello"}\n')
    assert slugs_of(wait_for(watcher, {"edited"})) == ["edited"]


def test_deleted_slug_folder_yields_slug(watcher: FolderWatcher, roots: tuple[Path, Path]) -> None:
    """Deleting a slug folder emits the slug, so the caller can drop it."""
    folder = make_slug(roots[0], "doomed")
    wait_for(watcher, {"doomed"})
    shutil.rmtree(folder)
    assert "doomed" in slugs_of(wait_for(watcher, {"doomed"}))


def test_renamed_slug_folder_yields_old_and_new(watcher: FolderWatcher, roots: tuple[Path, Path]) -> None:
    """Renaming a slug folder emits both the vanished slug and the new one."""
    folder = make_slug(roots[0], "before")
    wait_for(watcher, {"before"})
    folder.rename(roots[0] / "after")
    assert set(slugs_of(wait_for(watcher, {"before", "after"}))) == {"before", "after"}


def test_moved_in_and_out_of_root(watcher: FolderWatcher, roots: tuple[Path, Path], tmp_path: Path) -> None:
    """A folder moved in from outside the roots is a create; moved out, a delete."""
    outside = make_slug(tmp_path / "outside", "visitor")
    outside.rename(roots[0] / "visitor")
    wait_for(watcher, {"visitor"})
    (roots[0] / "visitor").rename(tmp_path / "outside" / "gone")
    wait_for(watcher, {"visitor"})


def test_summaries_root_maps_to_slugs(watcher: FolderWatcher, roots: tuple[Path, Path]) -> None:
    """Events below the summaries root emit the slug of the summaries folder."""
    folder = roots[1] / "2025-06-25__summarised"
    folder.mkdir()
    (folder / "l1.json").write_text('{"level": 1, "covers": [0], "content": "x"}')
    assert slugs_of(wait_for(watcher, {"2025-06-25__summarised"})) == ["2025-06-25__summarised"]


def test_hidden_staging_folder_renamed_into_place_yields_only_final_slug(
    watcher: FolderWatcher, roots: tuple[Path, Path]
) -> None:
    """Writing into a hidden folder and renaming it into place emits only the final slug."""
    staging = roots[0] / ".tmp-copy"
    staging.mkdir()
    for i in range(3):
        (staging / f"part{i}.json").write_text("{}")
    staging.rename(roots[0] / "final")
    batches = wait_for(watcher, {"final"}) + drain(watcher)
    assert set(slugs_of(batches)) == {"final"}


def test_files_directly_in_root_are_ignored(watcher: FolderWatcher, roots: tuple[Path, Path]) -> None:
    """A file lying in a root, outside any slug folder, emits nothing."""
    (roots[0] / "README.md").write_text("not a conversation")
    (roots[1] / "notes.txt").write_text("nor a summary")
    assert drain(watcher) == []


def test_request_rescan_is_delivered_once(watcher: FolderWatcher) -> None:
    """request_rescan() sets rescan on the next batch only, and logs once per pending request."""
    with capture_logs() as logs:
        watcher.request_rescan("periodic")
        watcher.request_rescan("periodic")
    assert watcher.get(timeout=PATIENCE_S) == WatchBatch(slugs=[], rescan=True)
    assert [e["event"] for e in logs] == ["watch_rescan_requested"]
    assert watcher.get(timeout=0.3) is None


def test_inotify_overflow_requests_rescan(watcher: FolderWatcher) -> None:
    """watchdog's queue-overflow warning (its only overflow signal) turns into a rescan request."""
    logging.getLogger("watchdog.observers.inotify_c").warning("Inotify queue overflowed; filesystem events were lost")
    batch = watcher.get(timeout=PATIENCE_S)
    assert batch is not None
    assert batch.rescan


def test_deleted_root_requests_rescan_and_watching_resumes(watcher: FolderWatcher, roots: tuple[Path, Path]) -> None:
    """Deleting a root asks for a rescan; once the root exists again it is watched again."""
    conv = roots[0]
    shutil.rmtree(conv)
    wait_for(watcher, set(), rescan=True)
    assert not conv.exists(), "a vanished root must not be recreated behind the user's back"
    conv.mkdir()
    wait_for(watcher, set(), rescan=True)
    make_slug(conv, "reborn")
    wait_for(watcher, {"reborn"})


def test_root_moved_away_requests_rescan(watcher: FolderWatcher, roots: tuple[Path, Path], tmp_path: Path) -> None:
    """Moving a root away (inotify sends no event for it) is noticed by the health check."""
    roots[1].rename(tmp_path / "summaries-old")
    wait_for(watcher, set(), rescan=True)


# -- polling: injected and as the ENOSPC / EMFILE fallback -------------------------


def test_injected_polling_observer_delivers_events(roots: tuple[Path, Path]) -> None:
    """The observer is injectable; a polling observer yields the same slugs."""
    with FolderWatcher(
        *roots,
        debounce_s=DEBOUNCE_S,
        max_wait_s=MAX_WAIT_S,
        observer_factory=lambda: PollingObserver(timeout=0.1),
    ) as w:
        assert w.uses_polling
        make_slug(roots[1], "polled")
        wait_for(w, {"polled"})


class _WatchLimitObserver(InotifyObserver):
    """A real inotify observer (its reader thread starts in __init__) whose start hits ENOSPC."""

    def start(self) -> None:
        raise OSError(errno.ENOSPC, "inotify watch limit reached")


def _instance_limit_observer() -> BaseObserver:
    raise OSError(errno.EMFILE, "inotify instance limit reached")


@pytest.mark.parametrize(
    ("factory", "code", "sysctl"),
    [
        (_WatchLimitObserver, "ENOSPC", "fs.inotify.max_user_watches"),
        (_instance_limit_observer, "EMFILE", "fs.inotify.max_user_instances"),
    ],
)
def test_inotify_limit_falls_back_to_polling(
    roots: tuple[Path, Path], factory: ObserverFactory, code: str, sysctl: str
) -> None:
    """An inotify limit logs one watch_fallback_polling warning naming the sysctl, and events still arrive."""
    with (
        capture_logs() as logs,
        FolderWatcher(
            *roots,
            debounce_s=DEBOUNCE_S,
            max_wait_s=MAX_WAIT_S,
            observer_factory=factory,
            poll_interval_s=0.1,
        ) as w,
    ):
        assert w.uses_polling
        make_slug(roots[0], "fallback")
        wait_for(w, {"fallback"})
    fallbacks = [e for e in logs if e["event"] == "watch_fallback_polling"]
    assert len(fallbacks) == 1
    assert fallbacks[0]["log_level"] == "warning"
    assert fallbacks[0]["errno"] == code
    assert fallbacks[0]["sysctl"] == sysctl
    assert sysctl in fallbacks[0]["hint"]
    assert code in fallbacks[0]["hint"]


def test_other_start_errors_propagate(roots: tuple[Path, Path]) -> None:
    """Only inotify limits fall back to polling; any other failure to start is raised."""

    def broken() -> BaseObserver:
        raise OSError(errno.EACCES, "permission denied")

    with pytest.raises(PermissionError):
        FolderWatcher(*roots, debounce_s=DEBOUNCE_S, max_wait_s=MAX_WAIT_S, observer_factory=broken).start()
