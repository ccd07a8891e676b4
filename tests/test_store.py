"""The study store's contract, run against every database tuner supports (SQLite and PostgreSQL).

Each test gets an empty store from the ``store_url`` fixture: a SQLite file, or
a fresh database on the session's PostgreSQL server (tests/conftest.py).
"""

from __future__ import annotations

import math
import threading

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

import tuner
from tests import workloads
from tuner.errors import StorageError
from tuner.store import Store

SPACE = {"x": {"type": "float", "low": -5.0, "high": 5.0}}


@pytest.fixture
def store(store_url: str):
    store = Store(store_url)
    yield store
    store.close()


def trial_ids(study: optuna.Study, n: int) -> list[int]:
    return [study.ask()._trial_id for _ in range(n)]


def count(store: Store, table: str) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def rows(trial_id: int, epochs: range, **metrics: float) -> list[dict]:
    return [{"trial_id": trial_id, "epoch": e, "val_loss": 1.0 / e, **metrics} for e in epochs]


# ---------------------------------------------------------------------- studies


def test_create_load_and_has_study(store):
    assert not store.has_study("a")
    created = store.create_study("a", "maximize")
    assert store.has_study("a")
    assert store.study_names() == ["a"]
    loaded = store.load_study("a")
    assert (loaded.study_name, loaded.direction) == ("a", optuna.study.StudyDirection.MAXIMIZE)
    assert loaded._study_id == created._study_id


def test_creating_a_study_that_exists_is_refused(store):
    store.create_study("a", "minimize")
    with pytest.raises(StorageError) as caught:
        store.create_study("a", "minimize")
    assert str(caught.value) == (
        f"study 'a' already exists in {store.safe_url}. Fix: pass --study NEW_NAME for a new study, "
        "or run `tuner resume a` to continue it."
    )


def test_loading_a_missing_study_names_the_ones_there(store):
    with pytest.raises(StorageError) as caught:
        store.load_study("zz")
    assert str(caught.value) == f"no study named 'zz' in {store.safe_url}. It holds no studies yet."
    store.create_study("a", "minimize")
    store.create_study("b", "minimize")
    with pytest.raises(StorageError) as caught:
        store.load_study("zz")
    assert str(caught.value) == f"no study named 'zz' in {store.safe_url}. Studies there: a, b."


# ---------------------------------------------------------------------- epochs


def test_epochs_are_recorded_in_batches_with_optunas_intermediate_values(store):
    study = store.create_study("s", "minimize")
    first, second = trial_ids(study, 2)
    store.record_epochs(rows(first, range(1, 4)) + rows(second, range(1, 3)), "val_loss")
    store.record_epochs(rows(first, range(4, 6)), "val_loss")
    assert [(r["trial"], r["epoch"]) for r in store.epochs(study)] == [(0, 1), (0, 2), (0, 3), (0, 4), (0, 5),
                                                                       (1, 1), (1, 2)]
    by_number = {t.number: t.intermediate_values for t in store.load_study("s").trials}
    assert by_number == {0: {e: 1.0 / e for e in range(1, 6)}, 1: {1: 1.0, 2: 0.5}}


def test_recording_the_same_rows_twice_stores_them_once(store):
    study = store.create_study("s", "minimize")
    (trial,) = trial_ids(study, 1)
    batch = rows(trial, range(1, 4))
    store.record_epochs(batch, "val_loss")
    store.record_epochs(batch + rows(trial, range(4, 5)), "val_loss")  # live, then again with the result
    store.record_epochs(batch[:1] * 2, "val_loss")  # a duplicate inside one batch
    assert count(store, "tuner_epochs") == 4
    assert count(store, "trial_intermediate_values") == 4
    assert [r["epoch"] for r in store.epochs(study)] == [1, 2, 3, 4]


