//! SQL projections: what a user's table and handler statements may say (one CREATE TABLE of one
//! table; INSERT / UPDATE / DELETE on that table only; expressions over its columns and a short
//! list of functions; named parameters from the event), and how they are rendered for each
//! backend with the table confined to the environment's projection schema (Postgres) or name
//! prefix (SQLite) and every parameter bound, never spliced.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use serde_json::Value as Json;
use sqlparser::ast::{
    AssignmentTarget, CastKind, ColumnOption, DataType, Expr, FromTable, Ident, ObjectName,
    ObjectNamePart, OnConflictAction, OnInsert, Query, SetExpr, Statement, TableConstraint,
    TableFactor, TableObject, Value, ValueWithSpan, Visit, VisitMut, Visitor, VisitorMut,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Span, Token};

/// Longest table name a user may give (the physical name adds a prefix).
const MAX_TABLE_NAME: usize = 48;

/// Functions an expression may call: scalar, deterministic, and the same on both backends.
const FUNCTIONS: &[&str] = &[
    "abs", "coalesce", "nullif", "lower", "upper", "length", "round", "trim", "ltrim", "rtrim",
    "replace", "substr",
];
/// Functions a column DEFAULT may call besides those (`now()` is not SQLite's).
const DEFAULT_FUNCTIONS: &[&str] = &["current_timestamp"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Where an environment's projection tables live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePlace {
    /// Postgres: the schema of the environment's projection tables.
    pub schema: String,
    /// SQLite: the prefix of the environment's projection tables.
    pub prefix: String,
}

impl TablePlace {
    pub fn of_env(env_id: &str) -> Self {
        let slug: String = env_id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        Self {
            schema: format!("ironflow_proj_{slug}"),
            prefix: format!("proj_{slug}__"),
        }
    }

    /// The physical table's name parts (`shadow`: the one a rebuild fills).
    fn name(&self, backend: Backend, table: &str, shadow: bool) -> Vec<String> {
        let table = if shadow {
            format!("{table}__rebuild")
        } else {
            table.to_owned()
        };
        match backend {
            Backend::Postgres => vec![self.schema.clone(), table],
            Backend::Sqlite => vec![format!("{}{table}", self.prefix)],
        }
    }

    /// The physical name as SQL text, quoted.
    pub fn qualified(&self, backend: Backend, table: &str, shadow: bool) -> String {
        self.name(backend, table, shadow)
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(".")
    }

    /// The last part of the physical name (what a column qualifier names).
    fn leaf(&self, backend: Backend, table: &str, shadow: bool) -> String {
        self.name(backend, table, shadow).pop().unwrap_or_default()
    }
}

/// A column of the projection table, as its DDL declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// The declared type, as SQL text (for casts of bound parameters on Postgres).
    pub data_type: String,
    /// NUMERIC / DECIMAL: answered as strings, so no precision is lost.
    pub decimal: bool,
}

/// A checked table definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub table: String,
    pub columns: Vec<Column>,
    ddl: Statement,
}

/// A handler statement rendered for one backend: the SQL and the event paths bound to its
/// parameters, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedStatement {
    pub sql: String,
    pub params: Vec<String>,
}

/// A checked handler statement.
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerSpec {
    statement: Statement,
}

fn parse_one(sql: &str, what: &str) -> Result<Statement, String> {
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .map_err(|e| format!("{what} is not valid SQL: {e}"))?;
    match statements.len() {
        1 => Ok(statements.remove(0)),
        0 => Err(format!("{what} is empty")),
        n => Err(format!("{what} must be one statement (got {n})")),
    }
}

fn single_name(name: &ObjectName, what: &str) -> Result<String, String> {
    match name.0.as_slice() {
        [ObjectNamePart::Identifier(ident)] => Ok(ident.value.clone()),
        _ => Err(format!(
            "{what} '{name}' must be a plain table name (the server chooses its schema)"
        )),
    }
}

/// Column types a projection table may declare: plain scalar types both backends store.
const TYPES: &[&str] = &[
    "text",
    "varchar",
    "character varying",
    "char",
    "character",
    "integer",
    "int",
    "int2",
    "int4",
    "int8",
    "bigint",
    "smallint",
    "numeric",
    "decimal",
    "real",
    "double precision",
    "float",
    "float4",
    "float8",
    "boolean",
    "bool",
    "timestamp",
    "timestamptz",
    "date",
    "time",
    "json",
    "jsonb",
    "uuid",
    "bytea",
];

fn check_type(column: &str, data_type: &DataType) -> Result<(), String> {
    let text = data_type.to_string().to_ascii_lowercase();
    let base = text
        .split('(')
        .next()
        .unwrap_or_default()
        .trim_end_matches(" with time zone")
        .trim_end_matches(" without time zone")
        .trim();
    if TYPES.contains(&base) {
        Ok(())
    } else {
        Err(format!(
            "table_sql: column '{column}' has type {text}; use one of {}",
            TYPES.join(", ")
        ))
    }
}

/// A column or constraint name: the same rule as a table name.
fn check_identifier(what: &str, name: &str) -> Result<(), String> {
    check_table_name(name).map_err(|_| {
        format!(
            "{what} '{name}' must be lowercase letters, digits and '_', starting with a letter or '_'"
        )
    })
}

