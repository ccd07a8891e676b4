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