def test_the_value_can_be_a_function_of_the_row_or_absent(store):
    study = store.create_study("s", "minimize")
    scored, unscored = trial_ids(study, 2)
    store.record_epochs(rows(scored, range(1, 3), train_loss=0.25), lambda r: r["val_loss"] + r["train_loss"])
    store.record_epochs(rows(unscored, range(1, 3)))
    intermediate = {t.number: t.intermediate_values for t in store.load_study("s").trials}
    assert intermediate == {0: {1: 1.25, 2: 0.75}, 1: {}}
    assert len(store.epochs(study)) == 4


def test_non_finite_values(store):
    """NaN and inf reach Optuna as such, are NULL in tuner's columns, and are named in extras (JSON has no NaN)."""
    study = store.create_study("s", "minimize")
    (trial,) = trial_ids(study, 1)
    nan, inf = math.nan, math.inf
    store.record_epochs([
        {"trial_id": trial, "epoch": 1, "val_loss": nan, "train_loss": inf, "grad_norm": nan, "note": "ok"},
        {"trial_id": trial, "epoch": 2, "val_loss": inf, "train_loss": -inf, "grad_norm": inf, "grad_min": -inf},
        {"trial_id": trial, "epoch": 3, "val_loss": -inf, "train_loss": 1.5, "grad_norm": 2, "device": "cpu"},
    ], "val_loss")
    values = store.load_study("s").trials[0].intermediate_values
    assert math.isnan(values[1]) and values[2] == inf and values[3] == -inf
    first, second, third = store.epochs(study)
    assert (first["val_loss"], first["train_loss"], first["grad_norm"], first["note"]) == (None, None, "nan", "ok")
    assert (second["val_loss"], second["train_loss"], second["grad_norm"], second["grad_min"]) == (None, None, "inf",
                                                                                                  "-inf")
    assert (third["train_loss"], third["grad_norm"], third["device"]) == (1.5, 2.0, "cpu")


def test_every_column_round_trips_with_no_database_specific_limit(store):
    study = store.create_study("s", "minimize")
    (trial,) = trial_ids(study, 1)
    row = {"trial_id": trial, "epoch": 1, "iterations": 3_000_000_000, "train_loss": 0.5, "val_loss": 0.75,
           "train_acc": 0.9, "val_acc": 0.8, "gap_loss": 0.25, "gap_acc": 0.1, "lr": 1e-300, "seconds": 12.5,
           "device": "cuda:0 " + "x" * 200, "grad_norm": 1e300}
    store.record_epochs([row])
    (stored,) = store.epochs(study)
    assert stored == {"trial": 0, **{k: v for k, v in row.items() if k != "trial_id"}}


def test_set_trial_attrs_replaces_only_the_keys_given(store):
    study = store.create_study("s", "minimize")
    (trial,) = trial_ids(study, 1)
    store.set_trial_attrs(trial, {"a": 1, "b": "two"})
    store.set_trial_attrs(trial, {"b": 3.5, "c": [1, {"d": None}]})
    store.set_trial_attrs(trial, {})
    assert store.load_study("s").trials[0].user_attrs == {"a": 1, "b": 3.5, "c": [1, {"d": None}]}


def test_epochs_are_ordered_by_trial_then_epoch_and_filtered_by_trial(store):
    study = store.create_study("s", "minimize")
    other = store.create_study("other", "minimize")
    first, second, third = trial_ids(study, 3)
    (elsewhere,) = trial_ids(other, 1)
    store.record_epochs(rows(third, range(2, 0, -1)) + rows(elsewhere, range(1, 3)), "val_loss")
    store.record_epochs(rows(first, range(3, 0, -1)) + rows(second, range(1, 2)), "val_loss")
    assert [(r["trial"], r["epoch"]) for r in store.epochs(study)] == [(0, 1), (0, 2), (0, 3), (1, 1), (2, 1), (2, 2)]
    assert [(r["trial"], r["epoch"]) for r in store.epochs(study, [2, 0])] == [(0, 1), (0, 2), (0, 3), (2, 1), (2, 2)]
    assert store.epochs(study, []) == []
    assert [(r["trial"], r["epoch"]) for r in store.epochs(other)] == [(0, 1), (0, 2)]


