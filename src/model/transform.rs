//! Transforms: jq programs (jaq) compiled once and run on each record, each run within a
//! budget of evaluation steps ([`STEP_BUDGET`]): a program that loops (`until(false; .+1)`)
//! makes its record a reject, never a worker that never returns.

use std::cell::Cell;

use jaq_core::data::{DataT, HasLut};
use jaq_core::load::{Arena, File, Loader};
use jaq_core::{unwrap_valr, Compiler, Ctx, Lut, Vars};
use jaq_json::Val;
use serde_json::{Map, Value};

use crate::model::record::Fault;

type JqFilter = jaq_core::Filter<Budgeted>;

/// The variable that holds a record's metadata in a transform.
pub const META_VAR: &str = "$meta";

/// The most evaluation steps (jq terms evaluated, about 50–100 ns each) one record's run of
/// one program may take: about a second, where a real transform takes tens.
pub const STEP_BUDGET: u64 = 10_000_000;

/// jaq's data for a run: the programs' table and the steps left. Every term evaluated asks
/// for the table ([`HasLut::lut`]), so that is where a step is counted.
struct Budgeted;

impl DataT for Budgeted {
    type V<'a> = Val;
    type Data<'a> = Steps<'a>;
}

/// The most stack a run may take (jaq evaluates recursion on the thread's stack, which is
/// 2 MiB on the threads that run pipelines): past it, a deeply recursive program is over
/// budget instead of overflowing the stack, which would abort the process.
pub const STACK_BUDGET: usize = 768 << 10;

#[derive(Clone)]
struct Steps<'a> {
    lut: &'a Lut<Budgeted>,
    left: &'a Cell<u64>,
    /// The stack's address where the run started.
    base: usize,
}

/// An address on the current stack (stacks grow down on every platform Rust targets here).
#[inline(always)]
fn stack_here() -> usize {
    let marker = 0u8;
    std::hint::black_box(&marker) as *const u8 as usize
}

/// The panic payload that ends a run over its budget (caught in [`Transform::run`]; jaq's
/// evaluation has no other way out of a loop).
struct OverBudget;

impl<'a> HasLut<'a, Budgeted> for Steps<'a> {
    fn lut(&self) -> &'a Lut<Budgeted> {
        match self.left.get() {
            0 => std::panic::panic_any(OverBudget),
            n => self.left.set(n - 1),
        }
        if self.base.saturating_sub(stack_here()) > STACK_BUDGET {
            std::panic::panic_any(OverBudget);
        }
        self.lut
    }
}

/// Keeps the default panic message for every panic but [`OverBudget`], which is expected.
fn quiet_over_budget() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<OverBudget>() {
                previous(info);
            }
        }));
    });
}

/// A compiled jq program, with the source it came from.
pub struct Transform {
    code: String,
    filter: JqFilter,
    /// Whether the program reads `$meta` (else it is given null, at no cost per record).
    uses_meta: bool,
}

impl std::fmt::Debug for Transform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Transform").field(&self.code).finish()
    }
}

/// Filters with effects beyond their output: reading the worker's environment or input,
/// writing to its stderr or log, stopping its process. A job runs on any worker, many times:
/// its transforms must be pure functions of the record, so these are not defined for them.
pub const IMPURE: &[&str] = &[
    "env",
    "$ENV",
    "halt",
    "halt_error",
    "input",
    "inputs",
    "input_filename",
    "input_line_number",
    "debug",
    "debug_empty",
    "stderr",
    "stderr_empty",
    "get_search_list",
    "get_prog_origin",
    "get_jq_origin",
    "$__prog_args",
];

fn impure(name: &str) -> bool {
    IMPURE.contains(&name)
}

