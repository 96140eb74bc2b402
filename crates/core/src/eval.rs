//! Evaluating compiled CEL conditions against a contact, an event and the clock: pure
//! functions of their scope, so the fuzz target and `nurture validate` need no runtime.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt,
};
use cel::common::value::Val;
use cel::objects::Key;
use cel::{Context, ExecutionError, Program, Value as CelValue};
use serde_json::Value;

use crate::event::{StoredEvent, Ts};
use crate::model::Scoring;

/// The grade of a score: the highest threshold reached, else `cold`.
pub fn grade(scoring: &Scoring, score: i64) -> String {
    grade_of(scoring, score as f64)
}

/// [`grade`] of a score that may be fractional (aged points, [`crate::aging`]).
pub fn grade_of(scoring: &Scoring, score: f64) -> String {
    scoring
        .grades
        .iter()
        .filter(|(_, min)| score >= **min as f64)
        .max_by_key(|(_, min)| **min)
        .map_or_else(|| "cold".to_string(), |(g, _)| g.clone())
}

/// The `event` variable: `{type, at, data, id}`.
pub fn event_view(e: &StoredEvent) -> Value {
    serde_json::json!({
        "id": e.id,
        "type": e.kind,
        "at": crate::event::ts_out(e.at),
        "data": e.data,
    })
}

/// [`event_view`] of `e` as a CEL value, its strings borrowed from `e` (see [`json_val`]).
fn event_val(e: &StoredEvent) -> Box<dyn Val + '_> {
    let borrowed = |s| CelString::from(s);
    let key = |k: &'static str| CelMapKey::String(CelString::from(k));
    let mut m: HashMap<CelMapKey<'_>, Box<dyn Val + '_>> = HashMap::with_capacity(4);
    m.insert(key("id"), Box::new(borrowed(e.id.as_str())));
    m.insert(key("type"), Box::new(borrowed(e.kind.as_str())));
    m.insert(
        key("at"),
        Box::new(CelString::from(crate::event::ts_out(e.at))),
    );
    m.insert(key("data"), json_val(&e.data, &borrowed));
    Box::new(CelMap::from(m))
}

/// `v` as the CEL value `Context::add_variable` makes of it through cel's serializer (a
/// JSON integer that is not negative is a `uint` there too), built directly: the
/// serializer's intermediate `cel::Value`, converted again into `Val`s, was a third of a
/// backtest's time. `text` makes each string and key, borrowed or owned.
fn json_val<'a, 'v>(v: &'a Value, text: &impl Fn(&'a str) -> CelString<'v>) -> Box<dyn Val + 'v> {
    match v {
        Value::Null => Box::new(CelNull),
        Value::Bool(b) => Box::new(CelBool::from(*b)),
        Value::Number(n) => number_val(n),
        Value::String(s) => Box::new(text(s)),
        Value::Array(items) => Box::new(CelList::from(
            items.iter().map(|i| json_val(i, text)).collect::<Vec<_>>(),
        )),
        Value::Object(m) => Box::new(CelMap::from(
            m.iter()
                .map(|(k, v)| (CelMapKey::String(text(k)), json_val(v, text)))
                .collect::<HashMap<_, _>>(),
        )),
    }
}

/// A JSON number as cel's serializer makes it: `uint`, else `int`, else `double`.
fn number_val(n: &serde_json::Number) -> Box<dyn Val> {
    if let Some(u) = n.as_u64() {
        Box::new(CelUInt::from(u))
    } else if let Some(i) = n.as_i64() {
        Box::new(CelInt::from(i))
    } else {
        Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN)))
    }
}

/// [`json_val`] with its own strings, for a context that outlives `v`.
fn owned_val(v: &Value) -> Box<dyn Val> {
    json_val(v, &|s: &str| CelString::from(s.to_string()))
}

/// [`json_val`] borrowing the strings of `v`.
fn borrowed_val(v: &Value) -> Box<dyn Val + '_> {
    json_val(v, &|s| CelString::from(s))
}

/// Everything a condition can read.
pub struct Scope<'a> {
    /// The contact as JSON (`contact`).
    pub contact: &'a Value,
    /// The event being applied (`event`), if any.
    pub event: Option<&'a Value>,
    /// The time it is for the expression (`now`; simulated under `nurture simulate`).
    pub now: Ts,
    /// The contact's events, oldest first, for `activity()`.
    pub history: Arc<Vec<StoredEvent>>,
    /// The outcome of the run's last awaited step (`outcome`; its `response` is also
    /// `response`), see `nurture_engine::outcome`.
    pub outcome: Option<&'a Value>,
}

