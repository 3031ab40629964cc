//! SQL over the whole history (`QueryService.ExecuteSQL`): which queries are allowed (one
//! read-only SELECT over the documented views, with read-only functions) and how each view is
//! narrowed to the caller's environment before the query runs.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, Ident, ObjectName, ObjectNamePart, Query, SetExpr, Statement, TableAlias, TableFactor,
    Visit, VisitMut, Visitor, VisitorMut,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// The views a history query may read; each is narrowed to the caller's environment.
pub const VIEWS: &[&str] = &[
    "ironflow_events",
    "ironflow_runs",
    "ironflow_steps",
    "ironflow_history",
    "ironflow_streams",
    "ironflow_stream_events",
    "ironflow_projections",
    "ironflow_projection_states",
];

/// Functions a history query may call: read-only, and no access to files, settings, sessions or
/// other databases.
const FUNCTIONS: &[&str] = &[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "lower",
    "upper",
    "length",
    "round",
    "abs",
    "floor",
    "ceil",
    "trim",
    "ltrim",
    "rtrim",
    "replace",
    "substr",
    "substring",
    "concat",
    "date_trunc",
    "now",
    "date",
    "datetime",
    "strftime",
    "julianday",
    "to_char",
    "age",
    "json_extract",
    "json_array_length",
    "jsonb_array_length",
    "jsonb_extract_path_text",
    "json_extract_path_text",
    "jsonb_typeof",
    "json_typeof",
    "string_agg",
    "group_concat",
    "array_agg",
    "bool_and",
    "bool_or",
    "percentile_cont",
    "percentile_disc",
    "row_number",
    "rank",
    "dense_rank",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "ntile",
    "typeof",
];

/// What the database allows beyond the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// `WITH RECURSIVE` (only where the database itself cuts a query off at its timeout).
    pub recursive: bool,
}

/// Checks a query and returns it with every view reference replaced by that view narrowed to
/// `env_id`. `relations` are the names of every relation the database has: a WITH query may not
/// take one of them, and each WITH name counts only in its own query.
pub fn narrow_query(
    sql: &str,
    env_id: &str,
    relations: &[String],
    limits: QueryLimits,
) -> Result<String, String> {
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .map_err(|e| format!("query is not valid SQL: {e}"))?;
    let mut statement = match statements.len() {
        1 => statements.remove(0),
        0 => return Err("query is empty".into()),
        n => return Err(format!("query must be one statement (got {n})")),
    };
    if !matches!(statement, Statement::Query(_)) {
        return Err(
            "query must be a SELECT: this interface reads the history, it never writes".into(),
        );
    }
    let mut check = Check {
        scopes: Vec::new(),
        ctes: BTreeSet::new(),
        relations,
        limits,
    };
    if let ControlFlow::Break(e) = statement.visit(&mut check) {
        return Err(e);
    }
    let mut narrow = Narrow {
        env_id,
        ctes: &check.ctes,
    };
    let _ = VisitMut::visit(&mut statement, &mut narrow);
    Ok(statement.to_string())
}

struct Check<'a> {
    /// The WITH names of each query being visited, innermost last.
    scopes: Vec<Vec<String>>,
    /// Every WITH name seen (none may be a view's, so narrowing never mistakes one).
    ctes: BTreeSet<String>,
    relations: &'a [String],
    limits: QueryLimits,
}

/// Names SQLite resolves to built-in table-valued functions.
fn builtin_table_name(name: &str) -> bool {
    name.starts_with("pragma_") || name.starts_with("sqlite_") || name.starts_with("json_")
}

fn single(name: &ObjectName) -> Option<&Ident> {
    match name.0.as_slice() {
        [ObjectNamePart::Identifier(i)] => Some(i),
        _ => None,
    }
}

fn check_body(body: &SetExpr) -> Result<(), String> {
    match body {
        SetExpr::Select(select) => {
            if select.into.is_some() {
                return Err("SELECT … INTO is not allowed".into());
            }
            Ok(())
        }
        SetExpr::Query(_) | SetExpr::Values(_) => Ok(()),
        SetExpr::SetOperation { left, right, .. } => {
            check_body(left)?;
            check_body(right)
        }
        _ => Err(
            "only SELECT queries are allowed (no INSERT, UPDATE, DELETE, MERGE or TABLE)".into(),
        ),
    }
}

