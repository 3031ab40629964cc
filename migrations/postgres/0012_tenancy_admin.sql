-- Tenancy administration: more than one project, environment and key; users and their
-- sessions; custom roles; deny policy sets (versioned, append-only); the audit log.

-- The organisation first boot created administers the platform (its admins hold
-- platform:admin).
ALTER TABLE orgs ADD COLUMN is_root BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE orgs ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT now();
ALTER TABLE orgs ADD COLUMN deleted_at TIMESTAMPTZ;
UPDATE orgs SET is_root = true
WHERE id = (SELECT id FROM orgs ORDER BY created_at, id LIMIT 1);

-- Deleted projects and environments are kept (their history is append-only) under a name
-- that frees the original one; nothing resolves them any more.
ALTER TABLE projects ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT now();
ALTER TABLE projects ADD COLUMN deleted_at TIMESTAMPTZ;
ALTER TABLE environments ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT now();
ALTER TABLE environments ADD COLUMN deleted_at TIMESTAMPTZ;

-- A key holds a list of roles (built-in or custom names) and may be scoped to one
-- environment; it may expire.
ALTER TABLE api_keys ADD COLUMN roles TEXT NOT NULL DEFAULT '[]';
UPDATE api_keys SET roles = '["' || role || '"]';
ALTER TABLE api_keys DROP COLUMN role;
ALTER TABLE api_keys ADD COLUMN env_id TEXT REFERENCES environments (id);
ALTER TABLE api_keys ADD COLUMN expires_at TIMESTAMPTZ;
ALTER TABLE api_keys ADD COLUMN last_used_at TIMESTAMPTZ;
ALTER TABLE api_keys ADD COLUMN created_by TEXT NOT NULL DEFAULT '';
CREATE INDEX api_keys_org ON api_keys (org_id, created_at);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES orgs (id),
    email         TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL DEFAULT '',
    password_hash TEXT NOT NULL,
    roles         TEXT NOT NULL DEFAULT '[]',
    project_id    TEXT REFERENCES projects (id),
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    last_login_at TIMESTAMPTZ
);

CREATE TABLE user_sessions (
    token_hash  TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE roles (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES orgs (id),
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    permissions TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (org_id, name)
);

-- One row per version; the newest is in force. `scope` is an environment id or 'platform'.
CREATE TABLE policy_sets (
    scope       TEXT NOT NULL,
    version     BIGINT NOT NULL,
    mode        TEXT NOT NULL CHECK (mode IN ('enforce', 'monitor')),
    modules     TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    created_by  TEXT NOT NULL,
    PRIMARY KEY (scope, version)
);

CREATE FUNCTION policy_sets_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'policy set versions are append-only: % is not allowed', TG_OP;
END;
$$;
CREATE TRIGGER policy_sets_no_update BEFORE UPDATE OR DELETE ON policy_sets
    FOR EACH ROW EXECUTE FUNCTION policy_sets_append_only();

CREATE TABLE audit_settings (
    org_id          TEXT PRIMARY KEY REFERENCES orgs (id),
    log_reads       BOOLEAN NOT NULL DEFAULT false,
    retention_days  INTEGER CHECK (retention_days IS NULL OR retention_days > 0),
    updated_at      TIMESTAMPTZ NOT NULL
);

CREATE TABLE audit_log (
    seq          BIGSERIAL PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    at           TIMESTAMPTZ NOT NULL,
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

-- Append-only: no UPDATE ever; a DELETE only of an entry older than its organisation's
-- retention (what the retention sweep removes), never TRUNCATE.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND EXISTS (
        SELECT 1 FROM audit_settings s
        WHERE s.org_id = OLD.org_id AND s.retention_days IS NOT NULL
          AND OLD.at < now() - make_interval(days => s.retention_days)) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only: % is not allowed', TG_OP;
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
