"""`kill -9` of Synapse while clients send: after a restart the archive holds exactly the events
Synapse persisted for governed rooms, none missing and none twice (DESIGN §8)."""

import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import database
from tests.e2e.test_archive import ArchiveServer
from tests.harness.client import MatrixClient
from tests.harness.homeserver import running_homeserver

pytestmark = pytest.mark.e2e


def _keep_sending(client: MatrixClient, room_id: str, stop: threading.Event) -> None:
    n = 0
    while not stop.is_set():
        try:
            client.send_text(room_id, f"message {n}")
        except httpx.HTTPError:
            return  # the server is gone
        n += 1


def test_kill_9_mid_traffic_loses_and_duplicates_nothing(db_kind: str, tmp_path: Path) -> None:
    with database(db_kind) as db:
        with running_homeserver(tmp_path, db, {}) as hs:
            server = ArchiveServer(hs, db)
            senders = [server.member() for _ in range(3)]
            rooms = [s.create_group(f"busy {n}") for n, s in enumerate(senders)]
            stop = threading.Event()
            threads = [
                threading.Thread(target=_keep_sending, args=(s, r, stop), daemon=True)
                for s, r in zip(senders, rooms, strict=True)
            ]
            for t in threads:
                t.start()
            time.sleep(2.0)  # the archiver runs meanwhile (every second and on each new event)
            hs.process.kill()
            hs.process.wait()
            stop.set()
            for t in threads:
                t.join(timeout=30)
            archived_before = server.sql("SELECT COUNT(*) FROM compliance_archive")[0][0]
        assert archived_before > 0, "the archiver never ran before the kill"

        with running_homeserver(tmp_path, db, {}) as hs:
            server = ArchiveServer(hs, db)
            server.run()
            for room_id in rooms:
                archived = [r[0] for r in server.archived(room_id)]
                duplicates = [e for e, n in Counter(archived).items() if n > 1]
                assert duplicates == []
                assert set(archived) == set(server.synapse_event_ids(room_id))
                assert server.verify(room_id)["ok"] is True
            assert server.run() == 0
