//! Authorization as pure rules: the named permissions, the built-in roles, a principal's
//! permission set, and the decision (RBAC allows, then deny policies may only subtract).

use std::fmt;

use serde::Serialize;

use super::policy::{PolicyInput, PolicySet, PolicyVerdict};

macro_rules! permissions {
    ($($variant:ident = $name:literal, $doc:literal;)*) => {
        /// One thing a caller may be allowed to do. Each route and method needs exactly one.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum Permission {
            $(#[doc = $doc] $variant,)*
        }

        impl Permission {
            pub const ALL: &'static [Permission] = &[$(Permission::$variant,)*];

            /// The name roles and policies use (`events:emit`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Permission::$variant => $name,)*
                }
            }

            /// What it allows, for `GET /api/v1/roles/permissions` and the README.
            pub fn description(self) -> &'static str {
                match self {
                    $(Permission::$variant => $doc,)*
                }
            }

            pub fn parse(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(Permission::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

permissions! {
    EventsRead = "events:read", "list and read events and event names";
    EventsEmit = "events:emit", "emit events (REST, Emit, Trigger, TriggerSync, TriggerBatch)";
    EventsRedact = "events:redact", "redact an event's, run's or step's payload in the history";
    FunctionsRead = "functions:read", "list and read functions, their versions and history";
    FunctionsWrite = "functions:write", "register functions, change their status, roll back";
    FunctionsDelete = "functions:delete", "delete a function";
    FunctionsInvoke = "functions:invoke", "invoke a function directly";
    RunsRead = "runs:read", "list and read runs, steps, history, time travel";
    RunsCancel = "runs:cancel", "cancel a run";
    RunsEdit = "runs:edit", "pause and resume runs, inject or patch a step's output";
    RunsDelete = "runs:delete", "delete runs";
    StreamsRead = "streams:read", "read entity streams, snapshots and entity history";
    StreamsAppend = "streams:append", "append to entity streams, take snapshots";
    StreamsDelete = "streams:delete", "tombstone (and purge) an entity stream";
    SchemasRead = "schemas:read", "read event schemas and their revisions";
    SchemasWrite = "schemas:write", "register event schemas";
    SchemasDelete = "schemas:delete", "delete an event schema";
    ProjectionsRead = "projections:read", "read projections, their state, status and rows";
    ProjectionsWrite = "projections:write", "register, run, pause, resume and rebuild projections";
    ProjectionsDelete = "projections:delete", "delete a projection";
    HistoryQuery = "history:query", "run read-only SQL over the history views (ExecuteSQL)";
    KvRead = "kv:read", "read KV buckets, keys and watches";
    KvWrite = "kv:write", "create buckets, put and delete keys";
    ConfigRead = "config:read", "read config documents and watch them";
    ConfigWrite = "config:write", "write config documents";
    SecretsReadNames = "secrets:read-names", "list secrets' names and metadata (never values)";
    SecretsWrite = "secrets:write", "create, update and delete secrets";
    TopicsPublish = "topics:publish", "publish messages to topics";
    TopicsSubscribe = "topics:subscribe", "subscribe to topics and live system events (/ws)";
    GroupsRead = "groups:read", "read consumer groups";
    GroupsWrite = "groups:write", "create, change, delete and join consumer groups, ack messages";
    WorkersRead = "workers:read", "list workers";
    WorkersRun = "workers:run", "run a worker: register, poll, report jobs, the worker stream";
    WebhooksRead = "webhooks:read", "read webhook sources and their deliveries (never secrets)";
    WebhooksWrite = "webhooks:write", "create, change, rotate and delete webhook sources";
    BreakersRead = "breakers:read", "read circuit breakers";
    BreakersReset = "breakers:reset", "reset a circuit breaker";
    SystemRead = "system:read", "server info and capabilities";
    EnvironmentsRead = "environments:read", "list and read environments";
    EnvironmentsAdmin = "environments:admin", "create, change and delete environments";
    ProjectsRead = "projects:read", "list projects";
    ProjectsAdmin = "projects:admin", "create, change and delete projects";
    OrgsAdmin = "orgs:admin", "read and change the organisation";
    KeysRead = "keys:read", "list API keys (never their secrets)";
    KeysAdmin = "keys:admin", "create, rotate, delete API keys and set their roles";
    UsersAdmin = "users:admin", "create, change and delete users";
    RolesRead = "roles:read", "list roles and permissions";
    RolesAdmin = "roles:admin", "create, change and delete custom roles";
    PoliciesRead = "policies:read", "read the environment's policy set and its versions";
    PoliciesWrite = "policies:write", "change, validate, dry-run and roll back the policy set";
    AuditRead = "audit:read", "read the audit log and its settings";
    PlatformAdmin = "platform:admin", "the platform policy set, tenants and all organisations (root organisation admins only)";
}

impl Permission {
    /// The kind of resource the permission is about (`events`, `runs`, …): the IRN's type.
    pub fn resource_type(self) -> &'static str {
        self.as_str().split(':').next().unwrap_or_default()
    }

    /// Reads change nothing; their successes are audited only when the settings ask.
    pub fn is_read(self) -> bool {
        use Permission as P;
        matches!(
            self,
            P::EventsRead
                | P::FunctionsRead
                | P::RunsRead
                | P::StreamsRead
                | P::SchemasRead
                | P::ProjectionsRead
                | P::HistoryQuery
                | P::KvRead
                | P::ConfigRead
                | P::SecretsReadNames
                | P::TopicsSubscribe
                | P::GroupsRead
                | P::WorkersRead
                | P::BreakersRead
                | P::WebhooksRead
                | P::SystemRead
                | P::EnvironmentsRead
                | P::ProjectsRead
                | P::KeysRead
                | P::RolesRead
                | P::PoliciesRead
                | P::AuditRead
        )
    }

    /// Changes whose successes the audit log records: administration, run edits, redaction,
    /// deletions, secret writes, definitions. The data plane (emits, worker traffic, KV and
    /// config writes, publishes, stream appends, acks) is not: it is the history itself.
    pub fn is_audited_change(self) -> bool {
        use Permission as P;
        !self.is_read()
            && !matches!(
                self,
                P::EventsEmit
                    | P::FunctionsInvoke
                    | P::StreamsAppend
                    | P::KvWrite
                    | P::ConfigWrite
                    | P::TopicsPublish
                    | P::GroupsWrite
                    | P::WorkersRun
                    | P::ProjectionsWrite
            )
    }

    /// Calls about the organisation rather than one environment: they work whatever
    /// environment the request names (or none).
    pub fn is_org_level(self) -> bool {
        use Permission as P;
        matches!(
            self,
            P::EnvironmentsRead
                | P::EnvironmentsAdmin
                | P::ProjectsRead
                | P::ProjectsAdmin
                | P::OrgsAdmin
                | P::KeysRead
                | P::KeysAdmin
                | P::UsersAdmin
                | P::RolesRead
                | P::RolesAdmin
                | P::AuditRead
                | P::PlatformAdmin
        )
    }
}

/// A resource's name: `irn:ironflow:{org}:{project}:{type}:{env}:{id}`. Parts that do not
/// apply are empty; `:` inside a part is escaped as `%3A` so the parts stay apart.
pub fn irn(org: &str, project: &str, kind: &str, env: &str, id: &str) -> String {
    let part = |s: &str| s.replace('%', "%25").replace(':', "%3A");
    format!(
        "irn:ironflow:{}:{}:{}:{}:{}",
        part(org),
        part(project),
        part(kind),
        part(env),
        part(id)
    )
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Permission {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A set of permissions: one bit each, so a check is a mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PermissionSet(u64);

const _: () = assert!(Permission::ALL.len() <= 64);

impl PermissionSet {
    pub const EMPTY: Self = Self(0);

    pub fn of(permissions: &[Permission]) -> Self {
        permissions.iter().fold(Self::EMPTY, |set, p| set.with(*p))
    }

    pub fn with(self, p: Permission) -> Self {
        Self(self.0 | (1 << p as u8))
    }

    pub fn without(self, p: Permission) -> Self {
        Self(self.0 & !(1 << p as u8))
    }

    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    pub fn contains(self, p: Permission) -> bool {
        self.0 & (1 << p as u8) != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .iter()
            .copied()
            .filter(move |p| self.contains(*p))
    }

    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Permission::as_str).collect()
    }
}

/// The roles every organisation has; their names cannot be taken by custom roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltinRole {
    Viewer,
    Developer,
    Admin,
}