def test_twenty_thousand_epoch_rows_in_batches_are_all_there(store):
    """Throughput sanity, not a timing: 40 batches of 500 rows, as the orchestrator would send them."""
    study = store.create_study("s", "minimize")
    ids = trial_ids(study, 20)
    everything = [row for trial in ids for row in rows(trial, range(1, 1001), train_loss=0.5, grad_norm=1.0)]
    for start in range(0, len(everything), 500):
        store.record_epochs(everything[start:start + 500], "val_loss")
    assert count(store, "tuner_epochs") == 20_000
    assert count(store, "trial_intermediate_values") == 20_000
    assert len(store.epochs(study, [7])) == 1000


@pytest.mark.parametrize("shared", [True, False], ids=["one-store", "a-store-each"])
def test_concurrent_writers_never_hit_a_locked_database(store_url, shared):
    """Four threads record four trials at once, into one store or each through its own (opened concurrently)."""
    main = Store(store_url)
    study = main.create_study("s", "minimize")
    ids = trial_ids(study, 4)
    errors: list[BaseException] = []

    def write(trial: int) -> None:
        try:
            store = main if shared else Store(store_url)
            for start in range(1, 301, 20):
                store.record_epochs(rows(trial, range(start, start + 20)), "val_loss")
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(trial,)) for trial in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert count(main, "tuner_epochs") == 4 * 300
    assert count(main, "trial_intermediate_values") == 4 * 300


def test_stores_opened_at_once_on_a_new_database_all_open(store_url):
    """Two launches on a new database race to create the tables; neither fails."""
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            Store(store_url).close()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert Store(store_url).study_names() == []


# ---------------------------------------------------------------------- whole studies


def test_a_launch_inline_is_read_back_by_optuna(store_url):
    study = tuner.launch(space=SPACE, objective=workloads.quadratic, trials=4, epochs=3, seed=3, strategy="random",
                         executor="inline", pruner="none", storage=store_url, study="inline")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert len(study.epochs()) == 4 * 3
    assert_optuna_reads_the_same(study, store_url)


def test_a_launch_on_ray_is_read_back_by_optuna(ray_local, store_url):
    study = tuner.launch(space=SPACE, objective=workloads.quadratic, trials=4, epochs=3, seed=4, strategy="random",
                         parallel=2, pruner="none", storage=store_url, study="on-ray")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert_optuna_reads_the_same(study, store_url)
    again = tuner.load("on-ray", storage=store_url)
    assert again.best_params == study.best_params
    assert again.epochs() == study.epochs()


def assert_optuna_reads_the_same(study: tuner.Study, url: str) -> None:
    loaded = optuna.load_study(study_name=study.name, storage=url)
    assert [(t.number, t.params, t.value, t.state) for t in loaded.trials] == [
        (t.number, t.params, t.value, t.state) for t in study.trials
    ]
    for trial in loaded.trials:
        assert trial.intermediate_values == {e["epoch"]: e["val_loss"] for e in study.epochs(trial.number)}
        assert trial.user_attrs["epochs"] == 3
    assert loaded.best_value == study.best_value


def test_a_password_file_fills_in_a_url_without_password(postgres_server, postgres_url, tmp_path, monkeypatch):
    bare = postgres_url.replace(postgres_url.split("//")[1].split("@")[0], postgres_server.user)
    secret = tmp_path / "password"
    secret.write_text(postgres_server.password + "\n")
    monkeypatch.setenv("TUNER_STORAGE_PASSWORD_FILE", str(secret))
    store = Store(bare)
    assert store.url == postgres_url and store.safe_url == bare.replace(postgres_server.user,
                                                                          f"{postgres_server.user}:***")
    assert store.study_names() == []  # it logged in with the file's password
    monkeypatch.setenv("TUNER_STORAGE_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(StorageError, match=r"TUNER_STORAGE_PASSWORD_FILE: cannot read '.*missing': No such file or "
                                           r"directory\. Fix: point it to a readable file"):
        Store(bare)
    assert Store(postgres_url).url == postgres_url  # a URL with its own password keeps it


