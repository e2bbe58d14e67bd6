"""A Celery application whose tasks evaluate flags, the hook added at import as README
says. The broker is Celery's filesystem transport in ``CELERY_FOLDER`` (no server); no
result backend. Each task evaluates ``n`` times with targeting keys ``user-{start}``
onwards, then leaves a file in ``CELERY_FOLDER/done`` so the test knows it ran.
"""

from __future__ import annotations

import os
from pathlib import Path

from celery import Celery
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

import flageval

FOLDER = Path(os.environ["CELERY_FOLDER"])
app = Celery("celery_app", broker="filesystem://")
app.conf.update(
    broker_transport_options={
        "data_folder_in": str(FOLDER / "queue"),
        "data_folder_out": str(FOLDER / "queue"),
        "processed_folder": str(FOLDER / "processed"),
        "control_folder": str(FOLDER / "control"),
        "store_processed": False,
        "polling_interval": 0.1,
    },
    result_backend=None,
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
api.set_provider_and_wait(InMemoryProvider({"f": InMemoryFlag("on", {"on": True, "off": False})}))
api.add_hooks([flageval.FlagEvalHook()])


@app.task(name="evaluate")
def evaluate(start: int, n: int) -> None:
    client = api.get_client()
    for i in range(start, start + n):
        client.get_boolean_value("f", False, EvaluationContext(f"user-{i}"))
    (FOLDER / "done" / str(start)).touch()