fn parse_window(s: &str) -> Result<chrono::Duration, crate::model::DurationError> {
    s.parse::<crate::model::Duration>().map(|d| d.to_chrono())
}

/// A CEL value as JSON; `null` for one JSON cannot hold.
pub fn to_json(v: &CelValue) -> Value {
    v.json().unwrap_or(Value::Null)
}

fn data_matches(data: &Value, filter: &CelValue) -> bool {
    match filter {
        CelValue::Map(m) => m.map.iter().all(|(k, v)| {
            let key = match k {
                Key::String(s) => s.to_string(),
                other => format!("{other:?}"),
            };
            data.get(&key) == Some(&to_json(v))
        }),
        _ => false,
    }
}

/// Why an expression gave no value. Its text is what the journal shows.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A function could not be declared.
    #[error(transparent)]
    Declaration(#[from] cel::DeclarationError),
    /// The expression failed (an unknown field, a type mismatch...).
    #[error(transparent)]
    Execution(#[from] ExecutionError),
    /// The evaluator panicked on it: a run that meets it fails.
    #[error("{ABORTED}: the CEL evaluator failed on it")]
    Aborted,
    /// A condition gave another type than a boolean.
    #[error("condition gave {0} instead of true/false")]
    NotBool(String),
    /// A `${...}` that is not among the compiled programs does not compile.
    #[error(transparent)]
    Compile(#[from] crate::expr::ExprError),
    /// The expression `src` of a `${...}` failed.
    #[error("in ${{{src}}}: {source}")]
    In {
        /// The text inside `${...}`.
        src: String,
        /// Why it failed.
        #[source]
        source: Box<EvalError>,
    },
}

thread_local! {
    /// CEL's standard environment, built once per thread: `Context::default()` built it
    /// anew at every evaluation (every standard function declared into maps).
    static STDLIB: Arc<cel::Env> = Arc::new(stdlib());
    /// The regular expressions `matches()` compiled on this thread, by pattern (at most
    /// [`MAX_REGEXES`]): cel compiled one at every evaluation, most of a backtest's time.
    static REGEXES: std::cell::RefCell<HashMap<String, Result<Arc<regex::Regex>, String>>> =
        std::cell::RefCell::default();
    /// The `activity(...)` calls [`reads`] compiled on this thread, by text (at most
    /// [`MAX_REGEXES`]): it parsed each call at every condition recorded in a journal.
    static ACTIVITY_CALLS: std::cell::RefCell<HashMap<String, Option<std::rc::Rc<Program>>>> =
        std::cell::RefCell::default();
}

/// The most compiled patterns a thread keeps (then it starts again from none).
const MAX_REGEXES: usize = 256;

/// CEL's standard library with `matches` (global and member) on [`REGEXES`].
fn stdlib() -> cel::Env {
    let mut env = cel::Env::stdlib();
    cel::add_overload!(env, fn matches: (CelString, CelString) -> Result<CelBool>, id = "matches")
        .expect("one global `matches`");
    cel::add_member_overload!(env, fn matches: (CelString, CelString) -> Result<CelBool>)
        .expect("one member `matches`");
    env
}

/// `text.matches(re)`: whether the regular expression `re` (RE2 syntax, as CEL's) finds a
/// match in `text`.
fn matches(text: &CelString<'_>, re: &CelString<'_>) -> Result<CelBool, ExecutionError> {
    let compiled = REGEXES.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(r) = cache.get(re.inner()) {
            return r.clone();
        }
        if cache.len() >= MAX_REGEXES {
            cache.clear();
        }
        let r = regex::Regex::new(re.inner())
            .map(Arc::new)
            .map_err(|e| e.to_string());
        cache.insert(re.inner().to_string(), r.clone());
        r
    });
    match compiled {
        Ok(r) => Ok(CelBool::from(r.is_match(text.inner()))),
        Err(err) => Err(ExecutionError::FunctionError {
            function: "matches".to_string(),
            message: format!("'{}' not a valid regex:\n{err}", re.inner()),
        }),
    }
}

