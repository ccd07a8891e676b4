"""tuner with the training code and the trackers people already use.

Each module imports its library only when it is itself imported, so
``import tuner`` never loads Lightning, transformers, TensorBoard or MLflow:

- :mod:`tuner.integrations.lightning`: ``TunerCallback`` for a Lightning ``Trainer``.
- :mod:`tuner.integrations.transformers`: ``TunerCallback`` for a Hugging Face ``Trainer``.
- :mod:`tuner.integrations.tensorboard`: ``TensorBoardCallback``, one event-file run per trial.
- :mod:`tuner.integrations.mlflow`: ``MLflowCallback``, one MLflow run per trial.

The two trainer callbacks run in the worker and feed tuner's ``report``.

The two logger callbacks run beside the driver, in a process of their own
(see ``separate_process`` below). A study callback is Optuna's
``callback(study, frozen_trial)``, called once a trial has ended and its
attributes are written (so ``optuna_integration.MLflowCallback`` and
``WeightsAndBiasesCallback`` work as they are). One that also has

- ``on_epochs(study, trial_number, params, rows)`` is given each batch of epoch
  rows as the driver records it (``rows``: dicts with ``epoch`` and the numbers
  reported; other keys such as ``trial_id`` or ``device`` are ignored); a
  logger in a process of its own that has fallen behind is given the batches
  queued meanwhile as one, each trial's rows in order;
- ``close()`` is called once the study's session ends, for trials that never
  ended under it.

Study callbacks run in order on a thread of the driver's process. One whose
class sets ``separate_process = True`` is pickled to a process of its own
instead and given the study loaded there (tuner's loggers do this, so that the
CPU they spend never slows the epoch path); its class must be importable by
module name, as picklable objects are.
"""