# ---------------------------------------------------------------------- trials that go, and copies
#
# SQLite gives a deleted trial's id to the next trial created (Optuna's trials.trial_id is a
# plain INTEGER PRIMARY KEY): an epoch row that outlived its trial would be read as the new one's.


@pytest.fixture
def other_url(store_url: str, request: pytest.FixtureRequest, tmp_path):
    """A second empty store on the same database as ``store_url``: another file, or another PostgreSQL database."""
    if store_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'other.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    name = server.create_database()
    yield server.url(name)
    server.drop_database(name)


def run_trials(store: Store, study: optuna.Study, trials: int, epochs: int, base: float) -> list[int]:
    """``trials`` finished trials with ``epochs`` recorded epochs each (val_loss = base + trial + epoch/10)."""
    ids = []
    for number in range(trials):
        trial = study.ask()
        store.record_epochs([{"trial_id": trial._trial_id, "epoch": e, "val_loss": base + number + e / 10}
                             for e in range(1, epochs + 1)], "val_loss")
        study.tell(trial, base + number)
        ids.append(trial._trial_id)
    return ids


def curve(store: Store, study: optuna.Study) -> list[tuple[int, int, float]]:
    return [(r["trial"], r["epoch"], r["val_loss"]) for r in store.epochs(study)]


def expected(trials: int, epochs: int, base: float) -> list[tuple[int, int, float]]:
    return [(n, e, base + n + e / 10) for n in range(trials) for e in range(1, epochs + 1)]


def dashboard_call(storage, method: str, path: str, body: dict | None = None) -> tuple[str, object]:
    """One request to optuna-dashboard's real WSGI app (bottle), in this process."""
    import io
    import json
    from wsgiref.util import setup_testing_defaults

    from optuna_dashboard import wsgi

    data = json.dumps(body).encode() if body is not None else b""
    environ: dict = {}
    setup_testing_defaults(environ)
    environ.update({"REQUEST_METHOD": method, "PATH_INFO": path, "CONTENT_TYPE": "application/json",
                    "CONTENT_LENGTH": str(len(data)), "wsgi.input": io.BytesIO(data)})
    status: list[str] = []
    reply = b"".join(wsgi(storage)(environ, lambda s, headers, exc_info=None: status.append(s)))
    return status[0], json.loads(reply) if reply else None


def backend(url: str) -> str:
    return url.split(":")[0].split("+")[0]


@pytest.mark.parametrize("how", ["tuner", "optuna", "tuner dashboard", "optuna-dashboard"])
def test_a_deleted_studys_epoch_rows_go_with_it_and_never_reach_a_new_trial(store, store_url, how):
    """Deleted by tuner, by Optuna's own engine (no foreign-key pragma on SQLite), or by the dashboard's
    DELETE endpoint (on tuner's storage, as `tuner dashboard` serves it, or standalone on the URL)."""
    keep = store.create_study("keep", "minimize")
    run_trials(store, keep, 1, 2, base=50)
    old = store.create_study("old", "minimize")
    old_ids = run_trials(store, old, 3, 4, base=100)
    before = count(store, "tuner_epochs")
    if how == "tuner":
        assert store.delete_study("old") == (3, 12)
    elif how == "optuna":
        optuna.delete_study(study_name="old", storage=store_url)
    else:
        status, _ = dashboard_call(store.storage if how == "tuner dashboard" else store_url, "DELETE",
                                   f"/api/studies/{old._study_id}")
        assert status.startswith("204")
    after_delete = count(store, "tuner_epochs")
    new = store.create_study("new", "minimize")
    new_ids = run_trials(store, new, 2, 2, base=0)
    if store.backend == "sqlite":
        assert new_ids == old_ids[:2]  # the case at stake: the new trials took the deleted ones' ids
    print(f"[{backend(store_url)}, delete by {how}] tuner_epochs: {before} rows (keep 2, old 12) -> "
          f"{after_delete} after the delete -> {count(store, 'tuner_epochs')} with new's 4; new trial ids "
          f"{new_ids}, old were {old_ids}")
    assert after_delete == 2
    assert curve(store, new) == expected(2, 2, base=0)
    assert [(r["epoch"], r["val_loss"]) for r in tuner.load("new", storage=store_url).epochs(0)] == [(1, 0.1), (2, 0.2)]
    assert curve(store, keep) == expected(1, 2, base=50)
    assert count(store, "tuner_epochs") == 2 + 4


