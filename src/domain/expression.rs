//! CEL expressions (trigger filters, concurrency keys, consumer-group and subscription filters):
//! bounded when they are accepted, evaluated so that no input can exhaust the stack or run
//! without end.
//!
//! Three limits, each checked before anything is stored:
//! - the source is at most [`MAX_LEN`] bytes and nests brackets and `?:` at most
//!   [`MAX_SOURCE_NESTING`] deep (a lexical check, so the parser itself cannot be driven too deep);
//! - the parsed tree is at most [`MAX_DEPTH`] levels deep and has at most [`MAX_NODES`] nodes;
//! - an evaluation spends at most [`MAX_COST`] units: every comprehension (`all`, `exists`,
//!   `map`, `filter`, …) is charged the size of the list or map it walks, and every operand of an
//!   operator or function whose cost grows with its input (`in`, `==`, `+`, `contains`, …) its
//!   size, each time it is evaluated. Work within one evaluation is thereby proportional to the
//!   budget, however the expression and the data are shaped.
//!
//! The parser is recursive with large frames (about 200 KiB per bracket level in a debug
//! build), so it always runs on a stack of its own ([`PARSE_STACK`]); an evaluation runs on the
//! caller's stack when enough of it is left for the tree's depth and on a fresh segment
//! otherwise. A stored expression that no longer compiles (one accepted before these limits
//! existed) simply never matches.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::common::types::{CelNull, DYN_TYPE};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Env, ExecutionError, Value};

/// Longest accepted source, in bytes.
pub const MAX_LEN: usize = 4096;
/// Deepest accepted bracket / conditional nesting in the source text.
pub const MAX_SOURCE_NESTING: usize = 48;
/// Deepest accepted parsed tree.
pub const MAX_DEPTH: usize = 32;
/// Largest accepted parsed tree (nodes after macro expansion).
pub const MAX_NODES: usize = 512;
/// Cost units one evaluation may spend (see the module documentation).
pub const MAX_COST: u64 = 1_000_000;

/// The parser's own stack: enough for [`MAX_SOURCE_NESTING`] levels in a debug build.
const PARSE_STACK: usize = 64 * 1024 * 1024;
/// Stack an evaluation needs per tree level (measured about 16 KiB in a debug build), plus a
/// fixed margin for the conversions and functions around it.
const EVAL_STACK_PER_LEVEL: usize = 32 * 1024;
const EVAL_STACK_MARGIN: usize = 256 * 1024;
/// A fresh segment for an evaluation whose caller has too little stack left.
const EVAL_STACK: usize = 4 * 1024 * 1024;

/// The internal function wrapped around every charged operand. `@` cannot start an identifier
/// in CEL source, so no user expression can call or shadow it.
const CHARGE: &str = "@charge";

/// Why an expression was refused. The message names the limit and what was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpressionError {
    #[error("expression is empty")]
    Empty,
    #[error("expression is {len} bytes long; the limit is {MAX_LEN}")]
    TooLong { len: usize },
    #[error(
        "expression nests brackets or conditionals {nesting} levels deep; the limit is {MAX_SOURCE_NESTING}"
    )]
    NestedTooDeep { nesting: usize },
    #[error(
        "expression is {depth} levels deep once parsed; the limit is {MAX_DEPTH} (a long chain of + or * counts one level per operator)"
    )]
    TooDeep { depth: usize },
    #[error("expression has {nodes} parts once parsed; the limit is {MAX_NODES}")]
    TooLarge { nodes: usize },
    #[error("expression does not parse: {0}")]
    Syntax(String),
}

/// Why an evaluation produced no value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    #[error("evaluation exceeded its cost budget of {MAX_COST} units")]
    OverBudget,
    #[error("{0}")]
    Execution(String),
}

/// A compiled, bounded CEL expression. Cheap to clone.
#[derive(Clone)]
pub struct Expression {
    source: Arc<str>,
    ast: Arc<IdedExpr>,
    depth: usize,
}

/// What an expression sees of an event.
pub struct EventView<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub data: &'a serde_json::Value,
    pub metadata: &'a serde_json::Value,
    pub timestamp_ms: i64,
}