fn check_table_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TABLE_NAME
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "table name '{name}' must be 1-{MAX_TABLE_NAME} characters of lowercase letters, digits and '_', starting with a letter or '_'"
        ))
    }
}

/// Checks `CREATE TABLE`: one table, columns with plain types, NOT NULL / DEFAULT / UNIQUE /
/// PRIMARY KEY / CHECK; no foreign keys, no `AS SELECT`, no temporary or qualified table.
pub fn parse_table(table_sql: &str) -> Result<TableSpec, String> {
    let statement = parse_one(table_sql, "table_sql")?;
    let Statement::CreateTable(create) = &statement else {
        return Err("table_sql must be a CREATE TABLE statement".into());
    };
    let table = single_name(&create.name, "the table")?;
    check_table_name(&table)?;
    if create.temporary || create.external || create.or_replace {
        return Err("table_sql: TEMPORARY, EXTERNAL and OR REPLACE tables are not allowed".into());
    }
    if create.query.is_some() || create.like.is_some() || create.clone.is_some() {
        return Err(
            "table_sql: a projection table is declared with its columns (no AS SELECT, LIKE or CLONE)"
                .into(),
        );
    }
    if create.columns.is_empty() {
        return Err("table_sql: the table needs at least one column".into());
    }
    // Only the name, the columns and the constraints: anything else the statement says
    // (INHERITS, PARTITION OF / BY, WITH options, TABLESPACE, …) is refused.
    let reduced = format!(
        "CREATE TABLE {} ({})",
        create.name,
        create
            .columns
            .iter()
            .map(ToString::to_string)
            .chain(create.constraints.iter().map(ToString::to_string))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let reparsed = parse_one(&reduced, "table_sql")?;
    let mut original = statement.clone();
    if let Statement::CreateTable(o) = &mut original {
        o.if_not_exists = false;
    }
    if reparsed.to_string() != original.to_string() {
        return Err(
            "table_sql: a projection table is its columns and constraints only (no INHERITS, PARTITION, WITH, TABLESPACE or other clauses)"
                .into(),
        );
    }
    let mut columns: Vec<Column> = Vec::new();
    for c in &create.columns {
        let name = c.name.value.clone();
        check_identifier("column name", &name)?;
        check_type(&name, &c.data_type)?;
        if columns.iter().any(|x| x.name == name) {
            return Err(format!("table_sql: column '{name}' is declared twice"));
        }
        for option in &c.options {
            if let Some(constraint) = &option.name {
                check_identifier("constraint name", &constraint.value)?;
            }
            match &option.option {
                ColumnOption::Null
                | ColumnOption::NotNull
                | ColumnOption::PrimaryKey(_)
                | ColumnOption::Unique(_) => {}
                ColumnOption::Default(expr) => {
                    check_expr(expr, &Scope::constant(), &format!("DEFAULT of '{name}'"))?;
                }
                ColumnOption::Check(check) => {
                    check_expr(&check.expr, &Scope::columns_only(&create.columns), "CHECK")?;
                }
                other => {
                    return Err(format!(
                        "table_sql: column option '{other}' of '{name}' is not allowed (use NULL, NOT NULL, DEFAULT, UNIQUE, PRIMARY KEY or CHECK)"
                    ));
                }
            }
        }
        let data_type = c.data_type.to_string();
        let decimal = matches!(
            c.data_type,
            DataType::Numeric(_) | DataType::Decimal(_) | DataType::Dec(_)
        );
        columns.push(Column {
            name,
            data_type,
            decimal,
        });
    }
    for constraint in &create.constraints {
        let name = match constraint {
            TableConstraint::PrimaryKey(c) => c.name.as_ref(),
            TableConstraint::Unique(c) => c.name.as_ref(),
            TableConstraint::Check(c) => c.name.as_ref(),
            _ => None,
        };
        if let Some(name) = name {
            check_identifier("constraint name", &name.value)?;
        }
        match constraint {
            TableConstraint::PrimaryKey(_) | TableConstraint::Unique(_) => {}
            TableConstraint::Check(check) => {
                check_expr(&check.expr, &Scope::columns_only(&create.columns), "CHECK")?;
            }
            other => {
                return Err(format!(
                    "table_sql: constraint '{other}' is not allowed (use PRIMARY KEY, UNIQUE or CHECK; a projection table references no other table)"
                ));
            }
        }
    }
    Ok(TableSpec {
        table,
        columns,
        ddl: statement,
    })
}

impl TableSpec {
    /// The CREATE TABLE for a backend, naming the physical (or shadow) table.
    pub fn ddl(&self, place: &TablePlace, backend: Backend, shadow: bool) -> String {
        let mut statement = self.ddl.clone();
        if let Statement::CreateTable(create) = &mut statement {
            create.name = object_name(&place.name(backend, &self.table, shadow));
            create.if_not_exists = false;
        }
        statement.to_string()
    }

    fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

fn object_name(parts: &[String]) -> ObjectName {
    ObjectName(
        parts
            .iter()
            .map(|p| ObjectNamePart::Identifier(Ident::with_quote('"', p.clone())))
            .collect(),
    )
}

/// What an expression may refer to.
struct Scope {
    /// Column names it may name (unqualified, or qualified with `qualifiers`).
    columns: Vec<String>,
    qualifiers: Vec<String>,
    /// Named parameters (`:event.id`, `:data.total`) are allowed.
    params: bool,
    /// now() / CURRENT_TIMESTAMP are allowed (column defaults).
    clock: bool,
}

impl Scope {
    fn constant() -> Self {
        Self {
            columns: Vec::new(),
            qualifiers: Vec::new(),
            params: false,
            clock: true,
        }
    }

    fn columns_only(columns: &[sqlparser::ast::ColumnDef]) -> Self {
        Self {
            columns: columns.iter().map(|c| c.name.value.clone()).collect(),
            qualifiers: Vec::new(),
            params: false,
            clock: false,
        }
    }

    fn of(spec: &TableSpec, params: bool, qualifiers: &[&str]) -> Self {
        Self {
            columns: spec.columns.iter().map(|c| c.name.clone()).collect(),
            qualifiers: qualifiers.iter().map(|q| (*q).to_owned()).collect(),
            params,
            clock: false,
        }
    }
}

/// The event path a parameter names: `:event.id` → `event.id`, `:data.a.b` → `data.a.b`.
fn param_path(expr: &Expr) -> Option<Result<String, String>> {
    let (root, chain) = match expr {
        Expr::Value(ValueWithSpan {
            value: Value::Placeholder(p),
            ..
        }) => (p.as_str(), Vec::new()),
        Expr::CompoundFieldAccess { root, access_chain } => {
            let Expr::Value(ValueWithSpan {
                value: Value::Placeholder(p),
                ..
            }) = root.as_ref()
            else {
                return None;
            };
            let mut parts = Vec::new();
            for access in access_chain {
                match access {
                    sqlparser::ast::AccessExpr::Dot(Expr::Identifier(ident)) => {
                        parts.push(ident.value.clone());
                    }
                    _ => {
                        return Some(Err(format!("parameter {p}: only .field access is allowed")));
                    }
                }
            }
            (p.as_str(), parts)
        }
        _ => return None,
    };
    let Some(head) = root.strip_prefix(':') else {
        return Some(Err(format!(
            "parameter '{root}': use named parameters such as :event.id or :data.field"
        )));
    };
    let path = std::iter::once(head.to_owned())
        .chain(chain)
        .collect::<Vec<_>>()
        .join(".");
    Some(check_param(&path).map(|()| path))
}

/// Parameters a handler may use: `:event.{id,name,seq,timestamp,source,entity_id,entity_version}`,
/// `:data` / `:data.<path>` and `:metadata` / `:metadata.<path>`.
fn check_param(path: &str) -> Result<(), String> {
    let mut parts = path.split('.');
    let ok = match (parts.next(), parts.next()) {
        (Some("event"), Some(field)) => {
            parts.next().is_none()
                && matches!(
                    field,
                    "id" | "name" | "seq" | "timestamp" | "source" | "entity_id" | "entity_version"
                )
        }
        (Some("data" | "metadata"), _) => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "unknown parameter :{path} (use :event.id, :event.name, :event.seq, :event.timestamp, :event.source, :event.entity_id, :event.entity_version, :data[.path] or :metadata[.path])"
        ))
    }
}