/// Evaluates a compiled program in a scope.
///
/// The contact, the clock and the history are made CEL values once per thread and
/// scope: a unit of work evaluates many conditions against one contact (every goal and
/// `exit_if` of every run, every scoring rule), and converting the contact was half of
/// the simulator's time. The cache is a copy of the scope's contact, compared by value,
/// so a contact that changed between two evaluations is converted again.
pub fn eval(program: &Program, scope: &Scope<'_>) -> Result<CelValue, EvalError> {
    ROOT.with(|cell| {
        let mut cached = cell.borrow_mut();
        let fresh = cached.as_ref().is_some_and(|c| c.serves(scope));
        if !fresh {
            *cached = None;
            *cached = Some(RootCache {
                ctx: root(scope)?,
                contact: scope.contact.clone(),
                now: scope.now,
                history: scope.history.clone(),
            });
        }
        let root: &Context<'_, '_> = &cached.as_ref().expect("just filled").ctx;
        let mut ctx = root.new_inner_scope();
        bind_outcome(&mut ctx, scope.outcome, borrowed_val);
        ctx.add_variable_as_val("event", scope.event.map_or_else(null_val, borrowed_val));
        execute(program, &ctx)
    })
}

/// The root context of the last scope evaluated on this thread (see [`eval`]).
struct RootCache {
    ctx: Context<'static, 'static>,
    contact: Value,
    now: Ts,
    history: Arc<Vec<StoredEvent>>,
}

impl RootCache {
    /// Whether this context is the one `scope` would build (its event and outcome aside).
    fn serves(&self, scope: &Scope<'_>) -> bool {
        self.now == scope.now
            && Arc::ptr_eq(&self.history, &scope.history)
            && self.contact == *scope.contact
    }
}

thread_local! {
    static ROOT: std::cell::RefCell<Option<RootCache>> = const { std::cell::RefCell::new(None) };
}

/// Binds `outcome` and `response` (the outcome's `response`), or nulls without one;
/// `val` makes them CEL values ([`borrowed_val`] or [`owned_val`]).
fn bind_outcome<'a, 'v>(
    ctx: &mut Context<'_, 'v>,
    outcome: Option<&'a Value>,
    val: impl Fn(&'a Value) -> Box<dyn Val + 'v>,
) {
    let response = outcome.and_then(|o| o.get("response"));
    ctx.add_variable_as_val("outcome", outcome.map_or_else(null_val, &val));
    ctx.add_variable_as_val("response", response.map_or_else(null_val, &val));
}

/// CEL's `null`.
fn null_val<'v>() -> Box<dyn Val + 'v> {
    Box::new(CelNull)
}

/// A context with the contact, the clock and `activity()` of `scope`: not its event,
/// nor its outcome.
fn root(scope: &Scope<'_>) -> Result<Context<'static, 'static>, EvalError> {
    let mut ctx = Context::with_env(STDLIB.with(Arc::clone));
    ctx.add_variable_as_val("contact", owned_val(scope.contact));
    ctx.add_variable_from_value("now", CelValue::Timestamp(scope.now.fixed_offset()));
    let history = scope.history.clone();
    let now = scope.now;
    ctx.add_function(
        "activity",
        move |args: cel::extractors::Arguments| -> Result<CelValue, ExecutionError> {
            let a = &args.0;
            if a.len() < 2 || a.len() > 3 {
                return Err(ExecutionError::function_error(
                    "activity",
                    "takes (TYPE, WINDOW) or (TYPE, WINDOW, {data})",
                ));
            }
            let (CelValue::String(kind), CelValue::String(window)) = (&a[0], &a[1]) else {
                return Err(ExecutionError::function_error(
                    "activity",
                    "TYPE and WINDOW are strings, e.g. activity(\"page.visited\", \"30d\")",
                ));
            };
            let window =
                parse_window(window).map_err(|e| ExecutionError::function_error("activity", e))?;
            let since = now - window;
            let n = history
                .iter()
                .filter(|e| e.kind == **kind && e.at > since && e.at <= now)
                .filter(|e| a.get(2).is_none_or(|f| data_matches(&e.data, f)))
                .count();
            Ok(CelValue::Int(n as i64))
        },
    )?;
    Ok(ctx)
}

fn execute(program: &Program, ctx: &Context<'_, '_>) -> Result<CelValue, EvalError> {
    // The cel crate may panic on values it does not expect: that is this expression's
    // failure (its run fails with the reason), never the process's.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| program.execute(ctx)))
        .map_err(|_| EvalError::Aborted)?
        .map_err(EvalError::from)
}

/// A scope made ready once for many evaluations that differ in their event only (a
/// backtest reads one contact's conditions event after event): the contact is converted
/// to CEL values once, not per evaluation.
pub struct Bound {
    ctx: Context<'static, 'static>,
}

impl Bound {
    /// `scope` made ready (its event is not kept: each evaluation gives its own).
    pub fn new(scope: &Scope<'_>) -> Result<Bound, EvalError> {
        let mut ctx = root(scope)?;
        bind_outcome(&mut ctx, scope.outcome, owned_val);
        Ok(Bound { ctx })
    }

    /// [`eval_bool`] in this scope without an event (`event` is null).
    pub fn eval_bool(&self, program: &Program) -> Result<bool, EvalError> {
        let mut ctx = self.ctx.new_inner_scope();
        ctx.add_variable_as_val("event", null_val());
        as_bool(execute(program, &ctx)?)
    }

    /// This scope with `e` as its event ([`event_view`]), made a CEL value once for all
    /// the conditions read about it.
    pub fn with_event<'e>(&'e self, e: &'e StoredEvent) -> EventScope<'e> {
        let root: &'e Context<'e, 'e> = &self.ctx;
        let mut ctx = root.new_inner_scope();
        ctx.add_variable_as_val("event", event_val(e));
        EventScope { ctx }
    }
}

/// A [`Bound`] scope with one event, see [`Bound::with_event`].
pub struct EventScope<'e> {
    ctx: Context<'e, 'e>,
}

