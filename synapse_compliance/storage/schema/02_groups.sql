-- Rooms recorded as groups although they began as direct chats: a direct chat that gains a
-- third member stays a group from then on (DESIGN §4.1), even if members leave again.

CREATE TABLE IF NOT EXISTS compliance_groups (
    room_id TEXT NOT NULL PRIMARY KEY,
    became_group_ts BIGINT NOT NULL,
    origin TEXT NOT NULL
);