/// The variables of one evaluation, converted once and shared by every expression evaluated
/// against the same event: `event` (`id`, `name`, `data`, `metadata`, `ts`) and `data`.
/// Expressions read them in place (borrowed), so an evaluation copies none of the event.
pub struct Bindings {
    event: Box<dyn Val>,
    data: Box<dyn Val>,
}

impl Bindings {
    pub fn for_event(view: &EventView<'_>) -> Self {
        let data = json_value(view.data);
        let event = object([
            ("id", Value::String(Arc::new(view.id.to_owned()))),
            ("name", Value::String(Arc::new(view.name.to_owned()))),
            ("data", data.clone()),
            ("metadata", json_value(view.metadata)),
            ("ts", Value::Int(view.timestamp_ms)),
        ]);
        Self::of(event, data)
    }

    /// Bindings for a JSON event as the concurrency key sees it (`{name, data, …}`).
    pub fn for_json_event(event: &serde_json::Value) -> Self {
        let data = json_value(event.get("data").unwrap_or(&serde_json::Value::Null));
        Self::of(json_value(event), data)
    }

    fn of(event: Value, data: Value) -> Self {
        let val = |v: Value| -> Box<dyn Val> {
            Box::<dyn Val>::try_from(v).unwrap_or_else(|_| Box::new(CelNull))
        };
        Self {
            event: val(event),
            data: val(data),
        }
    }
}

impl VariableResolver for Bindings {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        match variable {
            "event" => Some(CowVal::Borrowed(self.event.as_ref())),
            "data" => Some(CowVal::Borrowed(self.data.as_ref())),
            _ => None,
        }
    }
}

/// JSON as CEL sees it. Integers are `int` (so `data.n % 2` and `data.n + 1` type-check
/// against integer literals), `uint` only above `int`'s range; other numbers are `double`.
fn json_value(json: &serde_json::Value) -> Value {
    use serde_json::Value as Json;
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(u)) => Value::UInt(u),
            _ => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(Arc::new(s.clone())),
        Json::Array(items) => Value::List(Arc::new(items.iter().map(json_value).collect())),
        Json::Object(fields) => {
            let map: HashMap<String, Value> = fields
                .iter()
                .map(|(k, v)| (k.clone(), json_value(v)))
                .collect();
            Value::from(map)
        }
    }
}

fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    let map: HashMap<String, Value> = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    Value::from(map)
}