impl EventScope<'_> {
    /// [`eval_bool`] in this scope.
    pub fn eval_bool(&self, program: &Program) -> Result<bool, EvalError> {
        as_bool(execute(program, &self.ctx)?)
    }
}

/// The start of the error of an evaluation that panicked: a run that meets it fails.
pub const ABORTED: &str = "evaluation aborted";

/// Evaluates a condition: only `true` is true; errors are returned for the journal.
pub fn eval_bool(program: &Program, scope: &Scope<'_>) -> Result<bool, EvalError> {
    as_bool(eval(program, scope)?)
}

fn as_bool(v: CelValue) -> Result<bool, EvalError> {
    match v {
        CelValue::Bool(b) => Ok(b),
        other => Err(EvalError::NotBool(other.type_of().to_string())),
    }
}

/// Renders a CEL value as text for `${...}` interpolation.
pub fn to_text(v: &CelValue) -> String {
    match v {
        CelValue::String(s) => s.to_string(),
        CelValue::Null => String::new(),
        other => match to_json(other) {
            Value::String(s) => s,
            j => j.to_string(),
        },
    }
}

/// Replaces each `${expr}` in `text`.
pub fn interpolate(
    text: &str,
    programs: &HashMap<String, Arc<Program>>,
    scope: &Scope<'_>,
) -> Result<String, EvalError> {
    interpolate_with(text, programs, scope, |v| v)
}

/// Replaces each `${expr}` in the URL `text` with its value percent-encoded
/// ([`crate::model::net::encode_component`]): a value cannot change the URL's host, path,
/// query or fragment (a contact whose `crm_host` is `127.0.0.1/x#` gets
/// `127.0.0.1%2Fx%23`, not another host).
pub fn interpolate_url(
    text: &str,
    programs: &HashMap<String, Arc<Program>>,
    scope: &Scope<'_>,
) -> Result<String, EvalError> {
    interpolate_with(text, programs, scope, |v| {
        crate::model::net::encode_component(&v)
    })
}

fn interpolate_with(
    text: &str,
    programs: &HashMap<String, Arc<Program>>,
    scope: &Scope<'_>,
    encode: impl Fn(String) -> String,
) -> Result<String, EvalError> {
    let parts = crate::expr::interpolations(text);
    if parts.is_empty() {
        return Ok(text.to_string());
    }
    let mut out = String::new();
    let mut last = 0;
    for (offset, src) in parts {
        out.push_str(&text[last..offset - 2]);
        let program = match programs.get(src) {
            Some(p) => p.clone(),
            None => Arc::new(crate::expr::compile(src)?),
        };
        let v = eval(&program, scope).map_err(|e| EvalError::In {
            src: src.to_string(),
            source: Box::new(e),
        })?;
        out.push_str(&encode(to_text(&v)));
        last = offset + src.len() + 1;
    }
    out.push_str(text.get(last..).unwrap_or(""));
    Ok(out)
}

