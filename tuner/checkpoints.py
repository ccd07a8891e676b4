"""A study's checkpoints in Optuna's artifact store: kept as trials report them, handed back, cut to the best K.

A trial keeps two checkpoints: its last one, that a retry resumes from (the
user attribute ``checkpoint``), and the one of its best epoch by the
objective, the model its value describes (``best_checkpoint``; the same one
while every epoch improves, and the last one for an objective read at the
last epoch). Each is written once, into one of the trial's two artifacts
(``optuna.artifacts.upload_artifact`` on first use, so optuna-dashboard lists
them on the trial's page) that holds neither: the store never piles up stale
ones. The attributes say which artifact, which epoch, its size, digest and
path.

The artifact store is a directory (Optuna's ``FileSystemArtifactStore``):
``$TUNER_ARTIFACTS``, else ``<db>-artifacts/`` next to a SQLite file (where
``tuner dashboard`` keeps its learning curves too), else ``./tuner-artifacts``.
Only the driver writes it; workers send their checkpoints' bytes with their
epoch rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import io
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial, TrialState

from tuner.errors import TunerError
from tuner.store import Store, internals
from tuner.trial import metrics, record
from tuner.trial.checkpoint import Checkpoint

ENV = "TUNER_ARTIFACTS"
ATTR = "checkpoint"  # the trial's user attribute: {artifact_id, epoch, bytes, sha256, format, filename, path}
BEST_ATTR = "best_checkpoint"  # the same, for the checkpoint of the trial's best epoch
ROW_KEY = "checkpoint"  # where a Checkpoint rides on the epoch row it was reported with
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # a write the artifact store's disk has no room for

log = logging.getLogger("tuner")


def location(store: Store, given: str | Path | None = None) -> Path:
    """Where a store's artifacts live: ``given``, ``$TUNER_ARTIFACTS``, next to a SQLite file, or ./tuner-artifacts."""
    given = given or os.environ.get(ENV)
    if given:
        return Path(given).expanduser()
    if store.backend == "sqlite":
        db = Path(store.engine.url.database or "tuner.db").expanduser().resolve()
        return db.with_name(f"{db.stem}-artifacts")
    return Path("tuner-artifacts")


def take(rows: Sequence[dict[str, Any]]) -> dict[int, list[tuple[dict[str, Any], Checkpoint]]]:
    """Remove the checkpoints from a batch of rows: each trial's (by trial id), in order, with its row."""
    found: dict[int, list[tuple[dict[str, Any], Checkpoint]]] = {}
    for row in rows:
        checkpoint = row.pop(ROW_KEY, None)
        if checkpoint is not None:
            found.setdefault(row["trial_id"], []).append((row, checkpoint))
    return found


