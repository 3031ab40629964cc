//! Deny policies: a policy set is named CEL modules over `{principal, action, resource, request,
//! time}`; a module that evaluates to true denies, with its name as the reason. Checked (names,
//! types, positions) when saved, bounded when evaluated, failing closed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cel::Value;
use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue, operators as op};
use cel::common::types::CelNull;
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use serde::Serialize;

use super::expression::{EvalError, Expression, WrittenTree};

/// Most modules one policy set may hold.
pub const MAX_MODULES: usize = 64;

/// Whether a set's denials are enforced or only recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    Enforce,
    /// Would-be denials are logged and audited; the request goes ahead.
    Monitor,
}

impl PolicyMode {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "" | "enforce" => Some(Self::Enforce),
            "monitor" => Some(Self::Monitor),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Monitor => "monitor",
        }
    }
}

/// The decision a set's modules make: only `deny` (a policy can only subtract).
pub const DECISION: &str = "deny";

/// A problem with one module, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleProblem {
    pub module: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for ModuleProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "module '{}' at {}:{}: {}",
            self.module, self.line, self.column, self.message
        )
    }
}

/// Why a policy set body was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicySetError {
    #[error("mode must be 'enforce' or 'monitor' (got '{0}')")]
    Mode(String),
    #[error("decision must be 'deny' (got '{0}'): a policy can only deny what roles allow")]
    Decision(String),
    #[error("a policy set holds at most {MAX_MODULES} modules (got {0})")]
    TooMany(usize),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Modules(Vec<ModuleProblem>),
}

/// A checked policy set, ready to evaluate. Cheap to clone.
#[derive(Clone)]
pub struct PolicySet {
    pub version: i64,
    pub mode: PolicyMode,
    modules: Arc<Vec<(String, Expression)>>,
}

impl std::fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySet")
            .field("version", &self.version)
            .field("mode", &self.mode)
            .field("modules", &self.modules.len())
            .finish()
    }
}

/// What one set decided.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyVerdict {
    Allow,
    Deny { module: String, reason: String },
}