struct ExprCheck<'a> {
    scope: &'a Scope,
    what: &'a str,
}

impl Visitor for ExprCheck<'_> {
    type Break = String;

    fn pre_visit_query(&mut self, _query: &Query) -> ControlFlow<String> {
        ControlFlow::Break(format!("{}: subqueries are not allowed", self.what))
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<String> {
        if let Some(path) = param_path(expr) {
            return match path {
                Ok(_) if self.scope.params => ControlFlow::Continue(()),
                Ok(path) => ControlFlow::Break(format!(
                    "{}: parameters (:{path}) are only allowed in handlers",
                    self.what
                )),
                Err(e) => ControlFlow::Break(format!("{}: {e}", self.what)),
            };
        }
        let refused = match expr {
            Expr::Identifier(ident) => (!self.scope.columns.contains(&ident.value)).then(|| {
                format!(
                    "'{}' is not a column of the table (columns: {})",
                    ident.value,
                    self.scope.columns.join(", ")
                )
            }),
            Expr::CompoundIdentifier(parts) => match parts.as_slice() {
                [q, c]
                    if self.scope.qualifiers.iter().any(|x| x == &q.value)
                        && self.scope.columns.contains(&c.value) =>
                {
                    None
                }
                _ => Some(format!(
                    "'{}' names no column of the table",
                    parts
                        .iter()
                        .map(|p| p.value.as_str())
                        .collect::<Vec<_>>()
                        .join(".")
                )),
            },
            Expr::Function(f) => {
                let name = f.name.to_string().to_ascii_lowercase();
                let allowed = FUNCTIONS.contains(&name.as_str())
                    || (self.scope.clock && DEFAULT_FUNCTIONS.contains(&name.as_str()));
                if !allowed {
                    Some(format!(
                        "function {name}() is not allowed (allowed: {})",
                        FUNCTIONS.join(", ")
                    ))
                } else if f.over.is_some() || f.filter.is_some() || !f.within_group.is_empty() {
                    Some(format!(
                        "{name}(): window and aggregate forms are not allowed"
                    ))
                } else {
                    None
                }
            }
            Expr::Value(ValueWithSpan {
                value: Value::Placeholder(p),
                ..
            }) => Some(format!(
                "parameter '{p}': use named parameters such as :event.id or :data.field"
            )),
            Expr::Subquery(_) | Expr::Exists { .. } => Some("subqueries are not allowed".into()),
            Expr::Value(_)
            | Expr::BinaryOp { .. }
            | Expr::UnaryOp { .. }
            | Expr::Nested(_)
            | Expr::IsNull(_)
            | Expr::IsNotNull(_)
            | Expr::IsTrue(_)
            | Expr::IsFalse(_)
            | Expr::IsNotTrue(_)
            | Expr::IsNotFalse(_)
            | Expr::IsDistinctFrom(..)
            | Expr::IsNotDistinctFrom(..)
            | Expr::Between { .. }
            | Expr::In { .. }
            | Expr::Like { .. }
            | Expr::ILike { .. }
            | Expr::Case { .. }
            | Expr::TypedString(_) => None,
            Expr::Cast { kind, .. } => (!matches!(kind, CastKind::Cast | CastKind::DoubleColon))
                .then(|| "only CAST(x AS type) and x::type casts are allowed".to_owned()),
            other => Some(format!("'{other}' is not allowed")),
        };
        match refused {
            Some(why) => ControlFlow::Break(format!("{}: {why}", self.what)),
            None => ControlFlow::Continue(()),
        }
    }
}