/// Interpolates every string inside a JSON value.
pub fn interpolate_value(
    v: &Value,
    programs: &HashMap<String, Arc<Program>>,
    scope: &Scope<'_>,
) -> Result<Value, EvalError> {
    Ok(match v {
        Value::String(s) => Value::String(interpolate(s, programs, scope)?),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| interpolate_value(i, programs, scope))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| Ok((k.clone(), interpolate_value(v, programs, scope)?)))
                .collect::<Result<_, EvalError>>()?,
        ),
        other => other.clone(),
    })
}

/// The values a condition read: every `contact.a.b` / `event.a.b` path in its source,
/// resolved in the scope. Recorded in the journal next to the result.
pub fn reads(source: &str, scope: &Scope<'_>) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let bytes = source.as_bytes();
    for root in ["contact", "event", "outcome", "response"] {
        for (i, _) in source.match_indices(root) {
            if i > 0
                && (bytes[i - 1].is_ascii_alphanumeric()
                    || bytes[i - 1] == b'_'
                    || bytes[i - 1] == b'.')
            {
                continue;
            }
            let path: String = source[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                .collect();
            let path = path.trim_end_matches('.');
            let base = match root {
                "contact" => Some(scope.contact),
                "outcome" => scope.outcome,
                "response" => scope.outcome.and_then(|o| o.get("response")),
                _ => scope.event,
            };
            let lookup = |p: &str| -> Option<&Value> {
                p.split('.').skip(1).try_fold(base?, |x, seg| x.get(seg))
            };
            // Method calls (`.startsWith`) end the path at the last field that exists.
            let mut p = path;
            let mut val = lookup(p);
            while val.is_none() {
                match p.rsplit_once('.') {
                    Some((head, _)) => {
                        p = head;
                        val = lookup(p);
                    }
                    None => break,
                }
            }
            out.insert(p.to_string(), val.cloned().unwrap_or(Value::Null));
        }
    }
    for (i, _) in source.match_indices("activity(") {
        let rest = &source[i..];
        if let Some(end) = rest.find(')') {
            let call = &rest[..=end];
            if let Some(p) = activity_call(call) {
                if let Ok(v) = eval(&p, scope) {
                    out.insert(call.to_string(), to_json(&v));
                }
            }
        }
    }
    out
}

/// `call` (an `activity(...)` call in a condition's text) compiled, from this thread's
/// [`ACTIVITY_CALLS`]; `None` if it does not compile.
fn activity_call(call: &str) -> Option<std::rc::Rc<Program>> {
    ACTIVITY_CALLS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(p) = cache.get(call) {
            return p.clone();
        }
        if cache.len() >= MAX_REGEXES {
            cache.clear();
        }
        let p = crate::expr::compile(call).ok().map(std::rc::Rc::new);
        cache.insert(call.to_string(), p.clone());
        p
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn scope_with(history: Vec<StoredEvent>, contact: &Value) -> Scope<'_> {
        Scope {
            contact,
            event: None,
            now: chrono::Utc.with_ymd_and_hms(2026, 3, 31, 12, 0, 0).unwrap(),
            history: Arc::new(history),
            outcome: None,
        }
    }

    fn ev(kind: &str, day: u32, data: Value) -> StoredEvent {
        StoredEvent {
            seq: day as i64,
            id: format!("e{day}"),
            contact: "c1".into(),
            kind: kind.into(),
            at: chrono::Utc.with_ymd_and_hms(2026, 3, day, 9, 0, 0).unwrap(),
            data,
        }
    }

    /// `v` with the CEL type of every value, map entries sorted.
    fn typed(v: &CelValue) -> String {
        match v {
            CelValue::List(items) => {
                let items: Vec<String> = items.iter().map(typed).collect();
                format!("list[{}]", items.join(", "))
            }
            CelValue::Map(m) => {
                let mut entries: Vec<String> = m
                    .map
                    .iter()
                    .map(|(k, v)| format!("{k:?}: {}", typed(v)))
                    .collect();
                entries.sort();
                format!("map{{{}}}", entries.join(", "))
            }
            other => format!("{}({other:?})", other.type_of()),
        }
    }

    /// `v` read back from CEL (its value as the variable `event`).
    fn read_back(v: Box<dyn Val + '_>) -> String {
        let root = Context::with_env(STDLIB.with(Arc::clone));
        let mut ctx = (&root as &Context<'_, '_>).new_inner_scope();
        ctx.add_variable_as_val("event", v);
        typed(&execute(&crate::expr::compile("event").unwrap(), &ctx).unwrap())
    }

    /// `v` as `Context::add_variable` makes it: through cel's serializer.
    fn serialized(v: &Value) -> Box<dyn Val> {
        cel::to_value(v).unwrap().try_into().unwrap()
    }

    #[test]
    fn values_built_directly_are_what_cels_serializer_makes() {
        let json = serde_json::json!({
            "null": null, "yes": true, "no": false, "zero": 0, "n": 42, "neg": -7,
            "big": u64::MAX, "min": i64::MIN, "half": 0.5, "text": "Grüße \"x\"",
            "list": [1, "two", [3.5, null], {"k": -1}], "empty": {}, "none": [],
            "nested": {"a": {"b": {"c": "deep"}}},
        });
        let want = read_back(serialized(&json));
        assert!(want.contains("uint(UInt(42))"), "{want}");
        assert_eq!(read_back(owned_val(&json)), want);
        assert_eq!(read_back(borrowed_val(&json)), want);

        let e = ev(
            "page.visited",
            3,
            serde_json::json!({"url": "/pricing", "n": 2}),
        );
        assert_eq!(
            read_back(event_val(&e)),
            read_back(serialized(&event_view(&e)))
        );
    }

    #[test]
    fn activity_counts_within_the_window_and_matches_data() {
        let c = serde_json::json!({"score": 5});
        let h = vec![
            ev("page.visited", 1, Value::Null),
            ev("page.visited", 25, Value::Null),
            ev("page.visited", 30, Value::Null),
            ev(
                "asset.downloaded",
                29,
                serde_json::json!({"asset": "comparison"}),
            ),
        ];
        let s = scope_with(h, &c);
        let p = |src: &str| crate::expr::compile(src).unwrap();
        assert!(eval_bool(&p(r#"activity("page.visited", "7d") == 2"#), &s).unwrap());
        assert!(eval_bool(&p(r#"activity("page.visited", "30d") == 2"#), &s).unwrap());
        assert!(eval_bool(&p(r#"activity("page.visited", "31d") == 3"#), &s).unwrap());
        assert!(eval_bool(
            &p(r#"activity("asset.downloaded", "7d", {"asset": "comparison"}) == 1"#),
            &s
        )
        .unwrap());
        assert!(eval_bool(
            &p(r#"activity("asset.downloaded", "7d", {"asset": "other"}) == 0"#),
            &s
        )
        .unwrap());
    }

    #[test]
    fn the_kept_root_never_answers_for_a_changed_contact_clock_or_outcome() {
        let p =
            crate::expr::compile("contact.score > 5 && (outcome == null || outcome.ok)").unwrap();
        let cold = serde_json::json!({"score": 1});
        let hot = serde_json::json!({"score": 10});
        let s = scope_with(vec![], &cold);
        assert!(!eval_bool(&p, &s).unwrap());
        // Same history and clock, another contact: converted again.
        let s = Scope { contact: &hot, ..s };
        assert!(eval_bool(&p, &s).unwrap());
        // Same contact, another outcome: the outcome is never kept.
        let failed = serde_json::json!({"ok": false});
        let with = Scope {
            outcome: Some(&failed),
            history: s.history.clone(),
            ..s
        };
        assert!(!eval_bool(&p, &with).unwrap());
        assert!(eval_bool(&p, &s).unwrap());
        // Same contact, another clock: `now` is read afresh.
        let q = crate::expr::compile("now > timestamp('2026-04-01T00:00:00Z')").unwrap();
        assert!(!eval_bool(&q, &s).unwrap());
        let later = Scope {
            now: chrono::Utc.with_ymd_and_hms(2026, 4, 2, 0, 0, 0).unwrap(),
            history: s.history.clone(),
            ..s
        };
        assert!(eval_bool(&q, &later).unwrap());
        // Same contact and clock, another history: `activity()` counts the new one.
        let a = crate::expr::compile("activity('page.visited', '30d') == 1").unwrap();
        assert!(!eval_bool(&a, &s).unwrap());
        let visited = scope_with(vec![ev("page.visited", 30, Value::Null)], &hot);
        assert!(eval_bool(&a, &visited).unwrap());
    }

    #[test]
    fn interpolation_and_reads() {
        let c = serde_json::json!({"first_name": "Ana", "company": {"name": "Acme"}, "score": 12});
        let s = scope_with(vec![], &c);
        let out = interpolate(
            "Call ${contact.first_name} at ${contact.company.name}",
            &HashMap::new(),
            &s,
        )
        .unwrap();
        assert_eq!(out, "Call Ana at Acme");
        let r = reads(
            "contact.score >= 10 && contact.company.name.startsWith(\"A\")",
            &s,
        );
        assert_eq!(r["contact.score"], 12);
        assert_eq!(r["contact.company.name"], "Acme");
    }

    /// The `activity(...)` calls a condition read are recorded with the count in each
    /// scope, though the call is compiled once per thread; the kept calls stay bounded.
    #[test]
    fn reads_counts_activity_in_each_scope_from_kept_calls() {
        let c = serde_json::json!({});
        let src = r#"activity("page.visited", "30d") > 0"#;
        let call = r#"activity("page.visited", "30d")"#;
        assert_eq!(reads(src, &scope_with(vec![], &c))[call], 0);
        let two = vec![
            ev("page.visited", 20, Value::Null),
            ev("page.visited", 21, Value::Null),
        ];
        assert_eq!(reads(src, &scope_with(two, &c))[call], 2);
        assert_eq!(reads(src, &scope_with(vec![], &c))[call], 0);
        for i in 0..(MAX_REGEXES + 10) {
            let src = format!(r#"activity("p{i}", "1d") > 0"#);
            assert_eq!(reads(&src, &scope_with(vec![], &c)).len(), 1);
        }
        assert!(ACTIVITY_CALLS.with(|r| r.borrow().len()) <= MAX_REGEXES);
    }

    /// `matches` (member and global) as CEL's: RE2 syntax, a bad pattern an error; the
    /// compiled patterns a thread keeps stay bounded.
    #[test]
    fn matches_uses_kept_regexes_and_bounds_them() {
        let c = serde_json::json!({"title": "VP of Marketing"});
        let s = scope_with(vec![], &c);
        let p = |src: &str| crate::expr::compile(src).unwrap();
        let vp = p(r#"contact.title.matches("(?i)\\b(VP|chief)")"#);
        assert!(eval_bool(&vp, &s).unwrap());
        assert!(
            eval_bool(&vp, &s).unwrap(),
            "the second time, from the kept regex"
        );
        assert!(eval_bool(&p(r#"matches(contact.title, "^VP ")"#), &s).unwrap());
        assert!(!eval_bool(&p(r#"contact.title.matches("^CMO")"#), &s).unwrap());
        let bad = eval_bool(&p(r#"contact.title.matches("(")"#), &s).unwrap_err();
        assert!(format!("{bad:?}").contains("not a valid regex"), "{bad:?}");
        for i in 0..(MAX_REGEXES + 10) {
            let src = format!(r#"contact.title.matches("^VP{i}|VP")"#);
            assert!(eval_bool(&p(&src), &s).unwrap());
        }
        assert!(REGEXES.with(|r| r.borrow().len()) <= MAX_REGEXES);
    }

    #[test]
    fn grade_is_highest_threshold_reached() {
        let mut s = Scoring::default();
        s.grades.insert("hot".into(), 100);
        s.grades.insert("warm".into(), 40);
        assert_eq!(grade(&s, 39), "cold");
        assert_eq!(grade(&s, 40), "warm");
        assert_eq!(grade(&s, 150), "hot");
    }

    /// A failing `${...}` names its expression and keeps the evaluator's error as source.
    #[test]
    fn an_interpolation_error_keeps_the_expression_error_as_source() {
        let c = serde_json::json!({"score": 5});
        let scope = scope_with(vec![], &c);
        let e = interpolate("Hi ${contact.name}", &HashMap::new(), &scope).unwrap_err();
        assert!(e.to_string().starts_with("in ${contact.name}: "), "{e}");
        let source = std::error::Error::source(&e).expect("a source");
        let inner = source
            .downcast_ref::<Box<EvalError>>()
            .expect("the expression's error");
        assert!(matches!(**inner, EvalError::Execution(_)), "{inner:?}");
    }
}