/// One module's outcome, for a dry run's explanation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModuleOutcome {
    pub module: String,
    /// `deny` (true), `allow` (false) or `error` (denies: fail closed).
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl PolicySet {
    /// An empty set: allows everything RBAC allows.
    pub fn empty() -> Self {
        Self {
            version: 0,
            mode: PolicyMode::Enforce,
            modules: Arc::new(Vec::new()),
        }
    }

    /// Checks a body (`modules: {name: expression}`, `mode`, `decision`): every module's name,
    /// syntax, limits, names and types. All problems are reported, each with its position.
    pub fn check(
        version: i64,
        modules: &BTreeMap<String, String>,
        mode: &str,
        decision: &str,
    ) -> Result<Self, PolicySetError> {
        let mode = PolicyMode::parse(mode).ok_or_else(|| PolicySetError::Mode(mode.to_owned()))?;
        if !decision.is_empty() && decision != DECISION {
            return Err(PolicySetError::Decision(decision.to_owned()));
        }
        if modules.len() > MAX_MODULES {
            return Err(PolicySetError::TooMany(modules.len()));
        }
        let mut compiled = Vec::with_capacity(modules.len());
        let mut problems = Vec::new();
        for (name, source) in modules {
            match check_module(name, source) {
                Ok(expression) => compiled.push((name.clone(), expression)),
                Err(problem) => problems.push(problem),
            }
        }
        if !problems.is_empty() {
            return Err(PolicySetError::Modules(problems));
        }
        Ok(Self {
            version,
            mode,
            modules: Arc::new(compiled),
        })
    }

    /// A set that denies everything: what a stored set this version cannot check becomes
    /// (fail closed).
    pub fn deny_all(version: i64) -> Self {
        let modules = BTreeMap::from([("policy-set-unreadable".to_owned(), "true".to_owned())]);
        let mut set = Self::check(version, &modules, PolicyMode::Enforce.as_str(), DECISION)
            .expect("a constant module checks");
        set.version = version;
        set
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    pub fn module_names(&self) -> impl Iterator<Item = &str> {
        self.modules.iter().map(|(n, _)| n.as_str())
    }

    /// Evaluates every module over the input (once per event name of a batch). The first
    /// denying module decides; in monitor mode its name goes to `monitored` instead.
    pub fn evaluate(&self, input: &PolicyInput, monitored: &mut Vec<String>) -> PolicyVerdict {
        if self.modules.is_empty() {
            return PolicyVerdict::Allow;
        }
        for variables in input.variables() {
            for (name, expression) in self.modules.iter() {
                let reason = match expression.evaluate_in(&variables) {
                    Ok(Value::Bool(false)) => continue,
                    Ok(Value::Bool(true)) => format!("denied by policy module '{name}'"),
                    Ok(_) => format!(
                        "policy module '{name}' did not evaluate to a boolean (denied: fail closed)"
                    ),
                    Err(error) => format!(
                        "policy module '{name}' failed to evaluate: {} (denied: fail closed)",
                        describe(&error)
                    ),
                };
                match self.mode {
                    PolicyMode::Enforce => {
                        return PolicyVerdict::Deny {
                            module: name.clone(),
                            reason,
                        };
                    }
                    PolicyMode::Monitor => {
                        if !monitored.contains(name) {
                            monitored.push(name.clone());
                        }
                    }
                }
            }
        }
        PolicyVerdict::Allow
    }

    /// Every module's outcome over the input (the first event name), for a dry run.
    pub fn explain(&self, input: &PolicyInput) -> Vec<ModuleOutcome> {
        let variables = input.variables().into_iter().next();
        let Some(variables) = variables else {
            return Vec::new();
        };
        self.modules
            .iter()
            .map(|(name, expression)| {
                let (outcome, error) = match expression.evaluate_in(&variables) {
                    Ok(Value::Bool(true)) => ("deny", None),
                    Ok(Value::Bool(false)) => ("allow", None),
                    Ok(_) => ("error", Some("not a boolean".to_owned())),
                    Err(e) => ("error", Some(describe(&e))),
                };
                ModuleOutcome {
                    module: name.clone(),
                    outcome,
                    error,
                }
            })
            .collect()
    }
}

fn describe(error: &EvalError) -> String {
    match error {
        EvalError::OverBudget => "it exceeded its cost budget".to_owned(),
        EvalError::Execution(message) => message.clone(),
    }
}

fn check_module(name: &str, source: &str) -> Result<Expression, ModuleProblem> {
    let problem = |line, column, message: String| ModuleProblem {
        module: name.to_owned(),
        line,
        column,
        message,
    };
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name_ok {
        return Err(problem(
            1,
            1,
            "a module name is 1 to 64 letters, digits, '-', '_' or '.'".into(),
        ));
    }
    let expression = Expression::compile(source).map_err(|e| {
        let message = e.to_string();
        let (line, column) = syntax_position(&message).unwrap_or((1, 1));
        problem(line, column, message)
    })?;
    let tree = WrittenTree::parse(&expression)
        .ok_or_else(|| problem(1, 1, "expression does not parse".into()))?;
    let mut checker = Checker { scopes: Vec::new() };
    match checker.type_of(&tree.root) {
        Ok(Ty::Bool | Ty::Dyn) => Ok(expression),
        Ok(other) => Err(problem(
            1,
            1,
            format!(
                "a module must be a boolean expression (true denies); this one is {}",
                other.name()
            ),
        )),
        Err((id, message)) => {
            let (line, column) = tree.position(id);
            Err(problem(line, column, message))
        }
    }
}

/// `ERROR: <input>:L:C: …` as cel's parser writes it.
fn syntax_position(message: &str) -> Option<(usize, usize)> {
    let rest = message.split("<input>:").nth(1)?;
    let mut parts = rest.splitn(3, ':');
    let line = parts.next()?.trim().parse().ok()?;
    let column: usize = parts.next()?.trim().parse().ok()?;
    Some((line, column.max(1)))
}

/// The types the checker tells apart; anything it cannot know is `Dyn`.
#[derive(Debug, Clone, PartialEq)]
enum Ty {
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Null,
    Timestamp,
    Duration,
    List(Box<Ty>),
    Map,
    Object(Shape),
    Dyn,
}

/// The input's objects and their fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Principal,
    Resource,
    Request,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Self::Principal => "principal",
            Self::Resource => "resource",
            Self::Request => "request",
        }
    }

    fn fields(self) -> &'static [&'static str] {
        match self {
            Self::Principal => PRINCIPAL_FIELDS,
            Self::Resource => RESOURCE_FIELDS,
            Self::Request => REQUEST_FIELDS,
        }
    }

    fn field(self, name: &str) -> Option<Ty> {
        if !self.fields().contains(&name) {
            return None;
        }
        Some(match (self, name) {
            (Self::Principal, "roles") => Ty::List(Box::new(Ty::String)),
            _ => Ty::String,
        })
    }
}