/// Folds `:data.a.b` (a placeholder with field accesses) into one placeholder, so the check
/// does not take its fields for columns.
struct FoldParams;

impl VisitorMut for FoldParams {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if matches!(expr, Expr::CompoundFieldAccess { .. })
            && let Some(Ok(path)) = param_path(expr)
        {
            *expr = Expr::Value(ValueWithSpan {
                value: Value::Placeholder(format!(":{path}")),
                span: Span::empty(),
            });
        }
        ControlFlow::Continue(())
    }
}

fn check_expr(expr: &Expr, scope: &Scope, what: &str) -> Result<(), String> {
    let mut expr = expr.clone();
    let _ = VisitMut::visit(&mut expr, &mut FoldParams);
    match expr.visit(&mut ExprCheck { scope, what }) {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

fn check_target(name: &ObjectName, spec: &TableSpec, what: &str) -> Result<(), String> {
    let table = single_name(name, what)?;
    if table == spec.table {
        Ok(())
    } else {
        Err(format!(
            "{what} names table '{table}'; a handler may only change the projection's table '{}'",
            spec.table
        ))
    }
}

fn check_assignment_targets(
    assignments: &[sqlparser::ast::Assignment],
    spec: &TableSpec,
    what: &str,
) -> Result<(), String> {
    for a in assignments {
        match &a.target {
            AssignmentTarget::ColumnName(name) => {
                let column = single_name(name, what)?;
                if spec.column(&column).is_none() {
                    return Err(format!("{what}: '{column}' is not a column of the table"));
                }
            }
            AssignmentTarget::Tuple(_) => {
                return Err(format!("{what}: assign one column at a time"));
            }
        }
    }
    Ok(())
}

/// Checks one handler: INSERT … VALUES [ON CONFLICT …], UPDATE … SET … [WHERE …] or DELETE FROM
/// … [WHERE …] on the projection's table; expressions over its columns and named parameters.
pub fn parse_handler(event: &str, sql: &str, spec: &TableSpec) -> Result<HandlerSpec, String> {
    let what = format!("handler for '{event}'");
    let statement = parse_one(sql, &what)?;
    let table = spec.table.as_str();
    let scope = Scope::of(spec, true, &[table]);
    match &statement {
        Statement::Insert(insert) => {
            let TableObject::TableName(name) = &insert.table else {
                return Err(format!("{what}: INSERT INTO a table name"));
            };
            check_target(name, spec, &what)?;
            if insert.returning.is_some() || !insert.assignments.is_empty() || insert.or.is_some() {
                return Err(format!(
                    "{what}: RETURNING, SET-style and OR-clause inserts are not allowed"
                ));
            }
            if insert.columns.is_empty() {
                return Err(format!(
                    "{what}: name the columns (INSERT INTO t (a, b) VALUES …)"
                ));
            }
            for c in &insert.columns {
                let c = single_name(c, &what)?;
                if spec.column(&c).is_none() {
                    return Err(format!("{what}: '{c}' is not a column of the table"));
                }
            }
            let Some(source) = &insert.source else {
                return Err(format!("{what}: INSERT needs VALUES"));
            };
            let SetExpr::Values(values) = source.body.as_ref() else {
                return Err(format!("{what}: INSERT … VALUES only (no INSERT … SELECT)"));
            };
            if source.with.is_some() || source.order_by.is_some() || source.limit_clause.is_some() {
                return Err(format!("{what}: INSERT … VALUES only"));
            }
            for row in &values.rows {
                if row.content.len() != insert.columns.len() {
                    return Err(format!(
                        "{what}: {} values for {} columns",
                        row.content.len(),
                        insert.columns.len()
                    ));
                }
                for e in &row.content {
                    check_expr(e, &scope, &what)?;
                }
            }
            match &insert.on {
                None => {}
                Some(OnInsert::OnConflict(conflict)) => {
                    if let OnConflictAction::DoUpdate(update) = &conflict.action {
                        check_assignment_targets(&update.assignments, spec, &what)?;
                        let scope = Scope::of(spec, true, &[table, "excluded"]);
                        for a in &update.assignments {
                            check_expr(&a.value, &scope, &what)?;
                        }
                        if let Some(s) = &update.selection {
                            check_expr(s, &scope, &what)?;
                        }
                    }
                }
                Some(_) => return Err(format!("{what}: use ON CONFLICT (…) DO …")),
            }
        }
        Statement::Update(update) => {
            let TableFactor::Table { name, .. } = &update.table.relation else {
                return Err(format!("{what}: UPDATE a table name"));
            };
            check_target(name, spec, &what)?;
            if !update.table.joins.is_empty()
                || update.from.is_some()
                || update.returning.is_some()
                || update.limit.is_some()
                || !update.order_by.is_empty()
            {
                return Err(format!(
                    "{what}: UPDATE … SET … [WHERE …] only (no FROM, joins, RETURNING, ORDER BY or LIMIT)"
                ));
            }
            check_assignment_targets(&update.assignments, spec, &what)?;
            for a in &update.assignments {
                check_expr(&a.value, &scope, &what)?;
            }
            if let Some(s) = &update.selection {
                check_expr(s, &scope, &what)?;
            }
        }
        Statement::Delete(delete) => {
            let tables = match &delete.from {
                FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
            };
            let [only] = tables.as_slice() else {
                return Err(format!("{what}: DELETE FROM one table"));
            };
            let TableFactor::Table { name, .. } = &only.relation else {
                return Err(format!("{what}: DELETE FROM a table name"));
            };
            check_target(name, spec, &what)?;
            if !only.joins.is_empty()
                || !delete.tables.is_empty()
                || delete.using.is_some()
                || delete.returning.is_some()
                || delete.limit.is_some()
                || !delete.order_by.is_empty()
            {
                return Err(format!(
                    "{what}: DELETE FROM … [WHERE …] only (no USING, RETURNING, ORDER BY or LIMIT)"
                ));
            }
            if let Some(s) = &delete.selection {
                check_expr(s, &scope, &what)?;
            }
        }
        _ => {
            return Err(format!(
                "{what} must be an INSERT, UPDATE or DELETE on table '{table}'"
            ));
        }
    }
    Ok(HandlerSpec { statement })
}

/// Rewrites a checked statement for a backend: the table renamed to its physical (or shadow)
/// name, qualifiers to match, parameters to `$n` / `?n` (on Postgres cast to the type of the
/// column they meet, since they are bound as text).
struct Render<'a> {
    spec: &'a TableSpec,
    backend: Backend,
    physical: Vec<String>,
    leaf: String,
    params: Vec<String>,
}

impl Render<'_> {
    fn placeholder(&mut self, path: String, cast: Option<&Column>) -> Expr {
        self.params.push(path);
        let n = self.params.len();
        let text = match self.backend {
            Backend::Postgres => format!("${n}"),
            Backend::Sqlite => format!("?{n}"),
        };
        let value = Expr::Value(ValueWithSpan {
            value: Value::Placeholder(text),
            span: Span::empty(),
        });
        match (self.backend, cast) {
            (Backend::Postgres, Some(column)) if !column.data_type.eq_ignore_ascii_case("text") => {
                match Parser::new(&PostgreSqlDialect {})
                    .try_with_sql(&column.data_type)
                    .and_then(|mut p| p.parse_data_type())
                {
                    Ok(data_type) => Expr::Cast {
                        kind: CastKind::Cast,
                        expr: Box::new(value),
                        data_type,
                        format: None,
                    },
                    Err(_) => value,
                }
            }
            _ => value,
        }
    }

    /// The column an expression is, when it is one (`total`, `t.total`, `excluded.total`).
    fn column_of(&self, expr: &Expr) -> Option<Column> {
        let name = match expr {
            Expr::Identifier(i) => &i.value,
            Expr::CompoundIdentifier(parts) => &parts.last()?.value,
            _ => return None,
        };
        self.spec.column(name).cloned()
    }

    /// Replaces a parameter by its placeholder, cast to `column`'s type.
    fn bind(&mut self, expr: &mut Expr, column: Option<&Column>) {
        if let Some(Ok(path)) = param_path(expr) {
            *expr = self.placeholder(path, column);
        }
    }
}