impl BuiltinRole {
    pub const ALL: [BuiltinRole; 3] = [Self::Admin, Self::Developer, Self::Viewer];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "viewer" => Some(Self::Viewer),
            "developer" => Some(Self::Developer),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Developer => "developer",
            Self::Admin => "admin",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Self::Viewer => {
                "reads everything in its scope except secrets' values and the audit log"
            }
            Self::Developer => {
                "a viewer who also emits, runs workers, edits runs and writes functions, KV, config and secrets"
            }
            Self::Admin => {
                "everything in its scope, including redaction, deletion, keys, users, roles, policies and the audit log"
            }
        }
    }

    /// What the role allows. `platform:admin` is never part of a role: it is granted to admins
    /// of the root organisation only ([`Principal::permissions`]).
    pub fn permissions(self) -> PermissionSet {
        use Permission as P;
        let viewer = PermissionSet::of(&[
            P::EventsRead,
            P::FunctionsRead,
            P::RunsRead,
            P::StreamsRead,
            P::SchemasRead,
            P::ProjectionsRead,
            P::HistoryQuery,
            P::KvRead,
            P::ConfigRead,
            P::SecretsReadNames,
            P::TopicsSubscribe,
            P::GroupsRead,
            P::WorkersRead,
            P::BreakersRead,
            P::WebhooksRead,
            P::SystemRead,
            P::EnvironmentsRead,
            P::ProjectsRead,
            P::RolesRead,
            P::PoliciesRead,
        ]);
        let developer = viewer.union(PermissionSet::of(&[
            P::EventsEmit,
            P::FunctionsWrite,
            P::FunctionsInvoke,
            P::RunsCancel,
            P::RunsEdit,
            P::StreamsAppend,
            P::SchemasWrite,
            P::ProjectionsWrite,
            P::KvWrite,
            P::ConfigWrite,
            P::SecretsWrite,
            P::TopicsPublish,
            P::GroupsWrite,
            P::WorkersRun,
            P::BreakersReset,
            P::WebhooksWrite,
        ]));
        match self {
            Self::Viewer => viewer,
            Self::Developer => developer,
            Self::Admin => PermissionSet::of(Permission::ALL).without(P::PlatformAdmin),
        }
    }
}

