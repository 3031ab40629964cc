-- Tenancy administration: more than one project, environment and key; users and their
-- sessions; custom roles; deny policy sets (versioned, append-only); the audit log.

ALTER TABLE orgs ADD COLUMN is_root INTEGER NOT NULL DEFAULT 0;
ALTER TABLE orgs ADD COLUMN updated_at TEXT NOT NULL DEFAULT '1970-01-01T00:00:00.000000Z';
ALTER TABLE orgs ADD COLUMN deleted_at TEXT;
UPDATE orgs SET is_root = 1, updated_at = created_at
WHERE id = (SELECT id FROM orgs ORDER BY created_at, id LIMIT 1);

ALTER TABLE projects ADD COLUMN updated_at TEXT NOT NULL DEFAULT '1970-01-01T00:00:00.000000Z';
ALTER TABLE projects ADD COLUMN deleted_at TEXT;
UPDATE projects SET updated_at = created_at;
ALTER TABLE environments ADD COLUMN updated_at TEXT NOT NULL DEFAULT '1970-01-01T00:00:00.000000Z';
ALTER TABLE environments ADD COLUMN deleted_at TEXT;
UPDATE environments SET updated_at = created_at;

-- The role CHECK of 0001 cannot be dropped in place: the table is rebuilt with a list of roles.
CREATE TABLE api_keys_new (
    id           TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL REFERENCES orgs (id),
    project_id   TEXT NOT NULL REFERENCES projects (id),
    name         TEXT NOT NULL,
    key_prefix   TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    revoked_at   TEXT,
    roles        TEXT NOT NULL DEFAULT '[]',
    env_id       TEXT REFERENCES environments (id),
    expires_at   TEXT,
    last_used_at TEXT,
    created_by   TEXT NOT NULL DEFAULT ''
);
INSERT INTO api_keys_new (id, org_id, project_id, name, key_prefix, key_hash, created_at,
                          revoked_at, roles)
SELECT id, org_id, project_id, name, key_prefix, key_hash, created_at, revoked_at,
       '["' || role || '"]'
FROM api_keys;
DROP TABLE api_keys;
ALTER TABLE api_keys_new RENAME TO api_keys;
CREATE INDEX api_keys_org ON api_keys (org_id, created_at);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES orgs (id),
    email         TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL DEFAULT '',
    password_hash TEXT NOT NULL,
    roles         TEXT NOT NULL DEFAULT '[]',
    project_id    TEXT REFERENCES projects (id),
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    last_login_at TEXT
);

CREATE TABLE user_sessions (
    token_hash  TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);

CREATE TABLE roles (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES orgs (id),
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    permissions TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE policy_sets (
    scope       TEXT NOT NULL,
    version     INTEGER NOT NULL,
    mode        TEXT NOT NULL CHECK (mode IN ('enforce', 'monitor')),
    modules     TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    PRIMARY KEY (scope, version)
);
CREATE TRIGGER policy_sets_no_update BEFORE UPDATE ON policy_sets
BEGIN SELECT RAISE(ABORT, 'policy set versions are append-only: UPDATE is not allowed'); END;
CREATE TRIGGER policy_sets_no_delete BEFORE DELETE ON policy_sets
BEGIN SELECT RAISE(ABORT, 'policy set versions are append-only: DELETE is not allowed'); END;

CREATE TABLE audit_settings (
    org_id          TEXT PRIMARY KEY REFERENCES orgs (id),
    log_reads       INTEGER NOT NULL DEFAULT 0,
    retention_days  INTEGER CHECK (retention_days IS NULL OR retention_days > 0),
    updated_at      TEXT NOT NULL
);

CREATE TABLE audit_log (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    at           TEXT NOT NULL,
    org_id       TEXT NOT NULL,
    project_id   TEXT NOT NULL DEFAULT '',
    env_id       TEXT NOT NULL DEFAULT '',
    actor_kind   TEXT NOT NULL,
    actor_id     TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    action       TEXT NOT NULL,
    resource     TEXT NOT NULL,
    outcome      TEXT NOT NULL CHECK (outcome IN ('allowed', 'denied', 'monitored', 'failed')),
    reason       TEXT NOT NULL DEFAULT '',
    status       INTEGER NOT NULL DEFAULT 0,
    method       TEXT NOT NULL DEFAULT '',
    path         TEXT NOT NULL DEFAULT '',
    rpc          TEXT NOT NULL DEFAULT '',
    function_id  TEXT NOT NULL DEFAULT '',
    run_id       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_org ON audit_log (org_id, seq DESC);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: UPDATE is not allowed'); END;
-- A DELETE only of an entry older than its organisation's retention.
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN NOT EXISTS (
    SELECT 1 FROM audit_settings s
    WHERE s.org_id = OLD.org_id AND s.retention_days IS NOT NULL
      AND OLD.at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || s.retention_days || ' days'))
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: DELETE is not allowed'); END;