impl VisitorMut for Render<'_> {
    type Break = ();

    fn pre_visit_relation(&mut self, relation: &mut ObjectName) -> ControlFlow<()> {
        *relation = object_name(&self.physical);
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        match expr {
            Expr::BinaryOp { left, right, .. } => {
                let (l, r) = (self.column_of(left), self.column_of(right));
                self.bind(left, r.as_ref());
                self.bind(right, l.as_ref());
            }
            Expr::CompoundIdentifier(parts) if parts.len() == 2 => {
                if parts[0].value == self.spec.table {
                    parts[0] = Ident::with_quote('"', self.leaf.clone());
                }
            }
            other => self.bind(other, None),
        }
        ControlFlow::Continue(())
    }
}

impl HandlerSpec {
    /// The statement for a backend, on the physical or (rebuild) shadow table.
    pub fn render(
        &self,
        spec: &TableSpec,
        place: &TablePlace,
        backend: Backend,
        shadow: bool,
    ) -> RenderedStatement {
        let mut statement = self.statement.clone();
        let mut render = Render {
            spec,
            backend,
            physical: place.name(backend, &spec.table, shadow),
            leaf: place.leaf(backend, &spec.table, shadow),
            params: Vec::new(),
        };
        // Parameters placed straight into a column (VALUES, SET) take that column's type.
        match &mut statement {
            Statement::Insert(insert) => {
                let columns: Vec<Option<Column>> = insert
                    .columns
                    .iter()
                    .map(|c| {
                        single_name(c, "")
                            .ok()
                            .and_then(|c| spec.column(&c).cloned())
                    })
                    .collect();
                if let Some(source) = insert.source.as_mut()
                    && let SetExpr::Values(values) = source.body.as_mut()
                {
                    for row in &mut values.rows {
                        for (e, c) in row.content.iter_mut().zip(&columns) {
                            render.bind(e, c.as_ref());
                        }
                    }
                }
                if let Some(OnInsert::OnConflict(conflict)) = insert.on.as_mut()
                    && let OnConflictAction::DoUpdate(update) = &mut conflict.action
                {
                    assign_types(&mut render, &mut update.assignments);
                }
                // INSERT INTO physical AS table: qualifiers keep naming the user's table.
                if let TableObject::TableName(name) = &mut insert.table {
                    *name = object_name(&render.physical);
                }
            }
            Statement::Update(update) => assign_types(&mut render, &mut update.assignments),
            _ => {}
        }
        let _ = VisitMut::visit(&mut statement, &mut render);
        RenderedStatement {
            sql: statement.to_string(),
            params: render.params,
        }
    }
}