pub const PRINCIPAL_FIELDS: &[&str] = &["id", "kind", "roles", "org", "org_name"];
pub const RESOURCE_FIELDS: &[&str] = &["irn", "org", "project", "type", "env", "id"];
pub const REQUEST_FIELDS: &[&str] = &[
    "method",
    "path",
    "rpc",
    "environment",
    "event_name",
    "function_id",
    "run_id",
    "topic",
    "name",
];

impl Ty {
    fn name(&self) -> String {
        match self {
            Ty::Bool => "bool".into(),
            Ty::Int => "int".into(),
            Ty::Uint => "uint".into(),
            Ty::Double => "double".into(),
            Ty::String => "string".into(),
            Ty::Bytes => "bytes".into(),
            Ty::Null => "null".into(),
            Ty::Timestamp => "timestamp".into(),
            Ty::Duration => "duration".into(),
            Ty::List(e) => format!("list({})", e.name()),
            Ty::Map => "map".into(),
            Ty::Object(s) => s.name().into(),
            Ty::Dyn => "dyn".into(),
        }
    }

    fn numeric(&self) -> bool {
        matches!(self, Ty::Int | Ty::Uint | Ty::Double)
    }

    /// Whether values of the two types can be compared or combined: equal, or one unknown.
    fn compatible(&self, other: &Ty) -> bool {
        match (self, other) {
            (Ty::Dyn, _) | (_, Ty::Dyn) | (Ty::Null, _) | (_, Ty::Null) => true,
            (Ty::List(a), Ty::List(b)) => a.compatible(b),
            (Ty::Map, Ty::Object(_)) | (Ty::Object(_), Ty::Map) => true,
            (a, b) => a == b,
        }
    }
}

/// The variables a module may name.
fn variable(name: &str) -> Option<Ty> {
    Some(match name {
        "principal" => Ty::Object(Shape::Principal),
        "action" => Ty::String,
        "resource" => Ty::Object(Shape::Resource),
        "request" => Ty::Object(Shape::Request),
        "time" => Ty::Timestamp,
        _ => return None,
    })
}

type Checked = Result<Ty, (u64, String)>;

struct Checker {
    /// Comprehension variables in scope, innermost last.
    scopes: Vec<(String, Ty)>,
}