@pytest.mark.parametrize("how", ["optuna.copy_study", "Store.copy_study, same store", "Store.copy_study, other store"])
def test_a_copied_study_brings_its_epoch_rows_and_keeps_them_when_the_original_goes(store, store_url, other_url,
                                                                                   how):
    orig = store.create_study("orig", "minimize")
    run_trials(store, orig, 3, 4, base=10)
    target = Store(other_url) if how.endswith("other store") else store
    target_before = count(target, "tuner_epochs")
    if how == "optuna.copy_study":  # read by Optuna's own engine, written through tuner's storage
        optuna.copy_study(from_study_name="orig", from_storage=store_url, to_storage=store.storage,
                          to_study_name="copy")
    else:
        assert store.copy_study("orig", target, "copy") == (3, 12)
    copy = target.load_study("copy")
    assert count(target, "tuner_epochs") - target_before == 12  # each row once, even where two copies ran
    assert curve(target, copy) == curve(store, orig) == expected(3, 4, base=10)
    assert [t.intermediate_values for t in copy.trials] == [t.intermediate_values for t in orig.trials]
    store.delete_study("orig")
    print(f"[{backend(store_url)}, {how}] orig 12 rows; copy {len(curve(target, copy))} rows; after deleting "
          f"orig: copy {len(curve(target, target.load_study('copy')))}, tuner_epochs {count(store, 'tuner_epochs')} "
          f"in the source store, {count(target, 'tuner_epochs')} in the target")
    assert curve(target, target.load_study("copy")) == expected(3, 4, base=10)
    assert count(target, "tuner_epochs") == 12
    assert count(store, "tuner_epochs") == (12 if target is store else 0)


def test_a_copy_onto_an_existing_study_is_refused_and_leaves_both_alone(store, other_url):
    run_trials(store, store.create_study("a", "minimize"), 1, 2, base=0)
    target = Store(other_url)
    run_trials(target, target.create_study("a", "minimize"), 1, 3, base=5)
    with pytest.raises(StorageError) as caught:
        store.copy_study("a", target)
    assert str(caught.value) == (
        f"study 'a' already exists in {target.safe_url}. Fix: pass --name NEW_NAME to copy it under another "
        "name, or delete that study first (`tuner delete a`)."
    )
    assert curve(target, target.load_study("a")) == expected(1, 3, base=5)
    with pytest.raises(StorageError, match=r"no study named 'zz' in .*\. Studies there: a\."):
        store.copy_study("zz", target)
    with pytest.raises(StorageError, match=r"no study named 'zz' in .*\. Studies there: a\."):
        store.delete_study("zz")


def test_renaming_a_study_in_the_dashboard_keeps_its_epoch_rows(store, store_url):
    """optuna-dashboard 0.21 renames by copying the trials into a new study (Study.add_trials), then
    deleting the old one; tuner's storage (what `tuner dashboard` serves) copies the rows with the trials."""
    run_trials(store, store.create_study("keep", "minimize"), 1, 2, base=50)
    orig = store.create_study("orig", "minimize")
    run_trials(store, orig, 3, 4, base=10)
    status, body = dashboard_call(store.storage, "POST", f"/api/studies/{orig._study_id}/rename",
                                  {"study_name": "renamed"})
    assert status == "201 Created", body
    renamed = store.load_study("renamed")
    print(f"[{backend(store_url)}, rename in tuner dashboard] orig 12 rows -> renamed {len(curve(store, renamed))} "
          f"rows; tuner_epochs {count(store, 'tuner_epochs')} (keep's 2 included)")
    assert sorted(store.study_names()) == ["keep", "renamed"]
    assert curve(store, renamed) == expected(3, 4, base=10)
    assert count(store, "tuner_epochs") == 2 + 12