impl Visitor for Check<'_> {
    type Break = String;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<String> {
        if let Err(e) = check_body(&query.body) {
            return ControlFlow::Break(e);
        }
        if !query.locks.is_empty() || query.for_clause.is_some() {
            return ControlFlow::Break("locking clauses (FOR UPDATE …) are not allowed".into());
        }
        let mut names = Vec::new();
        if let Some(with) = &query.with {
            if with.recursive && !self.limits.recursive {
                return ControlFlow::Break(
                    "WITH RECURSIVE is not allowed on this backend (nothing could stop it at the timeout)"
                        .into(),
                );
            }
            for cte in &with.cte_tables {
                let name = cte.alias.name.value.to_ascii_lowercase();
                if VIEWS.contains(&name.as_str())
                    || builtin_table_name(&name)
                    || self.relations.iter().any(|r| r.eq_ignore_ascii_case(&name))
                {
                    return ControlFlow::Break(format!(
                        "a WITH query may not be named '{name}': a table, view or built-in has that name"
                    ));
                }
                self.ctes.insert(name.clone());
                names.push(name);
            }
        }
        self.scopes.push(names);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<String> {
        self.scopes.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<String> {
        match factor {
            TableFactor::Table { args: None, .. }
            | TableFactor::Derived { .. }
            | TableFactor::NestedJoin { .. } => ControlFlow::Continue(()),
            other => ControlFlow::Break(format!(
                "'{other}': read the views by name (table functions are not allowed)"
            )),
        }
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<String> {
        let Some(ident) = single(relation) else {
            return ControlFlow::Break(format!(
                "'{relation}': name a view without a schema (one of {})",
                VIEWS.join(", ")
            ));
        };
        let name = ident.value.to_ascii_lowercase();
        let in_scope = self.scopes.iter().flatten().any(|c| c == &name);
        if VIEWS.contains(&name.as_str()) || in_scope {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(format!(
                "'{}' is not one of the documented views ({})",
                ident.value,
                VIEWS.join(", ")
            ))
        }
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<String> {
        if let Expr::Function(f) = expr {
            let name = f.name.to_string().to_ascii_lowercase();
            if !FUNCTIONS.contains(&name.as_str()) {
                return ControlFlow::Break(format!(
                    "function {name}() is not allowed in a history query"
                ));
            }
        }
        if let Expr::Value(v) = expr
            && matches!(v.value, sqlparser::ast::Value::Placeholder(_))
        {
            return ControlFlow::Break("a history query takes no parameters".into());
        }
        ControlFlow::Continue(())
    }
}

/// Replaces each view reference by `(SELECT * FROM view WHERE env_id = '<env>') AS <alias>`,
/// after its subtree was visited (so the replacement is not visited again).
struct Narrow<'a> {
    env_id: &'a str,
    ctes: &'a BTreeSet<String>,
}

impl VisitorMut for Narrow<'_> {
    type Break = ();

    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        let TableFactor::Table { name, alias, .. } = factor else {
            return ControlFlow::Continue(());
        };
        let Some(ident) = single(name) else {
            return ControlFlow::Continue(());
        };
        let view = ident.value.to_ascii_lowercase();
        if !VIEWS.contains(&view.as_str()) || self.ctes.contains(&view) {
            return ControlFlow::Continue(());
        }
        let env = self.env_id.replace('\'', "''");
        let Ok(subquery) = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(&format!("SELECT * FROM {view} WHERE env_id = '{env}'"))
            .and_then(|mut p| p.parse_query())
        else {
            return ControlFlow::Continue(());
        };
        let alias = alias.clone().unwrap_or(TableAlias {
            explicit: true,
            name: Ident::new(view),
            columns: Vec::new(),
            at: None,
        });
        *factor = TableFactor::Derived {
            lateral: false,
            subquery,
            alias: Some(alias),
            sample: None,
        };
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: QueryLimits = QueryLimits { recursive: true };

    fn relations() -> Vec<String> {
        ["events", "runs", "jobs", "ironflow_runs"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    }

    #[test]
    fn views_are_narrowed_to_the_environment() {
        let q = narrow_query(
            "SELECT r.status, count(*) FROM ironflow_runs r JOIN ironflow_events e ON e.event_id = r.event_id GROUP BY r.status",
            "env-1",
            &relations(),
            LIMITS,
        )
        .expect("allowed");
        assert!(
            q.contains("(SELECT * FROM ironflow_runs WHERE env_id = 'env-1') r"),
            "{q}"
        );
        assert!(
            q.contains("(SELECT * FROM ironflow_events WHERE env_id = 'env-1') e"),
            "{q}"
        );
        let unaliased = narrow_query(
            "SELECT count(*) FROM ironflow_runs",
            "env-1",
            &relations(),
            LIMITS,
        )
        .expect("allowed");
        assert!(
            unaliased.contains("WHERE env_id = 'env-1') AS ironflow_runs"),
            "{unaliased}"
        );
        let nested = narrow_query(
            "WITH failed AS (SELECT * FROM ironflow_runs WHERE status = 'failed') SELECT count(*) FROM failed",
            "env-1",
            &relations(),
            LIMITS,
        )
        .expect("allowed");
        assert!(nested.contains("env_id = 'env-1'"), "{nested}");
        assert!(nested.ends_with("FROM failed"), "{nested}");
    }

    #[test]
    fn anything_but_reading_the_views_is_refused() {
        for (bad, needle) in [
            ("DELETE FROM ironflow_runs", "must be a SELECT"),
            ("SELECT * FROM events", "not one of the documented views"),
            ("SELECT * FROM public.ironflow_runs", "without a schema"),
            ("SELECT pg_read_file('/etc/passwd')", "not allowed"),
            ("SELECT pg_sleep(10)", "not allowed"),
            ("SELECT * FROM ironflow_runs FOR UPDATE", "locking"),
            ("SELECT 1; SELECT 2", "one statement"),
            (
                "WITH events AS (SELECT 1) SELECT * FROM events",
                "may not be named",
            ),
            ("SELECT * FROM generate_series(1, 10)", "table functions"),
            ("SELECT * INTO stolen FROM ironflow_runs", "INTO"),
            (
                "SELECT * FROM ironflow_runs WHERE run_id = $1",
                "no parameters",
            ),
        ] {
            let err = narrow_query(bad, "env-1", &relations(), LIMITS).expect_err(bad);
            assert!(err.contains(needle), "{bad}: {err}");
        }
        let recursive = "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) SELECT 1";
        let err = narrow_query(recursive, "e", &[], QueryLimits { recursive: false })
            .expect_err("recursive");
        assert!(err.contains("RECURSIVE"), "{err}");
    }
}