impl Checker {
    fn type_of(&mut self, expr: &IdedExpr) -> Checked {
        let id = expr.id;
        match &expr.expr {
            Expr::Literal(literal) => Ok(match literal {
                LiteralValue::Boolean(_) => Ty::Bool,
                LiteralValue::Bytes(_) => Ty::Bytes,
                LiteralValue::Double(_) => Ty::Double,
                LiteralValue::Int(_) => Ty::Int,
                LiteralValue::Null => Ty::Null,
                LiteralValue::String(_) => Ty::String,
                LiteralValue::UInt(_) => Ty::Uint,
            }),
            Expr::Ident(name) => {
                if let Some((_, ty)) = self.scopes.iter().rev().find(|(n, _)| n == name) {
                    return Ok(ty.clone());
                }
                variable(name).ok_or_else(|| {
                    (
                        id,
                        format!(
                            "unknown name '{name}'; a module sees principal, action, resource, request and time"
                        ),
                    )
                })
            }
            Expr::Select(select) => {
                let operand = self.type_of(&select.operand)?;
                let ty = match operand {
                    Ty::Object(shape) => shape.field(&select.field).ok_or_else(|| {
                        (
                            id,
                            format!(
                                "{} has no field '{}'; it has {}",
                                shape.name(),
                                select.field,
                                shape.fields().join(", ")
                            ),
                        )
                    })?,
                    Ty::Map | Ty::Dyn => Ty::Dyn,
                    other => {
                        return Err((
                            id,
                            format!("cannot select '{}' from {}", select.field, other.name()),
                        ));
                    }
                };
                Ok(if select.test { Ty::Bool } else { ty })
            }
            Expr::List(list) => {
                let mut element = None;
                for item in &list.elements {
                    let ty = self.type_of(item)?;
                    element = Some(match element {
                        None => ty,
                        Some(prev) if prev == ty => prev,
                        Some(_) => Ty::Dyn,
                    });
                }
                Ok(Ty::List(Box::new(element.unwrap_or(Ty::Dyn))))
            }
            Expr::Map(map) => {
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(e) = &entry.expr {
                        self.type_of(&e.key)?;
                        self.type_of(&e.value)?;
                    }
                }
                Ok(Ty::Map)
            }
            Expr::Struct(_) => Err((id, "message literals are not available in policies".into())),
            Expr::Comprehension(c) => {
                let range = self.type_of(&c.iter_range)?;
                let element = match &range {
                    Ty::List(e) => (**e).clone(),
                    Ty::Map | Ty::Dyn => Ty::Dyn,
                    Ty::Object(_) => Ty::String,
                    other => {
                        return Err((
                            c.iter_range.id,
                            format!("cannot iterate over {}", other.name()),
                        ));
                    }
                };
                let accu = self.type_of(&c.accu_init)?;
                let pushed = 2 + usize::from(c.iter_var2.is_some());
                self.scopes.push((c.iter_var.clone(), element));
                if let Some(second) = &c.iter_var2 {
                    self.scopes.push((second.clone(), Ty::Dyn));
                }
                self.scopes.push((c.accu_var.clone(), accu));
                let outcome = (|| {
                    self.type_of(&c.loop_cond)?;
                    self.type_of(&c.loop_step)?;
                    self.type_of(&c.result)
                })();
                let kept = self.scopes.len() - pushed;
                self.scopes.truncate(kept);
                outcome
            }
            Expr::Call(call) => self.call(id, call),
            Expr::Unspecified => Err((id, "incomplete expression".into())),
        }
    }

    fn call(&mut self, id: u64, call: &cel::common::ast::CallExpr) -> Checked {
        let target = match &call.target {
            Some(t) => Some(self.type_of(t)?),
            None => None,
        };
        let mut args = Vec::with_capacity(call.args.len());
        for arg in &call.args {
            args.push(self.type_of(arg)?);
        }
        let name = call.func_name.as_str();
        let expect = |ty: &Ty, wanted: &Ty, what: &str| -> Result<(), (u64, String)> {
            if ty.compatible(wanted) {
                Ok(())
            } else {
                Err((
                    id,
                    format!("{what} expects {}, found {}", wanted.name(), ty.name()),
                ))
            }
        };
        match (name, target.as_ref(), args.as_slice()) {
            (op::LOGICAL_AND | op::LOGICAL_OR, None, [a, b]) => {
                expect(a, &Ty::Bool, "&& and ||")?;
                expect(b, &Ty::Bool, "&& and ||")?;
                Ok(Ty::Bool)
            }
            (op::LOGICAL_NOT | op::NOT_STRICTLY_FALSE, None, [a]) => {
                expect(a, &Ty::Bool, "!")?;
                Ok(Ty::Bool)
            }
            (op::CONDITIONAL, None, [c, a, b]) => {
                expect(c, &Ty::Bool, "the condition of ?:")?;
                Ok(if a == b { a.clone() } else { Ty::Dyn })
            }
            (
                op::EQUALS
                | op::NOT_EQUALS
                | op::LESS
                | op::LESS_EQUALS
                | op::GREATER
                | op::GREATER_EQUALS,
                None,
                [a, b],
            ) => {
                let numbers = a.numeric() && b.numeric();
                if !numbers && !a.compatible(b) {
                    return Err((id, format!("cannot compare {} with {}", a.name(), b.name())));
                }
                Ok(Ty::Bool)
            }
            (op::IN, None, [item, collection]) => match collection {
                Ty::List(element) => {
                    if !(item.compatible(element) || item.numeric() && element.numeric()) {
                        return Err((
                            id,
                            format!(
                                "'in' looks for {} in a list of {}",
                                item.name(),
                                element.name()
                            ),
                        ));
                    }
                    Ok(Ty::Bool)
                }
                Ty::Map | Ty::Dyn | Ty::Object(_) => Ok(Ty::Bool),
                other => Err((
                    id,
                    format!("'in' needs a list or map, found {}", other.name()),
                )),
            },
            (op::ADD, None, [a, b]) => match (a, b) {
                (Ty::String, Ty::String) => Ok(Ty::String),
                (Ty::List(x), Ty::List(_)) => Ok(Ty::List(x.clone())),
                (Ty::Timestamp, Ty::Duration) | (Ty::Duration, Ty::Timestamp) => Ok(Ty::Timestamp),
                (x, y) if x.numeric() && x == y => Ok(x.clone()),
                (Ty::Dyn, _) | (_, Ty::Dyn) => Ok(Ty::Dyn),
                _ => Err((id, format!("cannot add {} and {}", a.name(), b.name()))),
            },
            (op::SUBSTRACT | op::MULTIPLY | op::DIVIDE | op::MODULO, None, [a, b]) => {
                match (a, b) {
                    (Ty::Timestamp, Ty::Timestamp) => Ok(Ty::Duration),
                    (Ty::Timestamp, Ty::Duration) => Ok(Ty::Timestamp),
                    (x, y) if x.numeric() && x == y => Ok(x.clone()),
                    (Ty::Dyn, _) | (_, Ty::Dyn) => Ok(Ty::Dyn),
                    _ => Err((id, format!("arithmetic on {} and {}", a.name(), b.name()))),
                }
            }
            (op::NEGATE, None, [a]) => Ok(a.clone()),
            (op::INDEX, None, [collection, _]) => Ok(match collection {
                Ty::List(element) => (**element).clone(),
                Ty::Object(shape) if *shape == Shape::Principal => Ty::Dyn,
                Ty::Object(_) => Ty::String,
                _ => Ty::Dyn,
            }),
            ("size", None, [_]) | ("size", Some(_), []) => Ok(Ty::Int),
            ("startsWith" | "endsWith" | "contains" | "matches", Some(t), [arg]) => {
                expect(t, &Ty::String, name)?;
                expect(arg, &Ty::String, name)?;
                Ok(Ty::Bool)
            }
            ("string", None, [_]) => Ok(Ty::String),
            ("int", None, [_]) => Ok(Ty::Int),
            ("uint", None, [_]) => Ok(Ty::Uint),
            ("double", None, [_]) => Ok(Ty::Double),
            ("timestamp", None, [a]) => {
                expect(a, &Ty::String, "timestamp()")?;
                Ok(Ty::Timestamp)
            }
            ("duration", None, [a]) => {
                expect(a, &Ty::String, "duration()")?;
                Ok(Ty::Duration)
            }
            (
                "getFullYear" | "getMonth" | "getDayOfMonth" | "getDate" | "getDayOfWeek"
                | "getDayOfYear" | "getHours" | "getMinutes" | "getSeconds",
                Some(t),
                [] | [_],
            ) => {
                expect(t, &Ty::Timestamp, name)?;
                Ok(Ty::Int)
            }
            _ => Err((
                id,
                format!(
                    "unknown function '{name}' with {} argument(s){}",
                    args.len(),
                    if target.is_some() { " on a value" } else { "" }
                ),
            )),
        }
    }
}