impl Expression {
    /// Parses and checks `source` against the limits; the error says which one failed.
    pub fn compile(source: &str) -> Result<Self, ExpressionError> {
        if source.trim().is_empty() {
            return Err(ExpressionError::Empty);
        }
        if source.len() > MAX_LEN {
            return Err(ExpressionError::TooLong { len: source.len() });
        }
        let nesting = source_nesting(source);
        if nesting > MAX_SOURCE_NESTING {
            return Err(ExpressionError::NestedTooDeep { nesting });
        }
        let owned = source.to_owned();
        let parsed = stacker::grow(PARSE_STACK, move || {
            // The parser has panicked on pathological input before; a bad expression must be an
            // error, never a crash. The tree is dropped on this stack too when refused.
            std::panic::catch_unwind(|| cel::parser::Parser::new().parse(&owned))
        });
        let mut ast = match parsed {
            Ok(Ok(ast)) => ast,
            Ok(Err(errors)) => {
                return Err(ExpressionError::Syntax(first_line(&errors.to_string())));
            }
            Err(_) => return Err(ExpressionError::Syntax("could not be parsed".into())),
        };
        let shape = measure(&ast);
        if let Err(e) = shape.check() {
            // A tree this deep is also dropped on a stack that can take it.
            stacker::grow(PARSE_STACK, move || drop(ast));
            return Err(e);
        }
        charge_operands(&mut ast);
        Ok(Self {
            source: source.into(),
            ast: Arc::new(ast),
            // `charge_operands` adds at most one level per original level.
            depth: shape.depth * 2,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the expression; errors (missing fields, wrong types, an exhausted budget)
    /// are values of [`EvalError`], never panics.
    pub fn evaluate(&self, bindings: &Bindings) -> Result<Value, EvalError> {
        self.evaluate_in(bindings)
    }

    /// Evaluates over any variables (the policy input has its own), with the same stack and
    /// cost bounds as [`Expression::evaluate`].
    pub fn evaluate_in(&self, variables: &dyn VariableResolver) -> Result<Value, EvalError> {
        let red_zone = EVAL_STACK_MARGIN + self.depth * EVAL_STACK_PER_LEVEL;
        stacker::maybe_grow(red_zone, EVAL_STACK, || {
            let mut ctx = Context::with_env(ENV.clone());
            ctx.set_variable_resolver(variables);
            BUDGET.with(|b| b.set(MAX_COST));
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ctx.resolve(&self.ast)));
            let exhausted = BUDGET.with(|b| b.get()) == 0;
            match outcome {
                Ok(_) if exhausted => Err(EvalError::OverBudget),
                Ok(Ok(value)) => Ok(value),
                Ok(Err(e)) => Err(EvalError::Execution(e.to_string())),
                Err(_) => Err(EvalError::Execution("evaluation failed".into())),
            }
        })
    }

    /// True only when the expression evaluates to boolean true. Errors (missing fields, wrong
    /// types, an exhausted budget) and non-boolean results count as "does not match".
    pub fn matches(&self, bindings: &Bindings) -> bool {
        match self.evaluate(bindings) {
            Ok(Value::Bool(b)) => b,
            Ok(_) => false,
            Err(EvalError::OverBudget) => {
                metrics::counter!("ironflow_expression_over_budget_total").increment(1);
                tracing::warn!(expression = %self.source, "CEL expression exceeded its cost budget; treated as no match");
                false
            }
            Err(EvalError::Execution(_)) => false,
        }
    }

    /// The expression's value as text, for keys (a concurrency lane): strings as they are,
    /// numbers and booleans printed, `null` and errors as `""`.
    pub fn key(&self, bindings: &Bindings) -> String {
        match self.evaluate(bindings) {
            Ok(Value::String(s)) => s.to_string(),
            Ok(Value::Int(i)) => i.to_string(),
            Ok(Value::UInt(u)) => u.to_string(),
            Ok(Value::Float(f)) => f.to_string(),
            Ok(Value::Bool(b)) => b.to_string(),
            Ok(Value::Null) | Err(_) => String::new(),
            Ok(other) => format!("{other:?}"),
        }
    }
}

/// An expression's tree as written (without the cost wrappers), with where each node starts:
/// what a checker walks to name the line and column of a mistake.
pub struct WrittenTree {
    pub root: IdedExpr,
    info: cel::common::ast::SourceInfo,
    source: String,
}

impl WrittenTree {
    /// Parses a source that [`Expression::compile`] accepted (so its size and depth are
    /// bounded), on the parser's own stack.
    pub fn parse(expression: &Expression) -> Option<Self> {
        let owned = expression.source.to_string();
        stacker::grow(PARSE_STACK, move || {
            let parsed = std::panic::catch_unwind(|| {
                cel::parser::Parser::new().parse_with_source_info(&owned)
            });
            match parsed {
                Ok(Ok((root, info))) => Some(Self {
                    root,
                    info,
                    source: owned,
                }),
                _ => None,
            }
        })
    }

    /// 1-based line and column of a node (1:1 when unknown).
    pub fn position(&self, id: u64) -> (usize, usize) {
        let Some((start, _)) = self.info.offset_for(id) else {
            return (1, 1);
        };
        let start = start as usize;
        let mut line_start = 0;
        let mut line = 1;
        for (i, c) in self.source.char_indices() {
            if i >= start {
                break;
            }
            if c == '\n' {
                line += 1;
                line_start = i + 1;
            }
        }
        let column = self
            .source
            .get(line_start..start)
            .map_or(1, |s| s.chars().count() + 1);
        (line, column)
    }
}

/// Stored expressions compiled once per process, by source text (bounded, so a stream of
/// distinct expressions cannot grow memory without limit).
static COMPILED: LazyLock<Mutex<HashMap<String, Option<Expression>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));
const COMPILED_MAX: usize = 4096;