def test_renaming_in_a_standalone_dashboard_loses_the_epoch_rows_but_never_misattributes_them(store, store_url):
    """`optuna-dashboard URL` copies trials with its own storage, which knows nothing of tuner's rows: the
    renamed study has none, and the old study's rows go with it instead of waiting for a reused id."""
    orig = store.create_study("orig", "minimize")
    run_trials(store, orig, 3, 4, base=10)
    status, body = dashboard_call(store_url, "POST", f"/api/studies/{orig._study_id}/rename",
                                  {"study_name": "renamed"})
    assert status == "201 Created", body
    after = count(store, "tuner_epochs")
    new = store.create_study("new", "minimize")
    run_trials(store, new, 4, 1, base=0)
    print(f"[{backend(store_url)}, rename in a standalone optuna-dashboard] orig 12 rows -> renamed "
          f"{len(curve(store, store.load_study('renamed')))}, tuner_epochs {after}; a new study then has "
          f"{len(curve(store, new))} rows, all its own")
    assert after == 0 and curve(store, store.load_study("renamed")) == []
    assert curve(store, new) == expected(4, 1, base=0)


def test_an_epoch_row_must_name_a_trial_of_the_store(store):
    """The foreign key refuses a row of no trial; only a duplicate epoch is skipped, on every database."""
    study = store.create_study("s", "minimize")
    (trial,) = trial_ids(study, 1)
    with pytest.raises(sa.exc.IntegrityError):  # no intermediate values: Optuna's own foreign key is not at stake
        store.record_epochs(rows(trial + 1000, range(1, 2)))
    with pytest.raises(sa.exc.IntegrityError):  # SQLite's INSERT OR IGNORE used to drop it silently
        store.record_epochs([{"trial_id": None, "epoch": 1, "val_loss": 1.0}])
    assert count(store, "tuner_epochs") == 0 and count(store, "trial_intermediate_values") == 0


# ---------------------------------------------------------------------- a store made before the foreign key


def legacy_epochs_table() -> sa.Table:
    """tuner_epochs as tuner created it before the foreign key (trial_id a plain indexed integer)."""
    from sqlalchemy import JSON, BigInteger, Column, Float, Integer, String, UniqueConstraint

    return sa.Table(
        "tuner_epochs", sa.MetaData(),
        Column("id", Integer, primary_key=True), Column("trial_id", Integer, index=True, nullable=False),
        Column("epoch", Integer, nullable=False), Column("iterations", BigInteger),
        *[Column(name, Float) for name in ("train_loss", "val_loss", "train_acc", "val_acc", "gap_loss", "gap_acc",
                                           "lr", "seconds")],
        Column("device", String), Column("extra", JSON),
        UniqueConstraint("trial_id", "epoch", name="uq_tuner_epochs_trial_epoch"),
    )