/// What a policy sees of one request.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PolicyInput {
    pub principal: PrincipalFacts,
    pub action: String,
    pub resource: ResourceFacts,
    pub request: RequestFacts,
    /// Milliseconds since the epoch.
    #[serde(skip)]
    pub time_ms: i64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PrincipalFacts {
    pub id: String,
    pub kind: String,
    pub roles: Vec<String>,
    pub org: String,
    pub org_name: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ResourceFacts {
    pub irn: String,
    pub org: String,
    pub project: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub env: String,
    pub id: String,
}

/// The request's own facts; a field that does not apply is `""`. `event_names` holds every
/// event an emit carries (a batch is checked once per name, as `request.event_name`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RequestFacts {
    pub method: String,
    pub path: String,
    pub rpc: String,
    pub environment: String,
    pub event_names: Vec<String>,
    pub function_id: String,
    pub run_id: String,
    pub topic: String,
    pub name: String,
}

impl PolicyInput {
    /// A plausible input for tests and for filling a dry run's gaps.
    pub fn example() -> Self {
        Self {
            principal: PrincipalFacts {
                id: "key-1".into(),
                kind: "key".into(),
                roles: vec!["developer".into()],
                org: "org-1".into(),
                org_name: "acme".into(),
            },
            action: "events:emit".into(),
            resource: ResourceFacts {
                irn: "irn:ironflow:org-1:proj-1:event:env-1:".into(),
                org: "org-1".into(),
                project: "proj-1".into(),
                kind: "event".into(),
                env: "env-1".into(),
                id: String::new(),
            },
            request: RequestFacts {
                method: "POST".into(),
                path: "/api/v1/events".into(),
                environment: "default".into(),
                event_names: vec!["order.created".into()],
                ..RequestFacts::default()
            },
            time_ms: 0,
        }
    }