/// A stored expression, compiled (memoized): `None` when it does not compile. Stored
/// expressions were checked when accepted; one that fails now was accepted under older, looser
/// limits and never matches (said once in the log, not on every event).
pub fn compiled(source: &str) -> Option<Expression> {
    let lock = || {
        COMPILED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    if let Some(hit) = lock().get(source) {
        return hit.clone();
    }
    // Compiled outside the lock: a compile can take a few milliseconds.
    let compiled = match Expression::compile(source) {
        Ok(e) => Some(e),
        Err(error) => {
            let shown: String = source.chars().take(120).collect();
            tracing::warn!(%error, expression = %shown, "a stored CEL expression does not compile; it never matches");
            None
        }
    };
    let mut cache = lock();
    if cache.len() >= COMPILED_MAX {
        cache.clear();
    }
    cache.insert(source.to_owned(), compiled.clone());
    compiled
}

/// The concurrency lane of a run: its `concurrency.key` expression evaluated over the
/// triggering event (`{name, data}`), as text. An empty key is one lane for the whole function;
/// a key that does not evaluate puts the run in the `""` lane.
pub fn lane_key(key_expression: &str, bindings: &Bindings) -> String {
    if key_expression.trim().is_empty() {
        return String::new();
    }
    compiled(key_expression)
        .map(|e| e.key(bindings))
        .unwrap_or_default()
}

impl std::fmt::Debug for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Expression").field(&self.source).finish()
    }
}

fn first_line(message: &str) -> String {
    let line = message
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(message);
    line.chars().take(300).collect()
}

/// The standard environment plus the charging function, built once.
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| {
    let mut env = Env::stdlib();
    env.add_overload(CHARGE, "ironflow_charge_dyn", vec![DYN_TYPE], charge)
        .expect("the charging overload is declared once");
    Arc::new(env)
});

thread_local! {
    /// Cost units left in the evaluation running on this thread.
    static BUDGET: Cell<u64> = const { Cell::new(MAX_COST) };
}

/// `@charge(x)`: spends `1 + size(x)` units and returns `x` unchanged; fails once the budget
/// is gone, which ends the evaluation.
fn charge<'b, 'v>(mut args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let value = args
        .pop()
        .ok_or_else(|| ExecutionError::function_error(CHARGE, "needs one argument"))?;
    let size = value
        .as_sizer()
        .map_or(0, |s| u64::try_from(*s.size().inner()).unwrap_or(0));
    let cost = size.saturating_add(1);
    BUDGET.with(|b| {
        let left = b.get();
        if left < cost {
            b.set(0);
            Err(ExecutionError::function_error(
                CHARGE,
                "cost budget exhausted",
            ))
        } else {
            b.set(left - cost);
            Ok(value)
        }
    })
}