/// Why a role definition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    #[error("role name must be 1 to 64 characters of letters, digits, '-', '_' or '.'")]
    BadName,
    #[error("'{0}' is a built-in role; choose another name")]
    Builtin(String),
    #[error("unknown permission '{0}' (GET /api/v1/roles/permissions lists them)")]
    UnknownPermission(String),
    #[error("'platform:admin' cannot be granted by a role")]
    PlatformPermission,
    #[error("a role needs at least one permission")]
    NoPermissions,
}

/// Checks a custom role's name and permissions; returns the set.
pub fn check_custom_role(name: &str, permissions: &[String]) -> Result<PermissionSet, RoleError> {
    check_role_name(name)?;
    if BuiltinRole::parse(name).is_some() {
        return Err(RoleError::Builtin(name.to_owned()));
    }
    parse_permissions(permissions)
}

pub fn check_role_name(name: &str) -> Result<(), RoleError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok { Ok(()) } else { Err(RoleError::BadName) }
}

pub fn parse_permissions(permissions: &[String]) -> Result<PermissionSet, RoleError> {
    if permissions.is_empty() {
        return Err(RoleError::NoPermissions);
    }
    let mut set = PermissionSet::EMPTY;
    for name in permissions {
        let p = Permission::parse(name.trim())
            .ok_or_else(|| RoleError::UnknownPermission(name.clone()))?;
        if p == Permission::PlatformAdmin {
            return Err(RoleError::PlatformPermission);
        }
        set = set.with(p);
    }
    Ok(set)
}