fn assign_types(render: &mut Render<'_>, assignments: &mut [sqlparser::ast::Assignment]) {
    for a in assignments {
        if let AssignmentTarget::ColumnName(name) = &a.target {
            let column = single_name(name, "")
                .ok()
                .and_then(|c| render.spec.column(&c).cloned());
            render.bind(&mut a.value, column.as_ref());
        }
    }
}

/// The value an event gives a parameter path (`Null` when it has none).
pub fn param_value(path: &str, facts: &EventFacts<'_>) -> Json {
    let mut parts = path.split('.');
    match parts.next() {
        Some("event") => match parts.next() {
            Some("id") => Json::from(facts.id),
            Some("name") => Json::from(facts.name),
            Some("seq") => Json::from(facts.seq),
            Some("timestamp") => Json::from(facts.timestamp.as_str()),
            Some("source") => Json::from(facts.source),
            Some("entity_id") => facts.entity_id.map_or(Json::Null, Json::from),
            Some("entity_version") => facts.entity_version.map_or(Json::Null, Json::from),
            _ => Json::Null,
        },
        Some(root @ ("data" | "metadata")) => {
            let mut at = if root == "data" {
                facts.data
            } else {
                facts.metadata
            };
            for part in parts {
                match at.get(part) {
                    Some(v) => at = v,
                    None => return Json::Null,
                }
            }
            at.clone()
        }
        _ => Json::Null,
    }
}

/// What a handler's parameters read from an event.
pub struct EventFacts<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub seq: i64,
    pub timestamp: String,
    pub source: &'a str,
    pub entity_id: Option<&'a str>,
    pub entity_version: Option<i64>,
    pub data: &'a Json,
    pub metadata: &'a Json,
}

/// A checked definition: the table, each event's handler, and the events followed.
#[derive(Debug, Clone)]
pub struct CheckedDefinition {
    pub table: TableSpec,
    pub handlers: BTreeMap<String, HandlerSpec>,
    pub events: Vec<String>,
}

/// Checks a whole definition: the table, one handler per event followed (and none for an event
/// not followed). `events` empty means the handlers' events.
pub fn check_definition(
    table_sql: &str,
    handlers: &BTreeMap<String, String>,
    events: &[String],
) -> Result<CheckedDefinition, String> {
    let spec = parse_table(table_sql)?;
    if handlers.is_empty() {
        return Err("event_handlers is empty: give one statement per event name".into());
    }
    let events: Vec<String> = if events.is_empty() {
        handlers.keys().cloned().collect()
    } else {
        events.to_vec()
    };
    for e in &events {
        if !handlers.contains_key(e) {
            return Err(format!(
                "event '{e}' is followed but has no handler in event_handlers"
            ));
        }
    }
    let mut compiled = BTreeMap::new();
    for (event, sql) in handlers {
        if !events.contains(event) {
            return Err(format!(
                "event_handlers has a handler for '{event}', which is not in events"
            ));
        }
        compiled.insert(event.clone(), parse_handler(event, sql, &spec)?);
    }
    Ok(CheckedDefinition {
        table: spec,
        handlers: compiled,
        events,
    })
}