class _WholeFiles(FileSystemArtifactStore):
    """Optuna's file-system artifact store, whose writes land whole or not at all.

    Each goes to a hidden file beside its artifact, renamed onto it once
    written: a write cut short (a full disk, a crash) leaves no partial file,
    and the checkpoint the artifact held before stays as it was.
    """

    def __init__(self, base_path: Path) -> None:
        super().__init__(base_path)
        self.base = base_path

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        target = self.base / artifact_id
        if target.parent != self.base:
            raise ValueError(f"Invalid artifact_id: {artifact_id}")
        fd, part = tempfile.mkstemp(dir=self.base, prefix=f".{artifact_id}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                shutil.copyfileobj(content_body, f)
            os.replace(part, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(part)
            raise


class _Written:
    """An artifact store that notes the ids written through it (Optuna's ``ArtifactStore`` protocol)."""

    def __init__(self, store: FileSystemArtifactStore) -> None:
        self.store = store
        self.ids: list[str] = []

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self.store.open_reader(artifact_id)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.store.write(artifact_id, content_body)
        self.ids.append(artifact_id)

    def remove(self, artifact_id: str) -> None:
        self.store.remove(artifact_id)


@dataclasses.dataclass(frozen=True)
class _Held:
    """Which of a running trial's artifacts holds its last checkpoint and which its best, and the best's score."""

    last: str | None = None
    best: str | None = None
    score: float | None = None


class Checkpoints:
    """One study's checkpoints: save them as they arrive, restore one for a retry, keep the best ``keep``."""

    def __init__(self, store: Store, study: optuna.Study, keep: int, objective: Any = None,
                 directory: str | Path | None = None) -> None:
        self.store = store
        self.study = study
        self.keep = keep
        self.objective = objective  # spec.Objective: which epoch is a trial's best (None: the last is its model)
        self.directory = location(store, directory)
        self.ids: dict[int, list[str]] = {}  # trial id -> its artifacts (two at most), for the trials of this session
        self._held: dict[int, _Held] = {}
        self._artifacts: FileSystemArtifactStore | None = None
        self._full = False  # whether the artifact store's disk is full (said once, until there is room again)

    @property
    def artifacts(self) -> FileSystemArtifactStore:
        """The artifact store, its directory made on first use (a study without checkpoints makes none)."""
        if self._artifacts is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._artifacts = _WholeFiles(self.directory)
        return self._artifacts

    def save(self, trial_id: int, taken: Sequence[tuple[Mapping[str, Any], Checkpoint]]) -> None:
        """Keep a running trial's latest checkpoint and its best epoch's, of those so far and ``taken`` (the
        checkpoints of its new rows, in order, with their rows), and say so on the trial.

        Safe to run again after a failure part way (the database's outage):
        what is held changes only once the attributes are written. A save cut
        short for good leaves at worst an artifact whose bytes its attribute's
        digest does not match (never the best one, when only the last moved),
        and every reader checks the digest.
        """
        held = self._held.get(trial_id, _Held())
        best, score = None, held.score
        for row, checkpoint in taken:
            found = metrics.improves(row, self.objective, score) if self.objective is not None else None
            if found is not None:
                best, score = checkpoint, found
        last, short = taken[-1][1], False
        try:
            if best is last:  # the latest is the best too: one artifact holds both
                slot = self._write(trial_id, last, avoid=held.best)
                now = _Held(slot, slot, score)
            elif best is not None:
                slot = self._write(trial_id, best, avoid=held.best)
                try:
                    now = _Held(self._write(trial_id, last, avoid=slot), slot, score)
                except OSError as exc:
                    if exc.errno not in _DISK_FULL:
                        raise
                    self._say_full(trial_id, last, exc)
                    now, last, short = _Held(slot, slot, score), best, True  # the model is the last one kept too
            else:
                now = _Held(self._write(trial_id, last, avoid=held.best), held.best, score)
        except OSError as exc:
            if exc.errno not in _DISK_FULL:
                raise
            self._drop(trial_id, held, best, score, last, exc)
            return
        if self._full and not short:
            self._full = False
            log.warning("the artifact store %s has room again: checkpoints are kept again", self.directory)
        attrs = {ATTR: self._describe(now.last, last)}
        if now.best == now.last:
            attrs[BEST_ATTR] = attrs[ATTR]
        elif best is not None:
            attrs[BEST_ATTR] = self._describe(now.best, best)
        self.store.set_trial_attrs(trial_id, attrs)
        self._held[trial_id] = now

    def _drop(self, trial_id: int, held: _Held, best: Checkpoint | None, score: float | None, last: Checkpoint,
              exc: OSError) -> None:
        """A full disk: this batch's checkpoints are not kept (the study goes on), said once while it lasts.

        The artifacts hold what they held (writes are whole or none), and the
        trial's ``checkpoint`` still names its last kept one, to resume from. A
        new best epoch whose checkpoint is lost leaves the trial without its
        model, so its ``best_checkpoint`` says so rather than name an earlier
        epoch's as the model its value describes.
        """
        self._say_full(trial_id, last, exc)
        if best is None:
            return
        meta = self.store.storage.get_trial(trial_id).user_attrs.get(BEST_ATTR) if held.best is not None else None
        if meta:
            reason = f"the artifact store was full when its best epoch, {best.epoch}, was saved"
            fix = f"pick another trial (--trial N), and give the artifact store room (${ENV}) for the next study"
            self.store.set_trial_attrs(trial_id, {BEST_ATTR: {**meta, "removed": reason, "fix": fix}})
        self._held[trial_id] = _Held(held.last, None, score)

    def _say_full(self, trial_id: int, checkpoint: Checkpoint, exc: OSError) -> None:
        """Warn of a full artifact store, once while it lasts."""
        if self._full:
            return
        self._full = True
        number = self.store.storage.get_trial(trial_id).number
        log.warning("the artifact store %s is full (%s): trial %d's checkpoint of epoch %d is not kept, nor any "
                    "other until there is room; the study goes on. Fix: free space there, or point $%s at a larger "
                    "disk.", self.directory, exc.strerror or exc, number, checkpoint.epoch, ENV)

    def best_score(self, trial_id: int) -> float | None:
        """The objective at the best epoch a running trial kept a checkpoint of (None: none yet)."""
        held = self._held.get(trial_id)
        return held.score if held is not None else None

    def model_is_last(self, trial_id: int) -> None:
        """A trial whose value was read at its last epoch after all (not stopped early, ``mode: last``): its
        last checkpoint is its model."""
        held = self._held.get(trial_id)
        if held is None or held.best == held.last:
            return
        meta = self.store.storage.get_trial(trial_id).user_attrs.get(ATTR)
        self.store.set_trial_attrs(trial_id, {BEST_ATTR: meta})
        self._held[trial_id] = dataclasses.replace(held, best=held.last)

    def _write(self, trial_id: int, checkpoint: Checkpoint, avoid: str | None) -> str:
        """Write ``checkpoint`` into an artifact of the trial's other than ``avoid`` (made on first use); its id."""
        slots = self.ids.setdefault(trial_id, [])
        free = [artifact_id for artifact_id in slots if artifact_id != avoid]
        if free:
            self.artifacts.write(free[0], io.BytesIO(checkpoint.data))
            return free[0]
        artifact_id = self._upload(trial_id, checkpoint)
        slots.append(artifact_id)
        return artifact_id

    def _upload(self, trial_id: int, checkpoint: Checkpoint) -> str:
        """A new artifact of the trial's holding ``checkpoint``; one whose record the database did not take is
        removed again (a retry uploads anew, and nothing would ever remove the first)."""
        written = _Written(self.artifacts)
        with tempfile.TemporaryDirectory(prefix="tuner-upload-") as folder:
            path = Path(folder, checkpoint.filename)
            path.write_bytes(checkpoint.data)
            try:
                # Optuna guesses the mimetype from the name: .pt would read as a SNES page table.
                return upload_artifact(artifact_store=written, file_path=str(path),
                                       study_or_trial=optuna.Trial(self.study, trial_id),
                                       mimetype="application/octet-stream")
            except BaseException:
                for artifact_id in written.ids:
                    with contextlib.suppress(ArtifactNotFound, OSError):  # the first error is the one to see
                        self.artifacts.remove(artifact_id)
                raise

    def _describe(self, artifact_id: str, checkpoint: Checkpoint) -> dict[str, Any]:
        return {"artifact_id": artifact_id, "epoch": checkpoint.epoch, "bytes": checkpoint.size,
                "sha256": checkpoint.sha256, "format": checkpoint.format, "filename": checkpoint.filename,
                "reported": checkpoint.reported, "path": str(self.directory.resolve() / artifact_id)}

    # ------------------------------------------------------------------ a retried trial resumes

    def resume_point(self, trial: optuna.Trial) -> tuple[Checkpoint, list[dict[str, Any]], list[Any]] | None:
        """For a trial that runs another's params again, that trial's last checkpoint, its rows up to it, and
        its checkpoints for :meth:`save` (its best epoch's, when another, then the last one).

        None when the trial is no retry, or the one it retries kept no usable
        checkpoint (then it starts from its first epoch, as without one).
        """
        source_number = trial.user_attrs.get(record.RETRY_OF)
        if source_number is None:
            return None
        source = self._trial(int(source_number))
        meta = source.user_attrs.get(ATTR) if source is not None else None
        if not meta or meta.get("removed"):
            return None
        found = read(self.directory, meta, "the retry starts from its first epoch")
        if found is None:
            return None
        rows = [r for r in self.store.epochs(self.study, [source.number]) if r["epoch"] <= meta["epoch"]]
        found = dataclasses.replace(found, reported=len(rows))
        by_epoch = {r["epoch"]: r for r in rows}
        taken = [(by_epoch.get(found.epoch, {}), found)]
        best = source.user_attrs.get(BEST_ATTR)
        if best and not best.get("removed") and best["artifact_id"] != meta["artifact_id"]:
            earlier = read(self.directory, best, "its best epoch's model is the one it trains from there")
            if earlier is not None and earlier.epoch in by_epoch:
                taken.insert(0, (by_epoch[earlier.epoch], earlier))
        return found, rows, taken

    def _trial(self, number: int) -> FrozenTrial | None:
        return next((t for t in _fresh_trials(self.store, self.study) if t.number == number), None)

    # ------------------------------------------------------------------ retention

    def retain(self, direction: str) -> list[int]:
        """Remove the checkpoints of finished trials that are not among the best ``keep``; their numbers.

        Kept besides: running trials', and those of trials that failed through
        no fault of their params (worker died, study interrupted) until the
        trial that runs them again has started from them.
        """
        trials = _fresh_trials(self.store, self.study)
        held = [t for t in trials if (m := t.user_attrs.get(ATTR)) and not m.get("removed")]
        if not held:
            return []
        keep = {t.number for t in _best(held, direction)[: self.keep]}
        keep |= {t.number for t in held if t.state in (TrialState.RUNNING, TrialState.WAITING)}
        resumed = {t.user_attrs.get(record.RETRY_OF) for t in trials if t.state != TrialState.WAITING}
        keep |= {t.number for t in held if t.user_attrs.get(record.FAIL_KIND) in record.NOT_COUNTED
                 and t.number not in resumed}
        gone = [t for t in held if t.number not in keep]
        for trial in gone:
            self._remove(trial)
        return [t.number for t in gone]

    def _remove(self, trial: FrozenTrial) -> None:
        metas = {name: dict(trial.user_attrs[name]) for name in (ATTR, BEST_ATTR) if trial.user_attrs.get(name)}
        for artifact_id in {meta["artifact_id"] for meta in metas.values()}:
            try:
                self.artifacts.remove(artifact_id)
            except ArtifactNotFound:
                pass  # removed by hand, or another store
        for meta in metas.values():
            meta["removed"] = f"not among the best {self.keep} trials (checkpoints.keep)"
        self.store.set_trial_attrs(internals.trial_id(trial), metas)


def _fresh_trials(store: Store, study: optuna.Study) -> list[FrozenTrial]:
    """The study's trials as the database has them now: the study's own reads cache finished trials, whose
    checkpoint attribute retention rewrites."""
    return store.storage.get_all_trials(internals.study_id(study), deepcopy=False)


def _best(trials: Sequence[FrozenTrial], direction: str) -> list[FrozenTrial]:
    """COMPLETE trials with a value, best first (by the first objective of several)."""
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    sign = -1.0 if direction == "maximize" else 1.0
    return sorted(done, key=lambda t: (sign * t.values[0], t.number))


# ---------------------------------------------------------------------- reading them back


def read(directory: str | Path, meta: Mapping[str, Any], otherwise: str) -> Checkpoint | None:
    """The checkpoint a trial's ``checkpoint`` attribute names, from the artifact store at ``directory``.

    None, with a warning that ends in ``otherwise`` (what happens instead),
    when it is not there or its bytes do not match its digest.
    """
    try:
        with FileSystemArtifactStore(directory).open_reader(meta["artifact_id"]) as reader:
            data = reader.read()
    except ArtifactNotFound:
        log.warning("checkpoint %s is not in %s (another $%s?); %s", meta["artifact_id"], directory, ENV, otherwise)
        return None
    checkpoint = Checkpoint(meta["epoch"], data, meta["format"], meta["filename"], meta.get("reported", 0))
    if checkpoint.sha256 != meta.get("sha256"):
        log.warning("checkpoint %s does not match its digest (cut short while written?); %s", meta["artifact_id"],
                    otherwise)
        return None
    return checkpoint


def model(attrs: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Of a trial's user attributes, the checkpoint that is its model: its best epoch's (a study of an earlier
    tuner has its last one only)."""
    return attrs.get(BEST_ATTR) or attrs.get(ATTR)


def kept(trial: FrozenTrial) -> Mapping[str, Any] | None:
    """The attribute of a trial's model checkpoint (:func:`model`), when it is still kept."""
    meta = model(trial.user_attrs)
    return meta if meta and not meta.get("removed") else None



def download(store: Store, study: optuna.Study, trial: FrozenTrial, to: str | Path | None = None,
             directory: str | Path | None = None) -> Path:
    """Trial ``trial``'s model (its best epoch's checkpoint) written to ``to`` (default:
    ``<study>-trial<N>-<filename>`` here); its path."""
    meta = model(store.storage.get_trial(internals.trial_id(trial)).user_attrs)
    name = study.study_name
    if not meta:
        raise TunerError(f"trial {trial.number} of study {name!r} has no checkpoint: its workload never passed "
                         "one to report. Fix: report(epoch, ..., checkpoint=model.state_dict()) in the training "
                         "loop, or pick another trial (--trial N).")
    if meta.get("removed"):
        fix = meta.get("fix", "pick one of the best trials, or raise checkpoints.keep")
        raise TunerError(f"trial {trial.number} of study {name!r}: its checkpoint was removed, as "
                         f"{meta['removed']}. Fix: {fix}.")
    # The default lands here, whatever the stored names hold (a study Optuna made may be named "../x").
    default = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{name}-trial{trial.number}-{Path(meta['filename']).name}")
    target = Path(to) if to is not None else Path(default.lstrip(".")[-200:] or "checkpoint")
    if target.exists():
        raise TunerError(f"-o: {target} exists already, and tuner does not overwrite it. Fix: remove it or "
                         "name another file.")
    artifacts = FileSystemArtifactStore(location(store, directory))
    try:
        download_artifact(artifact_store=artifacts, file_path=str(target), artifact_id=meta["artifact_id"])
    except ArtifactNotFound:
        raise TunerError(f"trial {trial.number} of study {name!r}: its checkpoint {meta['artifact_id']} is not in "
                         f"{location(store, directory)}. Fix: point ${ENV} (or --artifacts) at the directory the "
                         f"study wrote, {Path(meta['path']).parent}.") from None
    if hashlib.sha256(target.read_bytes()).hexdigest() != meta.get("sha256"):
        target.unlink()
        raise TunerError(f"trial {trial.number} of study {name!r}: its checkpoint {meta['artifact_id']} does not "
                         f"match its digest (its save was cut short: the driver stopped, or the database stayed "
                         f"out), so it is not the epoch {meta['epoch']} model. Fix: pick another trial (--trial N).")
    return target


def fetch(store: Store, study: optuna.Study, trial: FrozenTrial, directory: str | Path | None = None) -> Checkpoint:
    """Trial ``trial``'s model (its best epoch's checkpoint), read back as :func:`download` gives it (a
    TunerError says why there is none)."""
    meta = model(store.storage.get_trial(internals.trial_id(trial)).user_attrs) or {}
    with tempfile.TemporaryDirectory(prefix="tuner-model-") as folder:
        path = download(store, study, trial, Path(folder, "checkpoint"), directory)
        data = path.read_bytes()
    return Checkpoint(meta["epoch"], data, meta["format"], meta["filename"], meta.get("reported", 0))