/// The deepest bracket / conditional nesting of the source, outside string literals and
/// comments. Conservative: each `?` counts one level for the rest of the source.
fn source_nesting(source: &str) -> usize {
    let bytes = source.as_bytes();
    let (mut depth, mut conditionals, mut deepest) = (0usize, 0usize, 0usize);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'(' | b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth + conditionals);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b'?' => {
                conditionals += 1;
                deepest = deepest.max(depth + conditionals);
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            quote @ (b'"' | b'\'') => {
                i = skip_string(bytes, i, quote);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    deepest
}

/// The index after the string literal opening at `start` (or the end, if it never closes: the
/// parser refuses that anyway). Raw strings (`r'…'`) have no escapes.
fn skip_string(bytes: &[u8], start: usize, quote: u8) -> usize {
    let raw = start > 0 && {
        let mut j = start;
        let mut prefix_raw = false;
        while j > 0 && matches!(bytes[j - 1], b'r' | b'R' | b'b' | b'B') && start - j < 2 {
            prefix_raw |= matches!(bytes[j - 1], b'r' | b'R');
            j -= 1;
        }
        prefix_raw && (j == 0 || !(bytes[j - 1].is_ascii_alphanumeric() || bytes[j - 1] == b'_'))
    };
    let triple = bytes.get(start + 1) == Some(&quote) && bytes.get(start + 2) == Some(&quote);
    let mut i = start + if triple { 3 } else { 1 };
    while i < bytes.len() {
        if bytes[i] == b'\\' && !raw {
            i += 2;
            continue;
        }
        if bytes[i] == quote
            && (!triple || (bytes.get(i + 1) == Some(&quote) && bytes.get(i + 2) == Some(&quote)))
        {
            return i + if triple { 3 } else { 1 };
        }
        i += 1;
    }
    bytes.len()
}

/// Depth and size of a parsed tree, measured without recursion.
#[derive(Debug, Clone, Copy)]
struct Shape {
    depth: usize,
    nodes: usize,
    unspecified: bool,
}

impl Shape {
    fn check(self) -> Result<(), ExpressionError> {
        if self.unspecified {
            return Err(ExpressionError::Syntax("incomplete expression".into()));
        }
        if self.depth > MAX_DEPTH {
            return Err(ExpressionError::TooDeep { depth: self.depth });
        }
        if self.nodes > MAX_NODES {
            return Err(ExpressionError::TooLarge { nodes: self.nodes });
        }
        Ok(())
    }
}

fn children(expr: &IdedExpr) -> Vec<&IdedExpr> {
    match &expr.expr {
        Expr::Call(call) => call
            .target
            .as_deref()
            .into_iter()
            .chain(&call.args)
            .collect(),
        Expr::Comprehension(c) => vec![
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ],
        Expr::List(list) => list.elements.iter().collect(),
        Expr::Map(map) => entries(&map.entries),
        Expr::Struct(s) => entries(&s.entries),
        Expr::Select(select) => vec![&*select.operand],
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => Vec::new(),
    }
}

fn entries(entries: &[cel::common::ast::IdedEntryExpr]) -> Vec<&IdedExpr> {
    entries
        .iter()
        .flat_map(|e| match &e.expr {
            EntryExpr::MapEntry(m) => vec![&m.key, &m.value],
            EntryExpr::StructField(f) => vec![&f.value],
        })
        .collect()
}

fn measure(root: &IdedExpr) -> Shape {
    let mut shape = Shape {
        depth: 0,
        nodes: 0,
        unspecified: false,
    };
    let mut stack = vec![(root, 1usize)];
    while let Some((expr, depth)) = stack.pop() {
        shape.nodes += 1;
        shape.depth = shape.depth.max(depth);
        shape.unspecified |= matches!(expr.expr, Expr::Unspecified);
        stack.extend(children(expr).into_iter().map(|c| (c, depth + 1)));
    }
    shape
}

/// Operators and functions whose work does not grow with their operands' size.
fn constant_cost(func: &str) -> bool {
    use cel::common::ast::operators as op;
    [
        op::LOGICAL_AND,
        op::LOGICAL_OR,
        op::LOGICAL_NOT,
        op::CONDITIONAL,
        op::NOT_STRICTLY_FALSE,
        op::INDEX,
        op::NEGATE,
        "size",
        "int",
        "uint",
        "double",
        "bool",
        "type",
        "dyn",
        "has",
    ]
    .contains(&func)
}

/// Wraps every operand whose size can make its operator's work grow in `@charge(…)`, and every
/// comprehension's range. The macro plumbing (calls on `@result` and other `@` names) is left
/// in the shape the interpreter recognises, so `map` and `filter` keep appending in place.
fn charge_operands(root: &mut IdedExpr) {
    let mut next_id = max_id(root) + 1;
    let mut stack: Vec<&mut IdedExpr> = vec![root];
    while let Some(expr) = stack.pop() {
        match &mut expr.expr {
            Expr::Call(call) => {
                let plumbing = call.func_name == CHARGE
                    || call.func_name == cel::common::ast::operators::NOT_STRICTLY_FALSE
                    || call
                        .args
                        .iter()
                        .any(|a| matches!(&a.expr, Expr::Ident(name) if name.starts_with('@')));
                if !plumbing && !constant_cost(&call.func_name) {
                    for arg in call.args.iter_mut().filter(|a| worth_charging(a)) {
                        wrap(arg, &mut next_id);
                    }
                    if let Some(target) = call.target.as_deref_mut().filter(|t| worth_charging(t)) {
                        wrap(target, &mut next_id);
                    }
                }
                // Recurse into the original operands (now one level down when wrapped).
                let target = call.target.as_deref_mut();
                for child in target.into_iter().chain(call.args.iter_mut()) {
                    stack.push(unwrapped(child));
                }
            }
            Expr::Comprehension(c) => {
                wrap(&mut c.iter_range, &mut next_id);
                stack.push(unwrapped(&mut c.iter_range));
                stack.extend([
                    &mut c.accu_init,
                    &mut c.loop_cond,
                    &mut c.loop_step,
                    &mut c.result,
                ]);
            }
            // Building a list or map copies its elements: each is charged its size.
            Expr::List(list) => {
                for element in list.elements.iter_mut() {
                    if worth_charging(element) {
                        wrap(element, &mut next_id);
                    }
                    stack.push(unwrapped(element));
                }
            }
            Expr::Map(map) => {
                for part in entries_mut(&mut map.entries) {
                    if worth_charging(part) {
                        wrap(part, &mut next_id);
                    }
                    stack.push(unwrapped(part));
                }
            }
            Expr::Struct(s) => stack.extend(entries_mut(&mut s.entries)),
            Expr::Select(select) => stack.push(&mut select.operand),
            Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
        }
    }
}

/// Literals are charged nothing: their size is bounded by the source.
fn worth_charging(expr: &IdedExpr) -> bool {
    !matches!(expr.expr, Expr::Literal(_))
        && !matches!(&expr.expr, Expr::Ident(name) if name.starts_with('@'))
}

fn wrap(expr: &mut IdedExpr, next_id: &mut u64) {
    let inner = std::mem::take(expr);
    *expr = IdedExpr {
        id: *next_id,
        expr: Expr::Call(cel::common::ast::CallExpr {
            func_name: CHARGE.to_owned(),
            target: None,
            args: vec![inner],
        }),
    };
    *next_id += 1;
}

/// The operand inside a `@charge(…)` wrapper (or the expression itself).
fn unwrapped(expr: &mut IdedExpr) -> &mut IdedExpr {
    let is_charge =
        matches!(&expr.expr, Expr::Call(c) if c.func_name == CHARGE && c.args.len() == 1);
    if !is_charge {
        return expr;
    }
    match &mut expr.expr {
        Expr::Call(c) => &mut c.args[0],
        _ => unreachable!("checked above"),
    }
}

fn entries_mut(entries: &mut [cel::common::ast::IdedEntryExpr]) -> Vec<&mut IdedExpr> {
    entries
        .iter_mut()
        .flat_map(|e| match &mut e.expr {
            EntryExpr::MapEntry(m) => vec![&mut m.key, &mut m.value],
            EntryExpr::StructField(f) => vec![&mut f.value],
        })
        .collect()
}

fn max_id(root: &IdedExpr) -> u64 {
    let mut max = 0;
    let mut stack = vec![root];
    while let Some(expr) = stack.pop() {
        max = max.max(expr.id);
        stack.extend(children(expr));
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bindings(data: serde_json::Value) -> Bindings {
        let meta = serde_json::json!({});
        Bindings::for_event(&EventView {
            id: "e1",
            name: "order.created",
            data: &data,
            metadata: &meta,
            timestamp_ms: 0,
        })
    }

    fn eval(expr: &str, data: serde_json::Value) -> bool {
        Expression::compile(expr)
            .expect("compiles")
            .matches(&bindings(data))
    }

    /// Runs `f` on a thread with a small stack: proof that nothing relies on a big caller stack.
    fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(f)
            .expect("thread")
            .join()
            .expect("no panic")
    }

    #[test]
    fn expressions_filter_events() {
        assert!(eval(
            "event.data.amount > 100",
            serde_json::json!({"amount": 500})
        ));
        assert!(!eval(
            "event.data.amount > 100",
            serde_json::json!({"amount": 50})
        ));
        assert!(eval(
            "data.tier == 'gold' && event.name == 'order.created'",
            serde_json::json!({"tier": "gold"})
        ));
        assert!(!eval("event.data.missing > 1", serde_json::json!({})));
        assert!(!eval("event.data.amount", serde_json::json!({"amount": 5})));
        assert!(eval(
            "'b' in data.tags",
            serde_json::json!({"tags": ["a", "b"]})
        ));
        assert!(eval(
            "data.items.exists(i, i.sku == 'x' && i.qty > 1)",
            serde_json::json!({"items": [{"sku": "y", "qty": 5}, {"sku": "x", "qty": 2}]})
        ));
        assert!(eval(
            "data.items.map(i, i.qty).filter(q, q > 1).size() == 2",
            serde_json::json!({"items": [{"qty": 1}, {"qty": 2}, {"qty": 3}]})
        ));
        assert!(eval(
            "data.name.startsWith('ab') && data.name.contains('c') && data.name + 'd' == 'abcd'",
            serde_json::json!({"name": "abc"})
        ));
    }

    #[test]
    fn bad_expressions_are_refused() {
        assert!(matches!(
            Expression::compile("event.data.amount >"),
            Err(ExpressionError::Syntax(_))
        ));
        assert_eq!(
            Expression::compile("").expect_err("refused"),
            ExpressionError::Empty
        );
        assert!(Expression::compile("((").is_err());
        assert!(Expression::compile("a ?").is_err());
    }

    /// The expression of issue 12: 2 000 terms, 4 003 characters. It used to be accepted and
    /// then overflow the stack of every emit.
    #[test]
    fn a_long_operator_chain_is_refused_when_accepted() {
        let source = format!("{} > 0", vec!["1"; 2000].join("+"));
        assert_eq!(source.len(), 4003);
        let err = on_small_stack(move || Expression::compile(&source)).expect_err("refused");
        assert!(
            matches!(err, ExpressionError::TooDeep { depth } if depth > MAX_DEPTH),
            "{err}"
        );
        assert!(err.to_string().contains("the limit is 32"), "{err}");
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        for (open, close) in [("(", ")"), ("[", "]"), ("int(", ")"), ("{1:", "}")] {
            let source = format!("{}1{}", open.repeat(200), close.repeat(200));
            let err = on_small_stack(move || Expression::compile(&source)).expect_err("refused");
            assert!(
                matches!(err, ExpressionError::NestedTooDeep { .. }),
                "{open}: {err}"
            );
        }
        let ternaries = format!("{}1", "true ? 1 : ".repeat(100));
        assert!(matches!(
            Expression::compile(&ternaries),
            Err(ExpressionError::NestedTooDeep { .. })
        ));
        // Brackets inside strings and comments do not count.
        let quoted = format!("data.s == '{}' // {}\n", "(".repeat(100), "[".repeat(100));
        assert!(Expression::compile(&quoted).is_ok());
        let raw = format!(
            "data.s == r'\\' && data.t == \"\"\"{}\"\"\"",
            "{".repeat(100)
        );
        assert!(Expression::compile(&raw).is_ok());
    }

    #[test]
    fn the_largest_accepted_shapes_compile_and_evaluate_on_a_small_stack() {
        let deep_sum = format!("{} > 0", vec!["data.n"; MAX_DEPTH - 3].join(" + "));
        let nested = format!(
            "{}data.n{} > 0",
            "(".repeat(MAX_SOURCE_NESTING),
            ")".repeat(MAX_SOURCE_NESTING)
        );
        let wide = vec!["data.n == 1"; 100].join(" || ");
        for source in [deep_sum, nested, wide] {
            let matched = on_small_stack(move || {
                let e = Expression::compile(&source).expect("within the limits");
                e.matches(&bindings(serde_json::json!({"n": 1})))
            });
            assert!(matched);
        }
    }

    #[test]
    fn too_many_nodes_are_refused() {
        let wide = vec!["data.n == 1"; 200].join(" || ");
        assert!(matches!(
            Expression::compile(&wide),
            Err(ExpressionError::TooLarge { .. })
        ));
    }

    #[test]
    fn quadratic_work_stops_at_the_budget() {
        let list: Vec<i64> = (0..5_000).collect();
        let data = serde_json::json!({"l": list});
        for source in [
            "data.l.all(x, data.l.exists(y, y == x))",
            "data.l.all(x, x in data.l)",
            "data.l.map(x, data.l).size() > 0",
            "data.l.all(x, data.l.map(y, y).size() > 0)",
        ] {
            let e = Expression::compile(source).expect("compiles");
            assert_eq!(
                e.evaluate(&bindings(data.clone())),
                Err(EvalError::OverBudget),
                "{source}"
            );
            assert!(!e.matches(&bindings(data.clone())));
        }
        // A linear walk of the same list is well within the budget.
        let e = Expression::compile("data.l.exists(x, x == 4999)").expect("compiles");
        assert_eq!(e.evaluate(&bindings(data.clone())), Ok(Value::Bool(true)));
        let e =
            Expression::compile("data.l.filter(x, x % 2 == 0).size() == 2500").expect("compiles");
        assert_eq!(e.evaluate(&bindings(data)), Ok(Value::Bool(true)));
    }

    #[test]
    fn string_growth_is_charged() {
        let big = "x".repeat(200_000);
        let data = serde_json::json!({"s": big});
        let doubling = (0..7).fold("data.s".to_owned(), |acc, _| format!("({acc} + {acc})"));
        let e = Expression::compile(&format!("size({doubling}) > 0")).expect("compiles");
        assert_eq!(e.evaluate(&bindings(data)), Err(EvalError::OverBudget));
    }

    #[test]
    fn keys_print_values() {
        let b = Bindings::for_json_event(
            &serde_json::json!({"name": "x", "data": {"c": "acme", "n": 7}}),
        );
        assert_eq!(
            Expression::compile("event.data.c")
                .expect("compiles")
                .key(&b),
            "acme"
        );
        assert_eq!(
            Expression::compile("data.n").expect("compiles").key(&b),
            "7"
        );
        assert_eq!(
            Expression::compile("data.missing")
                .expect("compiles")
                .key(&b),
            ""
        );
    }

    /// Expressions built from random parts, nested at random: each is accepted or refused
    /// with an error, and an accepted one evaluates without crashing, on a small stack.
    fn arbitrary_expression() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just("data.n".to_owned()),
            Just("event.name".to_owned()),
            Just("1".to_owned()),
            Just("'s'".to_owned()),
            Just("data.l".to_owned()),
            Just("true".to_owned()),
        ];
        leaf.prop_recursive(12, 400, 4, |inner| {
            prop_oneof![
                (
                    inner.clone(),
                    inner.clone(),
                    prop_oneof![
                        Just("+"),
                        Just("=="),
                        Just("&&"),
                        Just("||"),
                        Just("<"),
                        Just("in")
                    ]
                )
                    .prop_map(|(a, b, op)| format!("{a} {op} {b}")),
                inner.clone().prop_map(|a| format!("({a})")),
                inner.clone().prop_map(|a| format!("[{a}]")),
                inner.clone().prop_map(|a| format!("!{a}")),
                inner.clone().prop_map(|a| format!("data.l.exists(x, {a})")),
                inner.clone().prop_map(|a| format!("data.l.map(x, {a})")),
                (inner.clone(), inner.clone(), inner)
                    .prop_map(|(a, b, c)| format!("{a} ? {b} : {c}")),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn expressions_never_crash(source in arbitrary_expression(), junk in "\\PC{0,60}") {
            let evaluated = on_small_stack(move || {
                let data = serde_json::json!({"n": 1, "l": [1, 2, 3]});
                [source, junk]
                    .iter()
                    .filter_map(|text| Expression::compile(text).ok())
                    .map(|e| e.evaluate(&bindings(data.clone())).is_ok())
                    .collect::<Vec<bool>>()
            });
            proptest::prop_assert!(evaluated.len() <= 2);
        }
    }
}