/// A query's `where` and `order_by`, checked as expressions over the table's columns and
/// rendered back (literals quoted by the renderer, never copied through).
pub fn query_clauses(
    spec: &TableSpec,
    where_clause: &str,
    order_by: &str,
) -> Result<(Option<String>, Option<String>), String> {
    let scope = Scope::of(spec, false, &[]);
    let dialect = PostgreSqlDialect {};
    let where_sql = if where_clause.trim().is_empty() {
        None
    } else {
        let mut parser = Parser::new(&dialect)
            .try_with_sql(where_clause)
            .map_err(|e| format!("where: {e}"))?;
        let expr = parser.parse_expr().map_err(|e| format!("where: {e}"))?;
        if parser.peek_token().token != Token::EOF {
            return Err("where: one expression only (found more after it)".into());
        }
        check_expr(&expr, &scope, "where")?;
        Some(expr.to_string())
    };
    let order_sql = if order_by.trim().is_empty() {
        None
    } else {
        let mut parser = Parser::new(&dialect)
            .try_with_sql(order_by)
            .map_err(|e| format!("order_by: {e}"))?;
        let items = parser
            .parse_comma_separated(Parser::parse_order_by_expr)
            .map_err(|e| format!("order_by: {e}"))?;
        if parser.peek_token().token != Token::EOF {
            return Err(
                "order_by: a comma-separated list of columns or expressions, each with ASC/DESC"
                    .into(),
            );
        }
        for item in &items {
            if item.with_fill.is_some() {
                return Err("order_by: WITH FILL is not allowed".into());
            }
            check_expr(&item.expr, &scope, "order_by")?;
        }
        Some(
            items
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        )
    };
    Ok((where_sql, order_sql))
}