/// What kind of caller a principal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    /// An API key (`ifkey_…`).
    Key,
    /// A person signed in with email and password (`ifsess_…`).
    User,
    /// `--dev`: no authentication, an admin of the first organisation.
    Dev,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::User => "user",
            Self::Dev => "dev",
        }
    }
}

/// Who is calling, as authentication established it.
#[derive(Debug, Clone)]
pub struct Principal {
    pub kind: PrincipalKind,
    /// The key's or user's id (`dev` under `--dev`).
    pub id: String,
    pub org_id: String,
    pub org_name: String,
    /// The organisation created at first boot: its admins administer the platform.
    pub root_org: bool,
    /// The role names as assigned (built-in and custom).
    pub roles: Vec<String>,
    /// The union of the roles' permissions.
    pub granted: PermissionSet,
    /// A key scoped to one environment: it administers nothing beyond it.
    pub env_scoped: bool,
}

/// What a key scoped to one environment can never do, whatever its roles: administration of
/// the organisation, its projects, environments, users and roles, and of the platform.
pub const ORG_WIDE: &[Permission] = &[
    Permission::OrgsAdmin,
    Permission::UsersAdmin,
    Permission::RolesAdmin,
    Permission::ProjectsAdmin,
    Permission::EnvironmentsAdmin,
    Permission::PlatformAdmin,
];

impl Principal {
    /// The permissions RBAC gives this principal: its roles', plus `platform:admin` for admins
    /// of the root organisation.
    pub fn permissions(&self) -> PermissionSet {
        let set = role_grant(self.granted, &self.roles, self.root_org);
        if self.env_scoped {
            ORG_WIDE.iter().fold(set, |s, p| s.without(*p))
        } else {
            set
        }
    }
}

/// What holding `roles` (whose permissions are `granted`) gives in an organisation: the root
/// organisation's admins also hold `platform:admin`. Used for principals and for the grant
/// ceiling alike, so nobody can hand out an admin role of the root organisation without it.
pub fn role_grant(granted: PermissionSet, roles: &[String], root_org: bool) -> PermissionSet {
    let admin = roles.iter().any(|r| r == BuiltinRole::Admin.as_str());
    if admin && root_org {
        granted.with(Permission::PlatformAdmin)
    } else {
        granted
    }
}

/// The outcome of one authorization.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allow {
        /// Monitor-mode modules that would have denied (logged and audited, not enforced).
        monitored: Vec<String>,
    },
    /// RBAC does not grant the permission.
    NotGranted { permission: Permission },
    /// A policy module denied; `reason` names it (and the evaluation error, if that was why).
    Denied {
        module: String,
        reason: String,
        monitored: Vec<String>,
    },
}

impl Decision {
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
}