impl Transform {
    /// Compile one jq program with jq's standard library, less the [`IMPURE`] filters, or say
    /// why it does not compile.
    pub fn compile(code: &str) -> std::result::Result<Transform, String> {
        if let Some(name) = uses_impure(code) {
            return Err(format!(
                "jq program {code:?} uses `{name}`, which a job's transform may not: transforms run on \
                 any worker and must depend only on the record (no environment, input, logging or halting)"
            ));
        }
        let defs = jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs()).filter(|d| !impure(d.name));
        let funs = jaq_core::funs().chain(jaq_std::funs()).chain(jaq_json::funs()).filter(|f| !impure(f.0));
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let modules = loader.load(&arena, File { code, path: () }).map_err(|errs| {
            format!("jq program {code:?} does not parse: {:?}", errs.into_iter().map(|(_, e)| e).collect::<Vec<_>>())
        })?;
        let compiler = Compiler::default().with_funs(funs).with_global_vars([META_VAR]);
        let filter = compiler.compile(modules).map_err(|errs| {
            format!("jq program {code:?} does not compile: {:?}", errs.into_iter().map(|(_, e)| e).collect::<Vec<_>>())
        })?;
        quiet_over_budget();
        Ok(Transform { code: code.to_string(), filter, uses_meta: code.contains(META_VAR) })
    }

    /// The program's source.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// Whether the program reads the record's metadata (`$meta`).
    pub fn uses_meta(&self) -> bool {
        self.uses_meta
    }

    /// Run on one value: `Ok(None)` when the program yields nothing (the record is
    /// filtered); a fault with rule `transform` when it fails, yields more than one value, or
    /// takes more than [`STEP_BUDGET`] steps. `$meta` is null.
    pub fn run(&self, value: Value) -> std::result::Result<Option<Value>, Fault> {
        self.run_within(value, None, STEP_BUDGET)
    }

    /// [`Transform::run`] with the record's metadata as `$meta` (see
    /// [`crate::model::record::Origin::meta`]).
    pub fn run_with_meta(
        &self,
        value: Value,
        meta: Option<&Map<String, Value>>,
    ) -> std::result::Result<Option<Value>, Fault> {
        self.run_within(value, meta, STEP_BUDGET)
    }

    /// [`Transform::run_with_meta`] within `steps` evaluation steps.
    pub fn run_within(
        &self,
        value: Value,
        meta: Option<&Map<String, Value>>,
        steps: u64,
    ) -> std::result::Result<Option<Value>, Fault> {
        use serde::Deserialize as _;
        let input = Val::deserialize(value).map_err(|e| Fault::new(None, "transform", e.to_string()))?;
        let meta = match meta.filter(|_| self.uses_meta) {
            None => Val::Null,
            Some(m) => {
                Val::deserialize(Value::Object(m.clone())).map_err(|e| Fault::new(None, "transform", e.to_string()))?
            }
        };
        let left = Cell::new(steps);
        let evaluated = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let steps = Steps { lut: &self.filter.lut, left: &left, base: stack_here() };
            let ctx = Ctx::<Budgeted>::new(steps, Vars::new([meta]));
            let mut outputs = self.filter.id.run((ctx, input)).map(unwrap_valr);
            let first = outputs.next();
            let more = first.as_ref().is_some_and(Result::is_ok) && outputs.next().is_some();
            (first, more)
        }));
        let (first, more) = match evaluated {
            Ok(done) => done,
            Err(payload) if payload.is::<OverBudget>() => {
                return Err(Fault::new(
                    None,
                    "transform",
                    format!(
                        "over budget: the transform took more than {steps} steps or {} KiB of stack (a loop or a recursion that never ends?)",
                        STACK_BUDGET >> 10
                    ),
                ))
            }
            Err(payload) => std::panic::resume_unwind(payload),
        };
        let first = match first {
            None => return Ok(None),
            Some(Ok(v)) => v,
            Some(Err(e)) => return Err(Fault::new(None, "transform", format!("jq error: {e}"))),
        };
        if more {
            return Err(Fault::new(
                None,
                "transform",
                "the transform yielded more than one value; expected one or none",
            ));
        }
        let text = first.to_string();
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Fault::new(None, "transform", format!("jq produced non-JSON output: {e}")))
    }
}

/// The first [`IMPURE`] name `code` calls, if any: a word that is not part of a longer name,
/// a field (`.env`) or an object key (`{env: 1}`), or a string.
fn uses_impure(code: &str) -> Option<&'static str> {
    let bytes = code.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$';
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        if word(b) && (i == 0 || !word(bytes[i - 1])) {
            let end = (i..bytes.len()).find(|&j| !word(bytes[j])).unwrap_or(bytes.len());
            let name = &code[i..end];
            let field = i > 0 && bytes[i - 1] == b'.';
            let key = code[end..].trim_start().starts_with(':') && !code[end..].trim_start().starts_with(":=");
            if !field && !key {
                if let Some(found) = IMPURE.iter().find(|n| **n == name) {
                    return Some(found);
                }
            }
            i = end;
            continue;
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impure_filters_are_refused_by_name() {
        for (code, name) in [
            (".secret = env.HOME", "env"),
            (".secret = $ENV.AWS_SECRET_ACCESS_KEY", "$ENV"),
            ("if .name == \"a\" then halt else . end", "halt"),
            ("halt_error(1)", "halt_error"),
            ("[inputs]", "inputs"),
            (". as $x | input", "input"),
            ("debug | .a", "debug"),
            ("debug(\"x\")", "debug"),
            ("stderr", "stderr"),
            ("input_filename", "input_filename"),
        ] {
            let err = Transform::compile(code).unwrap_err();
            assert!(err.contains(&format!("`{name}`")), "{code}: {err}");
        }
    }

    #[test]
    fn names_as_fields_keys_strings_or_parts_of_longer_names_are_fine() {
        for code in [
            ".env",
            ".debug = 1",
            "{env: .x, halt: 2}",
            ".note = \"halt and env\"",
            ".environment",
            ".a | ascii_downcase",
            "select(.inputs_count > 1)",
        ] {
            assert!(Transform::compile(code).is_ok(), "{code}: {:?}", Transform::compile(code).err());
        }
    }

    #[test]
    fn a_program_that_never_ends_is_a_reject_over_budget() {
        for code in [
            "(0|until(false; .+1))",
            ".k = (0|until(false;.+1))",
            "def f: f; f",
            "[recurse(.+1)] | length",
            "def f: 1 + f; f",
            "[limit(100000000; repeat(1))] | length",
        ] {
            let t = Transform::compile(code).unwrap();
            let started = std::time::Instant::now();
            let fault = t.run(serde_json::json!(1)).unwrap_err();
            assert_eq!(fault.rule, "transform", "{code}");
            assert!(fault.message.contains("over budget"), "{code}: {}", fault.message);
            assert!(started.elapsed() < std::time::Duration::from_secs(5), "{code}");
        }
        // The same program within its budget, and a normal one, run as before.
        let t = Transform::compile("(0|until(. >= 100; .+1))").unwrap();
        assert_eq!(t.run(serde_json::json!(null)).unwrap(), Some(serde_json::json!(100)));
        let t = Transform::compile(".a + 1").unwrap();
        assert_eq!(t.run_within(serde_json::json!({"a": 1}), None, 100).unwrap(), Some(serde_json::json!(2)));
    }

    #[test]
    fn a_pure_program_runs() {
        let t = Transform::compile(".total = .a * .b | del(.a)").unwrap();
        let out = t.run(serde_json::json!({"a": 2, "b": 3})).unwrap();
        assert_eq!(out, Some(serde_json::json!({"b": 3, "total": 6})));
    }
}