/// The SELECT of a query page and the count of all rows that match, for a backend: each row
/// one JSON object keyed by column (decimals as text).
pub fn query_sql(
    spec: &TableSpec,
    place: &TablePlace,
    backend: Backend,
    clauses: &(Option<String>, Option<String>),
) -> (String, String) {
    let table = place.qualified(backend, &spec.table, false);
    let filter = clauses
        .0
        .as_ref()
        .map_or_else(String::new, |w| format!(" WHERE {w}"));
    let order = clauses
        .1
        .as_ref()
        .map_or_else(String::new, |o| format!(" ORDER BY {o}"));
    // Column names follow the identifier rule (checked with the table); quoted all the same.
    let quoted = |c: &Column| Ident::with_quote('"', c.name.clone()).to_string();
    let literal = |c: &Column| format!("'{}'", c.name.replace('\'', "''"));
    let column = |c: &Column| {
        if c.decimal {
            format!("CAST({0} AS TEXT) AS {0}", quoted(c))
        } else {
            quoted(c)
        }
    };
    let page = match backend {
        Backend::Postgres => format!(
            "SELECT to_jsonb(q) FROM (SELECT {} FROM {table}{filter}{order} LIMIT $1 OFFSET $2) q",
            spec.columns
                .iter()
                .map(column)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Backend::Sqlite => format!(
            "SELECT json_object({}) FROM {table}{filter}{order} LIMIT ?1 OFFSET ?2",
            spec.columns
                .iter()
                .map(|c| if c.decimal {
                    format!("{}, CAST({} AS TEXT)", literal(c), quoted(c))
                } else {
                    format!("{}, {}", literal(c), quoted(c))
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let count = format!("SELECT count(*) FROM {table}{filter}");
    (page, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "CREATE TABLE order_totals (customer TEXT PRIMARY KEY, total NUMERIC(12,2) NOT NULL DEFAULT 0, orders INTEGER NOT NULL DEFAULT 0, updated TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP, CONSTRAINT positive CHECK (orders >= 0))";

    fn spec() -> TableSpec {
        parse_table(TABLE).expect("a valid table")
    }

    #[test]
    fn the_table_must_be_one_plain_create_table() {
        let s = spec();
        assert_eq!(s.table, "order_totals");
        assert_eq!(s.columns.len(), 4);
        assert!(s.columns[1].decimal);
        for (bad, needle) in [
            ("DROP TABLE events", "CREATE TABLE"),
            ("CREATE TABLE public.x (a INT)", "plain table name"),
            (
                "CREATE TABLE x (a INT); CREATE TABLE y (b INT)",
                "one statement",
            ),
            ("CREATE TABLE x AS SELECT * FROM events", "AS SELECT"),
            (
                "CREATE TABLE x (a INT REFERENCES events(seq))",
                "not allowed",
            ),
            (
                "CREATE TABLE x (a INT, FOREIGN KEY (a) REFERENCES runs(seq))",
                "not allowed",
            ),
            ("CREATE TABLE x (a INT DEFAULT pg_sleep(10))", "not allowed"),
            (
                "CREATE TABLE x (a INT CHECK (a > (SELECT 1)))",
                "subqueries",
            ),
            ("CREATE TABLE \"X y\" (a INT)", "table name"),
            ("CREATE TEMPORARY TABLE x (a INT)", "TEMPORARY"),
            (
                "CREATE TABLE x (a INT) INHERITS (api_keys)",
                "columns and constraints only",
            ),
            (
                "CREATE TABLE x (a INT) PARTITION BY RANGE (a)",
                "columns and constraints only",
            ),
            ("CREATE TABLE x (\"a\"\", b\" INT)", "column name"),
            ("CREATE TABLE x (\"Total\" INT)", "column name"),
            ("CREATE TABLE x (a regclass)", "use one of"),
            ("CREATE TABLE x (a SERIAL)", "use one of"),
            (
                "CREATE TABLE x (a TIMESTAMPTZ DEFAULT now())",
                "not allowed",
            ),
            (
                "CREATE TABLE x (a INT CONSTRAINT \"x y\" CHECK (a > 0))",
                "constraint name",
            ),
        ] {
            let err = parse_table(bad).expect_err(bad);
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn ddl_is_confined_to_the_environments_place() {
        let place = TablePlace::of_env("0190-ABcd");
        let s = spec();
        let pg = s.ddl(&place, Backend::Postgres, false);
        assert!(
            pg.starts_with("CREATE TABLE \"ironflow_proj_0190abcd\".\"order_totals\""),
            "{pg}"
        );
        let lite = s.ddl(&place, Backend::Sqlite, true);
        assert!(
            lite.starts_with("CREATE TABLE \"proj_0190abcd__order_totals__rebuild\""),
            "{lite}"
        );
    }

    #[test]
    fn handlers_touch_only_the_table_with_named_parameters() {
        let s = spec();
        for (bad, needle) in [
            ("DELETE FROM events", "only change the projection's table"),
            (
                "INSERT INTO order_totals (customer) SELECT id FROM events",
                "VALUES only",
            ),
            (
                "UPDATE order_totals SET total = (SELECT count(*) FROM runs)",
                "subqueries",
            ),
            ("UPDATE order_totals SET total = 1 RETURNING *", "RETURNING"),
            (
                "INSERT INTO order_totals (customer) VALUES ($1)",
                "named parameters",
            ),
            (
                "INSERT INTO order_totals (customer) VALUES (:secret.x)",
                "unknown parameter",
            ),
            (
                "INSERT INTO order_totals (nope) VALUES (:data.x)",
                "not a column",
            ),
            (
                "UPDATE order_totals SET orders = pg_sleep(1)",
                "not allowed",
            ),
            ("SELECT * FROM order_totals", "INSERT, UPDATE or DELETE"),
            (
                "UPDATE order_totals SET orders = 1; DROP TABLE events",
                "one statement",
            ),
        ] {
            let err = parse_handler("order.placed", bad, &s).expect_err(bad);
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn handlers_render_bound_parameters_cast_to_their_columns() {
        let s = spec();
        let place = TablePlace::of_env("env1");
        let h = parse_handler(
            "order.placed",
            "INSERT INTO order_totals (customer, total, orders) VALUES (:data.customer, :data.amount, 1) \
             ON CONFLICT (customer) DO UPDATE SET total = order_totals.total + excluded.total, orders = order_totals.orders + 1",
            &s,
        )
        .expect("valid handler");
        let pg = h.render(&s, &place, Backend::Postgres, false);
        assert_eq!(pg.params, vec!["data.customer", "data.amount"]);
        assert!(
            pg.sql.contains("\"ironflow_proj_env1\".\"order_totals\""),
            "{}",
            pg.sql
        );
        assert!(
            pg.sql.contains("VALUES ($1, CAST($2 AS NUMERIC(12,2)), 1)"),
            "{}",
            pg.sql
        );
        let lite = h.render(&s, &place, Backend::Sqlite, false);
        assert!(
            lite.sql.contains("\"proj_env1__order_totals\""),
            "{}",
            lite.sql
        );
        assert!(lite.sql.contains("VALUES (?1, ?2, 1)"), "{}", lite.sql);
        assert!(
            lite.sql
                .contains("\"proj_env1__order_totals\".total + excluded.total"),
            "{}",
            lite.sql
        );
        let upd = parse_handler(
            "order.refunded",
            "UPDATE order_totals SET total = total - :data.amount WHERE customer = :data.customer",
            &s,
        )
        .expect("valid update");
        let pg = upd.render(&s, &place, Backend::Postgres, true);
        assert!(pg.sql.contains("order_totals__rebuild"), "{}", pg.sql);
        assert!(
            pg.sql.contains("total - CAST($1 AS NUMERIC(12,2))"),
            "{}",
            pg.sql
        );
        assert!(pg.sql.contains("customer = $2"), "{}", pg.sql);
    }

    #[test]
    fn queries_are_expressions_over_the_columns() {
        let s = spec();
        let (w, o) = query_clauses(
            &s,
            "total > 10 AND customer LIKE 'a%'",
            "total DESC, customer",
        )
        .expect("valid clauses");
        assert_eq!(w.as_deref(), Some("total > 10 AND customer LIKE 'a%'"));
        assert_eq!(o.as_deref(), Some("total DESC, customer"));
        for (wh, ob, needle) in [
            ("1=1; DROP TABLE events", "", "one expression"),
            ("customer IN (SELECT id FROM events)", "", "subqueries"),
            ("secret = 1", "", "not a column"),
            ("", "pg_sleep(1)", "not allowed"),
            ("", "total; DELETE", "comma-separated"),
        ] {
            let err = query_clauses(&s, wh, ob).expect_err(wh);
            assert!(err.contains(needle), "{wh} / {ob}: {err}");
        }
    }

    #[test]
    fn parameters_read_the_event() {
        let data = serde_json::json!({"a": {"b": 3}});
        let meta = serde_json::json!({});
        let facts = EventFacts {
            id: "e1",
            name: "n",
            seq: 7,
            timestamp: "2026-01-01T00:00:00Z".into(),
            source: "api",
            entity_id: Some("order-1"),
            entity_version: Some(2),
            data: &data,
            metadata: &meta,
        };
        assert_eq!(param_value("data.a.b", &facts), Json::from(3));
        assert_eq!(param_value("data.a.x", &facts), Json::Null);
        assert_eq!(param_value("event.seq", &facts), Json::from(7));
        assert_eq!(
            param_value("event.entity_id", &facts),
            Json::from("order-1")
        );
        assert_eq!(param_value("data", &facts), data);
    }
}