    /// Reads a dry run's `input` (the same names a module uses; `request.event_name` is one
    /// name, `time` an RFC 3339 instant, default now).
    pub fn from_json(value: &serde_json::Value, now_ms: i64) -> Result<Self, String> {
        let text = |v: Option<&serde_json::Value>, path: &str| -> Result<String, String> {
            match v {
                None | Some(serde_json::Value::Null) => Ok(String::new()),
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(format!("input.{path} must be a string")),
            }
        };
        let object = |key: &str| -> Result<serde_json::Map<String, serde_json::Value>, String> {
            match value.get(key) {
                None | Some(serde_json::Value::Null) => Ok(serde_json::Map::new()),
                Some(serde_json::Value::Object(o)) => Ok(o.clone()),
                Some(_) => Err(format!("input.{key} must be an object")),
            }
        };
        if !value.is_object() {
            return Err("input must be an object".into());
        }
        let principal = object("principal")?;
        let resource = object("resource")?;
        let request = object("request")?;
        for (shape, fields, given) in [
            ("principal", PRINCIPAL_FIELDS, &principal),
            ("resource", RESOURCE_FIELDS, &resource),
            ("request", REQUEST_FIELDS, &request),
        ] {
            if let Some(unknown) = given.keys().find(|k| !fields.contains(&k.as_str())) {
                return Err(format!(
                    "input.{shape} has no field '{unknown}'; it has {}",
                    fields.join(", ")
                ));
            }
        }
        let roles = match principal.get("roles") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|r| {
                    r.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| "input.principal.roles must be strings".to_owned())
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("input.principal.roles must be a list".into()),
        };
        let time_ms = match value.get("time") {
            None | Some(serde_json::Value::Null) => now_ms,
            Some(serde_json::Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|_| "input.time must be an RFC 3339 instant".to_owned())?
                .timestamp_millis(),
            Some(_) => return Err("input.time must be an RFC 3339 instant".into()),
        };
        let event_name = text(request.get("event_name"), "request.event_name")?;
        Ok(Self {
            principal: PrincipalFacts {
                id: text(principal.get("id"), "principal.id")?,
                kind: text(principal.get("kind"), "principal.kind")?,
                roles,
                org: text(principal.get("org"), "principal.org")?,
                org_name: text(principal.get("org_name"), "principal.org_name")?,
            },
            action: text(value.get("action"), "action")?,
            resource: ResourceFacts {
                irn: text(resource.get("irn"), "resource.irn")?,
                org: text(resource.get("org"), "resource.org")?,
                project: text(resource.get("project"), "resource.project")?,
                kind: text(resource.get("type"), "resource.type")?,
                env: text(resource.get("env"), "resource.env")?,
                id: text(resource.get("id"), "resource.id")?,
            },
            request: RequestFacts {
                method: text(request.get("method"), "request.method")?,
                path: text(request.get("path"), "request.path")?,
                rpc: text(request.get("rpc"), "request.rpc")?,
                environment: text(request.get("environment"), "request.environment")?,
                event_names: if event_name.is_empty() {
                    Vec::new()
                } else {
                    vec![event_name]
                },
                function_id: text(request.get("function_id"), "request.function_id")?,
                run_id: text(request.get("run_id"), "request.run_id")?,
                topic: text(request.get("topic"), "request.topic")?,
                name: text(request.get("name"), "request.name")?,
            },
            time_ms,
        })
    }

    /// The variables of each evaluation: one per event name (one with `""` when none).
    fn variables(&self) -> Vec<PolicyVariables> {
        let string = |s: &str| Value::String(Arc::new(s.to_owned()));
        let principal = map([
            ("id", string(&self.principal.id)),
            ("kind", string(&self.principal.kind)),
            (
                "roles",
                Value::List(Arc::new(
                    self.principal.roles.iter().map(|r| string(r)).collect(),
                )),
            ),
            ("org", string(&self.principal.org)),
            ("org_name", string(&self.principal.org_name)),
        ]);
        let resource = map([
            ("irn", string(&self.resource.irn)),
            ("org", string(&self.resource.org)),
            ("project", string(&self.resource.project)),
            ("type", string(&self.resource.kind)),
            ("env", string(&self.resource.env)),
            ("id", string(&self.resource.id)),
        ]);
        let time = chrono::DateTime::from_timestamp_millis(self.time_ms)
            .unwrap_or_default()
            .fixed_offset();
        let names: Vec<&str> = if self.request.event_names.is_empty() {
            vec![""]
        } else {
            self.request
                .event_names
                .iter()
                .map(String::as_str)
                .collect()
        };
        let r = &self.request;
        names
            .into_iter()
            .map(|event_name| {
                let request = map([
                    ("method", string(&r.method)),
                    ("path", string(&r.path)),
                    ("rpc", string(&r.rpc)),
                    ("environment", string(&r.environment)),
                    ("event_name", string(event_name)),
                    ("function_id", string(&r.function_id)),
                    ("run_id", string(&r.run_id)),
                    ("topic", string(&r.topic)),
                    ("name", string(&r.name)),
                ]);
                PolicyVariables {
                    principal: boxed(principal.clone()),
                    action: boxed(string(&self.action)),
                    resource: boxed(resource.clone()),
                    request: boxed(request),
                    time: boxed(Value::Timestamp(time)),
                }
            })
            .collect()
    }
}