/// The one decision: RBAC grants or refuses; then the platform's policies, then the
/// environment's, may only deny what RBAC allowed. A policy never adds a permission.
pub fn decide(
    granted: PermissionSet,
    permission: Permission,
    policies: &[&PolicySet],
    input: &PolicyInput,
) -> Decision {
    if !granted.contains(permission) {
        return Decision::NotGranted { permission };
    }
    let mut monitored = Vec::new();
    for set in policies {
        match set.evaluate(input, &mut monitored) {
            PolicyVerdict::Allow => {}
            PolicyVerdict::Deny { module, reason } => {
                return Decision::Denied {
                    module,
                    reason,
                    monitored,
                };
            }
        }
    }
    Decision::Allow { monitored }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn irns_keep_their_parts_apart() {
        assert_eq!(
            irn("o1", "p1", "events", "prod", "order.placed"),
            "irn:ironflow:o1:p1:events:prod:order.placed"
        );
        assert_eq!(
            irn("o", "p", "kv", "e", "a:b"),
            "irn:ironflow:o:p:kv:e:a%3Ab"
        );
        assert!(Permission::SecretsWrite.is_audited_change());
        assert!(!Permission::EventsEmit.is_audited_change());
        assert!(!Permission::RunsRead.is_audited_change());
        assert!(Permission::KeysAdmin.is_org_level());
        assert!(!Permission::EventsEmit.is_org_level());
    }

    #[test]
    fn names_round_trip_and_fit_the_mask() {
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Some(*p));
            assert!(PermissionSet::of(&[*p]).contains(*p));
        }
        assert!(Permission::ALL.len() <= 64);
    }

    #[test]
    fn builtin_roles_grant_in_order() {
        let (v, d, a) = (
            BuiltinRole::Viewer.permissions(),
            BuiltinRole::Developer.permissions(),
            BuiltinRole::Admin.permissions(),
        );
        for p in v.iter() {
            assert!(d.contains(p) && a.contains(p), "{p}");
        }
        for p in d.iter() {
            assert!(a.contains(p), "{p}");
        }
        assert!(v.contains(Permission::SecretsReadNames));
        assert!(!v.contains(Permission::SecretsWrite));
        assert!(!v.contains(Permission::EventsEmit));
        assert!(d.contains(Permission::EventsEmit));
        assert!(!d.contains(Permission::EventsRedact));
        assert!(!d.contains(Permission::StreamsDelete));
        assert!(!d.contains(Permission::KeysAdmin));
        assert!(!a.contains(Permission::PlatformAdmin));
    }

    #[test]
    fn platform_admin_only_for_root_admins() {
        let mut p = Principal {
            kind: PrincipalKind::Key,
            id: "k".into(),
            org_id: "o".into(),
            org_name: "root".into(),
            root_org: false,
            roles: vec!["admin".into()],
            granted: BuiltinRole::Admin.permissions(),
            env_scoped: false,
        };
        assert!(!p.permissions().contains(Permission::PlatformAdmin));
        p.root_org = true;
        assert!(p.permissions().contains(Permission::PlatformAdmin));
        p.env_scoped = true;
        let scoped = p.permissions();
        assert!(
            ORG_WIDE.iter().all(|w| !scoped.contains(*w)),
            "a scoped key administers no org"
        );
        assert!(scoped.contains(Permission::KeysAdmin) && scoped.contains(Permission::EventsEmit));
        p.env_scoped = false;
        p.roles = vec!["developer".into()];
        assert!(!p.permissions().contains(Permission::PlatformAdmin));
    }

    #[test]
    fn custom_roles_are_checked() {
        let ok = check_custom_role("ci-emitter", &["events:emit".into()]).expect("valid");
        assert!(ok.contains(Permission::EventsEmit));
        assert!(!ok.contains(Permission::EventsRead));
        assert_eq!(
            check_custom_role("admin", &["events:emit".into()]),
            Err(RoleError::Builtin("admin".into()))
        );
        assert_eq!(
            check_custom_role("x", &["events:fly".into()]),
            Err(RoleError::UnknownPermission("events:fly".into()))
        );
        assert_eq!(
            check_custom_role("x", &["platform:admin".into()]),
            Err(RoleError::PlatformPermission)
        );
        assert_eq!(check_custom_role("x", &[]), Err(RoleError::NoPermissions));
        assert_eq!(
            check_custom_role("a b", &["events:emit".into()]),
            Err(RoleError::BadName)
        );
    }

    #[test]
    fn rbac_refuses_before_policies_run() {
        let input = PolicyInput::example();
        let set = PermissionSet::of(&[Permission::EventsRead]);
        assert_eq!(
            decide(set, Permission::EventsEmit, &[], &input),
            Decision::NotGranted {
                permission: Permission::EventsEmit
            }
        );
        assert!(decide(set, Permission::EventsRead, &[], &input).allowed());
    }
}
