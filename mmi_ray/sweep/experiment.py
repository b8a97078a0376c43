"""One Tune experiment of a sweep (the search, or a set of confirmation runs): its trainable with
resources, restored where Tune can continue it, else started new. The one place that builds a
``Tuner``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..layout import trial_folder_of
from ..storage import join
from .placement import trainable
from .spec import LoadedSweep
from .trial import TrialPayload


def experiment(sweep: LoadedSweep, payload: TrialPayload, storage: str, name: str, *, restore: bool,
               at_once: int, callbacks: list, verbose: int, n_seeds: int | None = None,
               param_space: dict[str, Any] | None = None,
               new_options: Callable[[], dict[str, Any]] | None = None) -> tuple[Any, bool]:
    """(the ``Tuner`` of experiment ``storage/name``, whether it was restored). With ``restore`` an
    experiment Tune can continue is restored (unfinished and errored trials run again); otherwise
    it starts with ``param_space`` and the ``TuneConfig`` options that ``new_options()`` gives (a
    searcher and scheduler are made only for a new start). ``verbose`` is Tune's verbosity."""
    from ray import tune

    driver = trainable(sweep, payload, n_seeds)
    exp_dir = join(storage, name)
    if restore and tune.Tuner.can_restore(exp_dir):
        return tune.Tuner.restore(exp_dir, trainable=driver, resume_unfinished=True, resume_errored=True), True
    tuner = tune.Tuner(
        driver,
        param_space=param_space or {},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=at_once,
            # in-process trials (class trainables) take the next trial in the same process:
            # no second start of Python, torch and transformers (~6 s a trial here)
            reuse_actors=sweep.in_process(n_seeds),
            trial_name_creator=trial_folder_of,
            trial_dirname_creator=trial_folder_of,
            **(new_options() if new_options else {}),
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            failure_config=tune.FailureConfig(max_failures=sweep.spec.failure.trial_max_failures),
            callbacks=callbacks,
            verbose=verbose,
        ),
    )
    return tuner, False