fn map<const N: usize>(fields: [(&str, Value); N]) -> Value {
    let map: HashMap<String, Value> = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    Value::from(map)
}

fn boxed(value: Value) -> Box<dyn Val> {
    Box::<dyn Val>::try_from(value).unwrap_or_else(|_| Box::new(CelNull))
}

struct PolicyVariables {
    principal: Box<dyn Val>,
    action: Box<dyn Val>,
    resource: Box<dyn Val>,
    request: Box<dyn Val>,
    time: Box<dyn Val>,
}

impl VariableResolver for PolicyVariables {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let value = match variable {
            "principal" => &self.principal,
            "action" => &self.action,
            "resource" => &self.resource,
            "request" => &self.request,
            "time" => &self.time,
            _ => return None,
        };
        Some(CowVal::Borrowed(value.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(modules: &[(&str, &str)], mode: &str) -> Result<PolicySet, PolicySetError> {
        let modules = modules
            .iter()
            .map(|(n, s)| ((*n).to_owned(), (*s).to_owned()))
            .collect();
        PolicySet::check(1, &modules, mode, "")
    }

    fn problems(result: Result<PolicySet, PolicySetError>) -> Vec<ModuleProblem> {
        match result {
            Err(PolicySetError::Modules(p)) => p,
            other => panic!("expected module problems, got {other:?}"),
        }
    }

    #[test]
    fn a_true_module_denies_with_its_name() {
        let s = set(
            &[
                ("no-billing", r#"request.event_name.startsWith("billing.")"#),
                ("never", "false"),
            ],
            "enforce",
        )
        .expect("valid");
        let mut input = PolicyInput::example();
        let mut monitored = Vec::new();
        assert_eq!(s.evaluate(&input, &mut monitored), PolicyVerdict::Allow);
        input.request.event_names = vec!["ok".into(), "billing.charge".into()];
        match s.evaluate(&input, &mut monitored) {
            PolicyVerdict::Deny { module, .. } => assert_eq!(module, "no-billing"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn monitor_mode_records_instead_of_denying() {
        let s = set(&[("all", "true")], "monitor").expect("valid");
        let mut monitored = Vec::new();
        assert_eq!(
            s.evaluate(&PolicyInput::example(), &mut monitored),
            PolicyVerdict::Allow
        );
        assert_eq!(monitored, vec!["all".to_owned()]);
    }

    #[test]
    fn evaluation_errors_deny() {
        // Type-checks (dyn index) but fails at run time: fail closed.
        let s = set(&[("bad", "int(request.name) > 3")], "enforce").expect("valid");
        match s.evaluate(&PolicyInput::example(), &mut Vec::new()) {
            PolicyVerdict::Deny { module, reason } => {
                assert_eq!(module, "bad");
                assert!(reason.contains("fail closed"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mistakes_are_named_with_their_position() {
        let p = problems(set(&[("m", "resource.tpye == \"secret\"")], "enforce"));
        assert_eq!(p[0].module, "m");
        assert!(p[0].message.contains("no field 'tpye'"), "{}", p[0].message);
        assert_eq!((p[0].line, p[0].column), (1, 9));

        let p = problems(set(&[("m", "principal.roles == \"admin\"")], "enforce"));
        assert!(p[0].message.contains("cannot compare"), "{}", p[0].message);

        let p = problems(set(&[("m", "\n  user.id == 'x'")], "enforce"));
        assert!(p[0].message.contains("unknown name 'user'"));
        assert_eq!((p[0].line, p[0].column), (2, 3));

        let p = problems(set(&[("m", "action.startsWith(1)")], "enforce"));
        assert!(p[0].message.contains("expects string"), "{}", p[0].message);

        let p = problems(set(&[("m", "action ==")], "enforce"));
        assert!(p[0].message.contains("parse"), "{}", p[0].message);

        let p = problems(set(&[("m", "size(action)")], "enforce"));
        assert!(p[0].message.contains("boolean"), "{}", p[0].message);

        let p = problems(set(&[("m", "frobnicate(action)")], "enforce"));
        assert!(
            p[0].message.contains("unknown function"),
            "{}",
            p[0].message
        );
    }

    #[test]
    fn comprehensions_and_time_check() {
        set(
            &[
                ("roles", "principal.roles.exists(r, r == 'contractor')"),
                ("hours", "time.getHours() < 6 && action == 'secrets:write'"),
                (
                    "prod",
                    "resource.env in ['env-1', 'env-2'] && has(request.topic)",
                ),
            ],
            "enforce",
        )
        .expect("valid");
    }

    #[test]
    fn body_level_refusals() {
        assert!(matches!(set(&[], "loud"), Err(PolicySetError::Mode(_))));
        let modules = BTreeMap::new();
        assert!(matches!(
            PolicySet::check(1, &modules, "", "allow"),
            Err(PolicySetError::Decision(_))
        ));
        let many: BTreeMap<String, String> = (0..=MAX_MODULES)
            .map(|i| (format!("m{i}"), "false".to_owned()))
            .collect();
        assert!(matches!(
            PolicySet::check(1, &many, "", ""),
            Err(PolicySetError::TooMany(_))
        ));
    }

    #[test]
    fn dry_run_input_is_read_strictly() {
        let input = PolicyInput::from_json(
            &serde_json::json!({
                "principal": {"id": "k", "roles": ["viewer"]},
                "action": "events:emit",
                "request": {"event_name": "billing.x"},
                "time": "2026-01-01T03:00:00Z"
            }),
            0,
        )
        .expect("valid");
        assert_eq!(input.request.event_names, vec!["billing.x".to_owned()]);
        assert!(
            PolicyInput::from_json(&serde_json::json!({"request": {"evnt": "x"}}), 0)
                .expect_err("refused")
                .contains("no field 'evnt'")
        );
        let s = set(&[("night", "time.getHours() < 6")], "enforce").expect("valid");
        assert!(matches!(
            s.evaluate(&input, &mut Vec::new()),
            PolicyVerdict::Deny { .. }
        ));
    }
}
