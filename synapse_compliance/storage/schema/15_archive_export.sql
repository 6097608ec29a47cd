-- Archive export by sender (`GET admin/archive/events?user_id=`, `synapse-compliance export --user`)
-- reads keyset pages `WHERE sender = ? AND id > ? ORDER BY id`: this index serves them. The room
-- filter uses `compliance_archive_room (room_id, id)`; a time range filters the id-ordered scan.

CREATE INDEX IF NOT EXISTS compliance_archive_sender ON compliance_archive (sender, id);