def legacy_record(engine, table, study: optuna.Study, trial: optuna.Trial, epochs, score, **metrics) -> None:
    """What the store did before: insert rows skipping an (trial_id, epoch) already there, and the scores."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    extra = {k: v for k, v in metrics.items() if k not in table.c}
    with engine.begin() as conn:
        for e in epochs:
            row = {"trial_id": trial._trial_id, "epoch": e, **{k: v(e) for k, v in metrics.items() if k in table.c},
                   "extra": {k: v(e) for k, v in extra.items()} or None}
            conn.execute(insert(table).on_conflict_do_nothing(index_elements=["trial_id", "epoch"]), [row])
    for e in epochs:
        study._storage.set_trial_intermediate_value(trial._trial_id, e, score(e))


def test_a_store_made_before_the_foreign_key_is_repaired_at_open(store_url):
    """Rows of deleted trials are dropped at the first open, whether their trial id is free or was taken by a
    new trial (then the new trial's intermediate values disprove them); every other row stays."""
    from tuner.api import SPEC_ATTR

    legacy = optuna.storages.RDBStorage(store_url)  # Optuna's schema, as made before tuner's first open
    table = legacy_epochs_table()
    table.metadata.create_all(legacy.engine)

    def study(name: str, objective: dict) -> optuna.Study:
        made = optuna.create_study(study_name=name, storage=legacy, direction="minimize")
        made.set_user_attr(SPEC_ATTR, {"name": name, "objective": objective})
        return made

    # keep: a gap-penalized objective (score = val_loss + 0.5 * gap_loss), nothing deleted: all of it stays.
    keep = study("keep", {"metric": "val_loss", "gap_penalty": 0.5})
    trial = keep.ask()
    legacy_record(legacy.engine, table, keep, trial, range(1, 4), lambda e: 1 + e + 0.5 * 0.1 * e,
                  val_loss=lambda e: 1.0 + e, gap_loss=lambda e: 0.1 * e)
    keep.tell(trial, 2.0)
    old = study("old", {"metric": "val_loss"})
    old_rows = {}
    for n in range(3):
        trial = old.ask()
        legacy_record(legacy.engine, table, old, trial, range(1, 5), lambda e: 100.0 + e, val_loss=lambda e: 100.0 + e)
        old.tell(trial, 100.0)
        old_rows.update({(trial._trial_id, e): 100.0 + e for e in range(1, 5)})
    optuna.delete_study(study_name="old", storage=legacy)  # its rows stay behind: no foreign key yet
    # new: its objective is a workload's own metric (stored among the extras).
    new = study("new", {"metric": "my_metric"})
    recorded = {}
    for n, epochs in enumerate((range(1, 7), range(1, 3))):
        trial = new.ask()
        legacy_record(legacy.engine, table, new, trial, epochs, lambda e, n=n: n + e / 10,
                      val_loss=lambda e: 7.0, my_metric=lambda e, n=n: n + e / 10)
        new.tell(trial, float(n))
        recorded.update({(trial._trial_id, e): (n, e, n + e / 10) for e in epochs})
    with legacy.engine.connect() as conn:
        before = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
    legacy.engine.dispose()
    # What today's reads would have shown for new: the old study's values on reused ids.
    swallowed = set(recorded) & set(old_rows)
    if backend(store_url) == "sqlite":
        assert swallowed, "the new trials did not take the deleted ones' ids: nothing to repair"

    stores: list[Store] = []
    errors: list[BaseException] = []

    def open_store() -> None:  # two processes opening the old store at once: one upgrades, the other waits
        try:
            stores.append(Store(store_url))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    store = stores[0]
    shown = [(r["trial"], r["epoch"], r.get("my_metric")) for r in store.epochs(store.load_study("new"))]
    print(f"[{backend(store_url)}, store made before the foreign key] tuner_epochs {before} rows (keep 3, deleted "
          f"old 12, new {len(recorded) - len(swallowed)} that got in, {len(swallowed)} swallowed by old rows) -> "
          f"{count(store, 'tuner_epochs')} after the repair; new shows {len(shown)} rows, keep "
          f"{len(store.epochs(store.load_study('keep')))}")
    assert shown == sorted(v for k, v in recorded.items() if k not in swallowed)
    assert [(r["epoch"], r["val_loss"], r["gap_loss"]) for r in store.epochs(store.load_study("keep"))] == [
        (e, 1.0 + e, 0.1 * e) for e in range(1, 4)]
    assert count(store, "tuner_epochs") == 3 + len(shown)
    assert [fk["referred_table"] for fk in sa.inspect(store.engine).get_foreign_keys("tuner_epochs")] == ["trials"]
    from tuner.store import schema

    assert schema.tie_epochs(store.storage) == 0  # done once
    assert schema.SPEC_ATTR == SPEC_ATTR  # the repair reads each study's objective where tuner.api writes it
    optuna.delete_study(study_name="new", storage=store_url)  # now even Optuna's own engine takes the rows along
    assert count(store, "tuner_epochs") == 3


# ---------------------------------------------------------------------- Optuna's schema version


def _set_schema(store_url: str, revision: str, library: str) -> None:
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": revision})
        conn.execute(sa.text("UPDATE version_info SET library_version = :v"), {"v": library})
    engine.dispose()


@pytest.mark.parametrize(("revision", "library", "message"), [
    ("v3.0.0.d", "3.6.0", r"has Optuna's table schema v3\.0\.0\.d \(made by optuna 3\.6\.0\), older than this "
                          r"optuna's \(.*\)\. Fix: back the database up, then upgrade it in place: optuna storage "
                          r"upgrade --storage '"),
    ("v9.0.0.a", "9.1.0", r"has Optuna's table schema v9\.0\.0\.a \(made by optuna 9\.1\.0\), which this optuna "
                          r"\(.*\) does not know\. Fix: open it from the environment that made it"),
], ids=["older", "newer"])
def test_a_store_of_another_optuna_schema_is_refused_before_anything_is_written(store_url, revision, library,
                                                                              message):
    optuna.create_study(storage=store_url, study_name="old")
    _set_schema(store_url, revision, library)
    with pytest.raises(StorageError, match=message):
        Store(store_url)
    engine = sa.create_engine(store_url)
    assert "tuner_epochs" not in sa.inspect(engine).get_table_names()  # nothing of tuner's was added
    engine.dispose()


def test_an_optuna_whose_schema_tuner_was_not_made_for_is_refused(store_url, monkeypatch):
    from tuner.store import schema

    Store(store_url).close()
    monkeypatch.setattr(schema, "KNOWN_SCHEMAS", ("v0.0.0",))
    with pytest.raises(StorageError, match=r"has table schema v3\.2\.0\.a, which this tuner was not made for .* "
                                           r"Fix: install an optuna release with that schema"):
        Store(store_url)


# ---------------------------------------------------------------------- queued points; stores that exist


def test_queued_points_go_in_at_once_numbered_after_the_trials_there_and_optuna_runs_them_first(store):
    study = store.create_study("q", "minimize")
    study.ask()  # trial 0, RUNNING
    assert store.enqueue_trials(study, [{"x": 1.5}, {"x": -2.0}, {}], {"enqueued": True}) == 3
    queued = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert [(t.number, t.system_attrs["fixed_params"], t.user_attrs) for t in queued] == [
        (1, {"x": 1.5}, {"enqueued": True}), (2, {"x": -2.0}, {"enqueued": True}), (3, {}, {"enqueued": True})]
    assert store.count_trials(study, [TrialState.WAITING]) == 3
    dist = optuna.distributions.FloatDistribution(-5.0, 5.0)
    asked = [study.ask({"x": dist}) for _ in range(3)]
    assert [(t.number, t.params["x"]) for t in asked[:2]] == [(1, 1.5), (2, -2.0)]
    assert asked[2].number == 3 and -5.0 <= asked[2].params["x"] <= 5.0  # a point without x: x is sampled
    assert study.ask().number == 4


def test_a_store_that_is_not_there_is_not_made_by_a_read(store_url, tmp_path):
    from tuner.store.sql import NoStore

    missing = f"sqlite:///{tmp_path / 'nothing.db'}" if store_url.startswith("sqlite") else store_url
    with pytest.raises(NoStore, match="no tuner store at"):
        Store(missing, create=False)
    assert Store.existing(missing) is None
    if missing.startswith("sqlite"):
        assert not (tmp_path / "nothing.db").exists()
    else:  # the database is there, and still holds no table
        engine = sa.create_engine(missing)
        with engine.connect() as conn:
            assert sa.inspect(conn).get_table_names() == []
        engine.dispose()
    Store(missing).close()  # a writer makes it
    there = Store.existing(missing)
    assert there is not None and there.study_names() == []
    there.close()
