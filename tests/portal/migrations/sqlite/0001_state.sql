-- The portal's state (ARCHITECTURE.md, "The portal's store"). The same
-- tables as ../postgres/0001_state.sql; only the statuses' generated id is
-- spelled differently. Integers are BIGINT (milliseconds since the epoch,
-- counts), JSON is TEXT.

-- Published module records; the repository's files stay files.
CREATE TABLE modules (
    coordinates TEXT PRIMARY KEY,       -- groupId:artifactId:version
    group_id TEXT NOT NULL,
    artifact_id TEXT NOT NULL,
    version TEXT NOT NULL,
    packaging TEXT NOT NULL,
    object TEXT NOT NULL,               -- the module object as GET_ENV_MOD_RES sends it
    published_seq BIGINT NOT NULL       -- publish order: a module published again moves last
);
CREATE INDEX modules_by_artifact ON modules (group_id, artifact_id, published_seq);

-- Digests of the repository files publish wrote (the ETag), valid while
-- the file keeps its size and modification time.
CREATE TABLE repo_files (
    path TEXT PRIMARY KEY,              -- relative to the repository root
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    modified_ns BIGINT NOT NULL
);

-- Registered environments: only the secrets' SHA-256.
CREATE TABLE environments (
    uuid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    pending_sha256 TEXT,
    revoked BIGINT NOT NULL DEFAULT 0,
    registered_ms BIGINT NOT NULL
);

-- Each environment's target set, in assigned order.
CREATE TABLE assignments (
    env TEXT NOT NULL,
    position BIGINT NOT NULL,
    coordinates TEXT NOT NULL,
    PRIMARY KEY (env, position)
);

-- Target sets answered as given, unchecked (tests of the box's refusals).
CREATE TABLE raw_assignments (
    env TEXT PRIMARY KEY,
    modules TEXT NOT NULL               -- JSON array of module objects
);

-- Every status a box reported, progress included, until the retention
-- removes it.
CREATE TABLE statuses (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    env TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    status TEXT NOT NULL,
    outbox_id TEXT,                     -- '' for a durable status without one
    seq BIGINT,                         -- NULL: not durable, never a duplicate
    record TEXT NOT NULL                -- the StatusRecord, JSON
);
CREATE UNIQUE INDEX statuses_once ON statuses (env, outbox_id, seq);
CREATE INDEX statuses_by_env ON statuses (env, id);
CREATE INDEX statuses_by_time ON statuses (received_ms);

-- One row per environment that reported: what the environments page sorts
-- and filters on without reading the history.
CREATE TABLE env_status (
    env TEXT PRIMARY KEY,
    last_status TEXT NOT NULL,
    last_ms BIGINT NOT NULL,
    last_verdict TEXT,                  -- installed, installation_cancelled, download_error
    statuses BIGINT NOT NULL,
    duplicates BIGINT NOT NULL
);
CREATE INDEX env_status_by_verdict ON env_status (last_verdict, last_ms);
CREATE INDEX env_status_by_time ON env_status (last_ms);

-- Rollouts and their boxes.
CREATE TABLE rollouts (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,                 -- RolloutSpec, JSON
    waves TEXT NOT NULL,                -- the environments of each wave, JSON
    current_wave BIGINT NOT NULL,
    state TEXT NOT NULL,                -- RolloutState, JSON
    live BIGINT NOT NULL,               -- 1 until finished or cancelled
    created_ms BIGINT NOT NULL
);
CREATE INDEX rollouts_by_live ON rollouts (live, id);

CREATE TABLE rollout_boxes (
    rollout_id BIGINT NOT NULL,
    env TEXT NOT NULL,
    position BIGINT NOT NULL,           -- group order
    wave BIGINT NOT NULL,
    state TEXT NOT NULL,                -- waiting, assigned, installed, failed
    detail TEXT NOT NULL,               -- BoxState, JSON
    PRIMARY KEY (rollout_id, env)
);
CREATE INDEX rollout_boxes_by_env ON rollout_boxes (env);
CREATE INDEX rollout_boxes_by_state ON rollout_boxes (rollout_id, wave, state);
